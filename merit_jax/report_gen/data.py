"""The data of report generation: ECG features per split, token sequences, predict inputs.

An arm's ECG features come from a `FeatureSource`: no ECG (all-zero features of width
`NO_ECG_DIM`: the projector can only learn a constant soft prompt), a randomly initialised
MERIT encoder, or a trained MERIT run; the two encoders embed through
`merit_jax.encoder.Encoder`. Features are computed once per split (`split_features`) and saved
in the workdir, so the encoder never runs inside the training loop. A split is the
concatenation of that split of every source with reports in `config.data.sources` (the
default: both shared PTB-XL folders, raw and upstream-normalised), or of data.name alone.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from merit_jax import atomic_files
from merit_jax.report_gen import GenerateError

NO_ECG_DIM = 16  # Feature width of the no-ECG arm (all zeros; the projector learns a constant).


@dataclasses.dataclass
class FeatureSource:
  """Where an arm's ECG features come from, and how its ECGs are preprocessed."""
  source: str  # 'none' | 'random' | the absolute path of a MERIT run dir
  encoder: Any  # merit_jax.encoder.Encoder, None for 'none'
  preprocess: dict  # the data.preprocess fields the encoder expects
  run_config: dict | None = None  # the MERIT run's config (random: that of `encoder_like`)

  def features(self, ecg: np.ndarray, kind: str) -> np.ndarray:
    """Preprocessed ecg (B, 12, S) → float32 pooled (B, D) or tokens (B, N, D)."""
    if self.encoder is None:
      shape = (ecg.shape[0], NO_ECG_DIM) if kind == "pooled" else (ecg.shape[0], 1, NO_ECG_DIM)
      return np.zeros(shape, np.float32)
    return self.encoder.embed_kind(ecg, kind)


def _read_run_config(run_dir: str) -> dict:
  from merit_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  run_config = checkpoint_lib.read_run_config(os.path.expanduser(run_dir))
  if run_config is None:
    raise GenerateError(f"{run_dir!r} is not a MERIT run directory (no config.json); pass the "
                        "--workdir of a `python -m merit_jax.train` run")
  return run_config


def _unbox_saved(tree):
  """Params saved boxed (Flax partitioning metadata) come back as {'value': array} leaves."""
  if isinstance(tree, dict):
    if set(tree) == {"value"} and not isinstance(tree["value"], dict):
      return tree["value"]
    return {k: _unbox_saved(v) for k, v in tree.items()}
  return tree


def random_encoder(run_config: dict, seed: int, batch_size: int, params=None):
  """The encoder of `run_config`, randomly initialised with `seed` (or given `params`).

  The init runs the ECG path only, from PRNGKey(seed): the random arm's encoder of every
  comparison table so far.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from merit_jax import encoder as encoder_lib  # pylint: disable=g-import-not-at-top
  from merit_jax.models import merit as merit_lib  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(run_config)
  config.model.text.vocab_size = config.model.text.vocab_size or 8
  model = merit_lib.build_model(config)
  if params is None:
    ecg = jnp.zeros((1, model.num_leads, model.num_samples), jnp.float32)
    params = model.init(jax.random.PRNGKey(seed), ecg, method=model.embed_ecg)["params"]
  params = nn.unbox(_unbox_saved(params))
  return encoder_lib.Encoder.from_params(model, params, config, None, name="random",
                                         batch_size=batch_size)


def load_feature_source(checkpoint: str | None, encoder_like: str | None, seed: int,
                        default_preprocess: dict, batch_size: int) -> FeatureSource:
  """An arm's features: None → no ECG; 'random' → fresh init; else a MERIT run dir."""
  if checkpoint in (None, "", "none"):
    return FeatureSource("none", None, dict(default_preprocess))
  if checkpoint == "random":
    if not encoder_like:
      raise GenerateError("checkpoint='random' needs config.encoder_like: a MERIT run dir whose "
                          "encoder config the random encoder copies")
    encoder = random_encoder(_read_run_config(encoder_like), seed, batch_size)
    return FeatureSource("random", encoder, encoder.config.data.preprocess.to_dict(),
                         encoder.config.to_dict())
  from merit_jax import encoder as encoder_lib  # pylint: disable=g-import-not-at-top
  try:
    encoder = encoder_lib.Encoder.from_checkpoint(checkpoint, batch_size=batch_size)
  except FileNotFoundError as e:
    raise GenerateError(f"config.checkpoint: {e}") from e
  return FeatureSource(os.path.abspath(os.path.expanduser(checkpoint)), encoder,
                       encoder.config.data.preprocess.to_dict(), encoder.config.to_dict())


