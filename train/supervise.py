"""Run the trainer under a supervisor that restarts it when it dies, optionally with a warm
standby that takes over without paying for start-up and compilation again.

    python -m train.supervise -- --preset cpu --set resilience.replica.enabled=true
    python -m train.supervise --standby --max-restarts 20 -- --preset cpu ...

Everything after ``--`` is what ``python -m train`` takes.  The trainer runs as a child
process; when it dies (a signal, or an exit status other than 0, 2 = bad config/data,
3 = the loss diverged, 130 = interrupted) the supervisor starts it again and it resumes from the freshest
replica or checkpoint (train/resilience.py).

``--standby``: once the active trainer trains, a second trainer process starts, imports
everything, builds the model, data and mesh, compiles the step, and waits (a hot spare;
on one machine it shares the CPU only while it compiles).  When the active one dies the
spare is told to go: it restores and trains at once.  The supervisor passes each attempt
its start time and the time the previous one died, for goodput and time-to-recover
(train/goodput.py).  A spare that is not ready yet is waited for; a dead one is replaced
by a cold start.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

READY = "@@standby-ready"


def _say(msg: str) -> None:
    print(f"[supervise] {msg}", flush=True)


# ---- the worker (a trainer process) ------------------------------------------------------------

def worker(train_args: list[str], standby: bool, compile_only: bool = False) -> int:
    from model.config import ConfigError
    from train.cli import build_parser
    from train.config import resolve
    from train.data import DataError

    args = build_parser().parse_args(train_args)
    overrides = list(args.set)
    if args.tokens:
        overrides += ["data.kind=tokens", f"data.options.path={args.tokens}"]
    if args.mixture:
        overrides += ["data.kind=mixture", f"data.options.config={args.mixture}"]
    try:
        from train.cli import pick_preset
        cfg, model_cfg, _, why = resolve(args.config, overrides,
                                         {"preset": args.preset, "steps": args.steps, "run_dir": args.run_dir},
                                         pick_auto=pick_preset)
        from train.resilience import build_hooks
        from train.trainer import Trainer, fresh_run_dir
        if cfg.resilience.compile_cache_dir is None:        # restarts load the step instead of compiling it
            cfg = cfg.model_copy(update={"resilience": cfg.resilience.model_copy(
                update={"compile_cache_dir": os.path.join(cfg.run_dir, "xla_cache")})})
        trainer = Trainer(cfg, model_cfg, why=why, hooks=build_hooks(cfg))
        if standby or compile_only:
            if not trainer.multimodal:        # media batches compile per budget at their first batch
                trainer.compile_step()        # from the abstract state: touches nothing of the run
            for h in trainer.hooks:
                if hasattr(h, "warm"):
                    h.warm(trainer)
            if compile_only:
                return 0
            print(READY, flush=True)
        line = sys.stdin.readline().split()
        if not line or line[0] != "go":
            return 0                          # the supervisor no longer needs this one
        os.environ["CORPUSFORGE_T0"] = line[1]
        os.environ["CORPUSFORGE_PREV_EXIT_T"] = line[2] if len(line) > 2 and line[2] != "-" else ""
        os.environ["CORPUSFORGE_STANDBY"] = "1" if standby else "0"
        if args.fresh:
            fresh_run_dir(cfg.run_dir)
        trainer.run()
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except FloatingPointError as e:           # the loss diverged (the guard gave up): a restart would too
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


# ---- the supervisor -------------------------------------------------------------------------------

class Worker:
    def __init__(self, train_args: list[str], standby: bool, prefix: str):
        self.launch_t = time.time()
        self.standby = standby
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if standby:
            env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")   # a spare on the same GPU must not grab it
        cmd = [sys.executable, "-m", "train.supervise", "--worker"] + (["--standby"] if standby else []) \
            + ["--"] + train_args
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.ready = threading.Event()
        self.training = threading.Event()
        self.exited = threading.Event()
        self.exit_t: float | None = None
        self.prefix = prefix
        self.quiet = standby
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._wait, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line == READY:
                self.ready.set()
                continue
            if line.startswith("training steps"):
                self.training.set()
            if not self.quiet or line.startswith(("error", "Traceback")):
                print(f"{self.prefix}{line}" if self.quiet else line, flush=True)

    def _wait(self) -> None:
        self.proc.wait()
        self.exit_t = time.time()
        self.ready.set()
        self.exited.set()

    def go(self, t0: float, prev_exit: float | None) -> None:
        self.quiet = False
        prev = repr(prev_exit) if prev_exit is not None else "-"
        self.proc.stdin.write(f"go {t0!r} {prev}\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()           # a waiting standby exits on EOF
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait()


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def supervise(train_args: list[str], max_restarts: int, standby: bool) -> int:
    fresh = "--fresh" in train_args
    args = [a for a in train_args if a != "--fresh"]
    active = Worker(args + (["--fresh"] if fresh else []), standby=False, prefix="")
    active.go(active.launch_t, None)
    spare: Worker | None = None
    restarts = 0
    try:
        while True:
            while not active.exited.wait(0.05):
                if standby and spare is None and active.training.is_set():
                    spare = Worker(args, standby=True, prefix="[standby] ")
            rc, died = active.proc.returncode, active.exit_t
            if rc in (0, 2, 3, 130):
                if spare is not None:
                    spare.stop()
                if rc == 0 and restarts:
                    _say(f"run complete after {restarts} restart(s)")
                return rc
            restarts += 1
            if restarts > max_restarts:
                _say(f"trainer {active.proc.pid} {_describe(rc)}; giving up after {max_restarts} restarts")
                if spare is not None:
                    spare.stop()
                return 1
            if spare is not None:
                spare.ready.wait()
            if spare is not None and not spare.exited.is_set():
                _say(f"trainer {active.proc.pid} {_describe(rc)}; the warm standby {spare.proc.pid} takes over "
                     f"(restart {restarts}/{max_restarts})")
                active, spare = spare, None
                active.go(time.time(), died)
            else:
                _say(f"trainer {active.proc.pid} {_describe(rc)}; restarting (restart {restarts}/{max_restarts})")
                spare = None
                active = Worker(args, standby=False, prefix="")
                active.go(active.launch_t, died)
    except KeyboardInterrupt:
        for w in (active, spare):
            if w is not None and w.proc.poll() is None:
                w.proc.terminate()
                w.proc.wait()
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        i = argv.index("--")
        own, train_args = argv[:i], argv[i + 1:]
    else:
        own, train_args = argv, []
    p = argparse.ArgumentParser(prog="python -m train.supervise", description=__doc__.split("\n\n")[0],
                                usage="python -m train.supervise [--standby] [--max-restarts N] -- TRAIN_ARGS...")
    p.add_argument("--standby", action="store_true", help="keep a warm spare trainer ready to take over")
    p.add_argument("--max-restarts", type=int, default=10)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compile-only", action="store_true", help="build and compile the step, then exit "
                   "(fills resilience.compile_cache_dir)")
    a = p.parse_args(own)
    if a.worker or a.compile_only:
        return worker(train_args, standby=a.standby, compile_only=a.compile_only)
    return supervise(train_args, a.max_restarts, a.standby)


if __name__ == "__main__":
    sys.exit(main())
