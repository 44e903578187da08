"""Config checks that run before any compute.

`validate_config(config, num_devices)` stops a run with a `ConfigError` naming the offending
key, its value and a fix, instead of a shape error deep inside jit minutes later. It checks the
things that are cheap to know up front: divisibility of patches and batches, mesh shape, enum
values, and combinations that leave nothing to train.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

MODEL_SIZES = ("tiny", "small", "base")
TEXT_KINDS = ("transformer", "hf_bert", "gemma3")
CONTRASTIVE_VIEWS = ("masked", "full")
DTYPES = ("float32", "bfloat16")
TOKENIZER_KINDS = ("sentencepiece", "hf")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and the fix."""


def _get(config: Any, dotted: str, default: Any = None) -> Any:
  node = config
  for part in dotted.split("."):
    if node is None:
      return default
    try:
      node = node[part]
    except (KeyError, AttributeError, TypeError):
      return default
  return node


def mesh_shape(mesh_cfg: Any, num_devices: int) -> tuple[int, int]:
  """Resolves config.mesh {data, fsdp} (-1 = the remaining devices) to a concrete shape."""
  data = int(_get(mesh_cfg, "data", -1))
  fsdp = int(_get(mesh_cfg, "fsdp", 1))
  if fsdp == -1 and data == -1:
    raise ConfigError("config.mesh: at most one of mesh.data and mesh.fsdp may be -1; "
                      f"set e.g. --config.mesh.fsdp=1 (devices: {num_devices})")
  for name, value in (("data", data), ("fsdp", fsdp)):
    if value == 0 or value < -1:
      raise ConfigError(f"config.mesh.{name}={value} must be a positive device count or -1 "
                        "(= all remaining devices)")
  if data == -1 or fsdp == -1:
    fixed = fsdp if data == -1 else data
    if num_devices % fixed:
      other = "fsdp" if data == -1 else "data"
      raise ConfigError(
          f"config.mesh.{other}={fixed} does not divide the {num_devices} available devices; "
          f"choose a divisor of {num_devices}")
    resolved = num_devices // fixed
    return (resolved, fsdp) if data == -1 else (data, resolved)
  if data * fsdp != num_devices:
    raise ConfigError(
        f"config.mesh data={data} x fsdp={fsdp} = {data * fsdp} devices, but "
        f"{num_devices} are available; set --config.mesh.data=-1 to use all devices or make "
        "the product match")
  return data, fsdp


