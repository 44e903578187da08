"""The one validator of the configs, run before any compute.

`validate_config(config, num_devices)` stops a training run with a `ConfigError` naming every
offending key, its value and the allowed values, instead of a shape error deep inside jit
minutes later. It checks what is cheap to know up front: divisibility of patches and batches,
the mesh shape, enum values, and combinations that leave nothing to train. The evaluate and
generate configs have their own sections below.

`complete_run_config(saved)` turns a run's config.json into a config that has every key of
configs/pretrain.py: keys added after the run was written take their defaults there.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import ml_collections

MODEL_SIZES = ("tiny", "small", "base")
TEXT_KINDS = ("transformer", "hf_bert", "gemma3")
CONTRASTIVE_VIEWS = ("masked", "full")
MASK_STRATEGIES = ("random", "time")  # models/merit.random_masking / time_masking
STEMS = ("linear", "conv")  # models/ecg_vit.TokenEmbedding
DTYPES = ("float32", "bfloat16")
TOKENIZER_KINDS = ("sentencepiece", "hf")
MESH_RULES = (None, "replicate", "fsdp")
# The keys of a data.sources entry; name and data_dir are required, the rest optional
# (data/pipeline.SourceSpec: weight 1.0, reports True; provision.py: manual_dir, build_kwargs).
SOURCE_KEYS = ("name", "config", "data_dir", "manual_dir", "weight", "reports", "build_kwargs")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key, the value and the fix."""