# ------------------------------------------------------------------------------ split features

def report_sources(data_cfg) -> list:
  """The builds report generation reads: every source with reports of `data.sources` (a
  mixture, e.g. the `ptbxl` and `ptbxl_derived` shared folders), else the one dataset
  data.name. ECG-only sources (`reports=False`) have nothing to train on or score."""
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  if data_cfg.get("sources"):
    specs = [spec for spec in pipeline.data_sources(data_cfg) if spec.reports]
    if not specs:
      raise GenerateError("config.data.sources: every source is marked reports=False; report "
                          "generation needs at least one with reports")
    return specs
  return [pipeline.primary_source(data_cfg)]


def split_features(data_cfg, split: str, source: FeatureSource, kind: str, batch_size: int,
                   max_records: int | None = None, progress: bool = True) -> dict:
  """Frozen features of every record with a report in a split of every source, once.

  The sources (`report_sources`) are read one after the other and their records concatenated
  in that order (with `max_records`, the first that many of the concatenation).

  Returns {'features' float32 (N, D) | (N, T, D), 'reports' [str], 'codes' [[SCP code]],
  'ecg_id' int64 (N,), 'source' int32 (N,) (index into the sources)}. Records whose report is
  empty are left out (nothing to learn or score).
  """
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  data_cfg = ml_collections.ConfigDict(data_cfg.to_dict())
  data_cfg.preprocess = ml_collections.ConfigDict(source.preprocess)
  specs = report_sources(data_cfg)
  bar = None
  if progress:
    from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
    total = sum(pipeline.split_size(data_cfg, split, source=spec) for spec in specs)
    bar = tqdm_auto.tqdm(total=total, desc=f"features {split}", unit="ecg", file=sys.stderr)
  feats, reports, codes, ids, origin = [], [], [], [], []
  for index, spec in enumerate(specs):
    if max_records and len(reports) >= max_records:
      break
    # Label names per build: each source's own metadata names its multi-hot columns.
    names = dict(pipeline.open_builder(spec).info.metadata.get("label_names", {})).get("all", [])
    for batch in pipeline.iterate_split(data_cfg, split, batch_size, source=spec):
      keep = np.asarray(batch["valid"]) & np.array([bool(r.strip()) for r in batch["report"]])
      if bar is not None:
        bar.update(int(np.sum(batch["valid"])))
      if not keep.any():
        continue
      feats.append(source.features(batch["ecg"], kind)[keep])
      reports += [r for r, k in zip(batch["report"], keep) if k]
      ids.append(np.asarray(batch["ecg_id"])[keep])
      origin.append(np.full(int(keep.sum()), index, np.int32))
      if "labels/all" in batch:
        for row in np.asarray(batch["labels/all"])[keep]:
          codes.append([names[i] for i in np.flatnonzero(row)])
      else:
        codes += [[] for _ in range(int(keep.sum()))]
      if max_records and len(reports) >= max_records:
        break
  if bar is not None:
    bar.close()
  if not reports:
    where = ", ".join(f"{s.name}/{s.config} at {s.data_dir}" for s in specs)
    raise GenerateError(f"split {split!r} of {where} has no record with a report")
  n = min(len(reports), max_records or len(reports))
  return {"features": np.concatenate(feats)[:n], "reports": reports[:n], "codes": codes[:n],
          "ecg_id": np.concatenate(ids)[:n], "source": np.concatenate(origin)[:n]}


def features_path(workdir: str, split: str) -> str:
  """Where a run caches the features of `split` (`compute_features` writes it)."""
  return os.path.join(workdir, f"features_{split}.npz")


