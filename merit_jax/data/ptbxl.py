"""PTB-XL as a TFDS dataset (configs `100hz`, `500hz`, `*_ecg_only`), with the benchmark's labels.

Reads the PhysioNet layout from the manual dir: `ptbxl_database.csv`, `scp_statements.csv` and
`records100/NNNNN/NNNNN_lr.{hea,dat}` / `records500/NNNNN/NNNNN_hr.{hea,dat}`. Partial downloads
are fine: only records that have both a database row and readable files become examples; every
other one is written with its reason to `skipped_records.csv` in the dataset's version folder.

Labels follow the PTB-XL benchmark (Strodthoff et al. 2020): every key of `scp_codes` counts,
whatever its likelihood, and is aggregated through `scp_statements.csv` into the tasks of
`features.PTBXL_TASKS`. The sorted label names of each task are stored in
`info.metadata['label_names'][task]`, in the column order of the `labels/<task>` vectors.

ECG-only configs (`100hz_ecg_only`, `500hz_ecg_only`) hold exactly the record files on disk
that the paired config leaves out for lack of a usable report: files without a database row
(their `strat_fold` from a fold table, `records_index.csv` or else `labels_merl/*.csv` in the
manual dir) and rows whose report is empty or undecodable (fold from the row). The two configs
never share a record (one with a report the paired config cannot use, e.g. for an unknown SCP
code, is in neither). Their `report` is "" and every label vector is all zero because the
labels are UNKNOWN, not negative: these builds are for self-supervised (masked-signal)
pretraining only and must never be used for evaluation. Records that do have a usable report
are not listed in their skip log, only counted in the printed summary.
"""

import ast
import dataclasses
import glob
import math
import os
from typing import Iterator, Optional

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from merit_jax.data import schema as features
from merit_jax.data import skips
from merit_jax.data import wfdb_io

PHYSIONET_URL = "https://physionet.org/content/ptb-xl/1.0.3/"
DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
RECORD_SECONDS = 10
# Benchmark splits by `strat_fold`.
SPLIT_FOLDS = {"train": tuple(range(1, 9)), "validation": (9,), "test": (10,)}
SPLIT_OF_FOLD = {fold: split for split, folds in SPLIT_FOLDS.items() for fold in folds}
# Reasons that tests and the summary rely on.
NO_ROW = "no row in ptbxl_database.csv"
RECORD_FILE_MISSING = "record file missing"
EMPTY_REPORT = "empty report"
UNDECODABLE_REPORT = "undecodable report"
UNKNOWN_SCP_CODE = "unknown SCP code"
# ECG-only configs: where the folds of record files without a database row come from.
FOLD_TABLE_CSV = "records_index.csv"
MERL_LABELS_DIR = "labels_merl"
NO_FOLD = "no usable strat_fold"
CONFLICTING_FOLDS = "conflicting strat_fold"
BAD_RECORD_NAME = "record file name without an ecg_id"
ROW_UNDER_OTHER_NAME = "ecg_id has a database row under another filename"
DUPLICATE_ECG_ID = "duplicate ecg_id"

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


def check_manual_dir(manual_dir, sample_rate: int, ecg_only: bool = False) -> None:
  """Fails at once, saying what was expected where, when `manual_dir` cannot be a PTB-XL copy.

  With `ecg_only`, the manual dir must also hold a fold table (see `find_fold_table`).
  """
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
  if ecg_only:
    find_fold_table(manual_dir)


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


def read_signal(manual_dir: str, filename: str, sample_rate: int) -> tuple:
  """(float16 signal (12, 10 s * rate), unit) of a record; raises RecordError when unusable."""
  record = wfdb_io.read_wfdb(os.path.join(manual_dir, filename), expected_rate=sample_rate)
  num_samples = RECORD_SECONDS * sample_rate
  if record.signal.shape[1] != num_samples:
    raise wfdb_io.RecordError(f"unexpected signal length: {record.signal.shape[1]} samples "
                              f"(expected {num_samples})")
  signal = record.signal.astype(np.float16)
  if np.isinf(signal).any():
    raise wfdb_io.RecordError("signal overflows float16: |value| > 65504")
  return signal, record.unit


