"""Checkpoints of a pretraining run: Orbax managers, resume, and loading for inference.

Layout inside a run directory (`workdir`):

  config.json              the resolved config (also saved inside every checkpoint)
  tokenizer.model          copy of the tokenizer (or tokenizer/ for a HF folder)
  checkpoints/<step>/      latest K: train state + data-iterator state + config
  checkpoints_best/<step>/ the best by validation loss (one kept)

Saves are asynchronous: the step loop continues while the arrays are written; Orbax writes
into a temporary folder (`<step>.orbax-checkpoint-tmp-*`) and renames it when complete (on
`gs://`, where renames are not atomic, it marks completion with `commit_success.txt`), so a run
killed mid-save (SIGKILL, preemption) resumes from the last *complete* checkpoint. The data
iterator's position is saved per process as JSON (all processes' states gathered into one
item), so a resumed run sees the same batches an uninterrupted one would.

Every save is collective: all processes call it, each writes its own array shards, the primary
process writes the JSON items and commits. Paths go through `etils.epath`, so the run directory
may be a local folder or a `gs://` bucket.

A checkpoint only fits the model that wrote it: `check_compatible` compares the saved config's
`model` and `data.preprocess` keys with the current config (except the compute-only
`NON_STRUCTURAL_KEYS`) and refuses a mismatch with the differing fields named, on resume and
in `load_for_inference`.

Test hook: MERIT_JAX_TEST_STALL_SAVE="<step>:<seconds>" delays the commit of that step's save
(after its temporary folder exists), so a test can kill a run while a checkpoint is half
written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
from typing import Any, Mapping

from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from merit_jax import atomic_files
from merit_jax import config_validation

LATEST_DIR = "checkpoints"
BEST_DIR = "checkpoints_best"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
TOKENIZER_DIR = "tokenizer"
# Config sections that decide the parameters' shapes and meaning: a checkpoint is refused when
# they differ. Compute-only keys (recomputation, compute dtype) may change on resume.
COMPATIBILITY_SECTIONS = ("model", "data.preprocess")
NON_STRUCTURAL_KEYS = ("model.remat", "model.dtype")
STALL_SAVE_ENV = "MERIT_JAX_TEST_STALL_SAVE"


class IncompatibleCheckpointError(ValueError):
  """A checkpoint written with a different model (or preprocessing) config."""


def resolve_path(path: str | os.PathLike) -> epath.Path:
  """A run path as an epath: local paths absolute with ~ expanded, URLs (gs://...) as given."""
  text = os.fspath(path)
  if "://" in text:
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


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
  workdir = resolve_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  atomic_files.write_bytes(workdir / CONFIG_FILE,
                json.dumps(config_to_json(config), indent=2, sort_keys=True).encode("utf-8"))
  proto = getattr(tokenizer, "_proto", None)
  src = getattr(tokenizer, "path", None)
  if proto is not None:  # SentencePiece: the serialized model is all it needs.
    atomic_files.write_bytes(workdir / TOKENIZER_FILE, proto)
  elif src:  # Hugging Face: copy the folder holding tokenizer.json.
    folder = resolve_path(src)
    folder = folder.parent if folder.is_file() else folder
    dest = workdir / TOKENIZER_DIR
    if os.fspath(folder) != os.fspath(dest):
      if "://" in os.fspath(dest):
        for file in folder.rglob("*"):
          if file.is_file():
            target = dest / file.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            file.copy(target, overwrite=True)
      else:
        shutil.copytree(os.fspath(folder), os.fspath(dest), dirs_exist_ok=True)


def read_run_config(workdir: str) -> dict | None:
  """The config.json of a run directory as a dict, or None when there is none yet."""
  path = resolve_path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  # Keys added since the run was written take today's defaults (recorded values are kept).
  return config_validation.complete_run_config(json.loads(path.read_text())).to_dict()


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
  if isinstance(tree, Mapping):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}.{key}"))
    return out
  return {prefix: tree}


def _section(config_json: Mapping[str, Any], dotted: str) -> Any:
  node: Any = config_json
  for part in dotted.split("."):
    node = node.get(part) if isinstance(node, Mapping) else None
  return node


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """'key: checkpoint X, config Y' for every structural key that differs (JSON dicts)."""
  diffs = []
  for section in COMPATIBILITY_SECTIONS:
    old = _flatten(_section(saved, section) or {}, section)
    new = _flatten(_section(current, section) or {}, section)
    for key in sorted(set(old) | set(new)):
      if key in NON_STRUCTURAL_KEYS:
        continue
      a, b = old.get(key), new.get(key)
      if a != b:
        diffs.append(f"{key}: checkpoint {a!r}, config {b!r}")
  return diffs


