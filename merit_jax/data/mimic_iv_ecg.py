"""MIMIC-IV-ECG as a TFDS dataset (configs `500hz` native, `100hz` resampled).

Reads the PhysioNet layout from the manual dir:

* `record_list.csv` (`subject_id`, `study_id`, `file_name`, `ecg_time`, `path`), `path` being
  the record without extension relative to the manual dir,
  e.g. `files/p1000/p10000032/s40689238/40689238`;
* `machine_measurements.csv` (`subject_id`, `study_id`, ..., `report_0` ... `report_17`);
* WFDB records `files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}`, 500 Hz, 10 s.

The report of a study is its non-empty machine statements `report_0` ... `report_17` in order,
each stripped, joined with '. ' (or a space after a statement that already ends in
punctuation). Studies without any statement are skipped (`no machine report`): a pair without a
text is no use to the contrastive branch. MIMIC files list aVF before aVL; `wfdb_io.read_wfdb`
orders the leads by their header names, so stored signals follow `STANDARD_LEADS`.

Splits are drawn by patient, so no patient crosses splits: bucket = SHA-256 of
`'mimic-iv-ecg:<subject_id>'` (first 8 bytes, big-endian) mod 100; buckets 0-97 are `train`,
98 `validation`, 99 `test` (about 98/1/1 %). The rule depends on nothing but the subject id,
so it is the same for every copy, subset and machine. A split without any record (only in small
subsets) is left out, because TFDS cannot write an empty split.

Features: `ecg_id` = study_id, `patient_id` = subject_id; age and sex are not part of
MIMIC-IV-ECG (they live in MIMIC-IV's `patients` table) and are stored unknown (NaN, -1); `fold`
is -1; there are no labels (`labels` is an empty dict, `info.metadata['label_names'] == {}`).
Signals are stored in mV as float16, the first 10 s of each record (all MIMIC-IV-ECG records
are 10 s); the `100hz` config resamples with `preprocess.resample` (polyphase,
`scipy.signal.resample_poly`). Records that cannot be read are listed with their reason in
`skipped_records.csv` in the dataset's version folder; one bad record never stops the build.
"""

import hashlib
import os
from typing import Iterable, Iterator, Optional

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from merit_jax.data import schema as features
from merit_jax.data import preprocess
from merit_jax.data import skips
from merit_jax.data import wfdb_io

