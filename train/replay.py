"""Deterministic replay: recompute a step and compare it with what the run recorded.

While training, ``ReplayRecorder`` (on by default: ``resilience.replay.record``) writes one
line per step to ``<run_dir>/replay/records.jsonl``: the loss, the gradient norm and the
per-tensor checksums of the parameters after the step (train/integrity.py: a copy of the
parameters on the device at each step, summed in a background thread; ~70 ms per 40M
parameters on one CPU core, a memory pass on an accelerator).  ``replay/run.json`` keeps the resolved
config, the model and the XLA flags of the run.

    python -m train.replay --run-dir R --step N            # recompute step N
    python -m train.replay --run-dir R --scan [--samples 4] # replay sampled steps
    python -m train.replay --run-dir R --scan --follow      # ... as the run goes (background)

Replaying step N restores the newest checkpoint c <= N-1 (read-only, checksum-verified)
and its data-source state, then reruns steps c+1..N with the run's own compiled step and
batches, comparing every step on the way: the first step whose loss, gradient norm or
parameter checksum differs is reported with the tensor(s) that differ.  A flipped bit in
memory shows as a parameter mismatch with equal loss and gradient norm (the step
computed right, the state went bad afterwards); corrupt compute shows in the loss and
gradient norm too.

Cost: one restore, one compile (the same as the trainer's) and N - c steps, so at most
``checkpoint.every`` steps; ``checkpoint.keep_period`` keeps older checkpoints around for
replays far back.  Replay is bitwise only on the same kind of hardware, device count and
XLA flags: the recorded XLA_FLAGS are applied before JAX starts.  Exit status: 0 all
equal, 1 a mismatch, 2 cannot replay (no records, no state before the step).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import queue
import sys
import tempfile
import threading
import time
from typing import Any

RECORDS = "records.jsonl"



def replay_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "replay")


class ReplayError(RuntimeError):
    pass


# ---- recording (inside the trainer) --------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def record_fn():
    """jit: state -> (its step, a copy of the parameters), which the recorder's thread
    checksums while the next step runs (the step donates the original).  Built on first
    use (the replay CLI sets XLA_FLAGS before JAX is imported)."""
    import jax
    import jax.numpy as jnp
    return jax.jit(lambda st: (st["step"], jax.tree.map(jnp.copy, st["params"])))


class ReplayRecorder:
    def __init__(self, trainer: Any):
        import jax
        from train import integrity
        self.dir = replay_dir(trainer.run_dir)
        os.makedirs(self.dir, exist_ok=True)
        cfg = trainer.cfg
        self.paths = integrity.leaf_paths(trainer.abstract_state["params"])
        info = {"config": cfg.model_dump(mode="json"), "model": trainer.model_cfg.model_dump(mode="json"),
                "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__,
                "backend": jax.default_backend(), "devices": jax.device_count(), "param_paths": self.paths}
        tmp = os.path.join(self.dir, "run.json.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, os.path.join(self.dir, "run.json"))
        self.f = open(os.path.join(self.dir, RECORDS), "a", encoding="utf-8")
        self._fn = record_fn()
        self.queue: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.metrics: dict[int, tuple[float, float]] = {}
        self.sums: dict[int, list] = {}
        self.generation = 0
        self.thread = threading.Thread(target=self._work, daemon=True, name="replay-checksums")
        self.thread.start()

    def on_state(self, trainer: Any, step: int) -> None:
        self.queue.put((self.generation, self._fn(trainer.state)))   # dispatched; summed in the thread

    def _work(self) -> None:
        from train import integrity
        while True:
            item = self.queue.get()
            if item is None:
                return
            gen, (st, params) = item
            sums = integrity.checksums(params).tolist()             # waits for the step, then sums
            with self.lock:
                if gen == self.generation:
                    self.sums[int(st)] = sums
            del params

    def on_step(self, trainer: Any, step: int, rec: dict) -> None:
        self.metrics[step] = (rec["loss"], rec["grad_norm"])
        self._write()

    def _write(self, final: bool = False) -> None:
        with self.lock:
            for k in sorted(self.metrics):
                if k in self.sums or final:
                    loss, gnorm = self.metrics.pop(k)
                    self.f.write(json.dumps({"step": k, "loss": loss, "grad_norm": gnorm,
                                             "params": self.sums.pop(k, None)}) + "\n")
        self.f.flush()

    def forget_after(self, step: int) -> None:
        """After a rollback: in-flight results of the abandoned steps are dropped."""
        with self.lock:
            self.generation += 1
            self.metrics = {k: v for k, v in self.metrics.items() if k <= step}
            self.sums = {k: v for k, v in self.sums.items() if k <= step}

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._write(final=True)
        self.f.close()


def read_records(run_dir: str) -> dict[int, dict]:
    """The latest record of each step (a step redone after a restart or rollback is
    recorded again; the newest line is the surviving trajectory)."""
    out: dict[int, dict] = {}
    path = os.path.join(replay_dir(run_dir), RECORDS)
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[int(r["step"])] = r
    return out


# ---- replaying ---------------------------------------------------------------------------------------

class Replayer:
    """A trainer rebuilt from the run's recorded config, restoring the run's checkpoints
    read-only (its own run dir is a scratch directory, so nothing of the run is touched)."""

    def __init__(self, run_dir: str, say=print):
        self.run_dir, self.say = os.path.abspath(run_dir), say
        path = os.path.join(replay_dir(self.run_dir), "run.json")
        if not os.path.exists(path):
            raise ReplayError(f"{path} not found: the run did not record replay data (resilience.replay.record)")
        with open(path) as f:
            self.info = json.load(f)
        want = self.info.get("xla_flags", "")
        if "jax" not in sys.modules:
            os.environ["XLA_FLAGS"] = want
        elif os.environ.get("XLA_FLAGS", "") != want:
            say(f"warning: XLA_FLAGS differ from the run's ({want!r}); results may not be bitwise equal")
        import logging

        import jax
        import orbax.checkpoint as ocp

        from model.config import ModelConfig
        from train.config import TrainConfig
        from train.guard import GuardedSource
        from train.trainer import Trainer

        if jax.device_count() != self.info.get("devices"):
            say(f"warning: {jax.device_count()} devices here, the run had {self.info.get('devices')}")
        self.scratch = tempfile.mkdtemp(prefix="replay-")
        cfg = TrainConfig.model_validate(self.info["config"])
        cfg = cfg.model_copy(update={"run_dir": self.scratch})
        self.trainer = Trainer(cfg, ModelConfig(**self.info["model"]))
        if cfg.resilience.guard.enabled:
            self.trainer.train_source = GuardedSource(self.trainer.train_source)
        self.paths = self.info["param_paths"]
        logging.getLogger("absl").setLevel(logging.ERROR)      # read-only manager notices
        self.manager = ocp.CheckpointManager(os.path.join(self.run_dir, "checkpoints"),
                                             options=ocp.CheckpointManagerOptions(read_only=True),
                                             item_names=("state", "data", "meta"))
        self._compiled = None
        from train.integrity import checksums
        self._sums = checksums
        self.at: int | None = None          # the step of the state in place (None: none)

    def close(self) -> None:
        import shutil
        self.manager.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def checkpoints(self) -> list[int]:
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def _restore(self, c: int) -> None:
        import orbax.checkpoint as ocp

        from train import integrity
        ok, why = integrity.verify_files(self.run_dir, c)
        if ok is False:
            raise ReplayError(f"checkpoint {c} is corrupt ({why})")
        t = self.trainer
        out = self.manager.restore(c, args=ocp.args.Composite(state=ocp.args.StandardRestore(t.abstract_state),
                                                               data=ocp.args.JsonRestore()))
        t.state = out["state"]
        t.train_source.set_state(out["data"]["train"]["state"])
        if hasattr(t.train_source, "rebase"):
            t.train_source.rebase(c)
        self.at = c

    def replay(self, target: int, records: dict[int, dict]) -> dict | None:
        """Rerun up to step ``target``, comparing each step with its record.  Returns the
        first mismatch ({step, what: [..]}) or None when everything matched."""
        import jax
        import numpy as np

        from train.sharding import put_batch
        t = self.trainer
        if self.at is None or self.at >= target:
            before = [c for c in self.checkpoints() if c < target]
            if not before:
                raise ReplayError(f"no checkpoint at or before step {target - 1} to start from "
                                  f"(have {self.checkpoints()}; raise checkpoint.keep or set checkpoint.keep_period)")
            self._restore(before[-1])
            self.say(f"replay: restored checkpoint {before[-1]}, recomputing steps {before[-1] + 1}..{target}")
        if self._compiled is None and not t.multimodal:
            self._compiled = t.compile_step()
        while self.at < target:
            k = self.at + 1
            rec = records.get(k)
            batch = t._with_sources(t.train_source.next_batch())
            step_fn = t._step_for(batch) if t.multimodal else self._compiled   # media: per-budget programs
            t.state, m = step_fn(t.state, put_batch(batch, t.batch_sharding), *t._teacher_args())
            self.at = k
            m = jax.device_get(m)
            sums = self._sums(t.state["params"])
            if rec is None:
                continue
            what = []
            for key in ("loss", "grad_norm"):
                got = float(m[key])
                if got != rec[key]:
                    what.append(f"{key}: recorded {rec[key]!r}, recomputed {got!r}")
            for path, want, got in zip(self.paths, rec["params"] or [], sums.tolist()):
                if list(want) != list(got):
                    what.append(f"params{path}: checksum recorded {want[0]:08x}:{want[1]:08x}, "
                                f"recomputed {got[0]:08x}:{got[1]:08x}")
            if what:
                self.at = None                      # the state in place is no longer the run's
                return {"step": k, "what": what}
        return None


def _describe(m: dict) -> str:
    params = [w for w in m["what"] if w.startswith("params")]
    kind = ("the parameters changed after the step (loss and gradient norm match): memory corruption"
            if params and len(params) == len(m["what"]) else "the step itself computed differently")
    return f"MISMATCH at step {m['step']}: {kind}\n  " + "\n  ".join(m["what"])


def scan(rp: Replayer, records: dict[int, dict], samples: int, seed: int, done: set[int], log) -> list[dict]:
    """Replay ``samples`` random steps of each checkpoint interval not scanned yet."""
    import numpy as np
    ckpts = rp.checkpoints()
    found = []
    for lo, hi in zip(ckpts, ckpts[1:] + [max(records, default=0) + 1]):
        steps = [s for s in range(lo + 1, hi) if s in records and s not in done]
        if not steps:
            continue
        rng = np.random.default_rng([seed, lo])
        pick = sorted(rng.choice(steps, size=min(samples, len(steps)), replace=False).tolist())
        for s in pick:
            t = time.time()
            m = rp.replay(int(s), records)
            done.update(range(lo + 1, int(s) + 1))
            res = {"step": int(s), "from_checkpoint": lo, "ok": m is None, "seconds": round(time.time() - t, 2),
                   "time": time.time()}
            if m is not None:
                res["mismatch"] = m
                found.append(m)
                rp.say(_describe(m))
                log.write(json.dumps(res) + "\n")
                log.flush()
                break
            rp.say(f"replay: step {s} matches (steps {lo + 1}..{s} recomputed in {res['seconds']:.1f}s)")
            log.write(json.dumps(res) + "\n")
            log.flush()
    return found


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--step", type=int, help="recompute this step and compare")
    g.add_argument("--scan", action="store_true", help="replay sampled steps of every checkpoint interval")
    p.add_argument("--samples", type=int, default=2, help="--scan: steps per checkpoint interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--follow", action="store_true", help="--scan: keep scanning new steps while the run trains")
    p.add_argument("--parent-pid", type=int, default=None, help="--follow: stop when this process exits")
    p.add_argument("--nice", type=int, default=10, help="--follow: scheduling niceness (background)")
    a = p.parse_args(argv)
    say = lambda m: print(m, flush=True)  # noqa: E731
    records = read_records(a.run_dir)
    if not records:
        print(f"error: no replay records in {replay_dir(a.run_dir)}", file=sys.stderr)
        return 2
    rp = None
    try:
        rp = Replayer(a.run_dir, say=say)
        if a.step is not None:
            if a.step not in records:
                raise ReplayError(f"step {a.step} has no record (recorded steps {min(records)}..{max(records)})")
            m = rp.replay(a.step, records)
            if m is not None:
                say(_describe(m))
                return 1
            r = records[a.step]
            say(f"step {a.step} replays bit for bit: loss {r['loss']:.6f}, grad norm {r['grad_norm']:.6f}, "
                f"{len(r['params'])} parameter checksums equal")
            return 0
        if a.follow:
            try:
                os.nice(a.nice)
            except OSError:
                pass
        done: set[int] = set()
        found: list[dict] = []
        with open(os.path.join(replay_dir(a.run_dir), "scan.jsonl"), "a") as log:
            while True:
                found += scan(rp, records, a.samples, a.seed, done, log)
                if found or not a.follow:
                    break
                if a.parent_pid is not None and not _alive(a.parent_pid):
                    break
                time.sleep(2.0)
                records = read_records(a.run_dir)
        if not found:
            say(f"scan: {len(done)} steps recomputed, no mismatch")
        return 1 if found else 0
    except ReplayError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if rp is not None:
            rp.close()


if __name__ == "__main__":
    sys.exit(main())