def choice_error(key: str, value: Any, allowed: tuple) -> str | None:
  """'config.<key>=<value> must be one of <allowed>' when value is not allowed, else None."""
  if value in allowed:
    return None
  return f"config.{key}={value!r} must be one of {', '.join(map(repr, allowed))}"


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def mesh_shape(mesh_cfg: Mapping[str, Any], num_devices: int) -> tuple[int, int]:
  """Resolves config.mesh {data, fsdp} (-1 = the remaining devices) to a concrete shape."""
  data, fsdp = int(mesh_cfg["data"]), int(mesh_cfg["fsdp"])
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
    ConfigError: with every offending key, its value and how to fix it.
  """
  errors = []

  def fail(msg):
    if msg:
      errors.append(msg)

  # --- training length and bookkeeping ---------------------------------------------------
  for key in ("total_steps", "batch_size", "log_every", "eval_every", "checkpoint_every"):
    value = config[key]
    if not _is_int(value) or value <= 0:
      fail(f"config.{key}={value!r} must be a positive integer")
  keep = config.keep_checkpoints
  if not _is_int(keep) or keep < 1:
    fail(f"config.keep_checkpoints={keep!r} must be >= 1 (the latest checkpoint is needed to "
         "resume)")

  # --- model -------------------------------------------------------------------------------
  model = config.model
  if model.size not in MODEL_SIZES:
    fail(f"config.model.size={model.size!r} is not a known size; choose one of "
         f"{', '.join(MODEL_SIZES)} (and override width/depth/heads with "
         "--config.model.width=... if you need another shape)")
  for key in ("width", "depth", "heads", "mlp_dim"):
    value = model[key]
    if value is not None and (not _is_int(value) or value <= 0):
      fail(f"config.model.{key}={value!r} must be a positive integer or None (= from the "
           f"size preset {model.size!r})")
  if model.width is not None and model.heads is not None and model.width % model.heads:
    fail(f"config.model.width={model.width} is not divisible by config.model.heads="
         f"{model.heads}; choose heads that divide the width")
  for key in ("decoder", "text"):
    w, h = model[key].width, model[key].heads
    if w is not None and h is not None and (h <= 0 or w % h):
      fail(f"config.model.{key}.width={w} is not divisible by config.model.{key}.heads={h}")
  patch = model.patch_size
  num_samples = config.data.preprocess.num_samples
  if not _is_int(patch) or patch <= 0:
    fail(f"config.model.patch_size={patch!r} must be a positive integer")
  elif _is_int(num_samples) and num_samples % patch:
    divisors = [d for d in range(max(1, patch // 2), 2 * patch + 1) if num_samples % d == 0]
    fail(f"config.model.patch_size={patch} does not divide "
         f"config.data.preprocess.num_samples={num_samples}; choose a patch size that divides "
         f"it (e.g. {divisors[:4]}) or change num_samples")
  fail(choice_error("model.stem", model.stem, STEMS))
  if not _is_int(model.stem_channels) or model.stem_channels < 1:
    fail(f"config.model.stem_channels={model.stem_channels!r} must be a positive integer")
  if model.num_leads != 12:
    fail(f"config.model.num_leads={model.num_leads}: the datasets store 12 leads; "
         "reduced-lead inputs are handled by lead masking at evaluation, keep 12")
  if not 0.0 < float(model.mask_ratio) < 1.0:
    fail(f"config.model.mask_ratio={model.mask_ratio} must lie strictly between 0 and 1")
  fail(choice_error("model.mask_strategy", model.mask_strategy, MASK_STRATEGIES))
  fail(choice_error("model.dtype", model.dtype, DTYPES))
  text = model.text
  fail(choice_error("model.text.kind", text.kind, TEXT_KINDS))
  if text.kind == "hf_bert":
    if not text.hf_dir:
      fail("config.model.text.kind='hf_bert' needs config.model.text.hf_dir (a local Hugging "
           "Face folder with config.json and model.safetensors, or pkg:<python package>)")
    elif check_paths:
      from merit_jax.models import text as text_lib  # pylint: disable=g-import-not-at-top
      try:
        if not text_lib.resolve_hf_dir(text.hf_dir).is_dir():
          fail(f"config.model.text.hf_dir={text.hf_dir!r} does not exist")
      except FileNotFoundError as e:
        fail(f"config.model.text.hf_dir={text.hf_dir!r}: {e}")
  if text.frozen and text.kind == "transformer":
    fail("config.model.text.frozen=True needs a pretrained tower (kind='hf_bert' or "
         "'gemma3'), got kind='transformer': a from-scratch tower must train")
  if text.kind == "gemma3" and not text.frozen:
    fail("config.model.text.kind='gemma3' is supported as a frozen tower only: set "
         "config.model.text.frozen=True (its cached states feed a learned projection)")
  from merit_jax.models import text_tower  # pylint: disable=g-import-not-at-top
  # A from-scratch tower pools by mean only.
  fail(choice_error("model.text.pooling", text.pooling,
                    tuple(text_tower.POOLINGS.get(text.kind, ("mean",)))))
  tune = text.get("tune_blocks", 0)
  if not _is_int(tune) or tune < 0:
    fail(f"config.model.text.tune_blocks={tune!r} must be an integer >= 0 (0 = the whole "
         "tower frozen)")
  elif tune and (text.kind != "gemma3" or not text.frozen):
    fail(f"config.model.text.tune_blocks={tune} needs kind='gemma3' with frozen=True (its "
         f"frozen trunk is cached; the last blocks train), got kind={text.kind!r}, "
         f"frozen={text.frozen}")
  elif tune and text.layer is not None and _is_int(text.layer) and tune > text.layer:
    fail(f"config.model.text.tune_blocks={tune} exceeds model.text.layer={text.layer}: the "
         "tuned blocks are the last ones up to that layer")
  if text.layer is not None and (not _is_int(text.layer) or text.layer < 1):
    fail(f"config.model.text.layer={text.layer!r} must be a layer number >= 1 or None (the "
         "last)")
  if float(model.temperature_init) <= 0:
    fail(f"config.model.temperature_init={model.temperature_init} must be > 0")

  # --- objective -------------------------------------------------------------------------
  objective = config.objective
  lam = objective.lambda_nce
  if lam is None or float(lam) < 0:
    fail(f"config.objective.lambda_nce={lam} must be >= 0 (0 = masked modelling only)")
  elif not objective.reconstruction and float(lam) == 0:
    fail("both branches are off: config.objective.reconstruction=False and "
         "config.objective.lambda_nce=0 leave nothing to train; set lambda_nce > 0 "
         "(contrastive only) or reconstruction=True (masked modelling only)")
  fail(choice_error("objective.contrastive_view", objective.contrastive_view,
                    CONTRASTIVE_VIEWS))

  # --- optimiser -------------------------------------------------------------------------
  optim = config.optim
  if optim.lr is None or float(optim.lr) <= 0:
    fail(f"config.optim.lr={optim.lr} must be > 0")
  warmup, total = optim.warmup_steps, config.total_steps
  if _is_int(warmup) and _is_int(total) and not 0 <= warmup <= total:
    fail(f"config.optim.warmup_steps={warmup} must lie in [0, total_steps={total}]")
  if not 0.0 <= float(optim.min_lr_ratio) <= 1.0:
    fail(f"config.optim.min_lr_ratio={optim.min_lr_ratio} must lie in [0, 1] (the final "
         "learning rate is lr * min_lr_ratio)")
  if not float(optim.get("text_lr_scale", 1.0)) > 0:
    fail(f"config.optim.text_lr_scale={optim.text_lr_scale} must be > 0 (the text encoder's "
         "learning rate is lr * text_lr_scale)")
  if optim.grad_clip is not None and float(optim.grad_clip) < 0:
    fail(f"config.optim.grad_clip={optim.grad_clip} must be >= 0 (None or 0 = no clipping)")

  # --- mesh and batch --------------------------------------------------------------------
  shape = (num_devices, 1)
  try:
    shape = mesh_shape(config.mesh, num_devices)
  except ConfigError as e:
    fail(str(e))
  fail(choice_error("mesh.rules", config.mesh.rules, MESH_RULES))
  batch = config.batch_size
  if _is_int(batch) and batch > 0:
    if batch % num_devices:
      fail(f"config.batch_size={batch} (global) does not divide over the {num_devices} "
           f"devices; use a multiple of {num_devices}, e.g. "
           f"--config.batch_size={max(num_devices, batch // num_devices * num_devices)}")
    elif batch % num_processes:
      fail(f"config.batch_size={batch} does not divide over the {num_processes} processes")
    if objective.lambda_nce and batch < 2:
      fail(f"config.batch_size={batch}: InfoNCE needs at least 2 pairs per batch")

  # --- data --------------------------------------------------------------------------------
  data = config.data
  if data.sources:
    for i, src in enumerate(data.sources):
      unknown = sorted(set(src) - set(SOURCE_KEYS))
      if unknown:
        fail(f"config.data.sources[{i}] has unknown keys {unknown}; allowed: "
             f"{', '.join(SOURCE_KEYS)}")
      for key in ("name", "data_dir"):
        if not src.get(key):  # A list entry: its optional fields are SourceSpec's.
          fail(f"config.data.sources[{i}] needs a {key!r}")
      weight = src.get("weight", 1.0)
      if weight is None or float(weight) <= 0:
        fail(f"config.data.sources[{i}].weight={weight} must be > 0")
      fail(choice_error(f"data.sources[{i}].reports", src.get("reports", True), (True, False)))
  elif not data.name:
    fail("config.data.name is empty; name a TFDS dataset (e.g. 'ptbxl', 'synthetic_ecg')")
  share = data.get("report_less_share")
  if share is not None:
    if not data.sources:
      fail(f"config.data.report_less_share={share} needs a data.sources mixture with "
           "reports=False (ECG-only) sources")
    elif not 0.0 < float(share) < 1.0:
      fail(f"config.data.report_less_share={share} must lie strictly between 0 and 1 (the "
           "share of each batch drawn from the ECG-only sources)")
  fail(choice_error("data.drop_empty_reports", data.drop_empty_reports, (None, True, False)))
  rate = data.preprocess.sample_rate
  if not _is_int(rate) or rate <= 0:
    fail(f"config.data.preprocess.sample_rate={rate!r} must be a positive integer (Hz)")
  for key in ("worker_count", "num_threads"):
    if not _is_int(data[key]) or data[key] < 0:
      fail(f"config.data.{key}={data[key]!r} must be an integer >= 0 (0 = default)")
  fail(choice_error("data.tokenizer.kind", data.tokenizer.kind, TOKENIZER_KINDS))
  tok_path = data.tokenizer.path
  if check_paths and tok_path and not os.path.exists(os.path.expanduser(tok_path)):
    fail(f"config.data.tokenizer.path={tok_path!r} does not exist")
  max_len = data.max_text_len
  if not _is_int(max_len) or max_len < 2:
    fail(f"config.data.max_text_len={max_len!r} must be an integer >= 2")
  elif _is_int(text.max_len) and max_len > text.max_len:
    fail(f"config.data.max_text_len={max_len} exceeds config.model.text.max_len="
         f"{text.max_len} (the text tower's position table); raise model.text.max_len or "
         "lower max_text_len")

  # --- evaluators during training ----------------------------------------------------------
  from merit_jax.evaluators import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  for name in tasks_lib.parse_list(config.eval.evaluators):  # ('a,b',) from the command line.
    if name not in config.evals:
      fail(choice_error("eval.evaluators", name, tuple(config.evals.keys())))
  if config.eval.max_records is not None and (not _is_int(config.eval.max_records)
                                              or config.eval.max_records <= 0):
    fail(f"config.eval.max_records={config.eval.max_records!r} must be a positive integer "
         "or None (every record)")

  if errors:
    raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))
  return shape


def complete_run_config(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A run's saved config (config.json) with the keys added since it was written.

  A key the run did not record takes its default from configs/pretrain.py, so code that reads
  `config.<key>` directly also works on older runs; every recorded value is kept as it is.
  """
  from merit_jax import cli  # pylint: disable=g-import-not-at-top

  def merge(defaults: dict, recorded: Mapping[str, Any]) -> dict:
    out = dict(defaults)
    for key, value in recorded.items():
      if isinstance(value, Mapping) and isinstance(out.get(key), dict):
        out[key] = merge(out[key], value)
      else:
        out[key] = value
    return out

  defaults = cli.load_config_file("pretrain.py").to_dict()
  return ml_collections.ConfigDict(merge(defaults, saved))


