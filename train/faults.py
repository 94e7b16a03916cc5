"""Fault injection: kill the trainer, corrupt checkpoints, flip a parameter bit, inject a NaN.

In the run (``resilience.faults`` in the training YAML; ``FaultInjector`` is driven by the
resilience hook):
  * ``kill_every: K`` — one SIGKILL in every window of K steps, at a seeded random step and
    a random fraction into the step that follows (so the kill lands mid-step, as real
    failures do); ``kill_at`` adds fixed steps.  Kills already done are recorded in
    ``<run_dir>/faults.json`` before they happen, so a restarted trainer that redoes the
    step does not die again: the schedule is the same whatever the recovery path, which
    makes replica-vs-disk comparisons fair.
  * ``corrupt_checkpoint`` — before each kill, flip one byte in the largest file of the
    newest finished checkpoint (what bit rot or a bad disk does; Orbax restores it
    silently, the checksums of train/integrity.py catch it).
  * ``bitflip`` — flip one bit of one parameter right after step N (silent data
    corruption); ``python -m train.replay`` finds the step and the tensor.
  * ``nan_at`` — a NaN in one parameter right after those steps (once each): the next
    step's loss is NaN and the guard rolls back.

From the shell:
    python -m train.faults corrupt --run-dir R [--step N]     # flip a byte in a checkpoint
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from typing import Any

import numpy as np

from train.resilience_config import FaultConfig


def _load(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


def _store(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def kill_schedule(cfg: FaultConfig, steps: int) -> list[tuple[int, float]]:
    """[(step, fraction into the next step)] — seeded, the same for every attempt."""
    out = {s: 0.5 for s in cfg.kill_at}
    if cfg.kill_every:
        for w in range(math.ceil(steps / cfg.kill_every)):
            rng = np.random.default_rng([cfg.seed, w])
            s = w * cfg.kill_every + 1 + int(rng.integers(cfg.kill_every))
            out[s] = float(rng.random())
    return sorted((s, f) for s, f in out.items() if 0 < s < steps)


def corrupt_checkpoint(run_dir: str, step: int | None = None, seed: int = 0) -> tuple[int, str]:
    """Flip one byte in the largest file of checkpoint ``step`` (default: the newest);
    returns (step, file)."""
    root = os.path.join(run_dir, "checkpoints")
    steps = sorted(int(n) for n in os.listdir(root) if n.isdigit()) if os.path.isdir(root) else []
    if not steps:
        raise FileNotFoundError(f"{root}: no checkpoints")
    step = steps[-1] if step is None else step
    d = os.path.join(root, str(step))
    if not os.path.isdir(d):
        raise FileNotFoundError(f"{d}: no such checkpoint (have {steps})")
    files = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]
    target = max(files, key=os.path.getsize)
    size = os.path.getsize(target)
    pos = int(np.random.default_rng(seed).integers(size // 4, max(size // 4 + 1, 3 * size // 4)))
    with open(target, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))
        f.flush()
        os.fsync(f.fileno())
    return step, os.path.relpath(target, run_dir)


class FaultInjector:
    def __init__(self, cfg: FaultConfig, run_dir: str, steps: int, say, events):
        self.cfg, self.run_dir, self.say, self.events = cfg, run_dir, say, events
        self.path = os.path.join(run_dir, "faults.json")
        self.done = _load(self.path)
        self.done.setdefault("killed", [])
        self.done.setdefault("nan", [])
        self.schedule = dict(kill_schedule(cfg, steps))
        self.step_dt: float | None = None             # the last step time

    @property
    def active(self) -> bool:
        return bool(self.schedule or self.cfg.bitflip or self.cfg.nan_at)

    def on_state(self, trainer: Any, step: int) -> None:
        """The state after ``step`` is in place: the parameter faults strike here."""
        bf = self.cfg.bitflip
        if bf is not None and not self.done.get("flipped") and step == bf.step:
            self._corrupt(trainer, bf.tensor, bf.index, bf.bit, "bitflip", step)
        if step in self.cfg.nan_at and step not in self.done.setdefault("nan", []):
            self._corrupt(trainer, "", 0, None, "nan", step)

    def on_step(self, trainer: Any, step: int, record: dict) -> None:
        if record.get("step_time_s"):                 # the last timed step (pauses excluded)
            self.step_dt = float(record["step_time_s"])
        if step in self.schedule and step not in self.done["killed"]:
            self.done["killed"].append(step)
            _store(self.path, self.done)               # before the kill: a redo of this step lives
            if self.cfg.corrupt_checkpoint:
                trainer.checkpointer.wait()
                try:
                    c, f = corrupt_checkpoint(self.run_dir, seed=self.cfg.seed + step)
                    self.events.write("fault", kind="corrupt_checkpoint", step=c, file=f)
                    self.say(f"fault injection: corrupted checkpoint {c} ({f})")
                except FileNotFoundError:
                    pass
            delay = self.schedule[step] * (self.step_dt or 0.1)
            self.events.write("fault", kind="kill", step=step, delay_s=delay)
            self.say(f"fault injection: SIGKILL {delay:.2f}s after step {step}")
            t = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL))
            t.daemon = True
            t.start()

    def _corrupt(self, trainer: Any, tensor: str, index: int, bit: int | None, kind: str, at: int) -> None:
        """Flip ``bit`` of (or, bit None, put a NaN into) element ``index`` of the largest
        parameter whose path contains ``tensor``, in the state in place (after step ``at``)."""
        import jax
        params = trainer.state["params"]
        flat = jax.tree_util.tree_leaves_with_path(params)
        names = [jax.tree_util.keystr(p) for p, _ in flat]
        cands = [i for i, n in enumerate(names) if tensor in n]
        if not cands:
            raise ValueError(f"faults: tensor {tensor!r} matches no parameter (have {names})")
        i = max(cands, key=lambda j: flat[j][1].size)
        leaf = flat[i][1]
        host = np.array(leaf)                              # a copy
        k = index % host.size
        if bit is None:
            host.reshape(-1)[k] = np.nan
        else:
            words = host.reshape(-1).view(np.uint32 if host.dtype.itemsize == 4 else np.uint16)
            words[k] ^= words.dtype.type(1 << (bit % (8 * words.dtype.itemsize)))
        leaves = [x for _, x in flat]
        leaves[i] = jax.device_put(host, leaf.sharding)
        trainer.state = {**trainer.state, "params": jax.tree.unflatten(jax.tree.structure(params), leaves)}
        if kind == "bitflip":
            self.done["flipped"] = True
        else:
            self.done["nan"].append(at)
        _store(self.path, self.done)
        what = f"bit {bit} of" if bit is not None else "a NaN into"
        self.events.write("fault", kind=kind, step=at, tensor=f"params{names[i]}", index=k, bit=bit)
        self.say(f"fault injection: {'flipped' if bit is not None else 'put'} {what} params{names[i]}[{k}] "
                 f"after step {at}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.faults", description="Fault injection for a run directory.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corrupt", help="flip one byte in a checkpoint (default: the newest)")
    c.add_argument("--run-dir", required=True)
    c.add_argument("--step", type=int, default=None)
    c.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        step, f = corrupt_checkpoint(a.run_dir, a.step, a.seed)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"corrupted checkpoint {step}: flipped a byte of {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