def validate_config(config: ml_collections.ConfigDict, num_devices: int,
                    num_processes: int = 1, check_paths: bool = True) -> tuple[int, int]:
  """Checks a pretraining config against the devices; returns the resolved mesh shape.

  Args:
    config: a `configs/pretrain.py` config (possibly with command-line overrides).
    num_devices: global device count (`jax.device_count()`).
    num_processes: `jax.process_count()`; the global batch must split evenly over processes.
    check_paths: also check that local paths the run needs (hf_dir, tokenizer path) exist.

  Raises:
    ConfigError: with the key, the value and how to fix it.
  """
  errors = []

  def fail(msg):
    errors.append(msg)

  # --- training length and bookkeeping ---------------------------------------------------
  for key in ("total_steps", "batch_size", "log_every", "eval_every", "checkpoint_every"):
    value = _get(config, key)
    if not isinstance(value, int) or value <= 0:
      fail(f"config.{key}={value!r} must be a positive integer")
  keep = _get(config, "keep_checkpoints", 1)
  if not isinstance(keep, int) or keep < 1:
    fail(f"config.keep_checkpoints={keep!r} must be >= 1 (the latest checkpoint is needed to "
         "resume)")

  # --- model -------------------------------------------------------------------------------
  size = _get(config, "model.size")
  if size not in MODEL_SIZES:
    fail(f"config.model.size={size!r} is not a known size; choose one of "
         f"{', '.join(MODEL_SIZES)} (and override width/depth/heads with "
         "--config.model.width=... if you need another shape)")
  width, heads = _get(config, "model.width"), _get(config, "model.heads")
  if width is not None and heads is not None and width % heads:
    fail(f"config.model.width={width} is not divisible by config.model.heads={heads}; choose "
         "heads that divide the width")
  for key in ("model.decoder", "model.text"):
    w, h = _get(config, f"{key}.width"), _get(config, f"{key}.heads")
    if w is not None and h is not None and (h <= 0 or w % h):
      fail(f"config.{key}.width={w} is not divisible by config.{key}.heads={h}")
  patch = _get(config, "model.patch_size")
  num_samples = _get(config, "data.preprocess.num_samples")
  if not isinstance(patch, int) or patch <= 0:
    fail(f"config.model.patch_size={patch!r} must be a positive integer")
  elif isinstance(num_samples, int) and num_samples % patch:
    divisors = [d for d in range(max(1, patch // 2), 2 * patch + 1) if num_samples % d == 0]
    fail(f"config.model.patch_size={patch} does not divide "
         f"config.data.preprocess.num_samples={num_samples}; choose a patch size that divides "
         f"it (e.g. {divisors[:4]}) or change num_samples")
  num_leads = _get(config, "model.num_leads", 12)
  if num_leads != 12:
    fail(f"config.model.num_leads={num_leads}: the datasets store 12 leads; reduced-lead "
         "inputs are handled by lead masking at evaluation, keep 12")
  mask_ratio = _get(config, "model.mask_ratio", 0.75)
  if not 0.0 < float(mask_ratio) < 1.0:
    fail(f"config.model.mask_ratio={mask_ratio} must lie strictly between 0 and 1")
  dtype = _get(config, "model.dtype", "float32")
  if dtype not in DTYPES:
    fail(f"config.model.dtype={dtype!r} must be one of {', '.join(DTYPES)}")
  text_kind = _get(config, "model.text.kind", "transformer")
  if text_kind not in TEXT_KINDS:
    fail(f"config.model.text.kind={text_kind!r} must be one of {', '.join(TEXT_KINDS)}")
  elif text_kind == "hf_bert":
    hf_dir = _get(config, "model.text.hf_dir")
    if not hf_dir:
      fail("config.model.text.kind='hf_bert' needs config.model.text.hf_dir (a local Hugging "
           "Face folder with config.json and model.safetensors)")
    elif check_paths:
      from merit_jax.models import text as text_lib  # pylint: disable=g-import-not-at-top
      try:
        if not text_lib.resolve_hf_dir(hf_dir).is_dir():
          fail(f"config.model.text.hf_dir={hf_dir!r} does not exist")
      except FileNotFoundError as e:
        fail(f"config.model.text.hf_dir={hf_dir!r}: {e}")
  frozen = _get(config, "model.text.frozen", False)
  if frozen and text_kind == "transformer":
    fail("config.model.text.frozen=True needs a pretrained tower (kind='hf_bert' or "
         "'gemma3'), got kind='transformer': a from-scratch tower must train")
  if text_kind == "gemma3" and not frozen:
    fail("config.model.text.kind='gemma3' is supported as a frozen tower only: set "
         "config.model.text.frozen=True (its cached states feed a learned projection)")
  from merit_jax.models import text_tower  # pylint: disable=g-import-not-at-top
  pooling = _get(config, "model.text.pooling", "mean")
  allowed = text_tower.POOLINGS.get(text_kind, ("mean",))  # A from-scratch tower: mean only.
  if pooling not in allowed:
    fail(f"config.model.text.pooling={pooling!r} must be one of {', '.join(allowed)} for "
         f"kind={text_kind!r}")
  layer = _get(config, "model.text.layer")
  if layer is not None and (not isinstance(layer, int) or layer < 1):
    fail(f"config.model.text.layer={layer!r} must be a layer number >= 1 or None (the last)")
  temp = _get(config, "model.temperature_init", 0.07)
  if temp is not None and float(temp) <= 0:
    fail(f"config.model.temperature_init={temp} must be > 0")

  # --- objective -------------------------------------------------------------------------
  lam = _get(config, "objective.lambda_nce", 1.0)
  if lam is None or float(lam) < 0:
    fail(f"config.objective.lambda_nce={lam} must be >= 0 (0 = masked modelling only)")
  rec = _get(config, "objective.reconstruction", True)
  if not rec and lam is not None and float(lam) == 0:
    fail("both branches are off: config.objective.reconstruction=False and "
         "config.objective.lambda_nce=0 leave nothing to train; set lambda_nce > 0 "
         "(contrastive only) or reconstruction=True (masked modelling only)")
  view = _get(config, "objective.contrastive_view", "masked")
  if view not in CONTRASTIVE_VIEWS:
    fail(f"config.objective.contrastive_view={view!r} must be one of "
         f"{', '.join(CONTRASTIVE_VIEWS)}")

  # --- optimiser -------------------------------------------------------------------------
  lr = _get(config, "optim.lr")
  if lr is None or float(lr) <= 0:
    fail(f"config.optim.lr={lr} must be > 0")
  warmup = _get(config, "optim.warmup_steps", 0)
  total = _get(config, "total_steps")
  if isinstance(warmup, int) and isinstance(total, int) and not 0 <= warmup <= total:
    fail(f"config.optim.warmup_steps={warmup} must lie in [0, total_steps={total}]")

  # --- mesh and batch --------------------------------------------------------------------
  shape = (num_devices, 1)
  try:
    shape = mesh_shape(_get(config, "mesh"), num_devices)
  except ConfigError as e:
    fail(str(e))
  batch = _get(config, "batch_size")
  if isinstance(batch, int) and batch > 0:
    if batch % num_devices:
      fail(f"config.batch_size={batch} (global) does not divide over the {num_devices} "
           f"devices; use a multiple of {num_devices}, e.g. "
           f"--config.batch_size={max(num_devices, batch // num_devices * num_devices)}")
    elif batch % num_processes:
      fail(f"config.batch_size={batch} does not divide over the {num_processes} processes")
    if _get(config, "objective.lambda_nce", 1.0) and batch < 2:
      fail(f"config.batch_size={batch}: InfoNCE needs at least 2 pairs per batch")

  # --- data --------------------------------------------------------------------------------
  sources = _get(config, "data.sources")
  if sources:
    for i, src in enumerate(sources):
      for key in ("name", "data_dir"):
        if not src.get(key):
          fail(f"config.data.sources[{i}] needs a {key!r}")
      weight = src.get("weight", 1.0)
      if weight is None or float(weight) <= 0:
        fail(f"config.data.sources[{i}].weight={weight} must be > 0")
  elif not _get(config, "data.name"):
    fail("config.data.name is empty; name a TFDS dataset (e.g. 'ptbxl', 'synthetic_ecg')")
  rate = _get(config, "data.preprocess.sample_rate")
  if not isinstance(rate, int) or rate <= 0:
    fail(f"config.data.preprocess.sample_rate={rate!r} must be a positive integer (Hz)")
  tok_kind = _get(config, "data.tokenizer.kind", "sentencepiece")
  if tok_kind not in TOKENIZER_KINDS:
    fail(f"config.data.tokenizer.kind={tok_kind!r} must be one of {', '.join(TOKENIZER_KINDS)}")
  tok_path = _get(config, "data.tokenizer.path")
  if check_paths and tok_path and not os.path.exists(os.path.expanduser(tok_path)):
    fail(f"config.data.tokenizer.path={tok_path!r} does not exist")
  max_len = _get(config, "data.max_text_len")
  if not isinstance(max_len, int) or max_len < 2:
    fail(f"config.data.max_text_len={max_len!r} must be an integer >= 2")
  text_max = _get(config, "model.text.max_len")
  if isinstance(text_max, int) and isinstance(max_len, int) and max_len > text_max:
    fail(f"config.data.max_text_len={max_len} exceeds config.model.text.max_len={text_max} "
         "(the text tower's position table); raise model.text.max_len or lower max_text_len")

  if errors:
    raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))
  return shape


# --- evaluate configs (validate_evaluate_config) ---


# --- generate configs (validate_generate_config) ---