def save_features(path: str, feats: dict) -> None:
  """Writes `feats` to `path` (.npz) through a temporary file beside it, then renames it, so an
  interrupted write never leaves a partial cache that a later run would load."""
  with atomic_files.replacing(path, suffix=".npz") as tmp:
    np.savez(tmp, features=feats["features"], ecg_id=feats["ecg_id"], source=feats["source"],
             reports=np.asarray(feats["reports"], dtype=object),
             codes=np.asarray([" ".join(c) for c in feats["codes"]], dtype=object))


def load_features(path: str) -> dict:
  """What `save_features` wrote: 'features', 'ecg_id', 'source', 'reports' [str] and 'codes'
  [[str]] (the features as computed, not standardised)."""
  with np.load(path, allow_pickle=True) as f:
    return {"features": f["features"], "ecg_id": f["ecg_id"], "source": f["source"],
            "reports": [str(r) for r in f["reports"]],
            "codes": [str(c).split() for c in f["codes"]]}


def compute_features(workdir: str, config, source: FeatureSource, split: str, kind: str,
                     max_records: int | None = None) -> dict:
  """`split_features` of `split`, also saved as workdir/features_<split>.npz."""
  feats = split_features(config.data, split, source, kind, int(config.feature_batch_size),
                         max_records, bool(config.progress))
  # The count the run trains or scores on, every source together (the 1,112).
  print(f"{split}: {len(feats['reports'])} records with a report from "
        f"{len(report_sources(config.data))} source(s)", flush=True)
  save_features(features_path(workdir, split), feats)
  return feats


# ------------------------------------------------------------------- feature standardisation

# Channels whose training std is below this are only centred (the no-ECG arm's all-zero
# features stay zero instead of dividing by zero).
_MIN_STD = 1e-6


def fit_feature_stats(features: np.ndarray) -> dict:
  """Per-channel mean and std of training features (pooled (N, D) or tokens (N, T, D)).

  A trained encoder's pooled features share a large common component (every ECG looks alike
  to the projector's per-sample LayerNorm); standardising each channel on the training split
  keeps only what tells records apart. Returned as lists so the stats live in the run's JSON.
  """
  flat = np.asarray(features, np.float64).reshape(-1, np.shape(features)[-1])
  return {"mean": flat.mean(axis=0).tolist(), "std": flat.std(axis=0).tolist()}


def standardize_features(features: np.ndarray, stats: dict | None) -> np.ndarray:
  """(features − mean) / std per channel with `fit_feature_stats`' stats; None: unchanged."""
  if stats is None:
    return np.asarray(features, np.float32)
  mean = np.asarray(stats["mean"], np.float64)
  std = np.asarray(stats["std"], np.float64)
  if mean.shape != (np.shape(features)[-1],):
    raise GenerateError(f"feature stats have {mean.shape[0]} channels but the features have "
                        f"{np.shape(features)[-1]}: the projector was trained on another "
                        "encoder")
  safe = np.where(std < _MIN_STD, 1.0, std)
  return ((np.asarray(features, np.float64) - mean) / safe).astype(np.float32)


# ---------------------------------------------------------------------------- token sequences

def prompt_ids(tokenizer, prompt: str) -> list[int]:
  """BOS + prompt text: the fixed context between the soft prefix and the report."""
  return tokenizer.encode(prompt, add_bos=True)


