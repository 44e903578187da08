"""Shared pytest fixtures.

Every test process sees 8 simulated CPU devices, so multi-device code is exercised in the same
run as single-device code (a test that wants one device uses `jax.devices()[:1]`). Real PTB-XL
files are read from `../shared/data` beside the checkout and never copied into the project.
"""

import os
import pathlib

# Must be set before jax is imported anywhere in the test process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# A persistent compilation cache for this test process only (jax.config, not the environment,
# so subprocesses started by tests are unaffected): tests that build the same computation
# again (the same tiny step in several files, a fixture per module) load XLA's executable
# instead of compiling it anew. Only compilations of 1 s or more are stored. The directory
# is fresh per session and removed at exit, so nothing carries over between runs.
_XLA_CACHE_DIR = tempfile.mkdtemp(prefix="merit_jax_tests_xla_cache_")
atexit.register(shutil.rmtree, _XLA_CACHE_DIR, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _XLA_CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

# The longest test files on the 2-core CI machine (serial --durations), longest first. They run
# before the rest: with the README's two workers (`-n 2 --dist loadfile --no-loadscope-reorder`,
# one file at a time per worker, in collection order) a long file handed out last would run
# alone at the end while the other worker idles.
SLOW_FILES_FIRST = ("test_preemption.py", "test_multihost.py", "test_evaluate.py",
                    "test_degenerate_decoding.py", "test_gemma3.py", "test_gemma_text_head.py",
                    "test_train.py", "test_lora_generation.py", "test_step.py", "test_fsdp.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
  # A stable sort: every file keeps its own test order, the other files their usual order.
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PTBXL_DIR = SHARED_DATA / "ptbxl"
PTBXL_DERIVED_DIR = SHARED_DATA / "ptbxl_derived"


def _require(path: pathlib.Path) -> pathlib.Path:
  if not path.exists():
    pytest.skip(f"real PTB-XL files not found at {path} (expected ../shared beside the checkout)")
  return path


@pytest.fixture(scope="session")
def ptbxl_dir() -> pathlib.Path:
  """The real PTB-XL subset in the PhysioNet layout (skips when absent)."""
  return _require(PTBXL_DIR)


@pytest.fixture(scope="session")
def ptbxl_derived_dir() -> pathlib.Path:
  """Real PTB-XL records that were band-passed and z-scored upstream (header unit NU)."""
  return _require(PTBXL_DERIVED_DIR)
