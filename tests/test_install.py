"""The package installs and runs from outside the repository; configs load from any directory.

`pip install .` goes into a throwaway virtualenv that sees this interpreter's packages
(--system-site-packages, --no-deps, --no-build-isolation: nothing is downloaded); its console
scripts then run from a directory that is not the checkout.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILES = ("pretrain.py", "evaluate.py", "generate.py")
SCRIPTS = ("merit-train", "merit-evaluate", "merit-generate", "merit-embed", "merit-build")


def _clean_env(**extra) -> dict:
  """This interpreter's environment without the checkout on the import path."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return dict(env, JAX_PLATFORMS="cpu", **extra)


def test_every_config_file_loads_from_another_directory(tmp_path):
  """No `from configs import ...`, no paths relative to the current directory."""
  script = f"""
import importlib.util, sys
assert {str(REPO)!r} not in sys.path
for name in {CONFIG_FILES!r}:
  path = {str(REPO)!r} + "/configs/" + name
  spec = importlib.util.spec_from_file_location("cfg_" + name[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for variant in getattr(module, "VARIANTS", [None]):
    module.get_config(variant).to_dict()
print("ok")
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=_clean_env())
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "ok"


def test_pyproject_lists_every_package():
  tomllib = pytest.importorskip("tomllib")
  project = tomllib.loads((REPO / "pyproject.toml").read_text())
  listed = set(project["tool"]["setuptools"]["packages"])
  on_disk = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "merit_jax").rglob("__init__.py")}
  assert on_disk | {"merit_jax.configs"} == listed
  for script in project["project"]["scripts"].values():
    module, function = script.split(":")
    source = (REPO / (module.replace(".", "/") + ".py")).read_text()
    assert f"def {function}(" in source, f"{script}: no such function"


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
  """A virtualenv with the package installed from a copy of the checkout."""
  root = tmp_path_factory.mktemp("install")
  src = root / "src"
  shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
      ".git", "results", "__pycache__", "*.egg-info", "build", ".pytest_cache"))
  env_dir = root / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)],
                 check=True, timeout=120)
  result = subprocess.run(
      [str(env_dir / "bin" / "pip"), "install", "--quiet", "--no-deps",
       "--no-build-isolation", "--disable-pip-version-check", "--no-index", str(src)],
      capture_output=True, text=True, timeout=300, env=_clean_env())
  assert result.returncode == 0, result.stderr
  return env_dir


def test_console_scripts_run_outside_the_repository(venv, tmp_path):
  for script in SCRIPTS:
    assert (venv / "bin" / script).exists(), script
  result = subprocess.run([str(venv / "bin" / "merit-build"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=_clean_env())
  assert result.returncode == 0 and "merit_jax.data.build" in result.stdout
  # The installed package carries the configs and the prompt files they name.
  package = subprocess.run(
      [str(venv / "bin" / "python"), "-c",
       "import merit_jax, os; print(os.path.dirname(merit_jax.__file__))"],
      cwd=tmp_path, capture_output=True, text=True, timeout=60, env=_clean_env())
  installed = pathlib.Path(package.stdout.strip())
  assert installed.parent != REPO and (installed / "configs" / "pretrain.py").is_file()
  assert list((installed / "configs" / "prompts").glob("*.yaml"))


def test_train_from_another_directory_finds_the_config(venv, tmp_path):
  """configs/<file>.py that is not under the current directory: the installed configs/."""
  workdir = tmp_path / "run"
  result = subprocess.run(
      [str(venv / "bin" / "merit-train"), "--config=configs/pretrain.py:test",
       f"--workdir={workdir}", "--config.model.sizee=small"],
      cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_clean_env())
  assert result.returncode != 0
  # The file was found and loaded: the override typo is the one error, on one line.
  assert "unknown config key" in result.stderr and 'Did you mean "size"' in result.stderr
  assert "Traceback" not in result.stderr
  assert not workdir.exists()
