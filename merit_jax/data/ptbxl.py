"""PTB-XL as a TFDS dataset (configs `100hz`, `500hz`), with the benchmark's label tasks.

Reads the PhysioNet layout from the manual dir: `ptbxl_database.csv`, `scp_statements.csv` and
`records100/NNNNN/NNNNN_lr.{hea,dat}` / `records500/NNNNN/NNNNN_hr.{hea,dat}`. Partial downloads
are fine: only records that have both a database row and readable files become examples; every
other one is written with its reason to `skipped_records.csv` in the dataset's version folder.

Labels follow the PTB-XL benchmark (Strodthoff et al. 2020): every key of `scp_codes` counts,
whatever its likelihood, and is aggregated through `scp_statements.csv` into the tasks of
`features.PTBXL_TASKS`. The sorted label names of each task are stored in
`info.metadata['label_names'][task]`, in the column order of the `labels/<task>` vectors.
"""

import ast
import dataclasses
import math
import os
from typing import Iterator, Optional

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from merit_jax.data import features
from merit_jax.data import skips
from merit_jax.data import wfdb_io

PHYSIONET_URL = "https://physionet.org/content/ptb-xl/1.0.3/"
DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
RECORD_SECONDS = 10
# Benchmark splits by `strat_fold`.
SPLIT_FOLDS = {"train": tuple(range(1, 9)), "validation": (9,), "test": (10,)}
# Reasons that tests and the summary rely on.
NO_ROW = "no row in ptbxl_database.csv"
RECORD_FILE_MISSING = "record file missing"
EMPTY_REPORT = "empty report"
UNDECODABLE_REPORT = "undecodable report"
UNKNOWN_SCP_CODE = "unknown SCP code"

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download PTB-XL 1.0.3 from PhysioNet ({PHYSIONET_URL}), e.g. with
`python -m merit_jax.data.download ptbxl --target_dir=DIR`, and pass DIR as the manual dir.
DIR must hold {DATABASE_CSV}, {STATEMENTS_CSV} and records100/ (config 100hz) or records500/
(config 500hz) in the PhysioNet layout (records100/00000/00001_lr.hea + .dat, ...). A partial
download is fine: records without files or without a database row are skipped and listed in
skipped_records.csv.
"""


def _records_dir_name(sample_rate: int) -> str:
  return f"records{int(sample_rate)}"


def _filename_column(sample_rate: int) -> str:
  return "filename_lr" if int(sample_rate) == 100 else "filename_hr"


def check_manual_dir(manual_dir, sample_rate: int) -> None:
  """Fails at once, saying what was expected where, when `manual_dir` cannot be a PTB-XL copy."""
  records = _records_dir_name(sample_rate)
  if manual_dir is None:
    raise FileNotFoundError(
        f"No manual dir given for PTB-XL. Expected a folder with {DATABASE_CSV}, "
        f"{STATEMENTS_CSV} and {records}/.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(
        f"PTB-XL manual dir {manual_dir!r} does not exist. Expected a folder with "
        f"{DATABASE_CSV}, {STATEMENTS_CSV} and {records}/.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  missing = [name for name in (DATABASE_CSV, STATEMENTS_CSV, records)
             if not os.path.exists(os.path.join(manual_dir, name))]
  if missing:
    raise FileNotFoundError(
        f"PTB-XL manual dir {manual_dir!r} lacks {missing} (expected {DATABASE_CSV}, "
        f"{STATEMENTS_CSV} and {records}/ there).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")


def _flag(value) -> bool:
  return isinstance(value, (int, float)) and not math.isnan(value) and value == 1.0


def load_statements(statements_csv) -> pd.DataFrame:
  statements = pd.read_csv(statements_csv, index_col=0)
  statements.index = statements.index.astype(str).str.strip()
  return statements


def ptbxl_label_names(statements_csv) -> dict:
  """Task name -> sorted list of its labels, derived from `scp_statements.csv`."""
  statements = (statements_csv if isinstance(statements_csv, pd.DataFrame)
                else load_statements(statements_csv))
  diagnostic = statements[statements["diagnostic"].map(_flag)]
  return {
      "all": sorted(statements.index),
      "diagnostic": sorted(diagnostic.index),
      "subdiagnostic": sorted(set(diagnostic["diagnostic_subclass"].dropna().astype(str))),
      "superdiagnostic": sorted(set(diagnostic["diagnostic_class"].dropna().astype(str))),
      "form": sorted(statements.index[statements["form"].map(_flag)]),
      "rhythm": sorted(statements.index[statements["rhythm"].map(_flag)]),
  }


class LabelEncoder:
  """Maps a record's SCP codes to one multi-hot vector per task."""

  def __init__(self, statements: pd.DataFrame):
    self.label_names = ptbxl_label_names(statements)
    self._statements = statements
    self._index = {task: {name: i for i, name in enumerate(names)}
                   for task, names in self.label_names.items()}
    # code -> [(task, label)] it switches on.
    self._targets = {}
    for code, row in statements.iterrows():
      targets = [("all", code)]
      if _flag(row["diagnostic"]):
        targets.append(("diagnostic", code))
        if isinstance(row["diagnostic_subclass"], str):
          targets.append(("subdiagnostic", row["diagnostic_subclass"]))
        if isinstance(row["diagnostic_class"], str):
          targets.append(("superdiagnostic", row["diagnostic_class"]))
      if _flag(row["form"]):
        targets.append(("form", code))
      if _flag(row["rhythm"]):
        targets.append(("rhythm", code))
      self._targets[code] = targets

  def encode(self, codes) -> dict:
    """Multi-hot uint8 vectors; raises RecordError on a code not in scp_statements.csv."""
    labels = {task: np.zeros(len(names), np.uint8) for task, names in self.label_names.items()}
    for code in codes:
      code = str(code).strip()
      if code not in self._targets:
        raise wfdb_io.RecordError(f"{UNKNOWN_SCP_CODE}: {code!r} not in {STATEMENTS_CSV}")
      for task, label in self._targets[code]:
        labels[task][self._index[task][label]] = 1
    return labels


