"""PTB-XL examples from record files: the paired (report + labels) and the ECG-only records.

`generate_examples` yields the database rows of a split that have a readable record and a
usable report. The ECG-only records (`plan_ecg_only`) are the files on disk that the paired
configs leave out for lack of a usable report: files without a database row, their
`strat_fold` from a fold table (`records_index.csv`, else `labels_merl/*.csv`), and rows whose
report is empty or undecodable. Their label vectors are all zero because the labels are
unknown, not negative. Every record left out is logged with its reason to a `skips.SkipLog`.
"""

import dataclasses
import glob
import math
import os
from typing import Iterator, Optional

import numpy as np
import pandas as pd

from merit_jax.data import ptbxl_tables
from merit_jax.data import skips
from merit_jax.data import wfdb_io


def log_unassigned_records(manual_dir, sample_rate: int, skip_log: skips.SkipLog,
                           tables: Optional[ptbxl_tables.PtbxlTables] = None) -> None:
  """Logs record files without a database row, and rows that belong to no split."""
  manual_dir = os.fspath(manual_dir)
  tables = tables or ptbxl_tables.PtbxlTables.load(manual_dir)
  column = ptbxl_tables.filename_column(sample_rate)
  known = set(tables.database[column].dropna().astype(str).str.strip())
  for stem in sorted(ptbxl_tables.record_stems_on_disk(manual_dir, sample_rate) - known):
    skip_log.add(ptbxl_tables.int_or(os.path.basename(stem).split("_")[0], -1), stem,
                 ptbxl_tables.NO_ROW)
  folds = pd.to_numeric(tables.database["strat_fold"], errors="coerce")
  all_folds = {f for split_folds in ptbxl_tables.SPLIT_FOLDS.values() for f in split_folds}
  for ecg_id in tables.database.index[~folds.isin(all_folds)]:
    skip_log.add(ecg_id, tables.database.at[ecg_id, column],
                 f"invalid strat_fold: {tables.database.at[ecg_id, 'strat_fold']!r}")


def read_signal(manual_dir: str, filename: str, sample_rate: int) -> tuple:
  """(float16 signal (12, 10 s * rate), unit) of a record; raises RecordError when unusable."""
  record = wfdb_io.read_wfdb(os.path.join(manual_dir, filename), expected_rate=sample_rate)
  num_samples = ptbxl_tables.RECORD_SECONDS * sample_rate
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
                 encoder: ptbxl_tables.LabelEncoder) -> dict:
  """One TFDS example for a database row; raises RecordError when the record is unusable."""
  report = ptbxl_tables.report_text(row["report"])
  labels = encoder.encode(ptbxl_tables.scp_code_list(row["scp_codes"]))
  filename = str(row[ptbxl_tables.filename_column(sample_rate)]).strip()
  signal, unit = read_signal(manual_dir, filename, sample_rate)
  # NaN when unknown; PTB-XL stores ages above 89 as 300 (anonymisation), kept as is.
  age = pd.to_numeric(row.get("age"), errors="coerce")
  return _example(signal, unit, sample_rate, report=report, ecg_id=ecg_id,
                  patient_id=ptbxl_tables.int_or(row.get("patient_id"), -1), age=age,
                  sex=ptbxl_tables.int_or(row.get("sex"), -1),
                  fold=ptbxl_tables.int_or(row.get("strat_fold"), -1), labels=labels)


