"""Tests for merit_jax/checkpoint.py: async save/restore, keep-last-K, best, inference load."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pretrain
from merit_jax import checkpoint as checkpoint_lib
from merit_jax import parallel
from merit_jax import step as step_lib
from merit_jax.data import tokenizer as tokenizer_lib

REPORTS = ["sinus rhythm normal ecg", "atrial fibrillation with rapid ventricular response",
           "left bundle branch block", "sinus bradycardia otherwise normal",
           "inferior myocardial infarction age undetermined", "left ventricular hypertrophy"]


def make_fake_run(workdir, seed=0):
  """A run directory as train.py writes it, without training: config, tokenizer, checkpoint.

  Returns (config, state, tokenizer). Shared with tests/test_embed.py.
  """
  config = pretrain.get_config("test")
  config.mesh.data, config.mesh.fsdp = 2, 1
  config.seed = seed
  tokenizer = tokenizer_lib.SentencePieceTokenizer(
      tokenizer_lib.train_sentencepiece(REPORTS * 4, vocab_size=40))
  config.model.text.vocab_size = tokenizer.vocab_size
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:2])
  state, _ = step_lib.create_train_state(config, mesh, jax.random.key(seed))
  checkpoint_lib.save_run_files(str(workdir), config, tokenizer)
  ckpt = checkpoint_lib.Checkpointer(str(workdir), keep=2)
  ckpt.save(5, state, {"position": 5}, config)
  ckpt.wait()
  ckpt.close()
  return config, state, tokenizer


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("fake_run")
  config, state, tokenizer = make_fake_run(workdir)
  return workdir, config, state, tokenizer


def _tree_allclose(a, b, atol=0.0):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def test_save_restore_keeps_sharding_and_data_state(tmp_path):
  mesh = parallel.make_mesh({"data": 4, "fsdp": 2})
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  state = {"params": {"w": jax.device_put(jnp.arange(16.0), sharding)},
           "step": jnp.zeros((), jnp.int32)}
  config = pretrain.get_config("test")
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path), keep=2)
  for step in (2, 4, 6):
    state = jax.tree.map(lambda x: x + 1, state)
    assert ckpt.save(step, state, {"position": step}, config)
  ckpt.wait()
  # Keep-last-K: only the two newest remain, all complete.
  assert sorted(ckpt.latest.all_steps()) == [4, 6]
  target = jax.tree.map(jnp.zeros_like, state)
  restored, data_state, step = ckpt.restore(target)
  assert step == 6 and data_state == {"position": 6}
  _tree_allclose(restored, state)
  assert restored["params"]["w"].sharding == sharding
  saved_config = json.load(open(tmp_path / "checkpoints" / "6" / "config" / "metadata"))
  assert saved_config["model"]["size"] == config.model.size
  ckpt.close()


def test_best_manager_keeps_lowest_validation_loss(tmp_path):
  state = {"w": jnp.ones(3)}
  config = pretrain.get_config("test")
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
  for step, loss in ((1, 2.0), (2, 0.5), (3, 1.0), (4, float("nan"))):
    ckpt.save_best(step, jax.tree.map(lambda x: x * step, state), {}, config,
                   {"val_loss": loss})
  ckpt.wait()
  assert ckpt.best.all_steps() == [2]
  assert ckpt.best.best_step() == 2
  ckpt.close()


def test_restore_without_checkpoint_is_clear(tmp_path):
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() is None
  with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
    ckpt.restore({"w": jnp.ones(2)})
  ckpt.close()


def test_unfinished_save_is_ignored(fake_run):
  workdir = fake_run[0]
  # What a run killed mid-save leaves behind: Orbax's temporary folder, never finalized.
  os.makedirs(workdir / "checkpoints" / "7.orbax-checkpoint-tmp-123" / "state")
  assert checkpoint_lib._latest_complete_step(str(workdir / "checkpoints")) == 5


def test_load_for_inference_matches_saved_params(fake_run):
  workdir, config, state, tokenizer = fake_run
  model, params, loaded_config, preprocess_cfg, loaded_tok = (
      checkpoint_lib.load_for_inference(str(workdir)))
  _tree_allclose(params, state.params)
  leaf = jax.tree.leaves(params)[0]
  assert leaf.sharding == jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  assert loaded_config.model.width == config.model.width
  assert preprocess_cfg.num_samples == config.data.preprocess.num_samples
  assert loaded_tok.vocab_size == tokenizer.vocab_size
  np.testing.assert_array_equal(loaded_tok.encode_batch(REPORTS, 12),
                                tokenizer.encode_batch(REPORTS, 12))
  ecg = jnp.zeros((2, 12, config.data.preprocess.num_samples))
  out = model.apply({"params": params}, ecg, method=model.embed_ecg)
  assert out["projected"].shape == (2, config.model.proj_dim)
  # The checkpoints/ folder itself is accepted too.
  _, params2, *_ = checkpoint_lib.load_for_inference(str(workdir / "checkpoints"))
  _tree_allclose(params2, params)


def test_load_for_inference_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpoint_lib.load_for_inference(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="not a merit_jax run directory"):
    checkpoint_lib.load_for_inference(str(tmp_path))
