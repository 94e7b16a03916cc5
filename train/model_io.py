"""Loading what the trainer wrote, for the tools that use a trained model
(``train.distill`` teachers, ``train.quantize``, ``train.generate``).

A *checkpoint path* is any of
  * a run dir (``runs/<preset>``: holds ``checkpoints/``),
  * its ``checkpoints/`` dir,
  * an int4 export dir (``python -m train.quantize``: ``config.json`` + ``model.safetensors``).
Only the parameters are restored from a training checkpoint (Orbax partial restore: the
optimizer state is never read); the model config comes from the checkpoint's ``meta``.
Every problem is a one-line ``ConfigError`` / ``DataError``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from model.config import ConfigError, ModelConfig

logging.getLogger("absl").setLevel(logging.WARNING)


@dataclass
class Loaded:
    kind: str                       # "float" (a training checkpoint) | "int4" (an export)
    model_cfg: ModelConfig
    path: str                       # checkpoints dir or export dir
    step: int | None
    meta: dict[str, Any]            # the checkpoint's meta / the export's config.json
    params: Any = None              # float params (kind float)
    quantized: Any = None           # model.quant.QuantizedModel (kind int4)

    @property
    def data(self) -> dict | None:
        """The run's data config (``data.kind``, ``data.options``) when recorded."""
        return self.meta.get("data") or (self.meta.get("source") or {}).get("data")


def is_export(path: str) -> bool:
    from model.quant import CONFIG_FILE
    p = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(p):
        return False
    try:
        with open(p, encoding="utf-8") as f:
            return str(json.load(f).get("format", "")).startswith("corpusforge-int4")
    except (OSError, json.JSONDecodeError):
        return False


def checkpoints_dir(path: str) -> str:
    """The Orbax checkpoints directory of a run dir or checkpoints dir."""
    if not os.path.exists(path):
        raise ConfigError(f"{path}: checkpoint directory not found")
    if not os.path.isdir(path):
        raise ConfigError(f"{path}: not a directory (expected a run dir, its checkpoints/ or an int4 export)")
    sub = os.path.join(path, "checkpoints")
    d = sub if os.path.isdir(sub) else path
    if not any(n.isdigit() and os.path.isdir(os.path.join(d, n)) for n in os.listdir(d)):
        raise ConfigError(f"{path}: no checkpoints in it (expected a run dir, its checkpoints/ or an int4 export)")
    return os.path.abspath(d)


def _manager(d: str):
    import orbax.checkpoint as ocp
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)           # read_only=True is announced as warnings on every open
    try:
        opts = ocp.CheckpointManagerOptions(create=False, read_only=True, enable_async_checkpointing=False)
        return ocp.CheckpointManager(d, options=opts, item_names=("state", "data", "meta"))
    finally:
        absl.setLevel(level)


def read_meta(path: str, step: int | None = None) -> tuple[str, int, dict]:
    """(checkpoints dir, step, meta) without touching the parameters."""
    import orbax.checkpoint as ocp
    d = checkpoints_dir(path)
    mgr = _manager(d)
    steps = sorted(mgr.all_steps())
    if not steps:
        raise ConfigError(f"{path}: no complete checkpoint")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ConfigError(f"{path}: no checkpoint at step {step} (have {', '.join(map(str, steps))})")
    meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    mgr.close()
    if "model" not in meta:
        raise ConfigError(f"{d}/{step}: checkpoint meta has no model config")
    return d, int(step), meta


def load_params(path: str, step: int | None = None, *, dtype=jnp.float32,
                shardings: Callable[[Any, ModelConfig], Any] | None = None) -> Loaded:
    """Float parameters of a training checkpoint (cast to ``dtype``).  ``shardings(abstract,
    model_cfg)`` -> a sharding per parameter (default: the first device)."""
    import orbax.checkpoint as ocp
    from model.transformer import param_shapes

    d, step, meta = read_meta(path, step)
    try:
        cfg = ModelConfig.model_validate(meta["model"])
    except Exception as e:  # pydantic ValidationError
        raise ConfigError(f"{d}/{step}: bad model config in the checkpoint meta ({str(e).splitlines()[0]})") from None
    shapes = param_shapes(cfg)
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.dtype(dtype)), shapes,
                            is_leaf=lambda x: isinstance(x, tuple))
    if shardings is None:
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shard_tree = jax.tree.map(lambda _: dev, abstract)
    else:
        shard_tree = shardings(abstract, cfg)
    restore_args = jax.tree.map(lambda a, s: ocp.ArrayRestoreArgs(sharding=s, dtype=a.dtype), abstract, shard_tree)
    item = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shard_tree)
    mgr = _manager(d)
    try:
        out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            {"params": item}, restore_args={"params": restore_args}, partial_restore=True)))
    except Exception as e:
        raise ConfigError(f"{d}/{step}: cannot restore the parameters ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]})") from None
    finally:
        mgr.close()
    return Loaded("float", cfg, d, step, meta, params=out["state"]["params"])


def load_any(path: str, step: int | None = None, *, dtype=jnp.float32) -> Loaded:
    """A training checkpoint (float) or an int4 export, whichever ``path`` is."""
    if os.path.isdir(path) and is_export(path):
        from model.quant import QuantizedModel
        if step is not None:
            raise ConfigError(f"{path}: an int4 export holds one step; drop --step")
        qm, cfg = QuantizedModel.load(path)
        return Loaded("int4", qm.model_cfg, os.path.abspath(path), (cfg.get("source") or {}).get("step"), cfg,
                      quantized=qm)
    return load_params(path, step, dtype=dtype)