def training_sequences(tokenizer, prompt: Sequence[int] | Sequence[Sequence[int]],
                       reports: Sequence[str],
                       max_report_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """[prompt | report tokens + EOS] rows, right-padded.

  `prompt`: one prompt for every report, or one per report (`statement_hints`); prompts of
  different lengths are left-padded to the longest, so every report starts in the same column
  (a masked pad is invisible to the LLM: positions count valid slots only).

  Returns:
    tokens int32 (N, P + R), input_mask bool (N, P + R) (False at pads), loss_mask bool
    (N, P + R): True exactly at the report tokens and their EOS, the only loss targets.
  """
  if max_report_tokens <= 1:
    raise GenerateError(f"max_report_tokens must be > 1, got {max_report_tokens}")
  prompt_tokens, prompt_mask = left_padded(per_record_prompts(prompt, len(reports)),
                                           tokenizer.pad_id)
  p = prompt_tokens.shape[1]
  width = p + max_report_tokens
  tokens = np.full((len(reports), width), tokenizer.pad_id, np.int32)
  input_mask = np.zeros((len(reports), width), bool)
  loss_mask = np.zeros((len(reports), width), bool)
  tokens[:, :p], input_mask[:, :p] = prompt_tokens, prompt_mask
  for row, report in enumerate(reports):
    ids = tokenizer.encode(report, add_bos=False)[:max_report_tokens - 1] + [tokenizer.eos_id]
    tokens[row, p:p + len(ids)] = ids
    input_mask[row, p:p + len(ids)] = True
    loss_mask[row, p:p + len(ids)] = True
  return tokens, input_mask, loss_mask


def per_record_prompts(prompt: Sequence[int] | Sequence[Sequence[int]],
                       n: int) -> list[list[int]]:
  """`prompt` as n token lists: one shared prompt repeated, or the n given ones checked."""
  if len(prompt) and not np.isscalar(prompt[0]):
    if len(prompt) != n:
      raise GenerateError(f"{len(prompt)} prompts for {n} records")
    return [list(q) for q in prompt]
  return [list(prompt)] * n


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int32 (N, P), input_mask bool (N, P)): prompts left-padded to the longest."""
  p = max((len(q) for q in prompts), default=0)
  tokens = np.full((len(prompts), p), pad_id, np.int32)
  mask = np.zeros((len(prompts), p), bool)
  for row, q in enumerate(prompts):
    if len(q):
      tokens[row, p - len(q):] = q
      mask[row, p - len(q):] = True
  return tokens, mask


# ----------------------------------------------------------------------------- predict inputs

def read_inputs(path: str, sample_rate: float | None) -> tuple[list[str], list]:
  """ECGs to report on: ([ids], [(signal (12, S) mV, rate)]) from a folder or one .npy.

  A folder holds WFDB records (searched recursively) or .npy files, each (samples, 12) for one
  ECG or (N, samples, 12) for several; `sample_rate` is the rate of .npy inputs (None = the
  model's).
  """
  from merit_jax import embed  # pylint: disable=g-import-not-at-top
  src = os.path.expanduser(path)
  if not os.path.exists(src):
    raise GenerateError(f"config.input {path!r} does not exist")
  p = pathlib.Path(src)
  if p.is_dir() and any(p.rglob("*.hea")):
    try:
      records, names = embed.read_wfdb_folder(src)
    except (ValueError, FileNotFoundError) as e:
      raise GenerateError(str(e)) from e
    return names, records
  files = sorted(p.rglob("*.npy")) if p.is_dir() else [p]
  if not files or any(f.suffix != ".npy" for f in files):
    raise GenerateError(f"config.input {path!r}: expected a folder of WFDB records (*.hea) or "
                        ".npy files, or one .npy file")
  ids, records = [], []
  for f in files:
    try:
      arr = np.load(f, allow_pickle=False)
    except ValueError as e:
      raise GenerateError(f"cannot read {f}: {e}") from e
    single = arr.ndim == 2
    try:
      leads_major = embed.check_signals(arr[None] if single else arr, where=str(f))
    except ValueError as e:
      raise GenerateError(str(e)) from e
    name = os.path.relpath(f, src) if p.is_dir() else f.name
    name = name[:-4]
    for i, sig in enumerate(leads_major):
      ids.append(name if single else f"{name}:{i}")
      records.append((sig, sample_rate))
  return ids, records


def record_features(source: FeatureSource, records: Sequence, kind: str,
                    batch_size: int) -> np.ndarray:
  """Features of raw recordings [(signal (12, S) mV, rate or None)], each preprocessed as
  the source's encoder expects (a recording longer than the model window: its centre)."""
  from merit_jax.data import preprocess as preprocess_lib  # pylint: disable=g-import-not-at-top
  pre_cfg = preprocess_lib.PreprocessConfig.from_config(
      ml_collections.ConfigDict(source.preprocess))
  rate_default = float(pre_cfg.sample_rate)
  feats = []
  for start in range(0, len(records), batch_size):
    chunk = records[start:start + batch_size]
    try:
      ecg = np.stack([preprocess_lib.preprocess(sig, rate or rate_default, pre_cfg)
                      for sig, rate in chunk])
    except ValueError as e:
      raise GenerateError(f"cannot preprocess input ECGs: {e}") from e
    feats.append(source.features(ecg, kind))
  return np.concatenate(feats)
