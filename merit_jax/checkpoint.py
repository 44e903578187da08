"""Checkpoints of a pretraining run: Orbax managers, resume, and loading for inference.

Layout inside a run directory (`workdir`):

  config.json              the resolved config (also saved inside every checkpoint)
  tokenizer.model          copy of the tokenizer (or tokenizer/ for a HF folder)
  checkpoints/<step>/      latest K: train state + data-iterator state + config
  checkpoints_best/<step>/ the best by validation loss (one kept)

Saves are asynchronous: the step loop continues while the arrays are written; Orbax writes
into a temporary folder and renames it when complete, so a run killed mid-save (SIGKILL,
preemption) resumes from the last *complete* checkpoint. The data iterator's position is saved
per process as JSON (all processes' states gathered into one item), so a resumed run sees the
same batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

LATEST_DIR = "checkpoints"
BEST_DIR = "checkpoints_best"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
TOKENIZER_DIR = "tokenizer"


def _gather_json(obj: Any) -> list[Any]:
  """All processes' JSON-serialisable `obj`, in process order (a list of one on one host)."""
  if jax.process_count() == 1:
    return [obj]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data = np.frombuffer(json.dumps(obj).encode("utf-8"), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int64)))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  gathered = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(bytes(gathered[i, :int(sizes.reshape(-1)[i])]).decode("utf-8"))
          for i in range(gathered.shape[0])]


def config_to_json(config: ml_collections.ConfigDict) -> dict:
  """A JSON-safe dict of a config (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def save_run_files(workdir: str, config: ml_collections.ConfigDict, tokenizer: Any) -> None:
  """Writes config.json and a copy of the tokenizer into the run directory (main process)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  tmp = os.path.join(workdir, CONFIG_FILE + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(config_to_json(config), f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(workdir, CONFIG_FILE))
  proto = getattr(tokenizer, "_proto", None)
  src = getattr(tokenizer, "path", None)
  if proto is not None:  # SentencePiece: the serialized model is all it needs.
    tmp = os.path.join(workdir, TOKENIZER_FILE + ".tmp")
    with open(tmp, "wb") as f:
      f.write(proto)
    os.replace(tmp, os.path.join(workdir, TOKENIZER_FILE))
  elif src:  # Hugging Face: copy the folder holding tokenizer.json.
    folder = pathlib.Path(src)
    folder = folder.parent if folder.is_file() else folder
    dest = os.path.join(workdir, TOKENIZER_DIR)
    if os.path.abspath(folder) != os.path.abspath(dest):
      shutil.copytree(folder, dest, dirs_exist_ok=True)


def run_tokenizer_spec(workdir: str) -> str:
  """The tokenizer saved in a run directory (path usable by `load_tokenizer`)."""
  for name in (TOKENIZER_FILE, TOKENIZER_DIR):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"no {TOKENIZER_FILE} or {TOKENIZER_DIR}/ in run directory {workdir}")


