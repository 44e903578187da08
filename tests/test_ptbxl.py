"""Tests for the PTB-XL builder: real builds (counts, signals, labels) and every bad-input case.

The real builds (100 Hz, 500 Hz, the NU-unit derived copy) run once per module; bad inputs are
tried on a small copy of real records in tmp_path, corrupted one record per case.
"""

import ast
import csv
import os
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds
import wfdb

from merit_jax.data import schema as features
from merit_jax.data import ptbxl
from merit_jax.data import ptbxl_records
from merit_jax.data import ptbxl_tables
from merit_jax.data import skips
from merit_jax.data import wfdb_io

SPLITS = ("train", "validation", "test")
SPLIT_OF_FOLD = {**{f: "train" for f in range(1, 9)}, 9: "validation", 10: "test"}


def build_ptbxl(manual_dir, data_dir, config="100hz"):
  builder = ptbxl.Ptbxl(config=config, data_dir=str(data_dir))
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def read_split(builder, split):
  """All examples of a split as a dict ecg_id -> example."""
  source = builder.as_data_source(split)
  return {int(ex["ecg_id"]): ex for ex in (source[i] for i in range(len(source)))}


def read_skips(builder):
  with open(os.path.join(builder.data_dir, skips.SKIPPED_RECORDS_CSV), newline="") as f:
    return list(csv.DictReader(f))


def expected_records(manual_dir, sample_rate):
  """What a build must contain, computed from the files and the database, not the builder."""
  manual_dir = pathlib.Path(manual_dir)
  column = "filename_lr" if sample_rate == 100 else "filename_hr"
  on_disk = {str(p.relative_to(manual_dir).with_suffix(""))
             for p in (manual_dir / f"records{sample_rate}").rglob("*.hea")}
  db = pd.read_csv(manual_dir / "ptbxl_database.csv", index_col="ecg_id")
  has_file = db[column].isin(on_disk)
  has_report = db["report"].fillna("").astype(str).str.strip() != ""
  used = db[has_file & has_report]
  return {
      "on_disk": on_disk,
      "with_row": on_disk & set(db[column]),
      "used": {split: set(used.index[used["strat_fold"].map(SPLIT_OF_FOLD) == split])
               for split in SPLITS},
      "no_row": on_disk - set(db[column]),
      "rows_without_file": int((~has_file).sum()),
      "empty_report": int((has_file & ~has_report).sum()),
  }


@pytest.fixture(scope="module")
def real_builds(ptbxl_dir, ptbxl_derived_dir, tmp_path_factory):
  """Builds raw 100 Hz, raw 500 Hz and derived (NU) 100 Hz once; records build times."""
  import time  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("real_ptbxl")
  out = {}
  for key, manual_dir, config in (("raw100", ptbxl_dir, "100hz"), ("raw500", ptbxl_dir, "500hz"),
                                  ("derived100", ptbxl_derived_dir, "100hz")):
    start = time.time()
    builder = build_ptbxl(manual_dir, root / key, config)
    print(f"built {key}: {builder.info.splits} in {time.time() - start:.1f} s")
    out[key] = (builder, manual_dir, int(config[:3]))
  return out


def test_label_names_match_benchmark_sizes(ptbxl_dir):
  names = ptbxl_tables.ptbxl_label_names(ptbxl_dir / "scp_statements.csv")
  assert {task: len(v) for task, v in names.items()} == features.PTBXL_TASK_SIZES
  assert set(names) == set(features.PTBXL_TASKS)
  assert names["superdiagnostic"] == ["CD", "HYP", "MI", "NORM", "STTC"]
  for task_names in names.values():
    assert task_names == sorted(task_names)


@pytest.mark.parametrize("key", ["raw100", "raw500", "derived100"])
def test_record_counts_and_skip_log(real_builds, key):
  builder, manual_dir, rate = real_builds[key]
  expected = expected_records(manual_dir, rate)
  for split in SPLITS:
    assert builder.info.splits[split].num_examples == len(expected["used"][split])
    assert set(read_split(builder, split)) == expected["used"][split]
  reasons = [skips.SkipLog.reason_category(r["reason"]) for r in read_skips(builder)]
  assert reasons.count(ptbxl_tables.NO_ROW) == len(expected["no_row"])
  assert reasons.count(ptbxl_tables.RECORD_FILE_MISSING) == expected["rows_without_file"]
  assert reasons.count(ptbxl_tables.EMPTY_REPORT) == expected["empty_report"]
  assert len(reasons) == (len(expected["no_row"]) + expected["rows_without_file"]
                          + expected["empty_report"])
  # Every record file on disk is either in the dataset or in the skip log.
  used = sum(len(v) for v in expected["used"].values())
  assert used + len(expected["no_row"]) + expected["empty_report"] == len(expected["on_disk"])


