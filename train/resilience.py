"""Training that survives failures: the ``Resilience`` hook wires the pieces into the loop.

    python -m train --set resilience.replica.enabled=true        # + in-memory replicas
    python -m train.supervise --standby -- --preset cpu ...      # restart on death, warm spare

One ``Hook`` (train/trainer.py) owning, in this order on every step:
  1. goodput clock          (train/goodput.py)    step and phase times -> resilience.jsonl
  2. fault injection        (train/faults.py)     only when resilience.faults asks for it
  3. loss-spike/NaN guard   (train/guard.py)      may roll back (raises trainer.Rollback)
  4. replay records         (train/replay.py)     loss, grad norm, parameter checksums
  5. replica refresh        (train/replica.py)    snapshot every N steps, written in the background
and at every checkpoint the checksums (train/integrity.py), written in the background once
Orbax has finished the save.

Restore (the trainer asks this hook first): candidates are the holder's freshest
complete replica and the Orbax checkpoints; the freshest one that verifies wins (a
replica on ties: it is a memory copy).  Replicas are verified by their per-tensor
checksums, checkpoints by the sha256 of their files (an unreadable one fails its
restore); a corrupt checkpoint is moved to ``<run_dir>/corrupt/`` with a log line and the
next older one is tried.  The console and resilience.jsonl say
which source was used and how long it took.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from train import integrity
from train.config import TrainConfig
from train.goodput import EventLog, GoodputMeter, account, attempt_times, read_events, report_lines, summary_line
from train.guard import GuardedSource, GuardEvent, LossGuard
from train.replica import N_SLOTS, ReplicaClient, ReplicaError, layout, read_slot, slot_size, write_slot
from train.trainer import Hook, Rollback, say


def _flat_abstract(trainer) -> tuple[list[str], list, Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(trainer.abstract_state)
    return [jax.tree_util.keystr(p) for p, _ in flat], [x for _, x in flat], treedef


@jax.jit
def _snapshot(state):
    """An on-device copy of the state (the next step donates the original)."""
    return jax.tree.map(jnp.copy, state)


class _Job:
    def __init__(self, slot: int, snap: Any, data_state: dict, meta: dict):
        self.slot, self.snap, self.data_state, self.meta = slot, snap, data_state, meta
        self.step: int | None = None
        self.manifest: tuple[int, int] | None = None
        self.error: Exception | None = None
        self.written = threading.Event()
        self.thread: threading.Thread | None = None


class ReplicaWriter:
    """Every ``every`` steps: copy the state on the device (the only stall in the loop),
    then, in a background thread, to host memory, checksum it, write it into the holder's
    slot with the oldest replica and commit it.  A restart after a crash takes the
    freshest; the guard rolls back to the newest one at least two steps before a bad
    record (the last state whose next step was still fine) and drops newer ones.  A
    refresh that comes due while the previous copy is still being written is skipped."""

    def __init__(self, client: ReplicaClient, every: int, trainer, events: EventLog):
        self.client, self.every, self.events = client, every, events
        self.committed: dict[int, int] | None = None   # slot -> step, read from the holder at the first refresh
        self.job: _Job | None = None
        self.paths = _flat_abstract(trainer)[0]
        self.refreshes = self.skipped = 0
        self.failed = False

    def _free_slot(self) -> int:
        free = [i for i in range(N_SLOTS) if i not in self.committed]
        return free[0] if free else min(self.committed, key=lambda i: self.committed[i])

    def _reap(self) -> bool:
        """Finish the previous job if its thread is done; False while it still runs."""
        j = self.job
        if j is None:
            return True
        if not j.written.is_set():
            return False
        self.job = None
        if j.error is not None:
            if not self.failed:
                say(f"replica: refresh failed ({type(j.error).__name__}: {j.error}); will retry")
            self.failed = True
        else:
            self.committed[j.slot] = j.step
            self.refreshes += 1
            self.failed = False
        return True

    def on_step(self, trainer, step: int) -> None:
        self._reap()

    def on_state(self, trainer, step: int) -> None:
        """Every ``every`` steps: start a copy of the state after ``step``."""
        if step % self.every:
            return
        if not self._reap():
            self.skipped += 1
            return
        t0 = time.time()
        if self.committed is None:
            try:
                self.committed = {s["slot"]: s["step"] for s in self.client.slots() if s["step"] is not None}
            except ReplicaError as e:
                say(f"replica: holder unavailable ({e}); no replicas this attempt")
                self.every = 1 << 62
                return
        snap = _snapshot(trainer.state)
        src = trainer.train_source
        slot = self._free_slot()
        self.committed.pop(slot, None)
        job = _Job(slot, snap, {"fingerprint": src.fingerprint, "state": src.get_state()},
                   {"config_fingerprint": trainer.cfg.fingerprint(), "steps": trainer.cfg.steps})
        job.thread = threading.Thread(target=self._write, args=(job,), daemon=True, name="replica-writer")
        job.thread.start()
        self.job = job
        trainer_phase(trainer, "replica", t0)

    def _write(self, j: _Job) -> None:
        try:
            leaves = jax.tree.leaves(j.snap)
            j.step = int(np.asarray(j.snap["step"]))
            host = [np.asarray(x) for x in leaves]             # device -> host (a view on CPU)
            sums = integrity.host_checksums(host)
            shapes, dtypes = [list(h.shape) for h in host], [h.dtype.name for h in host]
            offs, data_bytes = layout([tuple(s) for s in shapes], dtypes)
            manifest = {"step": j.step, "paths": self.paths, "shapes": shapes, "dtypes": dtypes, "offsets": offs,
                        "data_bytes": data_bytes, "sums": sums.tolist(), "data_state": j.data_state,
                        "meta": j.meta, "time": time.time()}
            size = slot_size(data_bytes, len(json.dumps(manifest)))
            m = self.client.open_slot(j.slot, size)          # the slot is invalid from here ...
            j.manifest = write_slot(m, host, manifest)
            del host, leaves
            self.client.commit(j.slot, j.step, *j.manifest)  # ... until this says it is complete
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            j.error = e
        finally:
            j.snap = None
            j.written.set()

    def discard(self) -> None:
        """Wait for a copy in flight (a rollback follows; drop_after removes what it committed)."""
        j = self.job
        if j is not None:
            j.written.wait()
            self._reap()

    def drop_after(self, step: int) -> None:
        """After a rollback to ``step``: newer replicas hold the abandoned trajectory."""
        for slot, s in list((self.committed or {}).items()):
            if s > step:
                try:
                    self.client.invalidate(slot)
                except ReplicaError:
                    pass
                del self.committed[slot]

    def close(self) -> None:
        self.discard()


def trainer_phase(trainer, name: str, t0: float) -> None:
    dt = time.time() - t0
    for h in trainer.hooks:
        h.on_phase(trainer, name, t0, dt)


class Resilience(Hook):
    def __init__(self, cfg: TrainConfig):
        self.cfg, self.r = cfg, cfg.resilience
        self.events: EventLog | None = None
        self.meter: GoodputMeter | None = None
        self.client: ReplicaClient | None = None
        self.writer: ReplicaWriter | None = None
        self.recorder = None
        self.guard = LossGuard(self.r.guard) if self.r.guard.enabled else None
        self.faults = None
        self.threads: list[threading.Thread] = []
        self.scanner: subprocess.Popen | None = None
        if self.r.compile_cache_dir:
            jax.config.update("jax_compilation_cache_dir", os.path.abspath(self.r.compile_cache_dir))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    def warm(self, trainer) -> None:
        """Compile this hook's device functions from the abstract state (a standby trainer
        does this before it takes over; with compile_cache_dir the executables land in the
        persistent cache and the take-over loads them instead of compiling)."""
        st = trainer.abstract_state
        jax.jit(trainer._init_state, out_shardings=trainer.state_sharding).lower(jax.random.PRNGKey(0)).compile()
        batch = {k: jax.ShapeDtypeStruct((trainer.cfg.batch_size, trainer.cfg.seq_len), dt,
                                         sharding=trainer.batch_sharding)
                 for k, dt in (("inputs", jnp.int32), ("targets", jnp.int32), ("segment_ids", jnp.int32),
                               ("positions", jnp.int32), ("loss_mask", jnp.float32), ("source_ids", jnp.int32))}
        trainer._make_eval().lower(st["params"], batch).compile()
        if self.r.replica.enabled:
            _snapshot.lower(st).compile()
        if self.r.replay.record:
            from train.replay import record_fn
            record_fn().lower(st).compile()

    # ---- restore -----------------------------------------------------------------------------
    def restore(self, trainer) -> int:
        os.makedirs(trainer.run_dir, exist_ok=True)
        self.events = EventLog(trainer.run_dir)
        self.events.write("attempt", **attempt_times(), steps=self.cfg.steps)
        if self.r.goodput:
            self.meter = GoodputMeter(self.events)
        if self.guard is not None and not isinstance(trainer.train_source, GuardedSource):
            trainer.train_source = GuardedSource(trainer.train_source)
        if self.r.replica.enabled:
            try:
                self.client = ReplicaClient(trainer.run_dir, idle_timeout=self.r.replica.idle_timeout_s, say=say)
                if self.client.spawned:
                    say(f"replica: started holder process {self.client.pid} (no replica yet)")
            except (ReplicaError, OSError) as e:
                say(f"replica: holder unavailable ({e}); continuing with checkpoints only")
                self.client = None
        t0 = time.time()
        step, source = self._restore_best(trainer, None)
        self.events.write("restored", source=source, step=step, dt=time.time() - t0)
        trainer.restored_from = {"replica": "in-memory replica", "checkpoint": "checkpoint"}.get(source, source)
        if source not in ("fresh", "warm start"):
            say(f"restored step {step} from the {trainer.restored_from} in {time.time() - t0:.2f}s")
        return step

    def _restore_best(self, trainer, max_step: int | None) -> tuple[int, str]:
        """Put the freshest state that verifies (at or before ``max_step``) in place."""
        cands: list[tuple[int, int, str, Any]] = []
        if self.client is not None and not (self.client.spawned and max_step is None):   # a new holder is empty
            try:
                got = self.client.latest(max_step)
                if got is not None:
                    cands.append((got[0]["step"], 1, "replica", got))
            except ReplicaError as e:
                say(f"replica: {e}")
        mgr = trainer.checkpointer.manager
        mgr.reload()
        for c in mgr.all_steps():
            if max_step is None or c <= max_step:
                cands.append((int(c), 0, "checkpoint", int(c)))
        try:
            for step, _, kind, payload in sorted(cands, key=lambda c: (c[0], c[1]), reverse=True):
                if kind == "replica":
                    manifest, mm = payload
                    why = self._load_replica(trainer, manifest, mm)
                    if why is None:
                        return step, "replica"
                    say(f"replica at step {step} not used: {why}")
                    self.events.write("replica_rejected", step=step, why=why)
                elif self._load_checkpoint(trainer, step):
                    return step, "checkpoint"
        finally:
            for c in cands:
                if c[2] == "replica":
                    c[3][1].close()
        if trainer.init_from:             # --init-from: this run's base is the other run's checkpoint
            step = trainer._warm_start()
            self._rebase(trainer, step)
            return step, "warm start"
        if any(c[2] == "checkpoint" for c in cands):
            say("no usable checkpoint or replica: starting from step 0")
        trainer.init_fresh()
        self._rebase(trainer, 0)
        return 0, "fresh"

    def _rebase(self, trainer, step: int) -> None:
        if isinstance(trainer.train_source, GuardedSource):
            trainer.train_source.rebase(step)

    def _load_replica(self, trainer, manifest: dict, mm) -> str | None:
        try:
            paths, abstract, treedef = _flat_abstract(trainer)
            meta = manifest["meta"]
            if meta.get("config_fingerprint") != trainer.cfg.fingerprint():
                return "it belongs to a run with another config"
            if manifest["data_state"]["fingerprint"] != trainer.train_source.fingerprint:
                return "it belongs to other data"
            if manifest["paths"] != paths or any(list(a.shape) != s or np.dtype(a.dtype).name != d for a, s, d in
                                                 zip(abstract, manifest["shapes"], manifest["dtypes"])):
                return "its tensors do not match this model"
            host = read_slot(mm, manifest)
        finally:
            mm.close()
        bad = integrity.diff_sums(integrity.as_dict(paths, manifest["sums"]),
                                  integrity.as_dict(paths, integrity.host_checksums(host)))
        if bad:
            return f"checksum mismatch in {bad[0]}" + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
        leaves = [jax.device_put(h, a.sharding) for h, a in zip(host, abstract)]
        state = jax.tree.unflatten(treedef, leaves)
        if manifest["step"] != int(state["step"]):
            return "its step does not match its manifest"
        trainer.state = state
        trainer.train_source.set_state(manifest["data_state"]["state"])
        self._rebase(trainer, manifest["step"])
        return None

    def _load_checkpoint(self, trainer, step: int) -> bool:
        from model.config import ConfigError
        from train.data import DataError
        if self.r.checksums:
            ok, why = integrity.verify_files(trainer.run_dir, step)
            if ok is False:
                self._quarantine(trainer, step, why)
                return False
            if ok is None:
                say(f"checkpoint {step}: {why} (killed right after the save?); using it unverified")
        try:
            trainer.restore_checkpoint(step)
        except (ConfigError, DataError):
            raise
        except Exception as e:  # noqa: BLE001 - unreadable checkpoint: try the previous one
            self._quarantine(trainer, step, f"restore failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            return False
        self._rebase(trainer, step)
        return True

    def _quarantine(self, trainer, step: int, why: str) -> None:
        src = integrity.step_dir(trainer.run_dir, step)
        dst = os.path.join(trainer.run_dir, "corrupt", f"{step}-{int(time.time())}")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(src, dst)
        try:
            os.remove(integrity.manifest_path(trainer.run_dir, step))
        except OSError:
            pass
        trainer.checkpointer.manager.reload()
        say(f"checkpoint {step} is corrupt ({why}); skipped, moved to {os.path.relpath(dst, trainer.run_dir)}")
        self.events.write("corrupt_checkpoint", step=step, why=why)

    # ---- the loop ----------------------------------------------------------------------------------
    def on_start(self, trainer) -> None:
        from train.faults import FaultInjector
        from train.replay import ReplayRecorder
        if self.r.replay.record:
            self.recorder = ReplayRecorder(trainer)
        f = FaultInjector(self.r.faults, trainer.run_dir, self.cfg.steps, say, self.events)
        self.faults = f if f.active else None
        if self.client is not None:
            self.writer = ReplicaWriter(self.client, self.r.replica.every, trainer, self.events)
        if self.r.replay.scan and self.recorder is not None:
            log = open(os.path.join(trainer.run_dir, "replay", "scan.log"), "ab")
            self.scanner = subprocess.Popen(
                [sys.executable, "-m", "train.replay", "--run-dir", trainer.run_dir, "--scan", "--follow",
                 "--parent-pid", str(os.getpid()), "--samples", str(self.r.replay.scan_samples)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=os.environ.copy())
            log.close()
            say(f"replay: background scanner {self.scanner.pid} (replay/scan.log)")

    def on_phase(self, trainer, name: str, t0: float, seconds: float) -> None:
        if self.meter is not None:
            self.meter.phase(name, t0, seconds)

    def on_state(self, trainer, step: int) -> None:
        if self.faults is not None:
            self.faults.on_state(trainer, step)
        if self.recorder is not None:
            self.recorder.on_state(trainer, step)
        if self.writer is not None:
            self.writer.on_state(trainer, step)

    def on_step(self, trainer, step: int, record: dict) -> None:
        if self.meter is not None:
            self.meter.step(step)
        if self.faults is not None:
            self.faults.on_step(trainer, step, record)
        if self.guard is not None:
            ev = self.guard.check(step, record["loss"], record["grad_norm"])
            if ev is not None:
                self._guard_event(trainer, ev)
        if self.recorder is not None:
            self.recorder.on_step(trainer, step, record)
        if self.writer is not None:
            self.writer.on_step(trainer, step)

    def _guard_event(self, trainer, ev: GuardEvent) -> None:
        src = trainer.train_source
        idx = src.index_for_step(ev.step) if isinstance(src, GuardedSource) else None
        act = self.guard.action(ev, idx)
        self.events.write("guard", kind=ev.kind, step=ev.step, loss=ev.loss, grad_norm=ev.grad_norm,
                          threshold=ev.threshold, action=act, batch=idx)
        say(f"guard: {ev.describe()} -> {act}" + (f" (batch {idx})" if act == "skip" else ""))
        if act == "warn":
            self.guard.accept(ev.step, ev.loss)
            return
        if act == "stop":
            raise FloatingPointError(f"guard: {ev.describe()}; stopping (event {self.guard.events}, "
                                     f"max_events {self.r.guard.max_events})")
        t0 = time.time()
        if self.writer is not None:
            self.writer.discard()
        trainer.checkpointer.wait()
        for t in self.threads:
            t.join()
        # record s was computed from the state after step s-1: the newest trusted state is s-2
        step, source = self._restore_best(trainer, ev.step - 2)
        if act == "skip" and idx is not None:
            src.skip.add(idx)
        if self.writer is not None:
            self.writer.drop_after(step)
        mgr = trainer.checkpointer.manager
        for c in list(mgr.all_steps()):
            if c > step:                 # saved on the abandoned trajectory; redone from here
                mgr.delete(c)
        integrity.prune_manifests(trainer.run_dir, set(mgr.all_steps()))
        self.guard.forget_after(step)
        if self.recorder is not None:
            self.recorder.forget_after(step)
        self.events.write("rollback", step=step, source=source, action=act, batch=idx)
        say(f"guard: rolled back to step {step} ({source})" + (f", batch {idx} skipped" if act == "skip" else ""))
        trainer_phase(trainer, "rollback", t0)
        raise Rollback(step)

    def on_checkpoint(self, trainer, step: int) -> None:
        if not self.r.checksums:
            return
        run_dir = trainer.run_dir

        def work():
            if integrity.wait_finished(run_dir, step):
                integrity.write_manifest(run_dir, step)
            steps = {int(n) for n in os.listdir(os.path.join(run_dir, "checkpoints")) if n.isdigit()}
            integrity.prune_manifests(run_dir, steps | {step})

        self.threads = [t for t in self.threads if t.is_alive()]
        t = threading.Thread(target=work, daemon=True, name=f"checksums-{step}")
        t.start()
        self.threads.append(t)

    def on_end(self, trainer) -> None:
        if self.recorder is not None:
            self.recorder.close()
        for t in self.threads:
            t.join()
        integrity.prune_manifests(trainer.run_dir, set(trainer.checkpointer.manager.all_steps()))
        if self.writer is not None:
            self.writer.close()
            if self.writer.skipped:
                say(f"replica: {self.writer.refreshes} refreshes; {self.writer.skipped} due ones skipped while the "
                    "previous copy was still being written")
        if self.client is not None:
            if self.r.replica.keep_after_end:
                self.client.close()
            else:
                self.client.shutdown()
        if self.scanner is not None:
            self.scanner.terminate()
            try:
                self.scanner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.scanner.kill()
                self.scanner.wait()
        self.events.write("end", step=int(trainer.state["step"]))
        if self.r.goodput:
            acc = account(read_events(trainer.run_dir))
            say(summary_line(acc))
            lines = report_lines(acc)
            with open(os.path.join(trainer.run_dir, "report.md"), "a", encoding="utf-8") as f:
                f.write("\n" + "\n".join(lines) + "\n")
            path = os.path.join(trainer.run_dir, "summary.json")
            try:
                with open(path) as f:
                    summary = json.load(f)
            except (OSError, json.JSONDecodeError):
                summary = {}
            summary["goodput"] = {k: v for k, v in acc.items() if k != "failure_list"}
            with open(path, "w") as f:
                json.dump(summary, f, indent=1)
        self.events.close()


def build_hooks(cfg: TrainConfig) -> list[Hook]:
    """The hooks ``python -m train`` attaches for a config."""
    return [Resilience(cfg)]