class Checkpointer:
  """Keep-last-K and best-by-validation checkpoint managers of one run."""

  def __init__(self, workdir: str, keep: int = 3, best_metric: str = "val_loss",
               best_mode: str = "min", async_save: bool = True):
    workdir = os.path.abspath(os.path.expanduser(workdir))
    self.workdir = workdir
    self.best_metric = best_metric
    item_names = ("state", "data", "config")
    self.latest = ocp.CheckpointManager(
        os.path.join(workdir, LATEST_DIR), item_names=item_names,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save))
    self.best = ocp.CheckpointManager(
        os.path.join(workdir, BEST_DIR), item_names=item_names,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, cleanup_tmp_directories=True,
            best_fn=lambda metrics: float(metrics[best_metric]), best_mode=best_mode,
            keep_checkpoints_without_metrics=False, enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def _args(self, state, data_state, config):
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave({"processes": _gather_json(data_state)}),
        config=ocp.args.JsonSave(config_to_json(config)))

  def save(self, step: int, state: Any, data_state: Mapping[str, Any],
           config: ml_collections.ConfigDict, force: bool = False) -> bool:
    """Starts an asynchronous save of the latest checkpoint; returns whether it saved."""
    if step in self.latest.all_steps():
      return False
    return self.latest.save(step, args=self._args(state, data_state, config), force=force)

  def save_best(self, step: int, state: Any, data_state: Mapping[str, Any],
                config: ml_collections.ConfigDict, metrics: Mapping[str, float]) -> bool:
    """Saves into the best-by-validation manager (keeps the one with the best metric)."""
    if step in self.best.all_steps() or self.best_metric not in metrics:
      return False
    value = float(metrics[self.best_metric])
    if not np.isfinite(value):
      return False
    return self.best.save(step, args=self._args(state, data_state, config),
                          metrics={self.best_metric: value}, force=True)

  def restore(self, state: Any, step: int | None = None) -> tuple[Any, dict | None, int]:
    """Restores the latest (or `step`) checkpoint into the structure/shardings of `state`.

    Returns:
      (state, this process's data-iterator state or None, step).
    """
    step = self.latest.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint under {self.latest.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    processes = restored["data"]["processes"]
    if len(processes) != jax.process_count():
      raise ValueError(
          f"checkpoint {step} holds data-iterator states of {len(processes)} processes, but "
          f"this run has {jax.process_count()}; resume with the same process count")
    return restored["state"], processes[jax.process_index()], step

  def wait(self):
    """Blocks until pending asynchronous saves are complete."""
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def _find_run(checkpoint_dir: str) -> tuple[str, str]:
  """Resolves a user path to (run directory, checkpoint manager directory)."""
  path = os.path.abspath(os.path.expanduser(str(checkpoint_dir)))
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint path {checkpoint_dir!r} does not exist")
  if os.path.isfile(os.path.join(path, CONFIG_FILE)):
    for sub in (LATEST_DIR, BEST_DIR):
      if os.path.isdir(os.path.join(path, sub)):
        return path, os.path.join(path, sub)
    raise FileNotFoundError(f"run directory {path} holds no {LATEST_DIR}/ folder")
  parent = os.path.dirname(path)
  if os.path.isfile(os.path.join(parent, CONFIG_FILE)):
    return parent, path  # checkpoints/ or checkpoints_best/ itself
  raise FileNotFoundError(
      f"{checkpoint_dir!r} is not a merit_jax run directory (no {CONFIG_FILE}); pass the "
      "--workdir of a training run or its checkpoints/ folder")


def _latest_complete_step(manager_dir: str) -> int:
  """The newest finalized step folder (Orbax's temporary folders are not digits-only)."""
  steps = [int(name) for name in os.listdir(manager_dir)
           if name.isdigit() and os.path.isdir(os.path.join(manager_dir, name, "state"))]
  if not steps:
    raise FileNotFoundError(f"no complete checkpoint in {manager_dir}")
  return max(steps)


def load_for_inference(checkpoint_dir: str, step: int | None = None):
  """Loads a trained model for embedding / evaluation, on the default device.

  Args:
    checkpoint_dir: a training run's workdir, or its `checkpoints/` / `checkpoints_best/`.
    step: a specific step; default the latest complete one in that folder.

  Returns:
    (model, params, config, preprocess_cfg, tokenizer): the Flax MERIT module, its parameters
    (jax arrays on the first local device), the run's ConfigDict, its `PreprocessConfig`
    and its tokenizer.
  """
  from merit_jax.data import preprocess as preprocess_lib  # pylint: disable=g-import-not-at-top
  from merit_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  from merit_jax.models import merit as merit_lib  # pylint: disable=g-import-not-at-top

  run_dir, manager_dir = _find_run(checkpoint_dir)
  with open(os.path.join(run_dir, CONFIG_FILE), encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  tokenizer = tokenizer_lib.load_tokenizer(run_tokenizer_spec(run_dir))
  config.model.text.vocab_size = tokenizer.vocab_size
  model = merit_lib.build_model(config)

  step = _latest_complete_step(manager_dir) if step is None else int(step)
  state_dir = os.path.join(manager_dir, str(step), "state")
  if not os.path.isdir(state_dir):
    raise FileNotFoundError(f"no checkpoint for step {step} at {state_dir}")
  # Restore only the parameters (not the optimizer state), onto the first local device,
  # whatever mesh wrote them.
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(state_dir).item_metadata.tree
  if "params" not in tree:
    raise ValueError(f"checkpoint {state_dir} holds no 'params' (keys: {sorted(tree)})")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  item = {"params": jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree["params"])}
  restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), item)
  params = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=True))["params"]
  preprocess_cfg = preprocess_lib.PreprocessConfig.from_config(config.data.preprocess)
  return model, params, config, preprocess_cfg, tokenizer
