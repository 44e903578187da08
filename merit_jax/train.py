"""MERIT pretraining entry point: config -> mesh -> data -> state -> loop.

  python -m merit_jax.train --config=configs/pretrain.py:quick --workdir=/tmp/merit_quick
  python -m merit_jax.train --config=configs/pretrain.py --workdir=DIR --config.model.size=small

The run directory holds config.json, the tokenizer, metrics.jsonl (one JSON object per logged
step; validation entries carry "split": "validation"), TensorBoard events (tensorboard/),
checkpoints (checkpoints/, checkpoints_best/), reconstruction plots (plots/) and, when the
config asks for it, summary.json with a linear-probe summary on frozen features. Restarting
with the same --workdir resumes from the latest complete checkpoint, data position included;
a checkpoint written with another model or preprocessing config is refused, naming the fields.
The workdir may be a `gs://` bucket: checkpoints go there directly, logs and plots are staged
locally and copied at every checkpoint.

Several processes (hosts) train one run together through jax.distributed:

  --distributed=auto                  Cloud TPU pods, SLURM (srun), Kubernetes: detected
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I   (implies explicit)

Each process reads only its shard of the data; checkpoints are written collectively; logs,
progress and single-writer files come from process 0. On SIGTERM every process stops at the
same step, saves a checkpoint and exits 0 (merit_jax/preemption.py); a process that dies
ends the others after --heartbeat_timeout_s. A run whose last
`config.max_consecutive_nonfinite` steps all had non-finite loss or gradients aborts with the
step and count.

The loop never blocks on the device between log steps: per-step metrics stay on the device
and are fetched together at the next log step, so host-side batch preparation overlaps with the
running step.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Mapping

from absl import app
from absl import flags
from absl import logging as absl_logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from merit_jax import checkpoint as checkpoint_lib
from merit_jax import cli
from merit_jax import config_validation
from merit_jax import distributed
from merit_jax import preemption
from merit_jax import run_logging
from merit_jax import xla_defaults

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/pretrain.py:quick.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed when it exists).")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "off", list(distributed.MODES),
    "Multi-process start-up: off (one process, unless --coordinator_address is given), auto "
    "(Cloud TPU / SLURM / Kubernetes detected by JAX), explicit (the three flags below).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0's coordinator (explicit mode).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Total number of processes (explicit mode).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index in [0, num_processes) (explicit mode).")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout_s", None,
    "Seconds after which a silent (dead) process ends all the others (default JAX's, 100).")


# ----------------------------------------------------------------------------------------------
# Dataset preparation.


def _source_build_specs(data_cfg) -> list[dict]:
  """Every dataset the run reads, with what is needed to build it."""
  if data_cfg.get("sources"):
    specs = []
    for src in data_cfg.sources:
      src = dict(src)
      specs.append(dict(name=src["name"], config=src.get("config"), data_dir=src["data_dir"],
                        manual_dir=src.get("manual_dir", data_cfg.get("manual_dir")),
                        build_kwargs=dict(src.get("build_kwargs", {}))))
    if data_cfg.get("name") and not any(
        os.path.expanduser(s["data_dir"]) == os.path.expanduser(data_cfg.data_dir)
        for s in specs):
      specs.insert(0, dict(name=data_cfg.name, config=data_cfg.get("config"),
                           data_dir=data_cfg.data_dir, manual_dir=data_cfg.get("manual_dir"),
                           build_kwargs=dict(data_cfg.get("build_kwargs") or {})))
    return specs
  return [dict(name=data_cfg.name, config=data_cfg.get("config"), data_dir=data_cfg.data_dir,
               manual_dir=data_cfg.get("manual_dir"),
               build_kwargs=dict(data_cfg.get("build_kwargs") or {}))]


def drop_sources_without_use(config) -> None:
  """Removes ECG-only sources (`reports=False`) from a run whose objective cannot use them.

  A contrastive-only run (objective.reconstruction=False) has nothing to learn from an ECG
  without a report; mixing such records in would only shrink its batches of pairs. The
  config is changed in place, so the run's config.json records the data actually used.
  """
  sources = config.data.get("sources")
  if not sources or config.objective.get("reconstruction", True):
    return
  kept = [src for src in sources if dict(src).get("reports", True)]
  dropped = [f"{dict(src)['name']}/{dict(src).get('config')}" for src in sources
             if not dict(src).get("reports", True)]
  if dropped:
    if not kept:
      raise ValueError("config.objective.reconstruction=False (contrastive only) but every "
                       "data.sources entry is ECG-only (reports=False): nothing to train on")
    print(f"contrastive-only objective: not reading the ECG-only sources {dropped}", flush=True)
    config.data.sources = kept


def ensure_datasets(data_cfg) -> None:
  """Builds every dataset of the run that is not built yet (process 0; others wait).

  The synthetic dataset needs no download; a PhysioNet dataset is built from `manual_dir`
  when that folder exists, otherwise the run stops with the command that would fix it.
  """
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  missing = []
  for spec in _source_build_specs(data_cfg):
    try:
      pipeline.builder_dir(pipeline.SourceSpec(spec["name"], spec["config"],
                                               os.path.expanduser(spec["data_dir"])))
    except FileNotFoundError:
      missing.append(spec)
  if missing and jax.process_index() == 0:
    from merit_jax.data import build as build_lib  # pylint: disable=g-import-not-at-top
    for spec in missing:
      manual_dir = os.path.expanduser(spec["manual_dir"]) if spec["manual_dir"] else None
      synthetic = spec["name"].startswith("synthetic")
      if not synthetic and not (manual_dir and os.path.isdir(manual_dir)):
        raise FileNotFoundError(
            f"dataset {spec['name']!r} (config {spec['config']!r}) is not built under "
            f"{spec['data_dir']} and its publisher files are not at data.manual_dir="
            f"{spec['manual_dir']!r}. Download them (python -m merit_jax.data.download) and "
            f"set --config.data.manual_dir, or point --config.data.data_dir at a built copy.")
      logging.info("building %s (%s) into %s", spec["name"], spec["config"], spec["data_dir"])
      print(f"building dataset {spec['name']} ({spec['config']}) into {spec['data_dir']} ...",
            flush=True)
      build_lib.build(spec["name"], manual_dir, os.path.expanduser(spec["data_dir"]),
                      config=spec["config"], **spec["build_kwargs"])
  if missing and jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("merit_jax.train.ensure_datasets")


# ----------------------------------------------------------------------------------------------
# Evaluation helpers (features in numpy; the evaluators never see the model).


def _pad_rows(array: np.ndarray, multiple: int) -> np.ndarray:
  extra = (-array.shape[0]) % multiple
  if not extra:
    return array
  return np.concatenate([array, np.repeat(array[-1:], extra, axis=0)], axis=0)


def _replicate(array: np.ndarray, mesh) -> Any:
  """A host array every process holds in full, as a replicated global array over `mesh`."""
  if mesh is None or jax.process_count() == 1:
    return jnp.asarray(array)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _to_global_batch(batch: Mapping[str, np.ndarray], mesh) -> dict:
  """Host batches (identical on every process) as global arrays sharded like training."""
  if jax.process_count() == 1:
    return dict(batch)
  from merit_jax import parallel  # pylint: disable=g-import-not-at-top
  sharding = parallel.batch_sharding(mesh)
  return {k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
          for k, v in batch.items()}


def _fetch(tree: Any) -> Any:
  """Device -> host for outputs that may span several processes."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