# --- evaluate configs (validate_evaluate_config) ---

BASELINES = ("random_init", "random_conv")


def validate_evaluate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a `configs/evaluate.py` config before any checkpoint is loaded.

  Raises:
    ConfigError: naming the key, its value and the allowed values.
  """
  # pylint: disable=g-import-not-at-top
  from merit_jax.evaluators import linear_probe
  from merit_jax.evaluators import prompts
  from merit_jax.evaluators import shift
  from merit_jax.evaluators import tasks as tasks_lib
  from merit_jax.evaluators import zero_shot
  # pylint: enable=g-import-not-at-top
  errors = []
  names = tasks_lib.parse_list(config.evaluators)
  for name in names:
    if name not in config.evals:
      errors.append(f"config.evaluators: unknown evaluator {name!r}; choose from "
                    f"{', '.join(config.evals)} (the sections of config.evals)")
  for name in tasks_lib.parse_list(config.baselines):
    base, _, kernels = name.partition("@")
    if base not in BASELINES or (kernels and (base != "random_conv" or not kernels.isdigit()
                                             or int(kernels) < 1)):
      errors.append(f"config.baselines: unknown baseline {name!r}; choose from "
                    f"{', '.join(BASELINES)} (random_conv@K: K kernels per lead)")
  fractions = tasks_lib.parse_list(config.fractions, float)
  if not fractions or any(not 0 < f <= 1 for f in fractions):
    errors.append(f"config.fractions={config.fractions!r} must be fractions in (0, 1]")
  if not tasks_lib.parse_list(config.seeds, int):
    errors.append("config.seeds is empty; give at least one seed, e.g. (0,)")
  keys = [("config.tasks", config.tasks)] + [
      (f"config.evals.{n}.tasks", config.evals[n].tasks) for n in names
      if n in config.evals and "tasks" in config.evals[n]
      and config.evals[n].tasks != config.tasks]  # Most sections refer to config.tasks.
  for key, value in keys:
    try:
      tasks_lib.resolve_tasks(value, key)
    except ValueError as e:
      errors.append(str(e))
  probe = config.get("probe")
  if probe is not None:
    error = choice_error("probe.solver", probe.get("solver", "adam"), linear_probe.SOLVERS)
    errors += [error] if error else []
    if probe.get("solver") == "lbfgs" and not all(
        float(wd) > 0 for wd in tasks_lib.parse_list(probe.weight_decays, float)):
      errors.append(f"config.probe.weight_decays={probe.weight_decays!r}: the lbfgs solver "
                    "fits each weight decay to its optimum, which does not exist at 0 when "
                    "the training records are separable; give values > 0, e.g. "
                    "1e-4,1e-3,1e-2,0.1,1,10,100")
  for name in names:
    section = config.evals.get(name)
    kind = section.get("type", name) if section is not None else None
    if kind == "shift":
      error = choice_error(f"evals.{name}.reduced_leads_mode", section.reduced_leads_mode,
                           ("native", "zeros"))
      errors += [error] if error else []
      for corruption in tasks_lib.parse_list(section.corruptions):
        if corruption not in shift.CORRUPTIONS:
          errors.append(f"config.evals.{name}.corruptions: unknown corruption "
                        f"{corruption!r}; choose from {', '.join(shift.CORRUPTIONS)}")
    elif kind == "transfer" and not tasks_lib.parse_list(section.targets):
      errors.append("config.transfer.targets is empty; name built datasets, e.g. "
                    "physionet2021/cpsc2018,physionet2021/csn")
    elif kind == "zero_shot":
      sets, norms = zero_shot.options(section)
      for key, values, allowed in (("prompt_sets", sets, prompts.PROMPT_SETS),
                                   ("normalizations", norms, zero_shot.NORMALIZATIONS)):
        if not values:
          errors.append(f"config.evals.{name}.{key} is empty; choose from "
                        f"{', '.join(allowed)}")
        for value in values:
          if value not in allowed:
            errors.append(f"config.evals.{name}.{key}: unknown {key[:-1].replace('_', ' ')} "
                          f"{value!r}; choose from {', '.join(allowed)}")
      if "user" in sets and not section.prompt_file:
        errors.append(f"config.evals.{name}.prompt_sets names 'user' but "
                      f"evals.{name}.prompt_file is not set")
  if errors:
    raise ConfigError("invalid evaluation config:\n  - " + "\n  - ".join(errors))



# --- generate configs (validate_generate_config) ---

GENERATE_MODES = ("train", "predict", "score", "compare")


def _statement_hint_errors(config) -> list[str]:
  """What is wrong with config.statement_hints (absent from an older run's config: nothing)."""
  hints = config.get("statement_hints")
  if not hints:
    return []
  errors = []
  if not isinstance(hints.get("enabled", False), bool):
    errors.append(f"config.statement_hints.enabled={hints.enabled!r} must be one of True, False")
  for key, low in (("folds", 2), ("min_positives", 1)):
    value = hints.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      errors.append(f"config.statement_hints.{key}={value!r} must be an integer >= {low}")
  min_f1 = hints.get("min_f1")
  if isinstance(min_f1, bool) or not isinstance(min_f1, (int, float)) or not 0 <= min_f1 <= 1:
    errors.append(f"config.statement_hints.min_f1={min_f1!r} must be a number in [0, 1]")
  l2 = hints.get("l2")
  if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 > 0:
    errors.append(f"config.statement_hints.l2={l2!r} must be a number > 0")
  if hints.get("train_on", "out_of_fold") not in ("out_of_fold", "labels"):
    errors.append(f"config.statement_hints.train_on={hints.train_on!r} must be one of "
                  "out_of_fold, labels")
  if hints.get("enabled") is True and config.projector_kind != "mlp":
    errors.append("config.statement_hints.enabled needs projector_kind='mlp' (pooled "
                  f"features), got {config.projector_kind!r}")
  return errors


def validate_generate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a `configs/generate.py` config before anything loads or trains.

  Raises:
    ConfigError: naming each offending key, its value and the allowed values.
  """
  from merit_jax.models.llm import conditioning  # pylint: disable=g-import-not-at-top
  from merit_jax.report_gen import baselines  # pylint: disable=g-import-not-at-top
  from merit_jax.report_gen import decoding  # pylint: disable=g-import-not-at-top
  from merit_jax.report_gen import projector  # pylint: disable=g-import-not-at-top
  from merit_jax.report_gen import reporting  # pylint: disable=g-import-not-at-top
  errors = []

  def one_of(key, value, allowed):
    if value not in allowed:
      errors.append(f"config.{key}={value!r} must be one of {', '.join(map(repr, allowed))}")

  def positive_int(key, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
      errors.append(f"config.{key}={value!r} must be an integer >= {minimum}")

  one_of("mode", config.mode, GENERATE_MODES)
  one_of("llm", config.llm, projector.LLMS)
  one_of("projector_kind", config.projector_kind, conditioning.PROJECTOR_KINDS)
  one_of("decoding.method", config.decoding.method, decoding.METHODS)
  # The decoding rules against degenerate reports (models/llm/decode.py).
  penalty = config.decoding.repetition_penalty
  if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
    errors.append(f"config.decoding.repetition_penalty={penalty!r} must be a number > 0 "
                  "(1.0 = off, > 1 discourages repeats)")
  positive_int("decoding.no_repeat_ngram", config.decoding.no_repeat_ngram, minimum=0)
  min_new = config.decoding.min_new_tokens
  positive_int("decoding.min_new_tokens", min_new, minimum=0)
  max_new, max_key = config.max_report_tokens, "max_report_tokens"
  if config.decoding.get("max_new_tokens") is not None:
    max_new, max_key = config.decoding.max_new_tokens, "decoding.max_new_tokens"
    positive_int(max_key, max_new)
  if isinstance(min_new, int) and isinstance(max_new, int) and min_new > max_new:
    errors.append(f"config.decoding.min_new_tokens={min_new!r} must be an integer in "
                  f"[0, {max_key}={max_new}]")
  for key in ("ban_markup", "stop_at_end_of_turn", "write_hints"):
    if not isinstance(config.decoding.get(key, False), bool):
      errors.append(f"config.decoding.{key}={config.decoding[key]!r} must be one of True, False")
  if config.decoding.get("tokens_after_hints") is not None:
    positive_int("decoding.tokens_after_hints", config.decoding.tokens_after_hints, minimum=0)
  # Train and compare mode fit the hints they write; the other modes check the trained run.
  hints_cfg = config.get("statement_hints")
  if (config.decoding.get("write_hints", False) is True and config.mode in ("train", "compare")
      and not (hints_cfg and hints_cfg.get("enabled", False))):
    errors.append("config.decoding.write_hints=True writes each record's statement hints: it "
                  "needs config.statement_hints.enabled=True")
  rerank = config.decoding.get("rerank_samples", 0)
  positive_int("decoding.rerank_samples", rerank, minimum=0)
  if rerank:
    positive_int("decoding.rerank_neighbours", config.decoding.get("rerank_neighbours"))
    if config.projector_kind != "mlp":
      errors.append(f"config.decoding.rerank_samples={rerank!r} needs projector_kind='mlp' "
                    f"(pooled features for the neighbour search), got {config.projector_kind!r}")
  hints = config.get("neighbour_statements", 0)
  if isinstance(hints, bool) or not isinstance(hints, int) or hints < 0:
    errors.append(f"config.neighbour_statements={hints!r} must be an integer >= 0 (0 = off)")
  elif hints and config.projector_kind != "mlp":
    errors.append(f"config.neighbour_statements={hints} needs projector_kind='mlp' (pooled "
                  f"features), got {config.projector_kind!r}")
  errors += _statement_hint_errors(config)
  if not isinstance(config.get("standardize_features", False), bool):
    errors.append(f"config.standardize_features={config.standardize_features!r} must be one "
                  "of True, False")
  for key, value in (("total_steps", config.total_steps), ("batch_size", config.batch_size),
                     ("log_every", config.log_every),
                     ("feature_batch_size", config.feature_batch_size),
                     ("num_prefix_tokens", config.num_prefix_tokens),
                     ("eval.batch_size", config.eval.batch_size),
                     ("eval.n_bootstrap", config.eval.n_bootstrap)):
    positive_int(key, value)
  positive_int("max_report_tokens", config.max_report_tokens, minimum=2)
  positive_int("lora_rank", config.lora_rank, minimum=0)
  if config.eval.max_records is not None:
    positive_int("eval.max_records", config.eval.max_records)
  if float(config.optim.lr) <= 0:
    errors.append(f"config.optim.lr={config.optim.lr} must be > 0")
  targets = config.lora_targets
  groups = tuple(conditioning.LORA_TARGET_GROUPS)
  if (not isinstance(targets, (tuple, list)) or not targets
      or any(t not in groups for t in targets)):
    errors.append(f"config.lora_targets={targets!r} must be a non-empty tuple of "
                  f"{', '.join(map(repr, groups))}")
  if config.data.sources:
    entries = [dict(src) if isinstance(src, (dict, ml_collections.ConfigDict)) else src
               for src in config.data.sources]
    bad = [src for src in entries if not isinstance(src, dict) or not src.get("name")
           or not src.get("data_dir")]
    if bad:
      errors.append(f"config.data.sources: entries {bad!r} need a name and a data_dir")
    elif not any(src.get("reports", True) for src in entries):
      errors.append("config.data.sources: every source is marked reports=False; report "
                    "generation needs at least one with reports")

  if config.mode == "train" and config.checkpoint == "random" and not config.encoder_like:
    errors.append("config.checkpoint='random' needs config.encoder_like: a MERIT run dir whose "
                  "encoder config the random encoder copies")
  if config.mode in ("predict", "score"):
    for key in (("projector", "input", "output") if config.mode == "predict"
                else ("projector",)):
      if not config[key]:
        errors.append(f"config.{key}={config[key]!r}: {config.mode} mode needs "
                      f"--config.{key}")
  if config.mode == "compare":
    arms = tuple(config.arms)
    unknown = [arm for arm in arms if arm not in reporting.ARM_TITLES]
    if not arms or unknown:
      errors.append(f"config.arms={arms!r} must be a non-empty tuple of "
                    f"{', '.join(map(repr, reporting.ARM_TITLES))}")
    rescore_from = config.get("rescore_from")
    if rescore_from:
      missing = [arm for arm in arms if arm != baselines.MOST_FREQUENT
                 and not os.path.isdir(os.path.join(os.path.expanduser(rescore_from), arm))]
      if missing:
        errors.append(f"config.rescore_from={rescore_from!r}: no trained arm folder for "
                      f"{', '.join(missing)} (pass the --workdir of a finished compare run)")
    if ("merit" in arms or "random" in arms) and not config.merit_checkpoint:
      errors.append(f"config.merit_checkpoint={config.merit_checkpoint!r}: compare mode needs "
                    "--config.merit_checkpoint=RUN_DIR (a MERIT pretraining run; the random "
                    "arm copies its encoder config)")
  if errors:
    raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))