def generate_examples(manual_dir, split: str, sample_rate: int, skip_log: skips.SkipLog,
                      tables: Optional[ptbxl_tables.PtbxlTables] = None) -> Iterator[tuple]:
  """Yields (ecg_id, example) for the database rows of `split`; logs the others to skip_log.

  Args:
    manual_dir: a folder in the PTB-XL layout (possibly a partial copy).
    split: 'train' (strat_fold 1-8), 'validation' (9) or 'test' (10).
    sample_rate: 100 or 500 (records100/ or records500/).
    skip_log: receives every row of the split that was left out, with its reason.
    tables: the already loaded CSV tables (loaded from manual_dir when None).
  """
  manual_dir = os.fspath(manual_dir)
  tables = tables or ptbxl_tables.PtbxlTables.load(manual_dir)
  database = tables.database
  folds = pd.to_numeric(database["strat_fold"], errors="coerce")
  rows = database[folds.isin(ptbxl_tables.SPLIT_FOLDS[split])].sort_index()
  column = ptbxl_tables.filename_column(sample_rate)
  for ecg_id, row in rows.iterrows():
    filename = str(row[column]).strip()
    path = os.path.join(manual_dir, filename)
    if not (os.path.exists(path + ".hea") or os.path.exists(path + ".dat")):
      skip_log.add(ecg_id, filename, ptbxl_tables.RECORD_FILE_MISSING, split=split)
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
  index = os.path.join(manual_dir, ptbxl_tables.FOLD_TABLE_CSV)
  if os.path.isfile(index):
    return [index]
  merl_dir = os.path.join(manual_dir, ptbxl_tables.MERL_LABELS_DIR)
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
  if pd.isna(fold) or fold != int(fold) or int(fold) not in ptbxl_tables.SPLIT_OF_FOLD:
    raise wfdb_io.RecordError(f"{ptbxl_tables.NO_FOLD}: {value!r} in {where}")
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
      patient_ids = {int(k): ptbxl_tables.int_or(v, -1) for k, v in first.items()}
    index_csv = ptbxl_tables.FOLD_TABLE_CSV
    source = (index_csv if len(paths) == 1 and paths[0].endswith(index_csv)
              else f"{ptbxl_tables.MERL_LABELS_DIR}/*.csv")
    return cls(source=source,
               folds={int(k): (v[0] if len(v) == 1 else math.nan) for k, v in distinct.items()},
               patient_ids=patient_ids,
               conflicts={int(k): v for k, v in distinct.items() if len(v) > 1})

  def fold(self, ecg_id: int) -> int:
    """The record's strat_fold 1-10; raises RecordError when it has no usable one."""
    if ecg_id in self.conflicts:
      raise wfdb_io.RecordError(
          f"{ptbxl_tables.CONFLICTING_FOLDS}: {self.source} gives "
          f"{[int(f) for f in self.conflicts[ecg_id]]}")
    if ecg_id not in self.folds:
      raise wfdb_io.RecordError(f"{ptbxl_tables.NO_FOLD}: ecg_id not in {self.source}")
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
                  tables: Optional[ptbxl_tables.PtbxlTables] = None,
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
  tables = tables or ptbxl_tables.PtbxlTables.load(manual_dir)
  fold_table = fold_table or FoldTable.load(manual_dir)
  database = tables.database
  column = ptbxl_tables.filename_column(sample_rate)
  on_disk = ptbxl_tables.record_stems_on_disk(manual_dir, sample_rate)
  filenames = database[column].map(lambda f: str(f).strip() if isinstance(f, str) else None)
  records, num_reported = [], 0
  for ecg_id, row in database[filenames.isin(on_disk)].iterrows():
    try:
      ptbxl_tables.report_text(row["report"])
      num_reported += 1
      continue
    except wfdb_io.RecordError:
      pass
    try:
      fold = _valid_fold(row.get("strat_fold"), ptbxl_tables.DATABASE_CSV)
    except wfdb_io.RecordError as e:
      skip_log.add(ecg_id, filenames[ecg_id], e.reason)
      continue
    records.append(EcgOnlyRecord(
        int(ecg_id), filenames[ecg_id], fold,
        patient_id=ptbxl_tables.int_or(row.get("patient_id"), -1),
        age=float(pd.to_numeric(row.get("age"), errors="coerce")),
        sex=ptbxl_tables.int_or(row.get("sex"), -1)))
  seen = set()
  for stem in sorted(on_disk - set(filenames.dropna())):
    ecg_id = ptbxl_tables.int_or(os.path.basename(stem).split("_")[0], -1)
    if ecg_id < 0:
      skip_log.add(ecg_id, stem, ptbxl_tables.BAD_RECORD_NAME)
      continue
    if ecg_id in database.index:
      # Its row points to another file; taking this one could put the id in both configs.
      skip_log.add(ecg_id, stem,
                   f"{ptbxl_tables.ROW_UNDER_OTHER_NAME}: {database.at[ecg_id, column]!r}")
      continue
    if ecg_id in seen:
      skip_log.add(ecg_id, stem, f"{ptbxl_tables.DUPLICATE_ECG_ID}: another record file has it")
      continue
    seen.add(ecg_id)
    try:
      fold = fold_table.fold(ecg_id)
    except wfdb_io.RecordError as e:
      skip_log.add(ecg_id, stem, e.reason)
      continue
    records.append(EcgOnlyRecord(ecg_id, stem, fold,
                                 patient_id=fold_table.patient_ids.get(ecg_id, -1)))
  splits = {split: [] for split in ptbxl_tables.SPLIT_FOLDS}
  for record in sorted(records, key=lambda r: r.ecg_id):
    splits[ptbxl_tables.SPLIT_OF_FOLD[record.fold]].append(record)
  return splits, num_reported


def make_ecg_only_example(manual_dir: str, record: EcgOnlyRecord, sample_rate: int,
                          encoder: ptbxl_tables.LabelEncoder) -> dict:
  """One TFDS example without report or labels; raises RecordError when the signal is bad."""
  signal, unit = read_signal(manual_dir, record.filename, sample_rate)
  # All-zero vectors: the labels are unknown (not negative), see the module docstring.
  return _example(signal, unit, sample_rate, report="", ecg_id=record.ecg_id,
                  patient_id=record.patient_id, age=record.age, sex=record.sex,
                  fold=record.fold, labels=encoder.encode([]))


def generate_ecg_only_examples(manual_dir, split: str, sample_rate: int,
                               skip_log: skips.SkipLog, records: list,
                               encoder: ptbxl_tables.LabelEncoder) -> Iterator[tuple]:
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

