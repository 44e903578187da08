"""Tests for merit_jax.data.build: registry, build() + tokenizer, and the CLI."""

import os
import pathlib
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from merit_jax.data import build as build_lib
from merit_jax.data import skips
from tests.test_ptbxl import make_small_copy

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_ptbxl(ptbxl_dir, tmp_path_factory):
  copy_dir = tmp_path_factory.mktemp("small_ptbxl")
  good, _ = make_small_copy(ptbxl_dir, copy_dir)
  return copy_dir, good


def test_importing_build_imports_no_builder():
  code = ("import sys, merit_jax.data.build as b; "
          "print(sorted(m for m in sys.modules if m.startswith('merit_jax.data.')))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                       text=True, check=True).stdout
  loaded = eval(out)  # pylint: disable=eval-used
  for spec in build_lib.BUILDERS.values():
    assert spec.split(":")[0] not in loaded


def test_every_builder_registers_under_its_own_name():
  classes = {name: build_lib.builder_class(name) for name in build_lib.BUILDERS}
  for name, cls in classes.items():
    assert cls.name == name
    assert tfds.builder_cls(name) is cls
  with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
    build_lib.builder_class("nope")


def test_build_ptbxl_trains_tokenizer_and_reuses(small_ptbxl, tmp_path):
  copy_dir, good = small_ptbxl
  builder = build_lib.build("ptbxl", copy_dir, tmp_path, "100hz", tokenizer_vocab_size=60)
  version_dir = pathlib.Path(builder.data_dir)
  assert version_dir == tmp_path / "ptbxl" / "100hz" / "1.0.0"
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      s: len(ids) for s, ids in good.items()}
  assert (version_dir / skips.SKIPPED_RECORDS_CSV).exists()
  tokenizer_path = version_dir / "tokenizer.model"
  assert tokenizer_path.stat().st_size > 0
  stamps = {p.name: p.stat().st_mtime_ns for p in version_dir.iterdir()}
  again = build_lib.build("ptbxl", copy_dir, tmp_path, "100hz", tokenizer_vocab_size=60)
  assert again.data_dir == builder.data_dir
  assert {p.name: p.stat().st_mtime_ns for p in version_dir.iterdir()} == stamps


def test_cli_builds_without_tokenizer(small_ptbxl, tmp_path, capsys):
  copy_dir, good = small_ptbxl
  rc = build_lib.main(["build", "ptbxl", f"--manual_dir={copy_dir}", f"--data_dir={tmp_path}",
                       "--config=100hz", "--no_tokenizer"])
  assert rc == 0
  out = capsys.readouterr().out
  assert f"{sum(len(v) for v in good.values())} records used" in out
  version_dir = tmp_path / "ptbxl" / "100hz" / "1.0.0"
  assert (version_dir / "dataset_info.json").exists()
  assert not (version_dir / "tokenizer.model").exists()


def test_cli_reports_missing_manual_dir(tmp_path, capsys):
  rc = build_lib.main(["build", "ptbxl", f"--manual_dir={tmp_path / 'missing'}",
                       f"--data_dir={tmp_path / 'tfds'}"])
  assert rc == 1
  err = capsys.readouterr().err
  assert "does not exist" in err and "ptbxl_database.csv" in err and "physionet.org" in err
  assert not (tmp_path / "tfds" / "ptbxl" / "100hz" / "1.0.0").exists()


@pytest.mark.parametrize("argv, message", [
    (["ptbxl", "--data_dir=/tmp/x", "--num_records=3"], "only applies to"),
    (["--data_dir=/tmp/x"], "need one dataset NAME"),
    (["ptbxl", "--bogus=1"], "Unknown command line flag"),
])
def test_cli_usage_errors(argv, message, capsys):
  assert build_lib.main(["build"] + argv) == 2
  assert message in capsys.readouterr().err


def test_build_synthetic_via_cli_flags(tmp_path, capsys):
  rc = build_lib.main(["build", "synthetic_ecg", f"--data_dir={tmp_path / 'tfds'}",
                       f"--manual_dir={tmp_path / 'manual'}", "--num_records=24", "--seed=3",
                       "--tokenizer_vocab_size=80"])
  assert rc == 0, capsys.readouterr().err
  builder = tfds.builder_from_directory(
      os.fspath(tmp_path / "tfds" / "synthetic_ecg" / "n24_s3" / "1.0.0"))
  assert sum(i.num_examples for i in builder.info.splits.values()) == 24
  assert (pathlib.Path(builder.data_dir) / "tokenizer.model").exists()