@pytest.mark.parametrize("key, unit", [("raw100", "mV"), ("raw500", "mV"), ("derived100", "NU")])
def test_signal_equals_rdsamp(real_builds, key, unit):
  builder, manual_dir, rate = real_builds[key]
  examples = read_split(builder, "test")
  db = pd.read_csv(pathlib.Path(manual_dir) / "ptbxl_database.csv", index_col="ecg_id")
  column = "filename_lr" if rate == 100 else "filename_hr"
  for ecg_id in sorted(examples)[:5]:
    ex = examples[ecg_id]
    expected, fields = wfdb.rdsamp(str(pathlib.Path(manual_dir) / db.at[ecg_id, column]))
    assert [n.lower() for n in fields["sig_name"]] == [l.lower() for l in wfdb_io.STANDARD_LEADS]
    assert ex["signal"].dtype == np.float16 and ex["signal"].shape == (12, 10 * rate)
    np.testing.assert_array_equal(ex["signal"], expected.T.astype(np.float16))
    assert ex["unit"] == unit.encode() or ex["unit"] == unit
    assert int(ex["sample_rate"]) == rate
    assert SPLIT_OF_FOLD[int(ex["fold"])] == "test"
    report = ex["report"].decode() if isinstance(ex["report"], bytes) else ex["report"]
    assert report == db.at[ecg_id, "report"].strip()
    assert int(ex["patient_id"]) == int(db.at[ecg_id, "patient_id"])
    assert int(ex["sex"]) == int(db.at[ecg_id, "sex"])


MERL_TASKS = {"super_class": "superdiagnostic", "sub_class": "subdiagnostic",
              "form": "form", "rhythm": "rhythm"}
MERL_SPLITS = {"train": "train", "val": "validation", "test": "test"}


@pytest.mark.parametrize("key", ["raw100", "derived100"])
def test_labels_equal_merl_benchmark_files(real_builds, ptbxl_dir, key):
  builder, _, _ = real_builds[key]
  label_names = tfds.builder_from_directory(builder.data_dir).info.metadata["label_names"]
  assert {t: len(v) for t, v in label_names.items()} == features.PTBXL_TASK_SIZES
  compared = 0
  for merl_split, split in MERL_SPLITS.items():
    examples = read_split(builder, split)
    for merl_task, task in MERL_TASKS.items():
      merl = pd.read_csv(ptbxl_dir / "labels_merl" / f"ptbxl_{merl_task}_{merl_split}.csv",
                         index_col="ecg_id")
      # MERL drops trailing/leading underscores of SCP codes ('ISC_' -> 'ISC').
      columns = [name.strip("_") for name in label_names[task]]
      assert set(columns) <= set(merl.columns), (task, set(columns) - set(merl.columns))
      for ecg_id, ex in examples.items():
        ours = np.asarray(ex["labels"][task])
        if ecg_id in merl.index:
          np.testing.assert_array_equal(ours, merl.loc[ecg_id, columns].to_numpy(np.uint8),
                                        err_msg=f"{task} ecg_id {ecg_id}")
          compared += 1
        else:  # MERL leaves records without any label of the task out of its files.
          assert ours.sum() == 0, (task, ecg_id)
  assert compared > 1000


def test_all_labels_are_scp_codes(real_builds, ptbxl_dir):
  builder, manual_dir, _ = real_builds["raw100"]
  names = builder.info.metadata["label_names"]["all"]
  db = pd.read_csv(pathlib.Path(manual_dir) / "ptbxl_database.csv", index_col="ecg_id")
  for ecg_id, ex in list(read_split(builder, "validation").items())[:20]:
    codes = set(ast.literal_eval(db.at[ecg_id, "scp_codes"]))
    assert {names[i] for i in np.flatnonzero(ex["labels"]["all"])} == codes


# ------------------------------------------------------------------ bad inputs on a small copy