@dataclasses.dataclass
class PtbxlTables:
  """The two CSV tables of one PTB-XL copy."""
  database: pd.DataFrame     # indexed by ecg_id
  statements: pd.DataFrame   # indexed by SCP code
  encoder: LabelEncoder

  @classmethod
  def load(cls, manual_dir) -> "PtbxlTables":
    manual_dir = os.fspath(manual_dir)
    # Undecodable bytes become U+FFFD so one bad report is skipped instead of failing the file.
    database = pd.read_csv(os.path.join(manual_dir, DATABASE_CSV), index_col="ecg_id",
                           encoding="utf-8", encoding_errors="replace")
    statements = load_statements(os.path.join(manual_dir, STATEMENTS_CSV))
    return cls(database=database, statements=statements, encoder=LabelEncoder(statements))


def _record_stems_on_disk(manual_dir: str, sample_rate: int) -> set:
  """Relative paths without extension (e.g. 'records100/00000/00001_lr') of files on disk."""
  root = os.path.join(manual_dir, _records_dir_name(sample_rate))
  stems = set()
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      base, ext = os.path.splitext(name)
      if ext in (".hea", ".dat"):
        rel = os.path.relpath(os.path.join(dirpath, base), manual_dir)
        stems.add(rel.replace(os.sep, "/"))
  return stems


def log_unassigned_records(manual_dir, sample_rate: int, skip_log: skips.SkipLog,
                           tables: Optional[PtbxlTables] = None) -> None:
  """Logs record files without a database row, and rows that belong to no split."""
  manual_dir = os.fspath(manual_dir)
  tables = tables or PtbxlTables.load(manual_dir)
  column = _filename_column(sample_rate)
  known = set(tables.database[column].dropna().astype(str).str.strip())
  for stem in sorted(_record_stems_on_disk(manual_dir, sample_rate) - known):
    skip_log.add(_int_or(os.path.basename(stem).split("_")[0], -1), stem, NO_ROW)
  folds = pd.to_numeric(tables.database["strat_fold"], errors="coerce")
  all_folds = {f for split_folds in SPLIT_FOLDS.values() for f in split_folds}
  for ecg_id in tables.database.index[~folds.isin(all_folds)]:
    skip_log.add(ecg_id, tables.database.at[ecg_id, column],
                 f"invalid strat_fold: {tables.database.at[ecg_id, 'strat_fold']!r}")


