"""The one ECG encoder: a feature source behind the calls every command and evaluator makes.

An `Encoder` is where a model (or a classical feature transform) meets ECGs. It is built by:

- `Encoder.from_checkpoint(checkpoint_dir, step=None)`: a trained MERIT run (its own
  preprocessing, tokenizer and text tower);
- `Encoder.random_init(config, tokenizer=None, seed=0)`: the same architecture, randomly
  initialised as training does (the baseline a pretrained encoder must beat; its text tower is
  random too, so its zero-shot and retrieval numbers are a chance-level check);
- `Encoder.from_params(model, params, config, tokenizer, mesh=None)`: a model being trained
  (training-time validation); with a mesh the input is replicated over it and the outputs are
  replicated, so every process reads them whatever the parameters' sharding;
- `Encoder.random_conv(num_kernels, seed, num_samples)`: ROCKET-style random convolutions
  (`evaluators/random_conv.py`), no text tower and no lead subsets.

Fields: `name` (for tables), `cache_key` (file-system safe; for a checkpoint it holds the run
name, the step and a hash of the run's path, so two runs never share a feature-cache entry),
`supports_lead_subsets`, `has_text`, `feature_kinds`, and for MERIT encoders `model`, `params`,
`config`, `tokenizer`, `step` and `preprocess` (the run's `PreprocessConfig`); None for random_conv.

Calls:
- `embed_ecg(ecg (B, leads, S), leads=None, tokens=False, kinds=None) -> {'pooled' (B, D),
  'projected' (B, P), 'per_lead' (B, leads * D) (each lead's token mean, concatenated),
  'per_lead_max' (B, leads * 2D) (each lead's mean token, then its elementwise max token, lead
  by lead), 'per_layer' (B, depth * leads * D) (each encoder block's per-lead token means,
  block by block)[, 'tokens' (B, leads * patches, D), lead-major]}` on preprocessed input:
  the `kinds` asked for, by default every one of `feature_kinds` (what the encoder offers:
  random_conv 'pooled' only; `per_lead_max` and `per_layer` only where they are at most
  MAX_WIDE_FEATURES wide).
  `leads` is a tuple of lead indices: per-lead patches with lead embeddings make any subset a
  valid MERIT input (`MERIT.embed_ecg(ecg, leads=...)`); `ecg` may hold those leads only or
  all 12. Any B: batches are padded (last row repeated) to the encoder's fixed batch size, so
  the embedding compiles once per lead set.
- `embed_kind(ecg, kind) -> array`: one kind of `KINDS` (tokens included), nothing else.
- `embed_text(list[str]) -> (n, P)` projected text embeddings, or None without a text tower.
- `embed_recordings([(signal (12, S) mV, rate)], windows='mean'|'center', kind) -> (N, ...)`:
  raw recordings through the run's own preprocessing; a recording longer than the model window
  is embedded window by window (`preprocess.preprocess_windows`, the last window aligned to the
  end) and averaged ('mean'; a projected mean is re-normalised) or centre-cropped ('center').
- `apply_fn() -> fn(params, ecg) -> pooled`: pure and un-jitted, for callers that jit it
  inside their own step (fine-tuning).

The embedding is jitted here and nowhere else: `_jitted(mesh)` holds one jitted function per
mesh with the model and the lead set static, so equal models (e.g. one `from_params` per
validation) share their compilation.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("pooled", "projected", "per_lead", "per_lead_max", "per_layer", "tokens")
# What `embed_ecg` returns without tokens, for a model encoder and for random convolutions.
MODEL_FEATURE_KINDS = ("pooled", "projected", "per_lead", "per_lead_max", "per_layer")
TRANSFORM_FEATURE_KINDS = ("pooled",)
# `per_layer` and `per_lead_max` match a small encoder's probe features to random convolutions'
# count (2,304 and 1,536 for 3 blocks x 12 leads x 64); a large encoder's are wide already, and
# at base size (12 x 12 x 768 = 110,592 a record for `per_layer`) they would make the feature
# cache gigabytes, so an encoder offers neither above this width.
MAX_WIDE_FEATURES = 8192
# What one forward pass yields at no extra cost (the wide kinds above need more work): a
# feature cache computes these whenever it runs the encoder at all.
CHEAP_FEATURE_KINDS = ("pooled", "projected", "per_lead")
WINDOWS = ("mean", "center")


# ----------------------------------------------------------------------------------------------
# The jitted computation.


def _is_encoder_block(module, method_name: str) -> bool:
  """Which intermediates `_embed` captures: each ECG encoder block's output."""
  from merit_jax.models import ecg_vit  # pylint: disable=g-import-not-at-top
  return isinstance(module, ecg_vit.EncoderBlock) and method_name == "__call__"


