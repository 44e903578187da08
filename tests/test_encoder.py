"""Tests for merit_jax/encoder.py against the model applied directly (un-jitted, unpadded)."""

import hashlib
import os

import jax
import numpy as np
import pytest

from merit_jax import encoder as encoder_lib
from merit_jax.data import preprocess as preprocess_lib
from merit_jax.evaluators import random_conv
from tests.test_checkpoint import make_fake_run

Encoder = encoder_lib.Encoder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("encoder_run")
  config, state, tokenizer = make_fake_run(workdir, seed=5)
  # Batch size 4: a batch of 5 is one full batch plus one padded batch.
  encoder = Encoder.from_checkpoint(str(workdir), batch_size=4)
  return {"workdir": workdir, "config": config, "state": state, "tokenizer": tokenizer,
          "encoder": encoder, "params": jax.device_get(state.params)}


@pytest.fixture(scope="module")
def ecg():
  return np.random.default_rng(0).normal(size=(5, 12, 1000)).astype(np.float32)


def _direct(encoder, params, ecg, leads=None):
  """The model's own embed_ecg, un-jitted, on the unpadded batch."""
  with jax.disable_jit():
    out = encoder.model.apply({"params": params}, ecg, leads=leads, return_tokens=True,
                              method=encoder.model.embed_ecg)
  return {k: np.asarray(v) for k, v in out.items()}


def test_from_checkpoint_fields(run):
  encoder, workdir = run["encoder"], run["workdir"]
  assert encoder.step == 5 and encoder_lib.latest_step(str(workdir)) == 5
  digest = hashlib.sha1(os.path.abspath(str(workdir)).encode()).hexdigest()[:8]
  assert encoder.cache_key == f"{os.path.basename(str(workdir))}-step5-{digest}"
  assert encoder.name == os.path.basename(str(workdir))
  assert encoder.supports_lead_subsets and encoder.has_text
  assert encoder.preprocess.num_samples == run["config"].data.preprocess.num_samples
  named = Encoder.from_checkpoint(str(workdir / "checkpoints"), step=5, name="merit")
  assert named.name == "merit" and named.cache_key == encoder.cache_key.replace(
      digest, hashlib.sha1(os.path.abspath(str(workdir / "checkpoints")).encode()
                           ).hexdigest()[:8])
  with pytest.raises(FileNotFoundError, match="does not exist"):
    Encoder.from_checkpoint(str(workdir / "nope"))


