"""Dataset provisioning: every dataset a run reads is built before the run opens it.

`ensure_datasets(data_cfg)` is the one place a command (train, generate, ...) turns a data
config into built TFDS datasets. A dataset already built under its `data_dir` is used as it
is; the synthetic dataset is generated on first use; a PhysioNet dataset is built from its
publisher files in `manual_dir`. When those files are not there either, `DatasetNotFound`
says in one line which folder is missing and the commands that fill it.

`data_cfg` is a run's `config.data`: `name`, `config`, `data_dir`, `manual_dir`,
`build_kwargs` and `sources` (None, or a list of dicts `{name, config, data_dir, weight,
[manual_dir], [build_kwargs], [reports]}`; a source without `manual_dir` uses the data
config's).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax

# Datasets the project generates itself: no publisher files to download.
_GENERATED = ("synthetic_ecg",)


class DatasetNotFound(FileNotFoundError):
  """A dataset is neither built nor buildable here; the message is one line with the fix."""


@dataclasses.dataclass(frozen=True)
class BuildSpec:
  """One dataset of a run and what building it takes."""
  name: str
  config: str | None
  data_dir: str
  manual_dir: str | None
  build_kwargs: dict


def build_specs(data_cfg) -> list[BuildSpec]:
  """Every dataset the run reads (`data.sources`, else `data.name`), in reading order."""
  build_kwargs = dict(data_cfg.build_kwargs or {})
  main = BuildSpec(data_cfg.name, data_cfg.config, data_cfg.data_dir, data_cfg.manual_dir,
                   build_kwargs)
  if not data_cfg.sources:
    return [main]
  specs = []
  for src in map(dict, data_cfg.sources):
    specs.append(BuildSpec(src["name"], src.get("config"), src["data_dir"],
                           src.get("manual_dir", data_cfg.manual_dir),
                           dict(src.get("build_kwargs", {}))))
  # Evaluation reads data.name/data_dir (the primary source): it must be built too.
  if data_cfg.name and not any(_expand(s.data_dir) == _expand(data_cfg.data_dir)
                               for s in specs):
    specs.insert(0, main)
  return specs


def drop_sources_without_use(config) -> None:
  """Removes ECG-only sources (`reports=False`) from a run whose objective cannot use them.

  A contrastive-only run (objective.reconstruction=False) has nothing to learn from an ECG
  without a report; mixing such records in would only shrink its batches of pairs. The
  config is changed in place, so the run's config.json records the data actually used.
  """
  sources = config.data.sources
  if not sources or config.objective.reconstruction:
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
  """Builds every dataset of `data_cfg` that is not built yet (process 0; the others wait).

  Raises:
    DatasetNotFound: a dataset is not built and its publisher files are not in manual_dir.
  """
  missing = [spec for spec in build_specs(data_cfg) if not _is_built(spec)]
  if missing and jax.process_index() == 0:
    # Every missing dataset is checked before the first (long) build starts.
    for spec in missing:
      _check_buildable(spec)
    from merit_jax.data import build as build_lib  # pylint: disable=g-import-not-at-top
    for spec in missing:
      logging.info("building %s (%s) into %s", spec.name, spec.config, spec.data_dir)
      print(f"building dataset {spec.name} ({spec.config}) into {spec.data_dir} ...",
            flush=True)
      manual_dir = _expand(spec.manual_dir) if spec.manual_dir else None
      build_lib.build(spec.name, manual_dir, _expand(spec.data_dir), config=spec.config,
                      **spec.build_kwargs)
  if missing and jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("merit_jax.provision.ensure_datasets")


def _expand(path: str) -> str:
  return os.path.expanduser(os.fspath(path))


def _is_built(spec: BuildSpec) -> bool:
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  try:
    pipeline.builder_dir(pipeline.SourceSpec(spec.name, spec.config, _expand(spec.data_dir)))
  except FileNotFoundError:
    return False
  return True


def _check_buildable(spec: BuildSpec) -> None:
  """Raises DatasetNotFound unless `spec` can be built here (generated, or files present)."""
  if spec.name in _GENERATED:
    return
  if spec.manual_dir and os.path.isdir(_expand(spec.manual_dir)):
    return
  manual = spec.manual_dir or "DIR"
  config = f" --config={spec.config}" if spec.config else ""
  raise DatasetNotFound(
      f"dataset {spec.name!r} (config {spec.config!r}) is not built under {spec.data_dir} and "
      f"its publisher files are not in data.manual_dir={spec.manual_dir!r}: download them with "
      f"`python -m merit_jax.data.download {spec.name} --target_dir={manual}` (the run then "
      f"builds it), or build it with `python -m merit_jax.data.build {spec.name} "
      f"--manual_dir={manual} --data_dir={spec.data_dir}{config}`, or point "
      "--config.data.data_dir at a built copy")