def _block_outputs(intermediates) -> list:
  """The ECG encoder's block outputs (B, T, D), in depth order, from captured intermediates."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(intermediates)
  blocks = {}
  for path, value in flat.items():
    # (..., 'encoder', 'transformer', 'block<i>', '__call__'): only the ECG encoder's stack
    # (the decoder and a from-scratch text tower are not called by embed_ecg anyway).
    if len(path) >= 4 and path[-4:-2] == ("encoder", "transformer"):
      blocks[int(path[-2][len("block"):])] = value[0] if isinstance(value, tuple) else value
  return [blocks[i] for i in sorted(blocks)]


def _per_lead_means(token_features, num_leads):
  """(B, leads * patches, D) lead-major tokens -> (B, leads * D): each lead's mean token."""
  b, _, width = token_features.shape
  return token_features.reshape(b, num_leads, -1, width).mean(axis=2).reshape(b, -1)


def _per_lead_mean_max(token_features, num_leads):
  """(B, leads * patches, D) lead-major tokens -> (B, leads * 2D): each lead's mean token, then
  its elementwise max over patches, lead by lead."""
  b, _, width = token_features.shape
  per_lead = token_features.reshape(b, num_leads, -1, width)
  return jnp.concatenate([per_lead.mean(axis=2), per_lead.max(axis=2)], axis=2).reshape(b, -1)


def wide_feature_widths(params, num_leads: int = 12) -> dict[str, int]:
  """{'per_layer': depth x leads x D, 'per_lead_max': leads x 2D} of a MERIT model's
  parameters: the feature kinds offered only up to MAX_WIDE_FEATURES."""
  encoder = params["encoder"]
  depth = sum(1 for name in encoder["transformer"] if name.startswith("block"))
  width = int(encoder["embed"]["patch_proj"]["kernel"].shape[-1])
  return {"per_layer": depth * num_leads * width, "per_lead_max": 2 * num_leads * width}


def _embed(model, params, ecg, leads, tokens, kinds):
  """`kinds` (static) of `MODEL_FEATURE_KINDS`, each offered by this model, [+ 'tokens']."""
  with_layers = "per_layer" in kinds
  out, state = model.apply({"params": params}, ecg, leads=leads, return_tokens=True,
                           method=model.embed_ecg,
                           capture_intermediates=_is_encoder_block if with_layers else False,
                           mutable=["intermediates"])
  token_features = out.pop("tokens")  # (B, leads * patches, D), lead-major.
  out = {k: v for k, v in out.items() if k in kinds}  # 'pooled', 'projected'.
  num_leads = ecg.shape[1] if leads is None else len(leads)
  # Per-lead means side by side: a probe feature 12x wider than `pooled`, for capacity
  # comparisons with wide classical features (chosen on validation by the probe).
  if "per_lead" in kinds:
    out["per_lead"] = _per_lead_means(token_features, num_leads)
  # Each lead's mean and max token: a mean dilutes a transient event (an ectopic beat, a
  # pause) over the whole window, a max keeps it, as random convolutions' max pooling does.
  if "per_lead_max" in kinds:
    out["per_lead_max"] = _per_lead_mean_max(token_features, num_leads)
  # The same at every block (the residual stream, before the final LayerNorm): depth x wider
  # again, so a shallow encoder's probe sees as many features as random convolutions give it.
  if with_layers:
    blocks = _block_outputs(state["intermediates"])
    out["per_layer"] = jnp.concatenate(
        [_per_lead_means(x.astype(jnp.float32), num_leads) for x in blocks], axis=1)
  if tokens:
    out["tokens"] = token_features
  return out


