"""Device mesh and logical-axis rules: how every array is laid out over devices.

The model names axes logically ("embed", "heads", "mlp", "batch", ...).  The rules below
map each logical axis to mesh axes (``data``, ``fsdp``, ``tensor``), as MaxText does:

  * ``data``:   pure data parallelism (replicated weights, batch split)
  * ``fsdp``:   data parallelism with weights and optimizer state sharded along ``embed``
                (ZeRO-3 / FSDP: XLA all-gathers a layer's weights just before use)
  * ``tensor``: Megatron-style model parallelism over heads, MLP width and vocabulary

The jitted train step is given the shardings of its inputs and outputs; the XLA
partitioner (GSPMD, through Shardy in current JAX) propagates them through the step and
inserts the collectives.  The same program runs on 1 device (every axis of size 1) and
on many.  A dimension that a mesh axis does not divide is left replicated on that axis
(e.g. the single key/value head of multi-query attention under tensor parallelism).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: dict[str, tuple[str, ...]] = {
    # parameters
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
    "head_dim": (),
    "layers": (),
    "norm": (),
    # activations
    "batch": ("data", "fsdp"),
    "seq": (),
    "act_embed": (),
    "act_heads": ("tensor",),
    "act_kv_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
}


def make_rules(overrides: dict[str, Any] | None = None) -> dict[str, tuple[str, ...]]:
    rules = dict(DEFAULT_RULES)
    for k, v in (overrides or {}).items():
        v = () if v is None else (v,) if isinstance(v, str) else tuple(v)
        bad = [a for a in v if a not in MESH_AXES]
        if bad:
            raise ValueError(f"mesh.rules.{k}: unknown mesh axes {bad} (choose from {list(MESH_AXES)})")
        rules[k] = v
    return rules


def mesh_shape(data: int, fsdp: int, tensor: int, n_devices: int) -> tuple[int, int, int]:
    sizes = [data, fsdp, tensor]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % known:
            raise ValueError(f"mesh {sizes}: {n_devices} devices are not divisible by {known}")
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
                         f"{math.prod(sizes)} devices, found {n_devices}")
    return tuple(sizes)


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(data, fsdp, tensor, len(devices))
    # Auto axes: the partitioner decides the layout of everything not constrained (GSPMD style).
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=devices)


def spec_for(axes: tuple, shape: tuple[int, ...] | None, mesh: Mesh, rules: dict[str, tuple[str, ...]]) -> P:
    """PartitionSpec for an array with these logical axes (None = not sharded)."""
    used: set[str] = set()
    out = []
    for i, name in enumerate(axes):
        mesh_axes = [a for a in (rules.get(name, ()) if name else ()) if mesh.shape[a] > 1 and a not in used]
        if shape is not None:
            # keep only a prefix of mesh axes whose product divides the dimension
            keep = []
            for a in mesh_axes:
                if shape[i] % (math.prod(mesh.shape[x] for x in keep) * mesh.shape[a]) == 0:
                    keep.append(a)
                else:
                    break
            mesh_axes = keep
        used.update(mesh_axes)
        out.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else tuple(mesh_axes))
    return P(*out)


def tree_shardings(shapes: Any, axes: Any, mesh: Mesh, rules: dict) -> Any:
    """NamedShardings for a tree of ShapeDtypeStructs given the matching tree of axis names."""
    return jax.tree.map(lambda ax, s: NamedSharding(mesh, spec_for(ax, s.shape, mesh, rules)), axes, shapes,
                        is_leaf=lambda x: isinstance(x, tuple))


def make_shard_fn(mesh: Mesh, rules: dict):
    """The ``shard(x, logical_axes)`` callback handed to the model."""
    if mesh.size == 1:
        return lambda x, axes: x

    def shard(x, axes):
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_for(axes, x.shape, mesh, rules)))
    return shard


def batch_sharding(mesh: Mesh, rules: dict, batch_size: int) -> NamedSharding:
    return NamedSharding(mesh, spec_for(("batch", "seq"), (batch_size, 1), mesh, rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Host numpy batch -> global device arrays.  Single-controller: this process holds the
    whole global batch.  (Multi-host input would use jax.make_array_from_process_local_data.)"""
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}
