"""Tests for merit_jax/atomic_files.py: a write interrupted at any point leaves the previous file
(or none) and no temporary file beside it; a finished one has the usual permissions."""

import os
import stat

import numpy as np
import pytest

from merit_jax import atomic_files


def test_write_text_creates_folders_and_replaces(tmp_path):
  path = tmp_path / "a" / "b" / "page.md"
  atomic_files.write_text(path, "first ü\n")
  atomic_files.write_text(path, "second\n")
  assert path.read_text(encoding="utf-8") == "second\n"
  assert os.listdir(path.parent) == ["page.md"]


def test_finished_file_has_the_permissions_open_would_give(tmp_path):
  umask = os.umask(0)
  os.umask(umask)
  atomic_files.write_bytes(tmp_path / "x.bin", b"\x00\x01")
  plain = tmp_path / "plain.bin"
  plain.write_bytes(b"")
  assert stat.S_IMODE(os.stat(tmp_path / "x.bin").st_mode) == stat.S_IMODE(plain.stat().st_mode)
  assert stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "table.csv"
  atomic_files.write_text(path, "old\n")
  with pytest.raises(KeyboardInterrupt):
    with atomic_files.replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
      f.write("half of the new ")
      raise KeyboardInterrupt
  assert path.read_text(encoding="utf-8") == "old\n"
  assert os.listdir(tmp_path) == ["table.csv"]


def test_interrupted_first_write_leaves_nothing(tmp_path):
  with pytest.raises(RuntimeError):
    with atomic_files.replacing(tmp_path / "bank.npz", suffix=".npz") as tmp:
      np.savez(tmp, x=np.zeros(3))
      raise RuntimeError("crash after the write, before the rename")
  assert not os.listdir(tmp_path)


def test_numpy_suffix_keeps_the_target_name(tmp_path):
  path = tmp_path / "bank.npz"
  with atomic_files.replacing(path, suffix=".npz") as tmp:
    np.savez(tmp, x=np.arange(4))
  with np.load(path) as f:
    np.testing.assert_array_equal(f["x"], np.arange(4))
  assert os.listdir(tmp_path) == ["bank.npz"]
