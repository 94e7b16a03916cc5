"""Orbax checkpoints of everything a bitwise-exact resume needs.

One checkpoint per saved step, three items:
  * ``state``: the train state pytree (step, fp32 master params, optimizer state, rng),
    saved sharded as it lives on the devices and restored straight into the same layout;
  * ``data``:  the data sources' ``get_state()`` + fingerprints (JSON);
  * ``meta``:  config fingerprint, preset, versions (JSON).

Saves are asynchronous (Orbax blocks only for the device-to-host copy, then writes in a
background thread).  A checkpoint directory appears under its final name only once
complete, so a kill -9 at any moment leaves either the previous checkpoints or the new
one; half-written temporaries are removed at the next start (cleanup_tmp_directories).
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

# Orbax logs every save at INFO through absl; keep the console for progress lines.
logging.getLogger("absl").setLevel(logging.WARNING)


class Checkpointer:
    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True, keep_period: int | None = None,
                 read_only: bool = False):
        """``read_only``: open another run's checkpoints (``--init-from``) without creating,
        cleaning or deleting anything there."""
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                               cleanup_tmp_directories=not read_only, read_only=read_only,
                                               enable_async_checkpointing=async_save and not read_only,
                                               keep_period=keep_period)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         data=ocp.args.JsonSave(data_state),
                                                         meta=ocp.args.JsonSave(meta)), force=True)

    def read_json(self, step: int) -> tuple[dict, dict]:
        """(data, meta) of a checkpoint, without touching the (large) state."""
        out = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore(),
                                                                  meta=ocp.args.JsonRestore()))
        return out["data"], out["meta"]

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
        """``abstract_state``: a tree of jax.ShapeDtypeStruct with the target shardings."""
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                  data=ocp.args.JsonRestore(),
                                                                  meta=ocp.args.JsonRestore()))
        return out["state"], out["data"], out["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
