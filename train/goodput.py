"""Goodput: productive step time over wall time, and where the rest went.

Every trainer attempt appends events to ``<run_dir>/resilience.jsonl`` (never truncated,
unlike metrics.jsonl, so the work a crash threw away stays visible):

  attempt   a process took over: t0 (its launch, or the moment a warm standby was told to
            go), prev_exit (when the previous attempt died, if a supervisor saw it)
  restored  where the state came from (replica | checkpoint | fresh) and its step
  phase     a non-step part of the run: restore, compile, eval, checkpoint, replica
            (the trainer-side stall of a replica refresh), rollback (the guard's restore),
            peak, end; with its duration
  step      one training step: the wall time since the previous step or phase ended
  rollback  the guard put an earlier state back
  end       the run completed

``account(events)`` replays them: a step counts as productive once, in the attempt whose
result survived; steps after the state a later attempt (or a rollback) restored are
"lost steps".  Wall time runs from the first attempt's launch to the end.  The remainder
is broken down into start-up (process start to restore: imports, mesh, data), restore,
compile, eval, checkpoint stalls, replica stalls, lost steps, the killed step (from the
last event of a dead attempt to its death: the step in flight), the restart wait (death to
the next attempt's start: detection, relaunch or waiting for the standby) and other host
time.  Time-to-recover of a failure runs from the
death to the moment the run is back at the step it had reached.

    python -m train.goodput RUN_DIR        # the table for a run (also in report.md)
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from typing import Any

LOSS_BUCKETS = ("startup", "restore", "compile", "eval", "checkpoint", "replica", "rollback", "peak", "end",
                "lost steps", "killed step", "restart wait", "other")


def events_path(run_dir: str) -> str:
    return os.path.join(run_dir, "resilience.jsonl")


class EventLog:
    """Append-only JSONL; one line per event, flushed (a kill loses at most a torn line)."""

    def __init__(self, run_dir: str):
        os.makedirs(run_dir, exist_ok=True)
        self.path = events_path(run_dir)
        self.f = open(self.path, "a", encoding="utf-8")
        self.pid = os.getpid()

    def write(self, ev: str, **fields: Any) -> dict:
        rec = {"ev": ev, "t": time.time(), "pid": self.pid, **fields}
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        return rec

    def close(self) -> None:
        self.f.close()


def read_events(run_dir: str) -> list[dict]:
    out = []
    try:
        with open(events_path(run_dir), encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue                     # a line torn by a kill
    except OSError:
        pass
    return out


def process_start_time() -> float:
    """Wall-clock start of this process (Linux /proc), else now."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])                  # field 22 (starttime) counted after "pid (comm)"
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return time.time()


def attempt_times() -> dict[str, Any]:
    """t0 / prev_exit / standby of this attempt, from the supervisor (train/supervise.py)
    when there is one, else the process start."""
    env = os.environ
    t0 = float(env["CORPUSFORGE_T0"]) if env.get("CORPUSFORGE_T0") else process_start_time()
    prev = float(env["CORPUSFORGE_PREV_EXIT_T"]) if env.get("CORPUSFORGE_PREV_EXIT_T") else None
    return {"t0": t0, "prev_exit": prev, "standby": env.get("CORPUSFORGE_STANDBY") == "1"}


class GoodputMeter:
    """The trainer-side clock: each step's wall time since the previous step, less the
    phases in between (eval, checkpoint, replica refresh, ...), which are logged apart."""

    RESET = ("restore", "compile", "end")       # phases outside the loop: the clock starts after them

    def __init__(self, log: EventLog):
        self.log = log
        self.mark: float | None = None
        self.paused = 0.0

    def phase(self, name: str, t0: float, seconds: float) -> None:
        self.log.write("phase", name=name, t0=t0, dt=seconds)
        if name in self.RESET or self.mark is None:
            self.mark, self.paused = t0 + seconds, 0.0
        else:
            self.paused += seconds

    def step(self, step: int) -> None:
        now = time.time()
        if self.mark is not None:
            self.log.write("step", step=step, dt=max(0.0, now - self.mark - self.paused))
        self.mark, self.paused = now, 0.0