def test_embed_ecg_matches_model(run, ecg):
  encoder = run["encoder"]
  got = encoder.embed_ecg(ecg, tokens=True)
  want = _direct(encoder, run["params"], ecg)
  assert set(got) == {"pooled", "projected", "per_lead", "per_lead_max", "per_layer", "tokens"}
  for key in ("pooled", "projected", "tokens"):
    assert got[key].shape[0] == 5 and got[key].dtype == np.float32
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
  # per_lead: each lead's token mean (lead-major tokens), side by side.
  patches = want["tokens"].shape[1] // 12
  per_lead = np.concatenate([want["tokens"][:, l * patches:(l + 1) * patches].mean(1)
                             for l in range(12)], axis=1)
  np.testing.assert_allclose(got["per_lead"], per_lead, rtol=1e-5, atol=1e-5)
  # per_lead_max: lead by lead, the mean token then the elementwise max over that lead's tokens.
  per_lead_max = np.concatenate(
      [np.concatenate([want["tokens"][:, l * patches:(l + 1) * patches].mean(1),
                       want["tokens"][:, l * patches:(l + 1) * patches].max(1)], axis=1)
       for l in range(12)], axis=1)
  np.testing.assert_allclose(got["per_lead_max"], per_lead_max, rtol=1e-5, atol=1e-5)
  assert "tokens" not in encoder.embed_ecg(ecg[:2])
  # Asked for one kind, the encoder returns that kind alone, with the same values.
  only = encoder.embed_ecg(ecg, kinds=("per_lead_max",))
  assert set(only) == {"per_lead_max"}
  np.testing.assert_allclose(only["per_lead_max"], got["per_lead_max"], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(encoder.embed_kind(ecg, "tokens"), got["tokens"], rtol=1e-6,
                             atol=1e-6)
  with pytest.raises(ValueError, match="no 'wavelet' features"):
    encoder.embed_ecg(ecg, kinds=("wavelet",))


def test_wide_kinds_are_left_out_above_their_width_limit(run, ecg, monkeypatch):
  """An encoder whose per_layer (or per_lead_max) features would exceed MAX_WIDE_FEATURES (a
  large model, whose feature cache they would swell) returns and advertises none."""
  encoder = run["encoder"]
  widths = encoder_lib.wide_feature_widths(encoder.params, encoder.model.num_leads)
  depth = len([n for n in encoder.params["encoder"]["transformer"] if n.startswith("block")])
  width = encoder.params["encoder"]["embed"]["patch_proj"]["kernel"].shape[1]
  assert widths == {"per_layer": depth * 12 * width, "per_lead_max": 2 * 12 * width}
  got = encoder.embed_ecg(ecg)
  assert got["per_layer"].shape == (5, widths["per_layer"])
  assert got["per_lead_max"].shape == (5, widths["per_lead_max"])
  assert {"per_layer", "per_lead_max"} <= set(encoder.feature_kinds)
  # Just below each kind's width: that kind goes, a kind no wider than the limit stays.
  for kind, kind_width in widths.items():
    monkeypatch.setattr(encoder_lib, "MAX_WIDE_FEATURES", kind_width - 1)
    kept = {k for k, w in widths.items() if w < kind_width}
    assert kind not in encoder.feature_kinds
    assert set(encoder.embed_ecg(ecg)) == {"pooled", "projected", "per_lead"} | kept
    assert set(encoder.feature_kinds) == {"pooled", "projected", "per_lead"} | kept
    with pytest.raises(ValueError, match=f"no '{kind}' features"):
      encoder.embed_ecg(ecg, kinds=(kind,))


def test_lead_subsets_match_model(run, ecg):
  encoder = run["encoder"]
  for leads in ((0,), (0, 1), (0, 1, 2, 3, 4, 5)):
    want = _direct(encoder, run["params"], ecg[:, list(leads)], leads)
    got = encoder.embed_ecg(ecg[:, list(leads)], leads=leads)
    np.testing.assert_allclose(got["pooled"], want["pooled"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["projected"], want["projected"], rtol=1e-5, atol=1e-5)
    assert got["per_lead"].shape == (5, len(leads) * want["pooled"].shape[1])
    # All 12 leads given: the encoder selects the subset itself.
    np.testing.assert_allclose(encoder.embed_ecg(ecg, leads=leads)["pooled"], got["pooled"],
                               rtol=1e-6, atol=1e-6)
  # A subset is not the full input with the other leads zeroed.
  zeroed = np.zeros_like(ecg)
  zeroed[:, 0] = ecg[:, 0]
  assert np.abs(encoder.embed_ecg(zeroed)["pooled"]
                - encoder.embed_ecg(ecg[:, :1], leads=(0,))["pooled"]).max() > 1e-3


def test_any_batch_size_compiles_once(run, ecg):
  encoder = run["encoder"]
  embed, _ = encoder_lib._jitted(None)  # pylint: disable=protected-access
  encoder.embed_ecg(ecg[:3], leads=(2, 3))
  before = embed._cache_size()  # pylint: disable=protected-access
  for n in (1, 2, 4, 5):
    encoder.embed_ecg(ecg[:n], leads=(2, 3))
  assert embed._cache_size() == before  # pylint: disable=protected-access


def test_embed_text_matches_model(run):
  encoder, tokenizer = run["encoder"], run["tokenizer"]
  texts = ["sinus rhythm", "atrial fibrillation", "", "normal ecg", "left axis deviation"]
  got = encoder.embed_text(texts)
  ids = tokenizer.encode_batch(texts, run["config"].data.max_text_len)
  with jax.disable_jit():
    want = encoder.model.apply({"params": run["params"]}, ids,
                               method=encoder.model.embed_text)["projected"]
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-5)


def test_recordings_mean_and_centre_windows(run):
  encoder = run["encoder"]
  cfg = preprocess_lib.PreprocessConfig.from_config(run["config"].data.preprocess)
  rng = np.random.default_rng(1)
  # 25 s at 100 Hz (windows 0-10, 10-20 and 15-25 s, the last aligned to the end) and 10 s.
  long, short = rng.normal(size=(12, 2500)), rng.normal(size=(12, 1000))

  def direct(signal, kind):
    x = preprocess_lib.preprocess(signal, 100.0, cfg)[None].astype(np.float32)
    return _direct(encoder, run["params"], x)[kind][0]

  for kind in ("pooled", "tokens", "projected"):
    got = encoder.embed_recordings([(long, 100.0), (short, None)], kind=kind)
    mean = np.mean([direct(long[:, a:a + 1000], kind) for a in (0, 1000, 1500)], axis=0)
    if kind == "projected":
      mean /= np.linalg.norm(mean)
    np.testing.assert_allclose(got[0], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], direct(short, kind), rtol=1e-4, atol=1e-5)
  centre = encoder.embed_recordings([(long.T, 100.0)], windows="center")  # samples-major too
  np.testing.assert_allclose(centre[0], direct(long[:, 750:1750], "pooled"), rtol=1e-4,
                             atol=1e-5)
  with pytest.raises(ValueError, match="windows must be one of"):
    encoder.embed_recordings([(short, 100.0)], windows="all")


