"""The ``resilience:`` section of the training YAML (validated like the rest of TrainConfig).

None of it changes the training math, so it is left out of the config fingerprint: a run
may be resumed with replicas switched on or off, another guard threshold or another fault
schedule.  What the guard decides (skipped batches) is part of the data state that
checkpoints and replicas carry, so a resumed run replays those decisions exactly.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReplicaConfig(_Strict):
    """In-memory replica of the train state in a holder process outside the trainer
    (train/replica.py).  Costs 3 x the state in host memory (three slots) and, every
    ``every`` steps, one on-device copy of the state plus a background device->host copy."""
    enabled: bool = False
    every: int = Field(5, gt=0)                  # steps between refreshes
    #: the holder exits after this long without a connected trainer (frees the memory)
    idle_timeout_s: float = Field(600.0, gt=0)
    #: keep the holder (and its replica) after the run completed; default: shut it down
    keep_after_end: bool = False


class GuardConfig(_Strict):
    """Loss-spike and NaN guard (train/guard.py).  On an event: ``skip`` rolls back to the
    last trusted state (replica, else checkpoint) and skips the offending batch; ``rollback``
    rolls back without skipping (a transient fault) and escalates to ``skip`` when the same
    batch trips again; ``warn`` only logs (and the spike detector adapts to the new level);
    ``stop`` fails the run.  Spikes default to ``warn``: a level shift such as a new mixture
    stage looks like a spike to any detector, and skipping every batch of it would stop the
    run after ``max_events``; set ``skip`` for the PaLM recipe."""
    enabled: bool = True
    on_nan: Literal["skip", "rollback", "stop"] = "skip"
    on_spike: Literal["skip", "rollback", "warn", "stop"] = "warn"
    window: int = Field(50, ge=4)                 # recent accepted losses the spike test uses
    min_history: int = Field(20, ge=2)            # no spike test before this many steps
    z: float = Field(6.0, gt=0)                   # spike: loss > median + max(min_delta, z * robust std)
    min_delta: float = Field(0.5, ge=0)           # nats
    max_events: int = Field(5, gt=0)              # more events than this in one run: stop

    @model_validator(mode="after")
    def _check(self) -> "GuardConfig":
        if self.min_history > self.window:
            raise ValueError(f"min_history {self.min_history} is larger than window {self.window}")
        return self


class ReplayConfig(_Strict):
    """Per-step records for deterministic replay (train/replay.py): loss, gradient norm and
    per-tensor parameter checksums, one JSON line per step (~40 bytes per tensor)."""
    record: bool = True
    #: replay sampled steps in a background process (niced) while the run trains
    scan: bool = False
    scan_samples: int = Field(2, gt=0)            # steps replayed per new checkpoint


class BitFlip(_Strict):
    step: int = Field(gt=0)                       # the parameters after this step get the flip
    tensor: str = ""                              # parameter path substring ("" = the largest)
    index: int = Field(0, ge=0)                   # flat element index (modulo the size)
    bit: int = Field(20, ge=0, lt=32)


class FaultConfig(_Strict):
    """Fault injection for tests and benchmarks (train/faults.py); all off by default."""
    #: SIGKILL the trainer once in every window of this many steps (at a seeded random
    #: step, a random fraction into the next step); 0 = never
    kill_every: int = Field(0, ge=0)
    kill_at: list[int] = []                       # ... and/or at these steps
    seed: int = 0
    #: before each kill, flip a byte in the newest finished checkpoint
    corrupt_checkpoint: bool = False
    bitflip: BitFlip | None = None                # silent data corruption of one parameter
    #: put a NaN into one parameter after these steps (once each; for the guard)
    nan_at: list[int] = []


class ResilienceConfig(_Strict):
    replica: ReplicaConfig = ReplicaConfig()
    #: sha256 of the checkpoint files + per-tensor checksums, verified at restore
    checksums: bool = True
    goodput: bool = True
    replay: ReplayConfig = ReplayConfig()
    guard: GuardConfig = GuardConfig()
    faults: FaultConfig = FaultConfig()
    #: JAX persistent compilation cache: a restarted trainer loads the step instead of
    #: compiling it (null = off)
    compile_cache_dir: str | None = None