def _example(signal, unit: str, sample_rate: int, *, report: str, ecg_id: int, patient_id: int,
             age: float, sex: int, fold: int, labels: dict) -> dict:
  return {
      "signal": signal,
      "sample_rate": np.int32(sample_rate),
      "unit": unit,
      "report": report,
      "ecg_id": np.int64(ecg_id),
      "patient_id": np.int64(patient_id),
      "age": np.float32(age),
      "sex": np.int32(sex),
      "fold": np.int32(fold),
      "labels": labels,
  }


def make_example(manual_dir: str, ecg_id: int, row: pd.Series, sample_rate: int,
                 encoder: LabelEncoder) -> dict:
  """One TFDS example for a database row; raises RecordError when the record is unusable."""
  report = _report(row["report"])
  labels = encoder.encode(_scp_codes(row["scp_codes"]))
  filename = str(row[_filename_column(sample_rate)]).strip()
  signal, unit = read_signal(manual_dir, filename, sample_rate)
  # NaN when unknown; PTB-XL stores ages above 89 as 300 (anonymisation), kept as is.
  age = pd.to_numeric(row.get("age"), errors="coerce")
  return _example(signal, unit, sample_rate, report=report, ecg_id=ecg_id,
                  patient_id=_int_or(row.get("patient_id"), -1), age=age,
                  sex=_int_or(row.get("sex"), -1), fold=_int_or(row.get("strat_fold"), -1),
                  labels=labels)


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


# ----------------------------------------------------------------------- ECG-only records


def find_fold_table(manual_dir) -> list:
  """The fold table files of a copy: [records_index.csv], else every labels_merl/*.csv.

  Raises:
    FileNotFoundError: saying what was expected where, when the copy has neither.
  """
  manual_dir = os.fspath(manual_dir)
  index = os.path.join(manual_dir, FOLD_TABLE_CSV)
  if os.path.isfile(index):
    return [index]
  merl_dir = os.path.join(manual_dir, MERL_LABELS_DIR)
  merl = sorted(glob.glob(os.path.join(merl_dir, "*.csv")))
  if merl:
    return merl
  raise FileNotFoundError(
      f"The PTB-XL ECG-only configs take the strat_fold of record files without a database "
      f"row from a fold table, but {manual_dir!r} has none: expected {index} (columns ecg_id, "
      f"strat_fold) or MERL's label splits {merl_dir}/ptbxl_*_{{train,val,test}}.csv (columns "
      f"ecg_id, strat_fold).")


def _valid_fold(value, where: str) -> int:
  """`value` as a strat_fold 1-10; raises RecordError (NO_FOLD) otherwise."""
  fold = pd.to_numeric(value, errors="coerce")
  if pd.isna(fold) or fold != int(fold) or int(fold) not in SPLIT_OF_FOLD:
    raise wfdb_io.RecordError(f"{NO_FOLD}: {value!r} in {where}")
  return int(fold)


@dataclasses.dataclass
class FoldTable:
  """ecg_id -> strat_fold (and patient_id where the table has it), for ECG-only records."""
  source: str         # what it was read from, named in skip reasons
  folds: dict         # ecg_id -> strat_fold as read (NaN when missing)
  patient_ids: dict   # ecg_id -> patient_id; empty when the table has no such column
  conflicts: dict     # ecg_id -> the different folds that several files give it

  @classmethod
  def load(cls, manual_dir) -> "FoldTable":
    manual_dir = os.fspath(manual_dir)
    paths = find_fold_table(manual_dir)
    frames = []
    for path in paths:
      table = pd.read_csv(path)
      missing = [c for c in ("ecg_id", "strat_fold") if c not in table.columns]
      if missing:
        raise ValueError(f"Fold table {path} lacks columns {missing} (needs ecg_id and "
                         f"strat_fold)")
      frames.append(table[[c for c in ("ecg_id", "strat_fold", "patient_id")
                           if c in table.columns]])
    table = pd.concat(frames, ignore_index=True)
    table["ecg_id"] = pd.to_numeric(table["ecg_id"], errors="coerce")
    table = table[table["ecg_id"].notna()].astype({"ecg_id": np.int64})
    table["strat_fold"] = pd.to_numeric(table["strat_fold"], errors="coerce")
    by_id = table.groupby("ecg_id")
    # The MERL files list a record once per task it has labels for; a missing (NaN) fold in
    # one of them is no disagreement, two different folds are.
    distinct = by_id["strat_fold"].agg(lambda f: tuple(sorted(set(f.dropna()))))
    patient_ids = {}
    if "patient_id" in table.columns:
      first = by_id["patient_id"].first()  # first non-NaN
      patient_ids = {int(k): _int_or(v, -1) for k, v in first.items()}
    source = (FOLD_TABLE_CSV if len(paths) == 1 and paths[0].endswith(FOLD_TABLE_CSV)
              else f"{MERL_LABELS_DIR}/*.csv")
    return cls(source=source,
               folds={int(k): (v[0] if len(v) == 1 else math.nan) for k, v in distinct.items()},
               patient_ids=patient_ids,
               conflicts={int(k): v for k, v in distinct.items() if len(v) > 1})

  def fold(self, ecg_id: int) -> int:
    """The record's strat_fold 1-10; raises RecordError when it has no usable one."""
    if ecg_id in self.conflicts:
      raise wfdb_io.RecordError(
          f"{CONFLICTING_FOLDS}: {self.source} gives {[int(f) for f in self.conflicts[ecg_id]]}")
    if ecg_id not in self.folds:
      raise wfdb_io.RecordError(f"{NO_FOLD}: ecg_id not in {self.source}")
    return _valid_fold(self.folds[ecg_id], self.source)