def test_from_params_with_mesh_matches_model(run, ecg):
  from merit_jax import parallel  # pylint: disable=g-import-not-at-top
  config = run["config"]
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:2])
  state = run["state"]  # params sharded over that mesh's devices, as in training
  model = run["encoder"].model
  encoder = Encoder.from_params(model, state.params, config, run["tokenizer"], mesh=mesh,
                                batch_size=4, step=7)
  assert encoder.cache_key.startswith("train-step7-")
  want = _direct(run["encoder"], run["params"], ecg)
  got = encoder.embed_ecg(ecg)
  np.testing.assert_allclose(got["pooled"], want["pooled"], rtol=1e-5, atol=1e-5)
  # New parameters every validation: the same compiled function serves them.
  embed, _ = encoder_lib._jitted(mesh)  # pylint: disable=protected-access
  size = embed._cache_size()  # pylint: disable=protected-access
  shifted = jax.tree.map(lambda p: p * 1.01, state.params)
  other = Encoder.from_params(model, shifted, config, run["tokenizer"], mesh=mesh,
                              batch_size=4).embed_ecg(ecg)
  assert embed._cache_size() == size  # pylint: disable=protected-access
  assert np.abs(other["pooled"] - got["pooled"]).max() > 1e-4


def test_apply_fn_is_the_pooled_embedding_and_differentiable(run, ecg):
  encoder = run["encoder"]
  apply = encoder.apply_fn()
  np.testing.assert_allclose(np.asarray(apply(run["params"], ecg)),
                             _direct(encoder, run["params"], ecg)["pooled"], rtol=1e-5,
                             atol=1e-5)
  grads = jax.grad(lambda p: apply(p, ecg[:2]).sum())(run["params"])
  assert np.abs(np.asarray(jax.tree.leaves(grads["encoder"])[0])).max() > 0


def test_random_init(run, ecg):
  config = run["config"]
  a = Encoder.random_init(config, None, seed=0, batch_size=4)
  b = Encoder.random_init(config, None, seed=0, batch_size=4)
  c = Encoder.random_init(config, None, seed=1, batch_size=4)
  assert a.cache_key == b.cache_key != c.cache_key and a.step == 0
  assert not a.has_text and a.embed_text(["x"]) is None
  np.testing.assert_array_equal(a.embed_ecg(ecg)["pooled"], b.embed_ecg(ecg)["pooled"])
  assert np.abs(a.embed_ecg(ecg)["pooled"] - c.embed_ecg(ecg)["pooled"]).max() > 1e-3
  np.testing.assert_allclose(a.embed_ecg(ecg)["pooled"], _direct(a, a.params, ecg)["pooled"],
                             rtol=1e-5, atol=1e-5)
  with_text = Encoder.random_init(config, run["tokenizer"], seed=0)
  assert with_text.has_text and with_text.embed_text(["sinus rhythm"]).shape[0] == 1


def test_random_conv(ecg):
  encoder = Encoder.random_conv(num_kernels=8, seed=2, num_samples=1000)
  want = random_conv.RandomConvFeatures(num_kernels=8, seed=2, num_samples=1000)(ecg)
  np.testing.assert_array_equal(encoder.embed_ecg(ecg)["pooled"], want)
  assert encoder.cache_key == "random_conv-k8-s2" and encoder.name == "random_conv"
  assert not encoder.supports_lead_subsets and not encoder.has_text
  assert encoder.embed_text(["x"]) is None and encoder.model is None
  with pytest.raises(ValueError, match="lead subsets"):
    encoder.embed_ecg(ecg[:, :2], leads=(0, 1))
  with pytest.raises(ValueError, match="not a network"):
    encoder.apply_fn()