# Record (by position among the chosen training records) -> corruption and expected reason.
CORRUPTIONS = {
    "truncated_dat": "truncated signal file",
    "missing_hea": "missing header file",
    "nan_record": "all-NaN signal",
    "wrong_lead_count": "wrong lead count",
    "unexpected_rate": "unexpected sampling rate",
    "empty_report": ptbxl_tables.EMPTY_REPORT,
    "unknown_scp_code": ptbxl_tables.UNKNOWN_SCP_CODE,
    "undecodable_report": ptbxl_tables.UNDECODABLE_REPORT,
    "row_without_file": ptbxl_tables.RECORD_FILE_MISSING,
    "file_without_row": ptbxl_tables.NO_ROW,
}
UNDECODABLE_MARKER = "UNDECODABLE_REPORT_MARKER"


def make_small_copy(src_dir, dst_dir, num_good=(4, 2, 2), num_extra=0):
  """Copies real records + a trimmed database into dst_dir (PTB-XL layout).

  Returns (good ids per split, extra training ids for corruptions).
  """
  src_dir, dst_dir = pathlib.Path(src_dir), pathlib.Path(dst_dir)
  db = pd.read_csv(src_dir / "ptbxl_database.csv", index_col="ecg_id")
  db = db[db["filename_lr"].map(lambda f: (src_dir / (f + ".hea")).exists())]
  db = db[db["report"].fillna("").str.strip() != ""]
  split = db["strat_fold"].map(SPLIT_OF_FOLD)
  good = {s: list(db.index[split == s][:n]) for s, n in zip(SPLITS, num_good)}
  extra = list(db.index[split == "train"][num_good[0]:num_good[0] + num_extra])
  chosen = db.loc[sorted(sum(good.values(), []) + extra)]
  for f in chosen["filename_lr"]:
    (dst_dir / f).parent.mkdir(parents=True, exist_ok=True)
    for ext in (".hea", ".dat"):
      shutil.copy(src_dir / (f + ext), dst_dir / (f + ext))
  chosen.to_csv(dst_dir / "ptbxl_database.csv")
  shutil.copy(src_dir / "scp_statements.csv", dst_dir / "scp_statements.csv")
  return good, extra


def _rewrite_record(path, signal, names=wfdb_io.STANDARD_LEADS, fs=100):
  wfdb.wrsamp(path.name, fs=fs, units=["mV"] * len(names), sig_name=list(names),
              p_signal=signal, fmt=["16"] * len(names), adc_gain=[1000.0] * len(names),
              baseline=[0] * len(names), write_dir=str(path.parent))


