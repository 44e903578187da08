"""Dataset provisioning: built datasets are reused, the synthetic one is generated on first use,
and a dataset that can be neither read nor built stops the run with one line and the fix."""

import subprocess
import sys

import pytest

from configs import pretrain
from merit_jax import provision
from merit_jax.data import pipeline
from tests import train_procs


def _synthetic_cfg(root):
  config = pretrain.get_config("test")
  config.data.config = train_procs.DATA_CONFIG
  config.data.data_dir = str(root / "tfds")
  config.data.manual_dir = str(root / "manual")
  config.data.build_kwargs = {"tokenizer_vocab_size": 300}
  return config.data


def test_synthetic_dataset_is_built_once(tmp_path, capsys):
  data_cfg = _synthetic_cfg(tmp_path)
  provision.ensure_datasets(data_cfg)
  assert "building dataset synthetic_ecg (n64_s0)" in capsys.readouterr().out
  built = pipeline.builder_dir(pipeline.SourceSpec("synthetic_ecg", "n64_s0",
                                                   str(tmp_path / "tfds")))
  assert (built / "dataset_info.json").is_file() and (built / "tokenizer.model").is_file()
  provision.ensure_datasets(data_cfg)  # Built: nothing to do.
  assert capsys.readouterr().out == ""


def test_missing_dataset_names_the_folder_and_the_commands(tmp_path):
  data_cfg = pretrain.get_config("full").data
  data_cfg.data_dir = str(tmp_path / "tfds")
  data_cfg.manual_dir = str(tmp_path / "no_download_here")
  with pytest.raises(provision.DatasetNotFound) as error:
    provision.ensure_datasets(data_cfg)
  message = str(error.value)
  assert "\n" not in message
  assert f"not built under {tmp_path / 'tfds'}" in message
  assert (f"python -m merit_jax.data.download ptbxl --target_dir={tmp_path / 'no_download_here'}"
          in message)
  assert (f"python -m merit_jax.data.build ptbxl --manual_dir={tmp_path / 'no_download_here'} "
          f"--data_dir={tmp_path / 'tfds'} --config=100hz" in message)
  assert not (tmp_path / "tfds").exists()  # Nothing was started.


def test_full_variant_without_ptbxl_is_one_line_on_the_command_line(tmp_path):
  # The default variant reads ~/tensorflow_datasets and ~/physionet: an empty HOME has neither.
  env = train_procs.child_env(tmp_path / "cache", 1, HOME=tmp_path / "home")
  result = subprocess.run(
      [sys.executable, "-m", "merit_jax.train", "--config=configs/pretrain.py",
       f"--workdir={tmp_path / 'run'}"],
      cwd=train_procs.REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("merit_jax.train: dataset 'ptbxl' (config '100hz') is not built under "
                         "~/tensorflow_datasets"), last
  assert "python -m merit_jax.data.download ptbxl --target_dir=~/physionet/ptb-xl/1.0.3" in last


def test_build_specs_cover_every_source_and_the_primary_dataset():
  data_cfg = pretrain.get_config("ptbxl_shared_all").data
  specs = provision.build_specs(data_cfg)
  sources = [dict(s) for s in data_cfg.sources]
  assert [(s.name, s.config, s.data_dir, s.manual_dir) for s in specs] == [
      (s["name"], s["config"], s["data_dir"], s["manual_dir"]) for s in sources]
  # A primary dataset outside the mixture is built too, first; a source without its own
  # manual_dir uses the data config's.
  data_cfg.data_dir = "/elsewhere"
  data_cfg.sources = ({"name": "synthetic_ecg", "config": "default", "data_dir": "/syn",
                       "weight": 1.0},)
  specs = provision.build_specs(data_cfg)
  assert [(s.name, s.data_dir, s.manual_dir) for s in specs] == [
      ("ptbxl", "/elsewhere", data_cfg.manual_dir), ("synthetic_ecg", "/syn", data_cfg.manual_dir)]


def test_contrastive_only_run_drops_ecg_only_sources(capsys):
  config = pretrain.get_config("ptbxl_shared")
  paired = [dict(s) for s in config.data.sources]
  ecg_only = dict(paired[0], config="100hz_ecg_only", reports=False)
  config.data.sources = paired + [ecg_only]
  provision.drop_sources_without_use(config)  # MERIT: both branches, every source stays
  assert len(config.data.sources) == 3
  config.objective.reconstruction = False
  provision.drop_sources_without_use(config)
  assert [dict(s) for s in config.data.sources] == paired
  assert "100hz_ecg_only" in capsys.readouterr().out
  config.data.sources = [ecg_only]
  with pytest.raises(ValueError, match="every data.sources entry is ECG-only"):
    provision.drop_sources_without_use(config)