@dataclasses.dataclass(frozen=True)
class EcgOnlyRecord:
  """A record file of an ECG-only build and what is known about it."""
  ecg_id: int
  filename: str       # relative to the manual dir, without extension
  fold: int
  patient_id: int = -1
  age: float = math.nan
  sex: int = -1


def plan_ecg_only(manual_dir, sample_rate: int, skip_log: skips.SkipLog,
                  tables: Optional[PtbxlTables] = None,
                  fold_table: Optional[FoldTable] = None) -> tuple:
  """Finds the records of an ECG-only build and their splits; logs those without a fold.

  The records are the files on disk that the paired config leaves out for lack of a usable
  report: files without a database row (fold from `fold_table`) and rows whose report is
  empty or undecodable (fold, patient_id, age and sex from the row).

  Returns:
    ({split: [EcgOnlyRecord] sorted by ecg_id}, number of files on disk left out because they
    have a usable report, i.e. belong to the paired config; these are not logged).
  """
  manual_dir = os.fspath(manual_dir)
  tables = tables or PtbxlTables.load(manual_dir)
  fold_table = fold_table or FoldTable.load(manual_dir)
  database = tables.database
  column = _filename_column(sample_rate)
  on_disk = _record_stems_on_disk(manual_dir, sample_rate)
  filenames = database[column].map(lambda f: str(f).strip() if isinstance(f, str) else None)
  records, num_reported = [], 0
  for ecg_id, row in database[filenames.isin(on_disk)].iterrows():
    try:
      _report(row["report"])
      num_reported += 1
      continue
    except wfdb_io.RecordError:
      pass
    try:
      fold = _valid_fold(row.get("strat_fold"), DATABASE_CSV)
    except wfdb_io.RecordError as e:
      skip_log.add(ecg_id, filenames[ecg_id], e.reason)
      continue
    records.append(EcgOnlyRecord(
        int(ecg_id), filenames[ecg_id], fold, patient_id=_int_or(row.get("patient_id"), -1),
        age=float(pd.to_numeric(row.get("age"), errors="coerce")),
        sex=_int_or(row.get("sex"), -1)))
  seen = set()
  for stem in sorted(on_disk - set(filenames.dropna())):
    ecg_id = _int_or(os.path.basename(stem).split("_")[0], -1)
    if ecg_id < 0:
      skip_log.add(ecg_id, stem, BAD_RECORD_NAME)
      continue
    if ecg_id in database.index:
      # Its row points to another file; taking this one could put the id in both configs.
      skip_log.add(ecg_id, stem, f"{ROW_UNDER_OTHER_NAME}: {database.at[ecg_id, column]!r}")
      continue
    if ecg_id in seen:
      skip_log.add(ecg_id, stem, f"{DUPLICATE_ECG_ID}: another record file has it")
      continue
    seen.add(ecg_id)
    try:
      fold = fold_table.fold(ecg_id)
    except wfdb_io.RecordError as e:
      skip_log.add(ecg_id, stem, e.reason)
      continue
    records.append(EcgOnlyRecord(ecg_id, stem, fold,
                                 patient_id=fold_table.patient_ids.get(ecg_id, -1)))
  splits = {split: [] for split in SPLIT_FOLDS}
  for record in sorted(records, key=lambda r: r.ecg_id):
    splits[SPLIT_OF_FOLD[record.fold]].append(record)
  return splits, num_reported