def _int_or(value, default: int) -> int:
  try:
    value = float(value)
  except (TypeError, ValueError):
    return default
  return default if math.isnan(value) else int(value)


def _report(value) -> str:
  if not isinstance(value, str):
    if value is None or (isinstance(value, float) and math.isnan(value)):
      raise wfdb_io.RecordError(EMPTY_REPORT)
    raise wfdb_io.RecordError(f"{UNDECODABLE_REPORT}: {type(value).__name__} {value!r}")
  text = value.strip()
  if not text:
    raise wfdb_io.RecordError(EMPTY_REPORT)
  if "\ufffd" in text:
    raise wfdb_io.RecordError(f"{UNDECODABLE_REPORT}: invalid UTF-8 bytes")
  return text


def _scp_codes(value) -> list:
  try:
    codes = ast.literal_eval(value) if isinstance(value, str) else None
  except (ValueError, SyntaxError) as e:
    raise wfdb_io.RecordError(f"undecodable scp_codes: {value!r}") from e
  if not isinstance(codes, dict):
    raise wfdb_io.RecordError(f"undecodable scp_codes: {value!r}")
  return list(codes)


def make_example(manual_dir: str, ecg_id: int, row: pd.Series, sample_rate: int,
                 encoder: LabelEncoder) -> dict:
  """One TFDS example for a database row; raises RecordError when the record is unusable."""
  report = _report(row["report"])
  labels = encoder.encode(_scp_codes(row["scp_codes"]))
  filename = str(row[_filename_column(sample_rate)]).strip()
  record = wfdb_io.read_wfdb(os.path.join(manual_dir, filename), expected_rate=sample_rate)
  num_samples = RECORD_SECONDS * sample_rate
  if record.signal.shape[1] != num_samples:
    raise wfdb_io.RecordError(f"unexpected signal length: {record.signal.shape[1]} samples "
                              f"(expected {num_samples})")
  signal = record.signal.astype(np.float16)
  if np.isinf(signal).any():
    raise wfdb_io.RecordError("signal overflows float16: |value| > 65504")
  # NaN when unknown; PTB-XL stores ages above 89 as 300 (anonymisation), kept as is.
  age = pd.to_numeric(row.get("age"), errors="coerce")
  return {
      "signal": signal,
      "sample_rate": np.int32(sample_rate),
      "unit": record.unit,
      "report": report,
      "ecg_id": np.int64(ecg_id),
      "patient_id": np.int64(_int_or(row.get("patient_id"), -1)),
      "age": np.float32(age),
      "sex": np.int32(_int_or(row.get("sex"), -1)),
      "fold": np.int32(_int_or(row.get("strat_fold"), -1)),
      "labels": labels,
  }


def generate_examples(manual_dir, split: str, sample_rate: int, skip_log: skips.SkipLog,
                      tables: Optional[PtbxlTables] = None) -> Iterator[tuple]:
  """Yields (ecg_id, example) for the database rows of `split`; logs the others to skip_log.

  Args:
    manual_dir: a folder in the PTB-XL layout (possibly a partial copy).
    split: 'train' (strat_fold 1-8), 'validation' (9) or 'test' (10).
    sample_rate: 100 or 500 (records100/ or records500/).
    skip_log: receives every row of the split that was left out, with its reason.
    tables: the already loaded CSV tables (loaded from manual_dir when None).
  """
  manual_dir = os.fspath(manual_dir)
  tables = tables or PtbxlTables.load(manual_dir)
  database = tables.database
  folds = pd.to_numeric(database["strat_fold"], errors="coerce")
  rows = database[folds.isin(SPLIT_FOLDS[split])].sort_index()
  column = _filename_column(sample_rate)
  for ecg_id, row in rows.iterrows():
    filename = str(row[column]).strip()
    path = os.path.join(manual_dir, filename)
    if not (os.path.exists(path + ".hea") or os.path.exists(path + ".dat")):
      skip_log.add(ecg_id, filename, RECORD_FILE_MISSING, split=split)
      continue
    try:
      example = make_example(manual_dir, int(ecg_id), row, sample_rate, tables.encoder)
    except wfdb_io.RecordError as e:
      skip_log.add(ecg_id, filename, e.reason, split=split)
      continue
    skip_log.count_used(split)
    yield int(ecg_id), example