def account(events: list[dict]) -> dict[str, Any]:
    """Goodput and the breakdown of lost time (see the module docstring)."""
    buckets: dict[str, float] = defaultdict(float)
    kept: dict[int, float] = {}
    attempts: list[dict] = []
    cur: dict | None = None
    end_t = None
    failures: list[dict] = []
    rollbacks = 0
    first_startup = 0.0

    def drop_after(step: int) -> int:
        lost = [s for s in kept if s > step]
        for s in lost:
            buckets["lost steps"] += kept.pop(s)
        return len(lost)

    for e in events:
        ev = e.get("ev")
        if ev == "attempt":
            if cur is not None:
                prev = cur
                death = min(max(e.get("prev_exit") or prev["last_t"], prev["last_t"]), e["t0"])
                buckets["killed step"] += death - prev["last_t"]
                buckets["restart wait"] += e["t0"] - death
                failures.append({"died_at_step": prev["max_step"], "death_t": death, "restored_step": None,
                                 "restored_from": None, "recovered_t": None, "restore_s": None})
            cur = {"t0": e["t0"], "last_t": e["t0"], "max_step": 0, "restore_start": None}
            attempts.append(cur)
            continue
        if cur is None:
            continue
        cur["last_t"] = max(cur["last_t"], e.get("t", cur["last_t"]))
        if ev == "phase":
            name, dt = e["name"], float(e["dt"])
            if name == "restore":
                startup = max(0.0, e["t0"] - cur["t0"])
                buckets["startup"] += startup
                if len(attempts) == 1:
                    first_startup = startup
                buckets["restore"] += dt
                if failures and failures[-1]["restore_s"] is None:
                    failures[-1]["restore_s"] = dt
            else:
                buckets[name if name in LOSS_BUCKETS else "other"] += dt
                if name == "compile" and len(attempts) == 1:
                    first_startup += dt
        elif ev == "restored":
            drop_after(int(e["step"]))
            if failures and failures[-1]["restored_step"] is None:
                failures[-1]["restored_step"] = int(e["step"])
                failures[-1]["restored_from"] = e.get("source")
        elif ev == "rollback":
            rollbacks += 1
            drop_after(int(e["step"]))
        elif ev == "step":
            s = int(e["step"])
            if s in kept:                        # redone without a restore event: the old one was lost
                buckets["lost steps"] += kept.pop(s)
            kept[s] = float(e["dt"])
            cur["max_step"] = max(cur["max_step"], s)
            for f in failures:
                if f["recovered_t"] is None and s >= f["died_at_step"]:
                    f["recovered_t"] = e["t"]
        elif ev == "end":
            end_t = e["t"]
    if not attempts:
        return {"attempts": 0}
    t_end = end_t if end_t is not None else cur["last_t"]
    wall = max(t_end - attempts[0]["t0"], 1e-9)
    productive = sum(kept.values())
    known = productive + sum(buckets.values())
    buckets["other"] += max(0.0, wall - known)
    details = [{"died_at_step": f["died_at_step"], "restored_from": f["restored_from"],
                "restored_step": f["restored_step"],
                "lost_steps": None if f["restored_step"] is None else f["died_at_step"] - f["restored_step"],
                "restore_s": f["restore_s"],
                "time_to_recover_s": None if f["recovered_t"] is None else f["recovered_t"] - f["death_t"]}
               for f in failures]
    ttr = [d["time_to_recover_s"] for d in details if d["time_to_recover_s"] is not None]
    restores = [d["restore_s"] for d in details if d["restore_s"] is not None]
    lost = [d["lost_steps"] for d in details if d["lost_steps"] is not None]
    steady_wall = max(wall - first_startup, 1e-9)
    return {
        "attempts": len(attempts), "failures": len(failures), "rollbacks": rollbacks, "complete": end_t is not None,
        "wall_s": wall, "productive_s": productive, "goodput": productive / wall,
        "goodput_after_first_start": productive / steady_wall,
        "steps": len(kept),
        "lost_s": {k: buckets.get(k, 0.0) for k in LOSS_BUCKETS},
        "mean_time_to_recover_s": sum(ttr) / len(ttr) if ttr else None,
        "mean_restore_s": sum(restores) / len(restores) if restores else None,
        "mean_lost_steps": sum(lost) / len(lost) if lost else None,
        "failure_list": details,
    }


def summary_line(acc: dict) -> str:
    if not acc.get("attempts"):
        return "goodput: no events"
    top = sorted(((v, k) for k, v in acc["lost_s"].items() if v > 0), reverse=True)[:4]
    s = (f"goodput {100 * acc['goodput']:.1f}% ({acc['productive_s']:.1f}s of steps in {acc['wall_s']:.1f}s wall, "
         f"{acc['failures']} failure(s)")
    if acc["mean_time_to_recover_s"] is not None:
        s += f", mean time-to-recover {acc['mean_time_to_recover_s']:.2f}s"
    return s + "); lost: " + ", ".join(f"{k} {v:.1f}s" for v, k in top)


def report_lines(acc: dict) -> list[str]:
    if not acc.get("attempts"):
        return []
    lines = ["## Goodput", "",
             f"{100 * acc['goodput']:.1f}% of {acc['wall_s']:.1f}s wall time went into training steps that were kept "
             f"({acc['steps']} steps, {acc['productive_s']:.1f}s); {100 * acc['goodput_after_first_start']:.1f}% after "
             f"the first start-up and compile.  {acc['attempts']} attempt(s), {acc['failures']} failure(s), "
             f"{acc['rollbacks']} guard rollback(s).", "",
             "| where the rest went | seconds | % of wall |", "|---|---:|---:|"]
    for k in LOSS_BUCKETS:
        v = acc["lost_s"][k]
        if v > 0:
            lines.append(f"| {k} | {v:.2f} | {100 * v / acc['wall_s']:.1f} |")
    lines.append("")
    if acc["failure_list"]:
        lines += ["| failure | died at step | restored from | at step | lost steps | restore s | time-to-recover s |",
                  "|---:|---:|---|---:|---:|---:|---:|"]
        fmt = lambda v, f="{:.2f}": "" if v is None else f.format(v)  # noqa: E731
        for i, d in enumerate(acc["failure_list"]):
            lines.append(f"| {i + 1} | {d['died_at_step']} | {d['restored_from'] or ''} | {fmt(d['restored_step'], '{}')} "
                         f"| {fmt(d['lost_steps'], '{}')} | {fmt(d['restore_s'])} | {fmt(d['time_to_recover_s'])} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m train.goodput RUN_DIR", file=sys.stderr)
        return 2
    if not os.path.exists(events_path(argv[0])):
        print(f"error: {events_path(argv[0])} not found (a run with resilience.goodput on writes it)", file=sys.stderr)
        return 2
    acc = account(read_events(argv[0]))
    print(summary_line(acc))
    print("\n".join(report_lines(acc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