def _embed_text(model, params, text):
  return model.apply({"params": params}, text, method=model.embed_text)["projected"]


@functools.lru_cache(maxsize=None)
def _jitted(mesh) -> tuple[Callable, Callable]:
  """(embed(model, params, ecg, leads, tokens), embed_text(model, params, text)), jitted."""
  out_shardings = None
  if mesh is not None:
    out_shardings = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return (jax.jit(_embed, static_argnums=(0, 3, 4, 5), out_shardings=out_shardings),
          jax.jit(_embed_text, static_argnums=0, out_shardings=out_shardings))


def _replicate(array: np.ndarray, mesh) -> Any:
  """A host array every process holds in full, as a replicated global array over `mesh`."""
  if mesh is None or jax.process_count() == 1:
    return jnp.asarray(array)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _pad_batch(x: np.ndarray, size: int) -> np.ndarray:
  if x.shape[0] >= size:
    return x
  return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], axis=0)], axis=0)


class _TowerAsTokenizer:
  """A frozen tower behind the tokenizer call `embed_text` makes: text -> pooled rows."""

  def __init__(self, tower):
    self._tower = tower

  def encode_batch(self, texts, max_len=None):
    del max_len
    return self._tower.embed(texts)


# ----------------------------------------------------------------------------------------------
# Checkpoint helpers.


def _manager_dir(checkpoint_dir: str) -> str:
  """The folder holding the step folders of a run dir (or the folder itself)."""
  from merit_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.path.expanduser(str(checkpoint_dir)))
  if os.path.isfile(os.path.join(path, checkpoint_lib.CONFIG_FILE)):
    for sub in (checkpoint_lib.LATEST_DIR, checkpoint_lib.BEST_DIR):
      if os.path.isdir(os.path.join(path, sub)):
        return os.path.join(path, sub)
  return path


def latest_step(checkpoint_dir: str) -> int:
  """The newest complete step of a run (what `from_checkpoint` loads by default)."""
  folder = _manager_dir(checkpoint_dir)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"checkpoint path {checkpoint_dir!r} does not exist")
  steps = [int(n) for n in os.listdir(folder)
           if n.isdigit() and os.path.isdir(os.path.join(folder, n, "state"))]
  if not steps:
    raise FileNotFoundError(f"no complete checkpoint under {folder} (from {checkpoint_dir!r}); "
                            "pass the --workdir of a finished training run")
  return max(steps)


def _run_name(checkpoint_dir: str) -> str:
  path = os.path.abspath(os.path.expanduser(str(checkpoint_dir))).rstrip("/")
  base = os.path.basename(path)
  if base.startswith("checkpoints"):
    base = os.path.basename(os.path.dirname(path))
  return base or "run"


def _config_digest(config) -> str:
  text = config.model.to_json_best_effort(sort_keys=True) + str(
      config.data.preprocess.to_json_best_effort(sort_keys=True))
  return hashlib.sha1(text.encode()).hexdigest()[:8]


def _as_leads_major(signal: np.ndarray, num_leads: int) -> np.ndarray:
  """(leads, S) of a recording given leads-major or samples-major (S, leads)."""
  signal = np.asarray(signal)
  if signal.ndim != 2 or num_leads not in signal.shape:
    raise ValueError(f"a recording must be (leads={num_leads}, samples) or (samples, "
                     f"{num_leads}), got {signal.shape}")
  return signal if signal.shape[0] == num_leads else signal.T


# ----------------------------------------------------------------------------------------------
# The encoder.