def corrupt_copy(copy_dir, ids):
  """Applies CORRUPTIONS to the given training ids (one each); returns {case: ecg_id}."""
  copy_dir = pathlib.Path(copy_dir)
  db = pd.read_csv(copy_dir / "ptbxl_database.csv", index_col="ecg_id")
  cases = dict(zip(CORRUPTIONS, ids))
  record = {case: copy_dir / db.at[ecg_id, "filename_lr"] for case, ecg_id in cases.items()}
  dat = record["truncated_dat"].with_suffix(".dat")
  dat.write_bytes(dat.read_bytes()[:len(dat.read_bytes()) // 2])
  record["missing_hea"].with_suffix(".hea").unlink()
  _rewrite_record(record["nan_record"], np.full((1000, 12), np.nan))
  _rewrite_record(record["wrong_lead_count"], np.zeros((1000, 11)),
                  names=wfdb_io.STANDARD_LEADS[:11])
  hea = record["unexpected_rate"].with_suffix(".hea")
  lines = hea.read_text().splitlines()
  lines[0] = lines[0].replace(" 100 1000", " 250 1000")
  hea.write_text("\n".join(lines) + "\n")
  db.at[cases["empty_report"], "report"] = ""
  db.at[cases["unknown_scp_code"], "scp_codes"] = "{'NORM': 100.0, 'NOT_A_CODE': 0.0}"
  db.at[cases["undecodable_report"], "report"] = UNDECODABLE_MARKER
  for ext in (".hea", ".dat"):
    record["row_without_file"].with_suffix(ext).unlink()
  db = db.drop(index=cases["file_without_row"])
  db.to_csv(copy_dir / "ptbxl_database.csv")
  raw = (copy_dir / "ptbxl_database.csv").read_bytes()
  (copy_dir / "ptbxl_database.csv").write_bytes(
      raw.replace(UNDECODABLE_MARKER.encode(), b"sinus \xff\xfe rhythm"))
  return cases


@pytest.fixture(scope="module")
def corrupted_build(ptbxl_dir, tmp_path_factory):
  copy_dir = tmp_path_factory.mktemp("corrupted_copy")
  good, extra = make_small_copy(ptbxl_dir, copy_dir, num_extra=len(CORRUPTIONS))
  cases = corrupt_copy(copy_dir, extra)
  builder = build_ptbxl(copy_dir, tmp_path_factory.mktemp("corrupted_tfds"))
  return builder, good, cases


def test_good_records_survive_corrupted_neighbours(corrupted_build):
  builder, good, _ = corrupted_build
  for split in SPLITS:
    assert set(read_split(builder, split)) == set(good[split])


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_bad_record_is_skipped_with_reason(corrupted_build, case):
  builder, _, cases = corrupted_build
  ecg_id = cases[case]
  rows = [r for r in read_skips(builder) if int(r["record_id"]) == ecg_id]
  assert len(rows) == 1, rows
  assert rows[0]["reason"].startswith(CORRUPTIONS[case]), rows[0]
  assert ecg_id not in read_split(builder, "train")


def test_missing_or_wrong_manual_dir_fails_at_once(ptbxl_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist.*ptbxl_database.csv") as info:
    build_ptbxl(tmp_path / "nowhere", tmp_path / "tfds")
  assert "physionet.org" in str(info.value)
  assert "merit_jax.data.download" in str(info.value)
  partial = tmp_path / "partial"
  partial.mkdir()
  shutil.copy(ptbxl_dir / "scp_statements.csv", partial)
  with pytest.raises(FileNotFoundError, match=r"lacks \['ptbxl_database.csv', 'records100'\]"):
    build_ptbxl(partial, tmp_path / "tfds")
  (partial / "records100").mkdir()
  shutil.copy(ptbxl_dir / "ptbxl_database.csv", partial)
  with pytest.raises(FileNotFoundError, match="records500"):
    build_ptbxl(partial, tmp_path / "tfds", config="500hz")
  assert not list((tmp_path / "tfds").rglob("dataset_info.json"))


def test_interrupted_build_is_not_taken_for_complete(ptbxl_dir, tmp_path, monkeypatch):
  copy_dir = tmp_path / "copy"
  good, _ = make_small_copy(ptbxl_dir, copy_dir)
  data_dir = tmp_path / "tfds"
  real_read = wfdb_io.read_wfdb
  calls = []

  def read_then_fail(*args, **kwargs):
    calls.append(1)
    if len(calls) > 3:
      raise RuntimeError("simulated interruption")
    return real_read(*args, **kwargs)

  monkeypatch.setattr(wfdb_io, "read_wfdb", read_then_fail)
  with pytest.raises(RuntimeError, match="simulated interruption"):
    build_ptbxl(copy_dir, data_dir)
  monkeypatch.setattr(wfdb_io, "read_wfdb", real_read)
  version_dir = data_dir / "ptbxl" / "100hz" / "1.0.0"
  assert not version_dir.exists()
  assert not ptbxl.Ptbxl(config="100hz", data_dir=str(data_dir)).is_prepared()
  # A killed process leaves TFDS's incomplete folder behind; it must be ignored.
  leftover = data_dir / "ptbxl" / "100hz" / "incomplete.KILLED_1.0.0"
  leftover.mkdir(parents=True)
  (leftover / "ptbxl-train.array_record-00000-of-00001").write_bytes(b"partial")
  builder = build_ptbxl(copy_dir, data_dir)
  assert pathlib.Path(builder.data_dir) == version_dir
  for split in SPLITS:
    assert set(read_split(builder, split)) == set(good[split])
  assert (version_dir / skips.SKIPPED_RECORDS_CSV).exists()


def test_generate_examples_function_reuses_the_reader(ptbxl_dir, tmp_path):
  """The module-level generator (used by the synthetic builder) works without TFDS."""
  good, _ = make_small_copy(ptbxl_dir, tmp_path, num_good=(2, 1, 1))
  log = skips.SkipLog()
  keys = [k for k, _ in ptbxl_records.generate_examples(tmp_path, "train", 100, log)]
  assert keys == sorted(good["train"])
  assert log.num_used == 2 and len(log) == 0


def test_skip_log_writes_atomically(tmp_path, capsys):
  log = skips.SkipLog()
  log.add(3, "records100/00000/00003_lr", "truncated signal file: 10 bytes", split="train")
  log.add(4, "records100/00000/00004_lr", "truncated signal file: 20 bytes", split="train")
  log.add(5, "", ptbxl_tables.NO_ROW)
  log.count_used("train", 7)
  path = log.write(tmp_path)
  assert sorted(os.listdir(tmp_path)) == [skips.SKIPPED_RECORDS_CSV]
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["record_id"] for r in rows] == ["5", "3", "4"]
  log.print_summary("ptbxl/100hz")
  out = capsys.readouterr().out
  assert "7 records used" in out and "3 left out" in out
  assert "2  truncated signal file" in out


# ------------------------------------------------------------------ ECG-only configs

# Extra training records of the small copy (by position) -> what the ECG-only test does to them.
ECG_ONLY_CASES = ("no_row_val", "no_row_test", "no_row_nan_fold", "no_row_not_in_table",
                  "no_row_truncated", "empty_report", "undecodable_report")
# Folds the fold table gives the row-less records (None: no fold; absent: not in the table).
TABLE_FOLDS = {"no_row_val": 9, "no_row_test": 10, "no_row_nan_fold": None,
               "no_row_truncated": 2}


def make_ecg_only_copy(src_dir, dst_dir):
  """A small copy with row-less files, empty/undecodable reports and a records_index.csv.

  Returns (good ids per split, {case: ecg_id}, the database rows removed).
  """
  dst_dir = pathlib.Path(dst_dir)
  good, extra = make_small_copy(src_dir, dst_dir, num_good=(3, 1, 1),
                                num_extra=len(ECG_ONLY_CASES))
  cases = dict(zip(ECG_ONLY_CASES, extra))
  db = pd.read_csv(dst_dir / "ptbxl_database.csv", index_col="ecg_id")
  removed = db.loc[[i for c, i in cases.items() if c.startswith("no_row")]]
  dat = dst_dir / (db.at[cases["no_row_truncated"], "filename_lr"] + ".dat")
  dat.write_bytes(dat.read_bytes()[:100])
  db.at[cases["empty_report"], "report"] = "  "
  db.at[cases["undecodable_report"], "report"] = UNDECODABLE_MARKER
  db.drop(index=removed.index).to_csv(dst_dir / "ptbxl_database.csv")
  raw = (dst_dir / "ptbxl_database.csv").read_bytes()
  (dst_dir / "ptbxl_database.csv").write_bytes(
      raw.replace(UNDECODABLE_MARKER.encode(), b"sinus \xff\xfe rhythm"))
  # The table covers every record but one; reported records get their real folds.
  table = db.loc[[i for i in db.index if i != cases["no_row_not_in_table"]],
                 ["filename_lr", "strat_fold"]].copy()
  for case, fold in TABLE_FOLDS.items():
    table.at[cases[case], "strat_fold"] = np.nan if fold is None else fold
  table.reset_index().to_csv(dst_dir / ptbxl_tables.FOLD_TABLE_CSV, index=False)
  return good, cases, removed


@pytest.fixture(scope="module")
def ecg_only_builds(ptbxl_dir, tmp_path_factory):
  """The paired 100hz and the 100hz_ecg_only build of one small copy."""
  copy_dir = tmp_path_factory.mktemp("ecg_only_copy")
  good, cases, removed = make_ecg_only_copy(ptbxl_dir, copy_dir)
  data_dir = tmp_path_factory.mktemp("ecg_only_tfds")
  paired = build_ptbxl(copy_dir, data_dir, "100hz")
  ecg_only = build_ptbxl(copy_dir, data_dir, "100hz_ecg_only")
  return paired, ecg_only, copy_dir, good, cases, removed


def _text(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def test_ecg_only_holds_exactly_the_records_without_report(ecg_only_builds):
  paired, ecg_only, copy_dir, good, cases, removed = ecg_only_builds
  db = pd.read_csv(copy_dir / "ptbxl_database.csv", index_col="ecg_id",
                   encoding_errors="replace")
  expected = {"train": {cases["empty_report"], cases["undecodable_report"]},
              "validation": {cases["no_row_val"]}, "test": {cases["no_row_test"]}}
  for split in SPLITS:
    examples = read_split(ecg_only, split)
    assert set(examples) == expected[split], split
    assert ecg_only.info.splits[split].num_examples == len(expected[split])
    assert set(read_split(paired, split)) == set(good[split])
    for ecg_id, ex in examples.items():
      assert _text(ex["report"]) == ""
      assert all(not np.asarray(v).any() for v in ex["labels"].values())
      assert {t: len(v) for t, v in ex["labels"].items()} == features.PTBXL_TASK_SIZES
      assert SPLIT_OF_FOLD[int(ex["fold"])] == split
      assert ex["signal"].shape == (12, 1000) and ex["signal"].dtype == np.float16
  train = read_split(ecg_only, "train")
  for case in ("empty_report", "undecodable_report"):  # fold and metadata from the row
    ex, row = train[cases[case]], db.loc[cases[case]]
    assert int(ex["fold"]) == row["strat_fold"]
    assert int(ex["patient_id"]) == int(row["patient_id"])
    assert int(ex["sex"]) == int(row["sex"])
  for case, split in (("no_row_val", "validation"), ("no_row_test", "test")):
    ex = read_split(ecg_only, split)[cases[case]]
    assert int(ex["fold"]) == TABLE_FOLDS[case]
    # records_index.csv has no patient_id column; nothing else is known about these.
    assert (int(ex["patient_id"]), int(ex["sex"])) == (-1, -1) and np.isnan(ex["age"])
    # Read exactly like the paired config's records.
    expected_signal, _ = wfdb.rdsamp(str(copy_dir / removed.at[cases[case], "filename_lr"]))
    np.testing.assert_array_equal(ex["signal"], expected_signal.T.astype(np.float16))
  metadata = ecg_only.info.metadata
  assert metadata["ecg_only"] is True and metadata["labels_known"] is False
  assert metadata["label_names"] == paired.info.metadata["label_names"]


def test_ecg_only_and_paired_config_partition_the_files(ecg_only_builds):
  paired, ecg_only, copy_dir, _, _, _ = ecg_only_builds
  paired_ids = {i for s in SPLITS for i in read_split(paired, s)}
  ecg_only_ids = {i for s in SPLITS for i in read_split(ecg_only, s)}
  assert not paired_ids & ecg_only_ids
  on_disk = {int(p.name.split("_")[0]) for p in (copy_dir / "records100").rglob("*.hea")}
  skipped = {int(r["record_id"]) for r in read_skips(ecg_only)}
  assert paired_ids | ecg_only_ids | skipped == on_disk
  assert not skipped & (paired_ids | ecg_only_ids)


def test_ecg_only_skip_log_lists_records_without_fold_or_signal(ecg_only_builds, capsys):
  _, ecg_only, _, _, cases, _ = ecg_only_builds
  rows = {int(r["record_id"]): r for r in read_skips(ecg_only)}
  # Records with a report are only counted in the summary, not listed.
  assert set(rows) == {cases["no_row_nan_fold"], cases["no_row_not_in_table"],
                       cases["no_row_truncated"]}
  assert rows[cases["no_row_nan_fold"]]["reason"] == (
      f"{ptbxl_tables.NO_FOLD}: nan in {ptbxl_tables.FOLD_TABLE_CSV}")
  assert rows[cases["no_row_not_in_table"]]["reason"] == (
      f"{ptbxl_tables.NO_FOLD}: ecg_id not in {ptbxl_tables.FOLD_TABLE_CSV}")
  truncated = rows[cases["no_row_truncated"]]
  assert truncated["reason"].startswith("truncated signal file"), truncated
  assert truncated["split"] == "train"


def test_ecg_only_folds_from_merl_label_files(ecg_only_builds, tmp_path):
  """Without records_index.csv the union of labels_merl/*.csv gives folds and patient ids."""
  _, _, copy_dir, _, cases, removed = ecg_only_builds
  manual_dir = tmp_path / "copy"
  shutil.copytree(copy_dir, manual_dir)
  (manual_dir / ptbxl_tables.FOLD_TABLE_CSV).unlink()
  merl = manual_dir / ptbxl_tables.MERL_LABELS_DIR
  merl.mkdir()
  ids = [cases["no_row_val"], cases["no_row_test"], cases["no_row_truncated"]]
  pd.DataFrame({"ecg_id": ids, "patient_id": [11.0, 12.0, 13.0], "strat_fold": [9, 10, 2],
                "NORM": 0}).to_csv(merl / "ptbxl_super_class_train.csv", index=False)
  # Agrees on no_row_val, disagrees on no_row_test, misses no_row_truncated's fold.
  pd.DataFrame({"ecg_id": ids, "patient_id": [11.0, 12.0, 13.0],
                "strat_fold": [9, 3, np.nan]}).to_csv(merl / "ptbxl_form_val.csv", index=False)
  log = skips.SkipLog()
  plan, num_reported = ptbxl_records.plan_ecg_only(manual_dir, 100, log)
  assert plan["validation"] == [ptbxl_records.EcgOnlyRecord(
      cases["no_row_val"], removed.at[cases["no_row_val"], "filename_lr"], 9, patient_id=11)]
  assert plan["test"] == []
  # A fold missing from one file is no disagreement.
  assert cases["no_row_truncated"] in [r.ecg_id for r in plan["train"]]
  reasons = {int(r["record_id"]): r["reason"] for r in log.rows}
  assert reasons[cases["no_row_test"]] == (
      f"{ptbxl_tables.CONFLICTING_FOLDS}: {ptbxl_tables.MERL_LABELS_DIR}/*.csv gives [3, 10]")
  assert reasons[cases["no_row_not_in_table"]].startswith(ptbxl_tables.NO_FOLD)
  assert num_reported == 5  # the good records, in the paired config


def test_ecg_only_without_fold_table_fails_at_once(ecg_only_builds, tmp_path):
  _, _, copy_dir, _, _, _ = ecg_only_builds
  manual_dir = tmp_path / "copy"
  shutil.copytree(copy_dir, manual_dir)
  (manual_dir / ptbxl_tables.FOLD_TABLE_CSV).unlink()
  with pytest.raises(FileNotFoundError,
                     match=r"records_index.csv \(columns ecg_id, strat_fold\).*labels_merl"):
    build_ptbxl(manual_dir, tmp_path / "tfds", "100hz_ecg_only")
  assert not list((tmp_path / "tfds").rglob("dataset_info.json"))
  # The paired config does not need one.
  assert ptbxl.Ptbxl(config="100hz", data_dir=str(tmp_path)).validate_manual_dir(
      manual_dir) is None


def test_build_cli_skips_tokenizer_for_ecg_only(ecg_only_builds, capsys):
  from merit_jax.data import build as build_lib  # pylint: disable=g-import-not-at-top
  _, ecg_only, copy_dir, _, _, _ = ecg_only_builds
  data_dir = pathlib.Path(ecg_only.data_dir).parents[2]
  rc = build_lib.main(["build", "ptbxl", f"--manual_dir={copy_dir}", f"--data_dir={data_dir}",
                       "--config=100hz_ecg_only", "--tokenizer_vocab_size=60"])
  assert rc == 0
  assert "No tokenizer trained" in capsys.readouterr().out
  assert not (pathlib.Path(ecg_only.data_dir) / "tokenizer.model").exists()


def test_ecg_only_leaves_out_empty_splits(ecg_only_builds, tmp_path, capsys):
  _, _, copy_dir, _, cases, _ = ecg_only_builds
  manual_dir = tmp_path / "copy"
  shutil.copytree(copy_dir, manual_dir)
  table = pd.read_csv(manual_dir / ptbxl_tables.FOLD_TABLE_CSV, index_col="ecg_id")
  table.loc[[cases["no_row_val"], cases["no_row_test"]], "strat_fold"] = 1
  table.to_csv(manual_dir / ptbxl_tables.FOLD_TABLE_CSV)
  builder = build_ptbxl(manual_dir, tmp_path / "tfds", "100hz_ecg_only")
  assert set(builder.info.splits) == {"train"}
  assert builder.info.splits["train"].num_examples == 4
  assert "no ECG-only records for split(s) ['validation', 'test']" in capsys.readouterr().out
  # Nothing ECG-only at all: a clear error instead of an empty dataset.
  table["strat_fold"] = np.nan
  table.to_csv(manual_dir / ptbxl_tables.FOLD_TABLE_CSV)
  db = pd.read_csv(manual_dir / "ptbxl_database.csv", index_col="ecg_id",
                   encoding_errors="replace")
  db["report"] = "sinus rhythm"
  db.to_csv(manual_dir / "ptbxl_database.csv")
  with pytest.raises(ValueError, match="100hz_ecg_only would be empty.*7 have a usable report"):
    build_ptbxl(manual_dir, tmp_path / "tfds2", "100hz_ecg_only")