def make_ecg_only_example(manual_dir: str, record: EcgOnlyRecord, sample_rate: int,
                          encoder: LabelEncoder) -> dict:
  """One TFDS example without report or labels; raises RecordError when the signal is bad."""
  signal, unit = read_signal(manual_dir, record.filename, sample_rate)
  # All-zero vectors: the labels are unknown (not negative), see the module docstring.
  return _example(signal, unit, sample_rate, report="", ecg_id=record.ecg_id,
                  patient_id=record.patient_id, age=record.age, sex=record.sex,
                  fold=record.fold, labels=encoder.encode([]))


def generate_ecg_only_examples(manual_dir, split: str, sample_rate: int,
                               skip_log: skips.SkipLog, records: list,
                               encoder: LabelEncoder) -> Iterator[tuple]:
  """Yields (ecg_id, example) for `records` (of `plan_ecg_only`); logs unreadable ones."""
  manual_dir = os.fspath(manual_dir)
  for record in records:
    try:
      example = make_ecg_only_example(manual_dir, record, sample_rate, encoder)
    except wfdb_io.RecordError as e:
      skip_log.add(record.ecg_id, record.filename, e.reason, split=split)
      continue
    skip_log.count_used(split)
    yield record.ecg_id, example


class PtbxlConfig(tfds.core.BuilderConfig):
  """A PTB-XL sampling rate; `ecg_only` for the records without a usable report."""

  def __init__(self, *, sample_rate: int, ecg_only: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.sample_rate = sample_rate
    self.ecg_only = ecg_only


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
      PtbxlConfig(name="100hz_ecg_only", sample_rate=100, ecg_only=True,
                  description="records100 files without a usable report (no row, or an "
                  "empty/undecodable one); empty reports, all-zero (unknown) labels: "
                  "self-supervised pretraining only, never evaluation"),
      PtbxlConfig(name="500hz_ecg_only", sample_rate=500, ecg_only=True,
                  description="records500 files without a usable report (no row, or an "
                  "empty/undecodable one); empty reports, all-zero (unknown) labels: "
                  "self-supervised pretraining only, never evaluation"),
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
    check_manual_dir(manual_dir, self.builder_config.sample_rate, self._ecg_only)

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
    if self._ecg_only:
      print(f"  {getattr(self, '_num_reported', 0):6d}  not listed: have a usable report (in "
            f"the paired config)", flush=True)

  @property
  def _ecg_only(self) -> bool:
    # Subclasses' configs (synthetic_ecg) may predate the attribute.
    return bool(getattr(self.builder_config, "ecg_only", False))

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
    if self._ecg_only:
      fold_table = FoldTable.load(manual_dir)
      self.info.metadata["ecg_only"] = True
      self.info.metadata["labels_known"] = False
      self.info.metadata["fold_table"] = fold_table.source
      plan, self._num_reported = plan_ecg_only(manual_dir, sample_rate, self._skip_log,
                                               tables, fold_table)
      # TFDS fails on a split without examples, and a partial copy can easily have no
      # ECG-only record of fold 9 or 10: such splits are left out of the build.
      empty = [split for split in SPLIT_FOLDS if not plan[split]]
      if len(empty) == len(SPLIT_FOLDS):
        raise ValueError(
            f"{self.name}/{self.builder_config.name} would be empty: of the "
            f"{_records_dir_name(sample_rate)} files in {manual_dir!r}, "
            f"{self._num_reported} have a usable report (they belong to the paired config) "
            f"and {len(self._skip_log)} others have no usable fold in {fold_table.source} "
            f"or {DATABASE_CSV}")
      if empty:
        print(f"{self.name}/{self.builder_config.name}: no ECG-only records for split(s) "
              f"{empty}; built without them", flush=True)
      return {split: self._generate_ecg_only(manual_dir, split, plan[split], tables)
              for split in SPLIT_FOLDS if plan[split]}
    log_unassigned_records(manual_dir, sample_rate, self._skip_log, tables)
    return {split: self._generate_examples(manual_dir, split, tables)
            for split in SPLIT_FOLDS}

  def _generate_examples(self, manual_dir, split, tables):
    yield from generate_examples(manual_dir, split, self.builder_config.sample_rate,
                                 self._skip_log, tables)

  def _generate_ecg_only(self, manual_dir, split, records, tables):
    yield from generate_ecg_only_examples(manual_dir, split, self.builder_config.sample_rate,
                                          self._skip_log, records, tables.encoder)