class PtbxlConfig(tfds.core.BuilderConfig):
  """A PTB-XL sampling rate."""

  def __init__(self, *, sample_rate: int, **kwargs):
    super().__init__(**kwargs)
    self.sample_rate = sample_rate


class Ptbxl(tfds.core.GeneratorBasedBuilder):
  """PTB-XL 12-lead ECGs with reports and benchmark labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      PtbxlConfig(name="100hz", description="records100 (100 Hz, 1,000 samples)",
                  sample_rate=100),
      PtbxlConfig(name="500hz", description="records500 (500 Hz, 5,000 samples)",
                  sample_rate=500),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "100hz"
  # Label vector sizes (fixed by the schema); scp_statements.csv must agree.
  LABEL_SIZES = features.PTBXL_TASK_SIZES

  def _info(self) -> tfds.core.DatasetInfo:
    sample_rate = self.builder_config.sample_rate
    return self.dataset_info_from_configs(
        features=features.ecg_features(RECORD_SECONDS * sample_rate, self.LABEL_SIZES),
        supervised_keys=None,
        homepage=PHYSIONET_URL,
        citation=(
            "Wagner, P., Strodthoff, N., Bousseljot, R.-D., Kreiseler, D., Lunze, F.I., "
            "Samek, W., Schaeffter, T. (2020). PTB-XL, a large publicly available "
            "electrocardiography dataset. Scientific Data 7, 154."),
        metadata=tfds.core.MetadataDict(),
    )

  def validate_manual_dir(self, manual_dir) -> None:
    """Raises FileNotFoundError, saying what is expected where, for an unusable manual dir."""
    check_manual_dir(manual_dir, self.builder_config.sample_rate)

  def manual_dir_to_read(self, dl_manager) -> str:
    """The folder in the PTB-XL layout to read; subclasses (synthetic data) override it."""
    # The private attribute, because `dl_manager.manual_dir` raises TFDS's own, less
    # specific error for a missing folder.
    manual_dir = getattr(dl_manager, "_manual_dir", None)
    self.validate_manual_dir(manual_dir)
    return os.fspath(manual_dir)

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

  def _split_generators(self, dl_manager):
    sample_rate = self.builder_config.sample_rate
    manual_dir = self.manual_dir_to_read(dl_manager)
    tables = PtbxlTables.load(manual_dir)
    label_names = tables.encoder.label_names
    sizes = {task: len(names) for task, names in label_names.items()}
    if sizes != dict(self.LABEL_SIZES):
      raise ValueError(
          f"{os.path.join(manual_dir, STATEMENTS_CSV)} defines label sets of sizes {sizes}, "
          f"expected {dict(self.LABEL_SIZES)} (the PTB-XL scp_statements.csv)")
    self.info.metadata["label_names"] = label_names
    if not hasattr(self, "_skip_log"):
      self._skip_log = skips.SkipLog()
    log_unassigned_records(manual_dir, sample_rate, self._skip_log, tables)
    return {split: self._generate_examples(manual_dir, split, tables)
            for split in SPLIT_FOLDS}

  def _generate_examples(self, manual_dir, split, tables):
    yield from generate_examples(manual_dir, split, self.builder_config.sample_rate,
                                 self._skip_log, tables)
