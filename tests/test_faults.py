"""Training that survives failures, end to end on the ``tiny`` preset (subprocesses: SIGKILL
needs a process, and XLA flags must be set before JAX starts).

* SIGKILLs under the supervisor with a warm standby, recovering from the in-memory replica,
  plus a NaN put into the parameters that the guard rolls back: the record of the run is
  bit for bit the uninterrupted one; goodput is accounted; no process is left behind.
* A kill that also corrupts the newest checkpoint on disk (no replica): the corruption is
  detected by checksum, the checkpoint skipped, and the run still ends bit for bit equal.
* A bit flipped in one parameter after one step: ``python -m train.replay --scan`` finds
  that step and names the tensor; a clean step replays bit for bit.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from train.metrics import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
O0 = "--xla_backend_optimization_level=0"          # compile-dominated runs: LLVM -O0 halves compile time
COMMON = ["--preset", "tiny", "--steps", "16", "--set", "checkpoint.every=5", "--set", "eval.every=5",
          "--set", "log.every=5", "--set", "log.peak_flops=1e11", "--set", "probes.enabled=false",
          "--set", "log.tensorboard=false", "--set", "log.plots=false"]
DETERMINISTIC = ("kind", "step", "loss", "grad_norm", "lr", "tokens")
ENV = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": O0, "PYTHONHASHSEED": "0"}


def run(*args, ok=(0,)):
    p = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode in ok, f"exit {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr, p.returncode


def records(run_dir):
    return [{k: v for k, v in r.items() if k in DETERMINISTIC or k.startswith("loss")}
            for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if r.get("kind") in ("train", "eval")]


def processes_mentioning(text: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
                with open(f"/proc/{pid}/stat") as f:
                    zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                continue
            if text in cmd and not zombie:
                out.append(int(pid))
    return out


@pytest.fixture
def run_dir(tmp_path):
    """A run dir; afterwards nothing may still run for it (holder, standby, scanner): such
    processes are killed (by pid) and the test fails."""
    d = tmp_path / "run"
    yield str(d)
    info = d / "replica" / "holder.json"
    left = set(processes_mentioning(str(d)))
    if info.exists():
        pid = json.loads(info.read_text())["pid"]
        t = time.time() + 10
        while pid in processes_mentioning("train.replica") and time.time() < t:
            time.sleep(0.1)                       # it exits right after the shutdown request
        if pid in processes_mentioning("train.replica"):
            left.add(pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running: {left}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 16-step run (default resilience settings: checksums, records, guard)."""
    d = tmp_path_factory.mktemp("reference")
    run("train", *COMMON, "--run-dir", str(d))
    return str(d)


def test_sigkills_recover_from_the_replica_and_the_guard_rolls_back_a_nan_bitwise(reference, run_dir, capsys):
    out, _ = run("train.supervise", "--standby", "--", *COMMON, "--run-dir", run_dir,
                 "--set", "resilience.replica.enabled=true", "--set", "resilience.replica.every=2",
                 "--set", "resilience.faults.kill_at=[5,13]", "--set", "resilience.faults.nan_at=[9]",
                 "--set", "resilience.guard.on_nan=rollback")
    assert out.count("killed by SIGKILL") == 2 and "takes over" in out, out
    assert out.count("from the in-memory replica") == 2, out       # both restarts: from memory
    assert "guard: non-finite loss/grad norm at step 10" in out and "-> rollback" in out, out
    assert "guard: rolled back to step" in out and "run complete after 2 restart(s)" in out, out
    assert records(run_dir) == records(reference)                  # bit for bit the uninterrupted run
    g = json.load(open(os.path.join(run_dir, "summary.json")))["goodput"]
    assert (g["attempts"], g["failures"], g["rollbacks"], g["complete"], g["steps"]) == (3, 2, 1, True, 16)
    assert 0 < g["goodput"] < 1 and g["mean_time_to_recover_s"] > 0 and g["mean_restore_s"] < 5
    assert g["lost_s"]["restart wait"] >= 0 and g["lost_s"]["compile"] > 0
    events = read_jsonl(os.path.join(run_dir, "resilience.jsonl"))
    assert [e["source"] for e in events if e["ev"] == "restored"] == ["fresh", "replica", "replica"]
    assert [e["kind"] for e in events if e["ev"] == "fault"] == ["kill", "nan", "kill"]
    report = open(os.path.join(run_dir, "report.md")).read()
    assert "## Goodput" in report and "| restore |" in report and "| 2 |" in report
    from train.goodput import main as goodput_cli
    capsys.readouterr()
    assert goodput_cli([run_dir]) == 0
    table = capsys.readouterr().out
    assert table.startswith("goodput ") and "| killed step |" in table and "| replica |" in table, table


def test_a_corrupt_checkpoint_is_detected_skipped_and_the_run_ends_bitwise(reference, run_dir):
    out, _ = run("train.supervise", "--", *COMMON, "--run-dir", run_dir,
                 "--set", "resilience.faults.kill_at=[13]", "--set", "resilience.faults.corrupt_checkpoint=true")
    assert "fault injection: corrupted checkpoint 10" in out, out
    assert "checkpoint 10 is corrupt (state/" in out and "has sha256" in out, out
    assert "restored step 5 from the checkpoint" in out and "resumed from checkpoint step 5" in out, out
    assert records(run_dir) == records(reference)
    assert [n.split("-")[0] for n in os.listdir(os.path.join(run_dir, "corrupt"))] == ["10"]
    # the checkpoint written again at step 10 is good, with fresh checksums
    from train import integrity
    assert integrity.verify_files(run_dir, 15) == (True, "")


def test_replay_finds_the_step_whose_parameters_got_a_flipped_bit(run_dir):
    run("train", "--preset", "tiny", "--steps", "10", "--run-dir", run_dir, *COMMON[4:],
        "--set", "checkpoint.keep=5", "--set", "resilience.faults.bitflip.step=8",
        "--set", "resilience.faults.bitflip.tensor=wq", "--set", "resilience.faults.bitflip.bit=23")
    out, rc = run("train.replay", "--run-dir", run_dir, "--scan", "--samples", "3", ok=(1,))
    assert "MISMATCH at step 8" in out and "params['layers']['wq']: checksum recorded" in out, out
    assert "memory corruption" in out and "step 7 matches" in out, out
    out, _ = run("train.replay", "--run-dir", run_dir, "--step", "6")
    assert "step 6 replays bit for bit" in out, out
