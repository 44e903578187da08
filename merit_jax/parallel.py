"""Device mesh, logical axis rules and shardings.

One 2-D mesh with axes ('data', 'fsdp'). Batches are split over both axes (every device holds
a distinct slice of the global batch). Params carry logical axis names (see models/ecg_vit.py);
a rule set maps them to mesh axes:

* 'replicate' (default): every logical axis -> None, params replicated on every device;
* 'fsdp': 'mlp', 'vocab', 'embed', 'heads' -> 'fsdp' in that priority (Flax assigns a mesh axis
  to at most one dim of a param, so the first matching rule wins: this shards the largest dim
  of the usual kernels: mlp > embed, vocab > embed). A dim that does not divide by the fsdp
  size stays replicated instead of failing.

API:
  MESH_AXES = ('data', 'fsdp'); BATCH_AXES = ('data', 'fsdp')
  make_mesh(mesh_cfg, devices=None) -> Mesh; mesh_cfg['data'] / ['fsdp'], -1 = the rest
    (`config.mesh` or a mapping with those keys; resolved by config_validation.mesh_shape).
  rules_for(mesh_cfg) -> logical axis rules (mesh_cfg['rules'] if set, else 'fsdp' when
    fsdp > 1).
  logical_axis_rules(name) -> tuple of (logical, mesh axis) pairs.
  batch_sharding(mesh) -> NamedSharding(mesh, P(('data', 'fsdp')))
  replicated(mesh) -> NamedSharding(mesh, P())
  state_shardings(abstract_boxed_tree, mesh, rules) -> NamedSharding tree for the unboxed tree.
  num_batch_shards(mesh) -> data * fsdp.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from merit_jax import config_validation

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
LOGICAL_NAMES = ("embed", "mlp", "heads", "kv", "vocab", "patch", "leads", "time", "proj")

_RULES = {
    "replicate": tuple((name, None) for name in LOGICAL_NAMES),
    "fsdp": (("mlp", "fsdp"), ("vocab", "fsdp"), ("embed", "fsdp"), ("heads", "fsdp"),
             ("kv", None), ("patch", None), ("leads", None), ("time", None), ("proj", None)),
}


def logical_axis_rules(name: str = "replicate"):
  if name not in _RULES:
    raise ValueError(f"unknown logical axis rule set {name!r}; choose from {sorted(_RULES)}")
  return _RULES[name]


def rules_for(mesh_cfg) -> tuple:
  """The rule set a mesh config asks for: `mesh.rules`, else fsdp when fsdp > 1."""
  name = mesh_cfg["rules"]
  if name is None:
    name = "fsdp" if int(mesh_cfg["fsdp"]) > 1 else "replicate"
  return logical_axis_rules(name)


def make_mesh(mesh_cfg, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """Builds the ('data', 'fsdp') mesh; one of the two sizes may be -1 (= all the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = list(config_validation.mesh_shape(mesh_cfg, len(devices)))
  try:
    # Topology-aware order (neighbouring chips on the fsdp axis) where the platform knows one.
    grid = mesh_utils.create_device_mesh(sizes, devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices, dtype=object).reshape(sizes)
  return Mesh(grid, MESH_AXES)


def num_batch_shards(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """Drops mesh axes from dims they do not divide (those dims stay replicated)."""
  out = []
  for i, axes in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    names = axes if isinstance(axes, tuple) else (axes,)
    size = int(np.prod([mesh.shape[a] for a in names]))
    out.append(axes if shape[i] % size == 0 else None)
  return P(*out)


def state_shardings(abstract_tree, mesh: Mesh, rules) -> Any:
  """NamedShardings for a (possibly boxed, abstract) tree, matching its unboxed structure.

  Leaves annotated with `nn.with_logical_partitioning` are mapped through `rules`; everything
  else (step counters, optimizer counts, unannotated leaves) is replicated.
  """
  specs = nn.get_partition_spec(abstract_tree)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  unboxed = nn.unbox(abstract_tree)

  def to_sharding(spec, leaf):
    return NamedSharding(mesh, _fit_spec(spec, tuple(getattr(leaf, "shape", ())), mesh))

  return jax.tree.map(to_sharding, mesh_specs, unboxed, is_leaf=lambda x: isinstance(x, P))