def check_compatible(saved: Mapping[str, Any], config: ml_collections.ConfigDict | Mapping,
                     source: str) -> None:
  """Refuses a checkpoint whose model / preprocessing config differs from `config`.

  A key the checkpoint's config does not record (added to configs/pretrain.py after it was
  written) counts as its default, as `config_validation.complete_run_config` reads it.

  Raises:
    IncompatibleCheckpointError: naming `source` and every differing field.
  """
  current = config_to_json(config) if isinstance(config, ml_collections.ConfigDict) else config
  saved = config_to_json(config_validation.complete_run_config(saved))
  diffs = config_differences(saved, current)
  if diffs:
    raise IncompatibleCheckpointError(
        f"checkpoint {source} was written with a different model/preprocessing config; "
        "differing fields:\n  " + "\n  ".join(diffs) + "\nUse a new --workdir for a new "
        "model, or pass the checkpoint's values (see its config.json).")


def run_tokenizer_spec(workdir: str) -> str:
  """The tokenizer saved in a run directory (path usable by `load_tokenizer`)."""
  for name in (TOKENIZER_FILE, TOKENIZER_DIR):
    path = resolve_path(workdir) / name
    if path.exists():
      return os.fspath(path)
  raise FileNotFoundError(f"no {TOKENIZER_FILE} or {TOKENIZER_DIR}/ in run directory {workdir}")


# ----------------------------------------------------------------------------------------------
# The data-iterator item: JSON, with the test hook that stalls a save mid-write.


def _stall_seconds(directory: epath.Path) -> float:
  """Seconds to stall the save in `directory` (<step tmp dir>/data) per STALL_SAVE_ENV."""
  spec = os.environ.get(STALL_SAVE_ENV)
  if not spec:
    return 0.0
  try:
    step_text, seconds = spec.split(":")
    step = ocp.path.step.step_from_checkpoint_name(directory.parent.name)
  except ValueError:
    return 0.0
  return float(seconds) if step == int(step_text) else 0.0


class _DataStateHandler(ocp.handlers.JsonCheckpointHandler):
  """JSON handler for the data-iterator states (plus the STALL_SAVE_ENV test hook)."""

  async def _save_fn(self, x, directory):
    delay = _stall_seconds(epath.Path(directory))
    if delay:  # Runs in the commit thread: the step folder stays temporary meanwhile.
      await asyncio.sleep(delay)
    await super()._save_fn(x, directory)


