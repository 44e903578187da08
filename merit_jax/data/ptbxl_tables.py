"""PTB-XL's files and tables: the PhysioNet layout, `scp_statements.csv` -> labels, row fields.

Everything here reads the two CSV tables and names the record files; reading signals and making
examples is `ptbxl_records`, the TFDS builder `ptbxl`. Labels follow the PTB-XL benchmark
(Strodthoff et al. 2020): every key of `scp_codes` counts, whatever its likelihood, and is
aggregated through `scp_statements.csv` into the tasks of `schema.PTBXL_TASKS`.
"""

import ast
import dataclasses
import math
import os

import numpy as np
import pandas as pd

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


def records_dir_name(sample_rate: int) -> str:
  return f"records{int(sample_rate)}"


def filename_column(sample_rate: int) -> str:
  return "filename_lr" if int(sample_rate) == 100 else "filename_hr"


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


def record_stems_on_disk(manual_dir: str, sample_rate: int) -> set:
  """Relative paths without extension (e.g. 'records100/00000/00001_lr') of files on disk."""
  root = os.path.join(manual_dir, records_dir_name(sample_rate))
  stems = set()
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      base, ext = os.path.splitext(name)
      if ext in (".hea", ".dat"):
        rel = os.path.relpath(os.path.join(dirpath, base), manual_dir)
        stems.add(rel.replace(os.sep, "/"))
  return stems


def int_or(value, default: int) -> int:
  """`value` as an int, or `default` when it is missing or not a number."""
  try:
    value = float(value)
  except (TypeError, ValueError):
    return default
  return default if math.isnan(value) else int(value)


def report_text(value) -> str:
  """The stripped report of a row; raises RecordError when it is empty or undecodable."""
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


def scp_code_list(value) -> list:
  """The SCP codes (keys) of a row's `scp_codes` dict literal; raises RecordError if bad."""
  try:
    codes = ast.literal_eval(value) if isinstance(value, str) else None
  except (ValueError, SyntaxError) as e:
    raise wfdb_io.RecordError(f"undecodable scp_codes: {value!r}") from e
  if not isinstance(codes, dict):
    raise wfdb_io.RecordError(f"undecodable scp_codes: {value!r}")
  return list(codes)