class InferenceFns:
  """Jitted ECG/text embedding and reconstruction functions of a MERIT model.

  Outputs are replicated, so every process can read them whatever the params' sharding.
  """

  def __init__(self, model, config, mesh=None):
    self.model = model
    self.mesh = mesh
    norm_pix = bool(config.objective.get("norm_pix_loss", True))

    def embed_ecg(params, ecg):
      return model.apply({"params": params}, ecg, method=model.embed_ecg)

    def reconstruct(params, ecg, rng):
      tokens = jnp.zeros((ecg.shape[0], 2), jnp.int32)
      out = model.apply({"params": params}, ecg, tokens, rng, reconstruction=True,
                        contrastive=False)
      pred, target = out["pred"].astype(jnp.float32), out["target"].astype(jnp.float32)
      if norm_pix:  # Predictions live in per-patch normalised units: map back to the input's.
        mean = target.mean(-1, keepdims=True)
        std = jnp.sqrt(target.var(-1, keepdims=True) + 1e-6)
        pred = pred * std + mean
      b, n, patch = pred.shape
      leads = model.num_leads
      return (pred.reshape(b, leads, (n // leads) * patch),
              out["mask"].reshape(b, leads, n // leads))

    out_sharding = None
    if mesh is not None:
      out_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    self._embed_ecg = jax.jit(embed_ecg, out_shardings=out_sharding)
    self._reconstruct = jax.jit(reconstruct, out_shardings=out_sharding)

  def embed_ecg(self, params, ecg: np.ndarray) -> dict[str, np.ndarray]:
    return jax.device_get(self._embed_ecg(params, _replicate(np.asarray(ecg), self.mesh)))

  def reconstruct(self, params, ecg: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """(reconstruction (B, leads, S) in input units, patch mask (B, leads, patches))."""
    return jax.device_get(self._reconstruct(params, _replicate(np.asarray(ecg), self.mesh),
                                            rng))


def _retrieval_metrics(ecg_emb: np.ndarray, text_emb: np.ndarray, tokens: np.ndarray) -> dict:
  """ECG->report R@1/5 with chance level, via the project's evaluator when present."""
  # Identical reports tokenize (or embed) identically: rows serve as duplicate groups.
  _, group_ids = np.unique(tokens, axis=0, return_inverse=True)
  from merit_jax.evaluators import retrieval  # pylint: disable=g-import-not-at-top
  ks = tuple(k for k in (1, 5) if k <= ecg_emb.shape[0])
  result = retrieval.recall_at_k(ecg_emb, text_emb, ks=ks, group_ids=group_ids.reshape(-1))
  out = {}
  for k in ks:
    out[f"ecg_to_report_R@{k}"] = result[f"ecg_to_report/R@{k}"]
    out[f"chance_ecg_to_report_R@{k}"] = result[f"chance/ecg_to_report/R@{k}"]
    out[f"report_to_ecg_R@{k}"] = result[f"report_to_ecg/R@{k}"]
  out["retrieval_num_queries"] = int(result["num_queries"])
  return out


def evaluate(config, state, eval_step, fns: InferenceFns, tokenizer, mesh, step: int,
             workdir: str | None) -> dict:
  """Validation losses, retrieval accuracy and (main process) a reconstruction PNG."""
  from merit_jax import plots  # pylint: disable=g-import-not-at-top
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  text_key = pipeline.text_batch_key(tokenizer)
  ecg_embs, text_embs, tokens_all = [], [], []
  sums: dict[str, float] = {}
  count = 0
  plotted = False
  rng = jax.random.key(config.seed + 1)  # Fixed masks: validation numbers stay comparable.
  devices = jax.device_count()
  for i, batch in enumerate(pipeline.iterate_split(config.data, config.eval.split,
                                                   config.eval.batch_size, tokenizer)):
    if config.eval.max_batches is not None and i >= config.eval.max_batches:
      break
    n = int(np.asarray(batch["valid"]).sum())
    model_batch = {"ecg": _pad_rows(batch["ecg"], devices),
                   text_key: _pad_rows(batch[text_key], devices)}
    metrics, embeddings = eval_step(state, _to_global_batch(model_batch, mesh), rng)
    metrics, embeddings = _fetch((metrics, embeddings))
    # Batch means, weighted by the real records (the padded tail repeats the last record).
    for key, value in metrics.items():
      sums[key] = sums.get(key, 0.0) + float(value) * n
    count += n
    ecg_embs.append(np.asarray(embeddings["ecg"])[:n])
    text_embs.append(np.asarray(embeddings["text"])[:n])
    tokens_all.append(np.asarray(batch[text_key])[:n])
    if not plotted and config.eval.num_plot_ecgs:
      k = min(config.eval.num_plot_ecgs, n)
      recon, mask = fns.reconstruct(state.params, batch["ecg"][:k], rng)  # All processes.
      if workdir and jax.process_index() == 0:
        plots.plot_reconstructions(
            os.path.join(workdir, "plots", f"reconstruction_{step:07d}.png"),
            batch["ecg"][:k], recon, mask, config.model.patch_size,
            config.data.preprocess.sample_rate,
            titles=[f"ecg_id {int(e)}" for e in batch["ecg_id"][:k]])
      plotted = True
  if not count:
    raise ValueError(f"validation split {config.eval.split!r} yielded no records")
  out = {f"val_{k}": v / count for k, v in sums.items()
         if k not in ("skipped", "nonfinite_steps")}
  out.update(_retrieval_metrics(np.concatenate(ecg_embs), np.concatenate(text_embs),
                                np.concatenate(tokens_all)))
  out["val_records"] = count
  return out


# ----------------------------------------------------------------------------------------------
# Linear-probe summary on frozen features.


def load_text_input(config):
  """(tokenizer, text input of the pipeline) for a run.

  A trained text tower reads token ids: both are the dataset's tokenizer. A frozen pretrained
  tower (`model.text.frozen`) reads its report embeddings from a cache computed once per build
  (data/text_cache.py), and the tokenizer saved with the run is the tower's own.
  """
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from merit_jax.data import text_cache  # pylint: disable=g-import-not-at-top
  from merit_jax.models import text_tower  # pylint: disable=g-import-not-at-top
  if not text_tower.is_frozen(config.model.text):
    tokenizer = pipeline.load_data_tokenizer(config.data)
    return tokenizer, tokenizer
  tower = text_tower.FrozenTextTower.from_config(config.model.text,
                                                 batch_size=int(config.eval.batch_size))
  return tower.tokenizer, text_cache.for_data(tower, config.data,
                                              progress=jax.process_index() == 0)


def _split_features(config, fns, params, tokenizer, split, task, max_records):
  from merit_jax.data import schema as features  # pylint: disable=g-import-not-at-top
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  # Accept the short task names too ('super' -> 'superdiagnostic').
  task = {short: full for full, short in features.PTBXL_TASKS.items()}.get(task, task)
  feats, labels = [], []
  seen = 0
  for batch in pipeline.iterate_split(config.data, split, config.eval.batch_size, tokenizer):
    n = int(np.asarray(batch["valid"]).sum())
    if f"labels/{task}" not in batch:
      tasks = sorted(k[len("labels/"):] for k in batch if k.startswith("labels/"))
      raise KeyError(f"config.eval.probe_task={task!r} has no labels in {split}; "
                     f"available: {tasks}")
    feats.append(fns.embed_ecg(params, batch["ecg"])["pooled"][:n])
    labels.append(np.asarray(batch[f"labels/{task}"])[:n])
    seen += n
    if max_records and seen >= max_records:
      break
  return np.concatenate(feats)[:max_records], np.concatenate(labels)[:max_records]


def linear_probe_summary(config, fns: InferenceFns, params, tokenizer) -> dict:
  """Linear probe (engineer H's evaluator: choices on validation, test scored once)."""
  from merit_jax.evaluators import linear_probe  # pylint: disable=g-import-not-at-top
  task = config.eval.probe_task
  limit = config.eval.probe_max_records
  splits = {}
  for name, split in (("train", config.eval.probe_train_split), ("val", config.eval.split),
                      ("test", config.eval.probe_eval_split)):
    splits[name] = _split_features(config, fns, params, tokenizer, split, task, limit)
  # Classes without positives (or without negatives) in a split cannot be scored; keep those
  # that can be learned and checked everywhere.
  keep = np.ones(splits["train"][1].shape[1], bool)
  for _, y in splits.values():
    pos = y.sum(0)
    keep &= (pos > 0) & (pos < y.shape[0])
  if not keep.any():
    return {"task": task, "error": "no class has positives and negatives in every split"}
  splits = {k: (x, y[:, keep]) for k, (x, y) in splits.items()}
  result = linear_probe.run_linear_probe(splits["train"], splits["val"], splits["test"],
                                         max_epochs=200, n_bootstrap=200)
  summary = {"task": task, "evaluator": "merit_jax.evaluators.linear_probe",
             "num_classes": int(keep.sum()),
             "records": {k: int(v[0].shape[0]) for k, v in splits.items()},
             "hparams": result.hparams}
  for key in ("macro_auroc", "macro_auprc", "macro_f1"):
    if key in result.test_metrics:
      summary[f"test_{key}"] = result.test_metrics[key]
  summary["test_metrics"] = {k: v for k, v in result.test_metrics.items()
                             if not isinstance(v, (list, np.ndarray))}
  return json.loads(json.dumps(summary, default=lambda o: np.asarray(o).tolist()))


# ----------------------------------------------------------------------------------------------
# The loop.


def _mean_metrics(pending: list[Mapping[str, Any]]) -> dict[str, float]:
  """Fetches the steps' device metrics at once and averages them over the steps."""
  fetched = jax.device_get(pending)
  return {k: float(np.mean([np.asarray(m[k], np.float64) for m in fetched]))
          for k in fetched[0]}


def _summary_lines(summary: Mapping[str, Any]) -> str:
  """A few human-readable lines of the run summary (summary.json has everything)."""
  def fmt(value):
    return "n/a" if value is None else f"{value:.4f}"

  lines = [f"finished step {summary['final_step']} in {summary['wall_time_s']:.0f} s; "
           f"logged training loss {fmt(summary['first_logged_loss'])} (first log) -> "
           f"{fmt(summary['last_logged_loss'])} (last log)"]
  val = summary.get("validation") or {}
  if "ecg_to_report_R@1" in val:
    lines.append(
        f"validation: loss {val.get('val_loss', float('nan')):.4f}, ECG->report "
        f"R@1 {val['ecg_to_report_R@1']:.3f} (chance {val['chance_ecg_to_report_R@1']:.3f})"
        + (f", R@5 {val['ecg_to_report_R@5']:.3f} (chance "
           f"{val['chance_ecg_to_report_R@5']:.3f})" if "ecg_to_report_R@5" in val else ""))
  probe = summary.get("linear_probe")
  if probe and "test_macro_auroc" in probe:
    auc = probe["test_macro_auroc"]
    lines.append(
        f"linear probe ({probe['task']}, {probe['num_classes']} classes, frozen pooled "
        f"features, {probe['evaluator']}): test macro AUROC {auc['value']:.3f} "
        f"[{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]"
        + (f", macro F1 {probe['test_macro_f1']['value']:.3f}"
           if "test_macro_f1" in probe else ""))
  elif probe:
    lines.append(f"linear probe: {probe}")
  return "\n".join(lines)


_LOG_FILES = ("metrics.jsonl", "tensorboard", "plots")


def _is_remote(path: str) -> bool:
  return "://" in path


def _log_dir(workdir: str, main: bool) -> str:
  """Where metrics.jsonl, TensorBoard events and plots are written (local file APIs).

  The run directory itself when local; for a remote (gs://) run a local staging folder, seeded
  with the run's existing metrics.jsonl so a resumed run appends to it.
  """
  if not _is_remote(workdir) or not main:
    return workdir
  import tempfile  # pylint: disable=g-import-not-at-top
  staging = tempfile.mkdtemp(prefix="merit_jax_logs_")
  remote = epath.Path(workdir) / "metrics.jsonl"
  if remote.exists():
    remote.copy(epath.Path(staging) / "metrics.jsonl")
  return staging


def _upload_logs(log_dir: str, workdir: str) -> None:
  """Copies staged logs to a remote run directory (no-op when they are the same folder)."""
  if log_dir == workdir:
    return
  local, remote = epath.Path(log_dir), epath.Path(workdir)
  for name in _LOG_FILES:
    src = local / name
    files = [src] if src.is_file() else (list(src.rglob("*")) if src.is_dir() else [])
    for file in files:
      if file.is_file():
        target = remote / file.relative_to(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        file.copy(target, overwrite=True)


def _check_nonfinite(state, done: int, limit: int) -> None:
  """Aborts when the last `limit` steps were all skipped as non-finite (read at log steps)."""
  # The step skips non-finite updates and counts the current run of them in the state; reading
  # it only at log steps keeps the loop free of per-step host syncs.
  run = int(jax.device_get(state.consecutive_nonfinite))
  if run >= limit:
    total = int(jax.device_get(state.nonfinite_steps))
    raise FloatingPointError(
        f"aborting at step {done}: the last {run} consecutive steps (steps {done - run + 1}-"
        f"{done}; {total} in the whole run) had a non-finite loss or gradients and were "
        f"skipped, reaching config.max_consecutive_nonfinite={limit}. Lower config.optim.lr, "
        "check the data for NaN/inf, or resume from an earlier checkpoint (metrics.jsonl has "
        "the losses).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) pretraining in `workdir`; returns the final summary dict.

  Raises:
    preemption.Preempted: after a SIGTERM (to any process), once every process has saved the
      checkpoint of the step they agreed on. It is a SystemExit with status 0: uncaught, the
      program ends successfully, and rerunning it resumes.
    FloatingPointError: after config.max_consecutive_nonfinite consecutive non-finite steps.
    checkpoint.IncompatibleCheckpointError: the workdir's checkpoint is of another model.
  """
  t_start = time.time()
  workdir = os.fspath(checkpoint_lib.resolve_path(workdir))
  config = ml_collections.ConfigDict(config.to_dict())  # Unlocked private copy.
  # Before anything expensive: a bad value stops here with the key and the fix.
  config_validation.validate_config(config, jax.device_count(), jax.process_count())
  # First, so that a SIGTERM during set-up or compilation also ends in a checkpoint.
  guard = preemption.PreemptionGuard()
  try:
    return _train_loop(config, workdir, guard, t_start)
  finally:
    guard.close()


def _train_loop(config, workdir: str, guard: preemption.PreemptionGuard,
                t_start: float) -> dict:
  """train_and_evaluate's body (the guard is installed and removed around it)."""
  from merit_jax import parallel  # pylint: disable=g-import-not-at-top
  from merit_jax import step as step_lib  # pylint: disable=g-import-not-at-top
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from merit_jax.models import merit as merit_lib  # pylint: disable=g-import-not-at-top

  main = jax.process_index() == 0
  mesh = parallel.make_mesh(config.mesh)

  drop_sources_without_use(config)
  ensure_datasets(config.data)
  tokenizer, text_input = load_text_input(config)
  config.model.text.vocab_size = int(tokenizer.vocab_size)
  ckpt = checkpoint_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  resume_step = ckpt.latest_step()
  if resume_step is not None:
    # Before anything is overwritten or compiled: the checkpoint must fit this model.
    checkpoint_lib.check_compatible(ckpt.saved_config(resume_step), config,
                                    f"{ckpt.latest.directory}/{resume_step}")
  checkpoint_lib.save_run_files(workdir, config, tokenizer)

  train_iter = pipeline.make_train_iterator(config.data, mesh, config.batch_size, config.seed,
                                            text_input)
  init_rng, loop_rng = jax.random.split(jax.random.key(config.seed))
  state, state_shardings = step_lib.create_train_state(config, mesh, init_rng)
  start_step = 0
  if resume_step is not None:
    state, data_state, start_step = ckpt.restore(state, resume_step)
    train_iter.set_state(data_state)
    if main:
      print(f"resumed from {ckpt.latest.directory}/{start_step}", flush=True)
  train_step = step_lib.make_train_step(config, mesh, state_shardings)
  eval_step = step_lib.make_eval_step(config, mesh, state_shardings)
  model = merit_lib.build_model(config)
  fns = InferenceFns(model, config, mesh)

  log_dir = _log_dir(workdir, main)
  writer = run_logging.MetricWriter(log_dir, enabled=main, resume_step=start_step)
  bar = run_logging.ProgressBar(config.total_steps, initial=start_step, enabled=main)
  pending: list[Mapping[str, Any]] = []
  last_log_time, last_log_step = time.time(), start_step
  val_metrics: dict = {}
  first_loss = last_loss = None
  limit = int(config.get("max_consecutive_nonfinite", 0) or 0)
  preempted_at = last_saved = None
  for step in range(start_step, config.total_steps):
    batch = next(train_iter)
    # The step folds state.step into the rng: a fresh mask per step, identical after resume.
    state, metrics = train_step(state, batch, loop_rng)
    pending.append(metrics)  # Device arrays; fetched at the next log step.
    done = step + 1
    bar.update(1)
    if done % config.log_every == 0 or done == config.total_steps:
      logged = _mean_metrics(pending)
      pending = []
      now = time.time()
      logged["steps_per_sec"] = (done - last_log_step) / max(now - last_log_time, 1e-9)
      last_log_time, last_log_step = now, done
      entry = writer.write(done, logged)
      last_loss = entry.get("loss")
      if first_loss is None:
        first_loss = last_loss
      bar.update(0, loss=f"{logged.get('loss', float('nan')):.4f}")
      if limit:
        try:
          _check_nonfinite(state, done, limit)
        except FloatingPointError:
          bar.close()
          ckpt.close()  # Lets pending saves of earlier (finite) steps complete.
          writer.close()
          if main:
            _upload_logs(log_dir, workdir)
          raise
    if done % config.checkpoint_every == 0 or done == config.total_steps:
      ckpt.save(done, state, train_iter.get_state(), config)
      last_saved = done
      if main:
        _upload_logs(log_dir, workdir)
    # Every process asks at every step, so all of them stop at the same one.
    if guard.should_stop(done) and done < config.total_steps:
      if last_saved != done:
        ckpt.save(done, state, train_iter.get_state(), config, force=True)
      preempted_at = done
      break
    if done % config.eval_every == 0 or done == config.total_steps:
      val_metrics = evaluate(config, state, eval_step, fns, text_input, mesh, done,
                             log_dir if main else None)
      writer.write(done, val_metrics, split="validation")
      ckpt.save_best(done, state, train_iter.get_state(), config,
                     {"val_loss": val_metrics.get("val_loss", float("nan"))})
      if main:
        bar.write(f"step {done}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in val_metrics.items() if isinstance(v, float)))
  bar.close()
  ckpt.wait()

  if preempted_at is not None:
    ckpt.close()
    writer.close()
    if main:
      _upload_logs(log_dir, workdir)
      print(f"preempted: stopped at step {preempted_at} on every process and saved "
            f"{ckpt.latest.directory}/{preempted_at}; rerun the same command to resume",
            flush=True)
    raise preemption.Preempted(preempted_at)

  summary = {"final_step": int(config.total_steps), "resumed_from": int(start_step),
             "first_logged_loss": first_loss, "last_logged_loss": last_loss,
             "validation": val_metrics}
  if config.eval.linear_probe:
    summary["linear_probe"] = linear_probe_summary(config, fns, state.params, text_input)
  summary["wall_time_s"] = time.time() - t_start
  ckpt.close()
  writer.close()
  if main:
    _upload_logs(log_dir, workdir)
    (epath.Path(workdir) / "summary.json").write_text(
        json.dumps(summary, indent=2, default=float))
    print(_summary_lines(summary), flush=True)
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("both --config (e.g. configs/pretrain.py:quick) and --workdir are "
                         "required")
  # Before any other JAX call: XLA reads its flags, and joining the runtime must happen, before
  # the first backend is created.
  xla_defaults.apply()
  try:
    distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                           _PROCESS_ID.value, heartbeat_timeout_s=_HEARTBEAT_TIMEOUT.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if not flags.FLAGS["verbosity"].present:
    # Orbax logs every save step at INFO; keep the console to the progress bar and results,
    # and to errors on every process but the first.
    absl_logging.set_verbosity(absl_logging.WARNING if distributed.is_main_process()
                               else absl_logging.ERROR)
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_validation.ConfigError, checkpoint_lib.IncompatibleCheckpointError,
          FloatingPointError) as e:
    sys.exit(f"merit_jax.train: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.train"))