@ocp.args.register_with_handler(_DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  item: Mapping[str, Any]


@ocp.args.register_with_handler(_DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  item: Any = None


class Checkpointer:
  """Keep-last-K and best-by-validation checkpoint managers of one run."""

  def __init__(self, workdir: str, keep: int = 3, best_metric: str = "val_loss",
               best_mode: str = "min", async_save: bool = True):
    workdir = resolve_path(workdir)
    self.workdir = workdir
    self.best_metric = best_metric
    item_names = ("state", "data", "config")
    self.latest = ocp.CheckpointManager(
        workdir / LATEST_DIR, item_names=item_names,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save))
    self.best = ocp.CheckpointManager(
        workdir / BEST_DIR, item_names=item_names,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, cleanup_tmp_directories=True,
            best_fn=lambda metrics: float(metrics[best_metric]), best_mode=best_mode,
            keep_checkpoints_without_metrics=False, enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def _args(self, state, data_state, config):
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=DataStateSave({"processes": _gather_json(data_state)}),
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

  def saved_config(self, step: int | None = None) -> dict:
    """The config saved with the latest (or `step`) checkpoint, as a JSON dict."""
    step = self.latest.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint under {self.latest.directory}")
    return dict(self.latest.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"])

  def restore(self, state: Any, step: int | None = None,
              config: ml_collections.ConfigDict | None = None) -> tuple[Any, dict | None, int]:
    """Restores the latest (or `step`) checkpoint into the structure/shardings of `state`.

    Args:
      state: a state of the right structure and shardings (e.g. freshly initialised).
      step: the step to restore; default the latest complete one.
      config: when given, the checkpoint's saved config must match it (`check_compatible`).

    Returns:
      (state, this process's data-iterator state or None, step).
    """
    step = self.latest.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint under {self.latest.directory}")
    if config is not None:
      check_compatible(self.saved_config(step), config, f"{self.latest.directory}/{step}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=DataStateRestore()))
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


def _find_run(checkpoint_dir: str) -> tuple[epath.Path, epath.Path]:
  """Resolves a user path to (run directory, checkpoint manager directory)."""
  path = resolve_path(checkpoint_dir)
  if not path.exists():
    raise FileNotFoundError(f"checkpoint path {checkpoint_dir!r} does not exist")
  if (path / CONFIG_FILE).is_file():
    for sub in (LATEST_DIR, BEST_DIR):
      if (path / sub).is_dir():
        return path, path / sub
    raise FileNotFoundError(f"run directory {path} holds no {LATEST_DIR}/ folder")
  parent = path.parent
  if (parent / CONFIG_FILE).is_file():
    return parent, path  # checkpoints/ or checkpoints_best/ itself
  raise FileNotFoundError(
      f"{checkpoint_dir!r} is not a merit_jax run directory (no {CONFIG_FILE}); pass the "
      "--workdir of a training run or its checkpoints/ folder")


def _latest_complete_step(manager_dir: str | epath.Path) -> int:
  """The newest finalized step (Orbax's rules: not a temporary folder, committed on GCS)."""
  manager_dir = epath.Path(manager_dir)
  steps = [step for step in ocp.path.step.checkpoint_steps(manager_dir)
           if (manager_dir / str(step) / "state").is_dir()]
  if not steps:
    raise FileNotFoundError(f"no complete checkpoint in {manager_dir}")
  return max(steps)


class _DropStepMetadataWarning(logging.Filter):
  """Orbax warns that a train-state item has no `_CHECKPOINT_METADATA` of its own: the
  manager writes that file one level up, beside the items, so the warning is noise here."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Metadata file does not exist")


def restore_params(state_dir) -> Any:
  """The params of a saved train state, on the first local device, whatever mesh wrote them.

  Only the parameters are read (not the optimizer state or counters).
  """
  quiet = _DropStepMetadataWarning()
  logging.getLogger("absl").addFilter(quiet)
  try:
    return _restore_params(state_dir)
  finally:
    logging.getLogger("absl").removeFilter(quiet)


def _restore_params(state_dir) -> Any:
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(state_dir).item_metadata.tree
  if "params" not in tree:
    raise ValueError(f"checkpoint {state_dir} holds no 'params' (keys: {sorted(tree)})")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  item = {"params": jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree["params"])}
  restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), item)
  return checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=True))["params"]


def load_for_inference(checkpoint_dir: str, step: int | None = None):
  """Loads a trained model for embedding / evaluation, on the default device.

  Args:
    checkpoint_dir: a training run's workdir, or its `checkpoints/` / `checkpoints_best/`.
    step: a specific step; default the latest complete one in that folder.

  Returns:
    (model, params, config, preprocess_cfg, tokenizer): the Flax MERIT module, its parameters
    (jax arrays on the first local device), the run's ConfigDict, its `PreprocessConfig`
    and its tokenizer (None for a frozen pretrained text tower, which tokenizes itself:
    `models/text_tower.FrozenTextTower`).
  """
  from merit_jax.data import preprocess as preprocess_lib  # pylint: disable=g-import-not-at-top
  from merit_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  from merit_jax.models import merit as merit_lib  # pylint: disable=g-import-not-at-top

  run_dir, manager_dir = _find_run(checkpoint_dir)
  from merit_jax.models import text_tower  # pylint: disable=g-import-not-at-top
  config = config_validation.complete_run_config(
      json.loads((run_dir / CONFIG_FILE).read_text()))
  if text_tower.is_frozen(config.model.text):
    # A frozen tower brings its own tokenizer (a Gemma 3 run saves none).
    tokenizer = None
  else:
    tokenizer = tokenizer_lib.load_tokenizer(run_tokenizer_spec(run_dir))
    config.model.text.vocab_size = tokenizer.vocab_size

  step = _latest_complete_step(manager_dir) if step is None else int(step)
  state_dir = manager_dir / str(step) / "state"
  if not state_dir.is_dir():
    raise FileNotFoundError(f"no checkpoint for step {step} at {state_dir}")
  # The model is built from config.json: refuse a checkpoint that another config wrote.
  saved_config_file = manager_dir / str(step) / "config" / "metadata"
  if saved_config_file.exists():
    check_compatible(json.loads(saved_config_file.read_text()), config,
                     f"{manager_dir}/{step}")
  model = merit_lib.build_model(config)
  params = restore_params(state_dir)
  preprocess_cfg = preprocess_lib.PreprocessConfig.from_config(config.data.preprocess)
  return model, params, config, preprocess_cfg, tokenizer