class Encoder:
  """One source of ECG features (and optionally text embeddings); see module docstring."""

  def __init__(self, name: str, cache_key: str, *, model=None, params=None, config=None,
               tokenizer=None, step: Optional[int] = None, preprocess=None,
               batch_size: int = 64, mesh=None, transform: Optional[Callable] = None):
    if batch_size < 1:
      raise ValueError(f"Encoder: batch_size must be >= 1, got {batch_size}")
    self.name = name
    self.cache_key = cache_key
    self.model = model
    self.params = params
    self.config = config
    self.tokenizer = tokenizer
    self.step = step
    self.preprocess = preprocess
    self.batch_size = int(batch_size)
    self.mesh = mesh
    self._transform = transform  # Non-MERIT encoders: ecg (B, leads, S) -> (B, D).
    self._text_tokenizer = None
    if model is not None:
      from merit_jax.models import text_tower  # pylint: disable=g-import-not-at-top
      if text_tower.is_frozen(config.model.text):
        # The frozen tower runs outside the model; MERIT only projects its pooled output.
        self._text_tokenizer = _TowerAsTokenizer(
            text_tower.FrozenTextTower.from_config(config.model.text, self.batch_size))
      else:
        self._text_tokenizer = tokenizer

  def __repr__(self) -> str:
    return f"Encoder(name={self.name!r}, cache_key={self.cache_key!r})"

  @property
  def supports_lead_subsets(self) -> bool:
    # Random convolutions lay their features out per lead: the probe's weights expect every
    # lead's block, so a reduced-lead input can only be zero-filled.
    return self.model is not None

  @property
  def has_text(self) -> bool:
    return self._text_tokenizer is not None

  @property
  def feature_kinds(self) -> tuple[str, ...]:
    """The keys `embed_ecg` returns (without tokens): what a feature cache must hold."""
    if self.model is None:
      return TRANSFORM_FEATURE_KINDS
    widths = wide_feature_widths(self.params, self.model.num_leads)
    return tuple(k for k in MODEL_FEATURE_KINDS if widths.get(k, 0) <= MAX_WIDE_FEATURES)

  def check_kinds(self, kinds: Optional[Sequence[str]]) -> tuple[str, ...]:
    """`kinds` as a tuple (None: every one of `feature_kinds`); a ValueError names any kind
    this encoder does not offer."""
    offered = self.feature_kinds  # Derived from the parameters: read once.
    kinds = offered if kinds is None else tuple(kinds)
    unknown = [k for k in kinds if k not in offered]
    if unknown:
      raise ValueError(f"encoder {self.name!r} has no {', '.join(map(repr, unknown))} "
                       f"features (it offers {', '.join(offered)})")
    return kinds

  # -------------------------------------------------------------------------------- building

  @classmethod
  def from_checkpoint(cls, checkpoint_dir: str, step: Optional[int] = None,
                      batch_size: int = 64, name: Optional[str] = None) -> "Encoder":
    """A trained MERIT run (its latest step unless `step` is given)."""
    from merit_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
    step = latest_step(checkpoint_dir) if step is None else int(step)
    model, params, config, preprocess, tokenizer = checkpoint_lib.load_for_inference(
        checkpoint_dir, step)
    run = _run_name(checkpoint_dir)
    digest = hashlib.sha1(os.path.abspath(os.path.expanduser(str(checkpoint_dir))).encode()
                          ).hexdigest()[:8]
    return cls(name or run, f"{run}-step{step}-{digest}", model=model, params=params,
               config=config, tokenizer=tokenizer, step=step, preprocess=preprocess,
               batch_size=batch_size)

  @classmethod
  def random_init(cls, config, tokenizer=None, seed: int = 0, batch_size: int = 64,
                  name: str = "random_init") -> "Encoder":
    """The architecture of `config`, randomly initialised (the same init as training)."""
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    from merit_jax.models import merit as merit_lib  # pylint: disable=g-import-not-at-top
    config = config.copy_and_resolve_references()
    if tokenizer is not None:
      config.model.text.vocab_size = int(tokenizer.vocab_size)
    model = merit_lib.build_model(config)
    ecg = jnp.zeros((1, model.num_leads, model.num_samples), jnp.float32)
    text = merit_lib.dummy_text_input(config)
    params_key, mask_key = jax.random.split(jax.random.key(seed))
    params = jax.jit(lambda k1, k2: nn.unbox(model.init(
        {"params": k1}, ecg, text, k2, reconstruction=True, contrastive=True)["params"]))(
            params_key, mask_key)
    return cls(name, f"random_init-s{seed}-{_config_digest(config)}", model=model,
               params=params, config=config, tokenizer=tokenizer, step=0,
               preprocess=_preprocess_config(config), batch_size=batch_size)

  @classmethod
  def from_params(cls, model, params, config, tokenizer, name: str = "train", mesh=None,
                  batch_size: int = 64, step: Optional[int] = None) -> "Encoder":
    """A model in training; pass `step` when its features go to a `FeatureStore` cache."""
    tag = "" if step is None else f"-step{int(step)}"
    return cls(name, f"{name}{tag}-{_config_digest(config)}", model=model, params=params,
               config=config, tokenizer=tokenizer, step=step,
               preprocess=_preprocess_config(config), batch_size=batch_size, mesh=mesh)

  @classmethod
  def random_conv(cls, num_kernels: int = 500, seed: int = 0, num_samples: int = 1000,
                  name: str = "random_conv") -> "Encoder":
    """ROCKET-style random convolution features (no text tower, no lead subsets)."""
    # pylint: disable-next=g-import-not-at-top
    from merit_jax.evaluators import random_conv as random_conv_lib
    transform = random_conv_lib.RandomConvFeatures(num_kernels, seed, num_samples)
    return cls(name, transform.cache_key, transform=transform)

  # ------------------------------------------------------------------------------- embedding

  def embed_ecg(self, ecg: np.ndarray, leads: Optional[Sequence[int]] = None,
                tokens: bool = False,
                kinds: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """Features of preprocessed ECGs (B, leads, S); see module docstring. `kinds`: which of
    `feature_kinds` to compute (None = all of them); the wide ones cost extra work."""
    ecg = np.asarray(ecg, np.float32)
    kinds = self.check_kinds(kinds)
    if self.model is None:
      if leads is not None or tokens:
        raise ValueError(f"encoder {self.name!r} takes neither lead subsets nor returns "
                         "tokens (zero-fill missing leads instead)")
      return {"pooled": np.asarray(self._transform(ecg), np.float32)} if kinds else {}
    if ecg.ndim != 3 or ecg.shape[0] == 0:
      raise ValueError(f"encoder {self.name!r}: expected ECGs (batch >= 1, leads, samples), "
                       f"got {ecg.shape}")
    leads = None if leads is None else tuple(int(i) for i in leads)
    embed, _ = _jitted(self.mesh)
    parts: dict[str, list] = {}
    for start in range(0, ecg.shape[0], self.batch_size):
      chunk = ecg[start:start + self.batch_size]
      out = embed(self.model, self.params,
                  _replicate(_pad_batch(chunk, self.batch_size), self.mesh), leads,
                  bool(tokens), tuple(sorted(kinds)))
      for k, v in jax.device_get(out).items():
        parts.setdefault(k, []).append(np.asarray(v, np.float32)[:chunk.shape[0]])
    return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}

  def embed_kind(self, ecg: np.ndarray, kind: str) -> np.ndarray:
    """One kind of `KINDS` of preprocessed ECGs (B, leads, S), computing no other."""
    if kind == "tokens":
      return self.embed_ecg(ecg, tokens=True, kinds=())["tokens"]
    return self.embed_ecg(ecg, kinds=(kind,))[kind]

  def embed_text(self, texts: Sequence[str]) -> Optional[np.ndarray]:
    """(n, P) projected embeddings of `texts`, or None for an encoder without a text tower."""
    if not self.has_text:
      return None
    _, embed_text = _jitted(self.mesh)
    max_len = int(self.config.data.max_text_len)
    out = []
    for start in range(0, len(texts), self.batch_size):
      chunk = list(texts[start:start + self.batch_size])
      text = self._text_tokenizer.encode_batch(chunk, max_len)
      emb = embed_text(self.model, self.params,
                       _replicate(_pad_batch(np.asarray(text), self.batch_size), self.mesh))
      out.append(np.asarray(jax.device_get(emb), np.float32)[:len(chunk)])
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)

  def apply_fn(self) -> Callable[[Any, Any], jax.Array]:
    """Pure, un-jitted `fn(params, ecg (B, leads, S)) -> pooled (B, D)` of this model."""
    if self.model is None:
      raise ValueError(f"encoder {self.name!r} is not a network: it has no apply function")
    model = self.model

    def apply(params, ecg):
      return model.apply({"params": params}, ecg, method=model.embed_ecg)["pooled"]

    return apply

  # ------------------------------------------------------------------------------ recordings

  def model_inputs(self, records: Sequence[tuple[np.ndarray, Optional[float]]],
                   windows: str = "mean") -> tuple[list[np.ndarray], np.ndarray]:
    """(model inputs (leads, S), the record index of each): every window, or the centre.

    `records` are `(signal, rate)`: signal (12, S) in mV (samples-major (S, 12) is
    transposed), rate in Hz (None: the run's own rate).
    """
    from merit_jax.data import preprocess as preprocess_lib  # pylint: disable=g-import-not-at-top
    if windows not in WINDOWS:
      raise ValueError(f"windows must be one of {WINDOWS}, got {windows!r}")
    if self.preprocess is None:
      raise ValueError(f"encoder {self.name!r} has no preprocessing config: pass it "
                       "preprocessed ECGs (embed_ecg)")
    num_leads = self.model.num_leads
    inputs, owner = [], []
    for i, (signal, rate) in enumerate(records):
      signal = _as_leads_major(signal, num_leads)
      rate = self.preprocess.sample_rate if rate is None else float(rate)
      if windows == "center":
        parts = [preprocess_lib.preprocess(signal, rate, self.preprocess)]
      else:
        parts = list(preprocess_lib.preprocess_windows(signal, rate, self.preprocess))
      inputs += parts
      owner += [i] * len(parts)
    return inputs, np.asarray(owner, np.int64)

  def embed_recordings(self, records: Sequence[tuple[np.ndarray, Optional[float]]],
                       windows: str = "mean", kind: str = "pooled",
                       progress: bool = False) -> np.ndarray:
    """One `kind` embedding per raw recording (see module docstring); float32 (N, ...).

    With `progress`, a bar over batches and a note on stderr of how many recordings were
    longer than the model window (and so averaged over several windows).
    """
    if kind not in KINDS:
      raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not records:
      raise ValueError("embed_recordings: no recordings")
    inputs, owner = self.model_inputs(records, windows)
    batches = range(0, len(inputs), self.batch_size)
    if progress and len(batches) > 1:
      from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
      batches = tqdm_auto.tqdm(batches, desc="embed", unit="batch", file=sys.stderr)
    per_window = np.concatenate([
        self.embed_kind(np.stack(inputs[start:start + self.batch_size]), kind)
        for start in batches], axis=0)
    counts = np.bincount(owner, minlength=len(records))
    emb = np.zeros((len(records),) + per_window.shape[1:], np.float32)
    np.add.at(emb, owner, per_window)
    emb /= counts.reshape((-1,) + (1,) * (emb.ndim - 1))
    if kind == "projected" and counts.max() > 1:  # A mean of unit vectors is not one.
      emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    if progress and counts.max() > 1:
      print(f"embed: {int((counts > 1).sum())} of {len(records)} records are longer than the "
            f"model window; their {int(counts[counts > 1].sum())} windows were embedded and "
            "averaged per record (--windows=center keeps only the centred window)",
            file=sys.stderr)
    return emb


def _preprocess_config(config):
  from merit_jax.data import preprocess as preprocess_lib  # pylint: disable=g-import-not-at-top
  return preprocess_lib.PreprocessConfig.from_config(config.data.preprocess)