PHYSIONET_URL = "https://physionet.org/content/mimic-iv-ecg/1.0/"
RECORD_LIST_CSV = "record_list.csv"
MEASUREMENTS_CSV = "machine_measurements.csv"
NUM_REPORT_FIELDS = 18
REPORT_COLUMNS = tuple(f"report_{k}" for k in range(NUM_REPORT_FIELDS))
RECORD_SECONDS = 10
# Subject-hash buckets (out of 100) of each split.
NUM_BUCKETS = 100
SPLIT_BUCKETS = {"train": range(0, 98), "validation": range(98, 99), "test": range(99, 100)}
_SPLIT_SALT = "mimic-iv-ecg:"
# Reasons that tests and the summary rely on.
NO_REPORT = "no machine report"
NO_MEASUREMENTS_ROW = "no row in machine_measurements.csv"
RECORD_FILE_MISSING = "record file missing"
TOO_SHORT = "too short"
BAD_ROW = "invalid record_list row"

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download MIMIC-IV-ECG 1.0 from PhysioNet ({PHYSIONET_URL}; open access, about 90 GB), e.g.
`python -m merit_jax.data.download mimic_iv_ecg --target_dir=DIR`, and pass DIR as the manual
dir. DIR must hold {RECORD_LIST_CSV}, {MEASUREMENTS_CSV} and files/ in the PhysioNet layout
(files/p1000/p10000032/s40689238/40689238.hea + .dat, ...). A partial copy is fine: studies
whose files are missing or unreadable are skipped and listed in skipped_records.csv.
"""


def check_manual_dir(manual_dir) -> None:
  """Fails at once, saying what was expected where, when `manual_dir` is no MIMIC-IV-ECG copy."""
  expected = f"{RECORD_LIST_CSV}, {MEASUREMENTS_CSV} and files/"
  if manual_dir is None:
    raise FileNotFoundError(f"No manual dir given for MIMIC-IV-ECG. Expected a folder with "
                            f"{expected}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"MIMIC-IV-ECG manual dir {manual_dir!r} does not exist. Expected "
                            f"a folder with {expected}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  missing = [name for name in (RECORD_LIST_CSV, MEASUREMENTS_CSV)
             if not os.path.isfile(os.path.join(manual_dir, name))]
  if missing:
    raise FileNotFoundError(f"MIMIC-IV-ECG manual dir {manual_dir!r} lacks {missing} "
                            f"(expected {expected} there).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")


def subject_bucket(subject_id: int) -> int:
  """Deterministic bucket in [0, 100) of a patient (not Python's salted `hash`)."""
  digest = hashlib.sha256(f"{_SPLIT_SALT}{int(subject_id)}".encode("ascii")).digest()
  return int.from_bytes(digest[:8], "big") % NUM_BUCKETS


def subject_split(subject_id: int) -> str:
  """'train', 'validation' or 'test' for a patient; every study of a patient goes there."""
  bucket = subject_bucket(subject_id)
  for split, buckets in SPLIT_BUCKETS.items():
    if bucket in buckets:
      return split
  raise AssertionError(f"bucket {bucket} is in no split")  # SPLIT_BUCKETS covers 0-99.


def join_report(statements: Iterable) -> str:
  """Joins the machine statements of one study: stripped, NaN/empty dropped, in order."""
  text = ""
  for statement in statements:
    if statement is None or (not isinstance(statement, str) and pd.isna(statement)):
      continue
    statement = str(statement).strip()
    if not statement:
      continue
    if text:
      text += " " if text[-1] in ".;:!?" else ". "
    text += statement
  return text


def load_reports(measurements_csv) -> pd.Series:
  """study_id -> joined report, from `machine_measurements.csv` (only the needed columns)."""
  header = pd.read_csv(measurements_csv, nrows=0).columns
  if "study_id" not in header:
    raise ValueError(f"{measurements_csv} has no 'study_id' column (columns: {list(header)})")
  columns = [c for c in REPORT_COLUMNS if c in header]
  if not columns:
    raise ValueError(f"{measurements_csv} has none of the columns report_0 ... report_17")
  table = pd.read_csv(measurements_csv, usecols=["study_id", *columns],
                      dtype={c: "string" for c in columns}, encoding="utf-8",
                      encoding_errors="replace")
  study = pd.to_numeric(table["study_id"], errors="coerce")
  table = table[study.notna()]
  reports = table[columns].astype(object).where(table[columns].notna(), None)
  joined = [join_report(row) for row in reports.itertuples(index=False, name=None)]
  series = pd.Series(joined, index=study[study.notna()].astype(np.int64).values, dtype=object)
  # A study listed twice keeps its first row.
  return series[~series.index.duplicated(keep="first")]


def load_record_list(record_list_csv, skip_log: Optional[skips.SkipLog] = None) -> pd.DataFrame:
  """`record_list.csv` with integer subject/study ids and a `path`; bad rows go to skip_log."""
  table = pd.read_csv(record_list_csv, dtype={"path": "string", "file_name": "string"})
  for column in ("subject_id", "study_id"):
    if column not in table.columns:
      raise ValueError(f"{record_list_csv} has no {column!r} column "
                       f"(columns: {list(table.columns)})")
  subject = pd.to_numeric(table["subject_id"], errors="coerce")
  study = pd.to_numeric(table["study_id"], errors="coerce")
  valid = subject.notna() & study.notna()
  if skip_log is not None:
    for index in table.index[~valid]:
      path = table.at[index, "path"] if "path" in table.columns else ""
      skip_log.add(table.at[index, "study_id"], "" if pd.isna(path) else path,
                   f"{BAD_ROW}: subject_id {str(table.at[index, 'subject_id'])!r}, "
                   f"study_id {str(table.at[index, 'study_id'])!r} (line {index + 2})")
  table = table[valid].copy()
  table["subject_id"] = subject[valid].astype(np.int64)
  table["study_id"] = study[valid].astype(np.int64)
  paths = table["path"] if "path" in table.columns else pd.Series(pd.NA, index=table.index)
  table["path"] = [default_record_path(s, t) if pd.isna(p) or not str(p).strip()
                   else str(p).strip() for s, t, p in
                   zip(table["subject_id"], table["study_id"], paths)]
  # A study id is the example key; a repeated one would make TFDS fail on duplicate keys.
  duplicated = table["study_id"].duplicated(keep="first")
  if skip_log is not None:
    for row in table[duplicated].itertuples(index=False):
      skip_log.add(row.study_id, row.path, "duplicate study_id in record_list.csv")
  return table[~duplicated].reset_index(drop=True)


def default_record_path(subject_id: int, study_id: int) -> str:
  """The PhysioNet location of a study's record (without extension)."""
  subject = f"p{int(subject_id)}"
  return f"files/{subject[:5]}/{subject}/s{int(study_id)}/{int(study_id)}"


def make_example(manual_dir: str, row, report: str, sample_rate: int) -> dict:
  """One TFDS example for a `record_list.csv` row; raises RecordError when unusable."""
  record = wfdb_io.read_wfdb(os.path.join(manual_dir, row.path))
  signal = record.signal
  native_rate = record.sample_rate
  if native_rate != sample_rate:
    signal = preprocess.resample(signal, native_rate, sample_rate).astype(np.float32)
  num_samples = RECORD_SECONDS * sample_rate
  if signal.shape[1] < num_samples:
    raise wfdb_io.RecordError(f"{TOO_SHORT}: {signal.shape[1] / sample_rate:.2f} s "
                              f"(expected {RECORD_SECONDS} s)")
  signal = signal[:, :num_samples].astype(np.float16)
  if np.isinf(signal).any():
    raise wfdb_io.RecordError("signal overflows float16")
  return {
      "signal": signal,
      "sample_rate": np.int32(sample_rate),
      "unit": record.unit,
      "report": report,
      "ecg_id": np.int64(row.study_id),
      "patient_id": np.int64(row.subject_id),
      "age": np.float32(np.nan),
      "sex": np.int32(-1),
      "fold": np.int32(-1),
      "labels": {},
  }


def generate_examples(manual_dir, records: pd.DataFrame, reports: pd.Series, sample_rate: int,
                      skip_log: skips.SkipLog, split: str = "") -> Iterator[tuple]:
  """Yields (study_id, example) for the rows of `records`; logs the others to `skip_log`."""
  manual_dir = os.fspath(manual_dir)
  for row in records.sort_values("study_id").itertuples(index=False):
    path = os.path.join(manual_dir, row.path)
    if not (os.path.exists(path + ".hea") or os.path.exists(path + ".dat")):
      skip_log.add(row.study_id, row.path, RECORD_FILE_MISSING, split=split)
      continue
    report = reports.get(row.study_id)
    if report is None:
      skip_log.add(row.study_id, row.path, NO_MEASUREMENTS_ROW, split=split)
      continue
    if not report:
      skip_log.add(row.study_id, row.path, NO_REPORT, split=split)
      continue
    try:
      example = make_example(manual_dir, row, report, sample_rate)
    except wfdb_io.RecordError as e:
      skip_log.add(row.study_id, row.path, e.reason, split=split)
      continue
    skip_log.count_used(split)
    yield int(row.study_id), example


class MimicIvEcgConfig(tfds.core.BuilderConfig):
  """A storage sampling rate (records are resampled from their native 500 Hz)."""

  def __init__(self, *, sample_rate: int, **kwargs):
    super().__init__(**kwargs)
    self.sample_rate = sample_rate


class MimicIvEcg(tfds.core.GeneratorBasedBuilder):
  """MIMIC-IV-ECG: 10 s 12-lead ECGs with machine-generated reports, no labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      MimicIvEcgConfig(name="500hz", description="native 500 Hz, 5,000 samples",
                       sample_rate=500),
      MimicIvEcgConfig(name="100hz", description="resampled to 100 Hz, 1,000 samples",
                       sample_rate=100),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "500hz"

  def __init__(self, *, file_format: str = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    sample_rate = self.builder_config.sample_rate
    return self.dataset_info_from_configs(
        features=features.ecg_features(RECORD_SECONDS * sample_rate, {}),
        supervised_keys=None,
        homepage=PHYSIONET_URL,
        citation=(
            "Gow, B., Pollard, T., Nathanson, L. A., Johnson, A., Moody, B., Fernandes, C., "
            "Greenbaum, N., Waks, J. W., Eslami, P., Carbonati, T., Chaudhari, A., Herbst, E., "
            "Moukheiber, D., Berkowitz, S., Mark, R., & Horng, S. (2023). MIMIC-IV-ECG: "
            "Diagnostic Electrocardiogram Matched Subset (version 1.0). PhysioNet. "
            "https://doi.org/10.13026/4nqg-sb35"),
        metadata=tfds.core.MetadataDict(label_names={}),
    )

  def _download_and_prepare(self, dl_manager, download_config=None, **kwargs):
    # `self.data_dir` is TFDS's `incomplete.*` folder here, renamed to the version folder only
    # when everything succeeded, so the skip log is published together with the data.
    self._skip_log = skips.SkipLog()
    super()._download_and_prepare(dl_manager, download_config=download_config, **kwargs)
    self._skip_log.write(self.data_dir)
    self._skip_log.print_summary(f"{self.name}/{self.builder_config.name}")

  @property
  def skip_log(self) -> Optional[skips.SkipLog]:
    """The skips of the last build made by this builder object (None if it built nothing)."""
    return getattr(self, "_skip_log", None)

  def validate_manual_dir(self, manual_dir) -> None:
    """Fails before any work (used by `build.py`) when `manual_dir` is no MIMIC-IV-ECG copy."""
    check_manual_dir(manual_dir)

  def _split_generators(self, dl_manager):
    manual_dir = getattr(dl_manager, "_manual_dir", None)
    check_manual_dir(manual_dir)
    manual_dir = os.fspath(manual_dir)
    if not hasattr(self, "_skip_log"):
      self._skip_log = skips.SkipLog()
    records = load_record_list(os.path.join(manual_dir, RECORD_LIST_CSV), self._skip_log)
    reports = load_reports(os.path.join(manual_dir, MEASUREMENTS_CSV))
    splits = records["subject_id"].map(subject_split)
    generators = {}
    for split in SPLIT_BUCKETS:
      rows = records[splits == split]
      if rows.empty:
        print(f"{self.name}: split {split!r} has no record in {manual_dir} and is left out")
        continue
      generators[split] = generate_examples(manual_dir, rows, reports,
                                            self.builder_config.sample_rate, self._skip_log,
                                            split)
    if not generators:
      raise FileNotFoundError(f"{os.path.join(manual_dir, RECORD_LIST_CSV)} lists no record")
    return generators

  def _generate_examples(self, *args, **kwargs):
    # Examples come from `generate_examples`, returned directly by `_split_generators`.
    raise NotImplementedError
