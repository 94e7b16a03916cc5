"""Fast unit tests of the resilience pieces (no trainer compile): checksums, checkpoint
verification, the replica holder (incl. a writer SIGKILLed mid-copy), goodput accounting,
the loss guard and its skipping source, the fault schedule, config validation."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import ConfigError
from train import integrity
from train.config import resolve
from train.data import SyntheticSource
from train.faults import corrupt_checkpoint, kill_schedule
from train.goodput import account
from train.guard import GuardedSource, LossGuard
from train.replica import ReplicaClient, ReplicaError, layout, read_slot, slot_size, write_slot
from train.resilience_config import FaultConfig, GuardConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:                       # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    t = time.time() + timeout
    while time.time() < t:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def run_dir(tmp_path):
    """A run dir whose replica holder (if any) is killed after the test, whatever happened."""
    d = tmp_path / "run"
    d.mkdir()
    yield str(d)
    info = d / "replica" / "holder.json"
    if info.exists():
        pid = json.loads(info.read_text())["pid"]
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)


# ---- checksums ---------------------------------------------------------------------------------

def test_tree_checksums_equal_numpy_and_catch_a_flipped_bit_or_a_swap():
    tree = {"a": jnp.arange(1000, dtype=jnp.float32) * 0.37, "b": jnp.linspace(-2, 2, 15, dtype=jnp.bfloat16),
            "c": jnp.array([7, -3, 11], jnp.int32), "d": jnp.array([True, False, True])}
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    dev = np.asarray(integrity.tree_checksums(tree))
    assert dev.shape == (4, 2) and (dev == integrity.host_checksums(leaves)).all()
    assert (integrity.checksums(tree) == dev).all()                  # the CPU path: numpy on the buffers
    big = np.random.default_rng(0).standard_normal(200_003).astype(np.float32)   # several chunks, a ragged end
    assert (integrity.host_checksums([big]) == np.asarray(integrity.tree_checksums([jnp.asarray(big)]))).all()
    for i, x in enumerate(leaves):
        y = x.copy()
        if y.dtype == np.bool_:
            y[1] = True
        else:
            w = y.reshape(-1).view({4: np.uint32, 2: np.uint16}[y.dtype.itemsize])
            w[len(w) // 2] ^= w.dtype.type(1 << 3)
        got = integrity.host_checksums([y])[0]
        assert (got != dev[i]).all(), (i, got, dev[i])           # both sums change
    a = leaves[0].copy()
    a[[10, 20]] = a[[20, 10]]
    got = integrity.host_checksums([a])[0]
    assert got[0] == dev[0, 0] and got[1] != dev[0, 1]            # a swap: only the weighted sum sees it
    paths = integrity.leaf_paths(tree)
    assert integrity.diff_sums(integrity.as_dict(paths, dev), integrity.as_dict(paths, dev)) == []


def test_checkpoint_files_verify_and_a_flipped_byte_is_named(tmp_path):
    from train.checkpoint import Checkpointer
    run = str(tmp_path)
    c = Checkpointer(os.path.join(run, "checkpoints"), keep=3, async_save=True)
    state = {"w": jnp.arange(50_000, dtype=jnp.float32), "step": jnp.array(3, jnp.int32)}
    c.save(3, state, {"train": {}}, {"m": 1})
    assert integrity.wait_finished(run, 3, timeout=60)
    c.close()
    assert integrity.verify_files(run, 3) == (None, "no checksums recorded")
    m = integrity.write_manifest(run, 3)
    assert len(m["files"]) >= 5 and integrity.verify_files(run, 3) == (True, "")
    step, f = corrupt_checkpoint(run)
    ok, why = integrity.verify_files(run, 3)
    assert step == 3 and ok is False and os.path.relpath(f, "checkpoints/3") in why, why
    integrity.prune_manifests(run, set())
    assert integrity.read_manifest(run, 3) is None


# ---- the replica holder -------------------------------------------------------------------------

WRITER = r"""
import sys, time, numpy as np
from train.replica import ReplicaClient, layout, slot_size, write_slot
run_dir = sys.argv[1]
c = ReplicaClient(run_dir, idle_timeout=60)
def manifest(step, arrays):
    shapes, dtypes = [list(a.shape) for a in arrays], [a.dtype.name for a in arrays]
    offs, n = layout([tuple(s) for s in shapes], dtypes)
    return {"step": step, "shapes": shapes, "dtypes": dtypes, "offsets": offs, "data_bytes": n}
a = [np.arange(100_000, dtype=np.float32), np.array([1, 2, 3], np.int32)]
m = manifest(1, a)
mm = c.open_slot(0, slot_size(m["data_bytes"], 4096))
c.commit(0, 1, *write_slot(mm, a, m))
b = [x * 2 for x in a]
mm = c.open_slot(1, slot_size(m["data_bytes"], 4096))
mm[: 200_000] = b[0].tobytes()[: 200_000]           # half a copy, never committed
print("half", flush=True)
time.sleep(120)
"""


def test_replica_outlives_a_writer_killed_mid_copy_and_serves_the_complete_slot(run_dir):
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.Popen([sys.executable, "-c", WRITER, run_dir], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "half"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    holder = json.loads(open(os.path.join(run_dir, "replica", "holder.json")).read())["pid"]
    assert _alive(holder)                                 # the writer's death did not take it down
    c = ReplicaClient(run_dir, spawn=False)
    assert c.pid == holder
    assert [s["step"] for s in c.slots()] == [1, None, None]    # the half-written slot is invalid
    manifest, mm = c.latest()
    arrays = read_slot(mm, manifest)
    mm.close()
    assert manifest["step"] == 1 and np.array_equal(arrays[0], np.arange(100_000, dtype=np.float32))
    assert arrays[1].tolist() == [1, 2, 3]
    assert c.latest(max_step=0) is None
    c.shutdown()
    assert _wait_gone(holder), "the holder did not exit on shutdown"
    with pytest.raises(ReplicaError, match="no replica holder"):
        ReplicaClient(run_dir, spawn=False)


def test_replica_holder_resets_for_a_fresh_run_dir_and_exits_when_idle(run_dir):
    c = ReplicaClient(run_dir, idle_timeout=1.5)
    assert c.spawned
    a = [np.linspace(-3, 3, 10).astype(jnp.bfloat16), np.arange(7, dtype=np.int32)]
    dtypes = [x.dtype.name for x in a]
    offs, n = layout([x.shape for x in a], dtypes)
    m = {"step": 4, "shapes": [list(x.shape) for x in a], "dtypes": dtypes, "offsets": offs, "data_bytes": n}
    c.commit(0, 4, *write_slot(c.open_slot(0, slot_size(n, 1024)), a, m))
    manifest, mm = c.latest()
    back = read_slot(mm, manifest)
    mm.close()
    assert dtypes == ["bfloat16", "int32"] and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, back))
    pid = c.pid
    c.close()
    os.remove(os.path.join(run_dir, "replica", "holder.json"))     # what --fresh does
    c2 = ReplicaClient(run_dir, idle_timeout=1.5)
    assert not c2.spawned and c2.pid == pid and c2.latest() is None   # stale replica dropped
    c2.close()
    assert _wait_gone(pid, timeout=15), "the holder did not exit after its idle timeout"


# ---- goodput ------------------------------------------------------------------------------------

def test_goodput_accounting_of_a_failure():
    ev = [{"ev": "attempt", "t": 1.0, "t0": 0.0},
          {"ev": "restored", "t": 2.0, "source": "fresh", "step": 0},
          {"ev": "phase", "t": 2.0, "name": "restore", "t0": 1.0, "dt": 1.0},
          {"ev": "phase", "t": 4.0, "name": "compile", "t0": 2.0, "dt": 2.0},
          {"ev": "step", "t": 5.0, "step": 1, "dt": 1.0},
          {"ev": "step", "t": 6.0, "step": 2, "dt": 1.0},
          {"ev": "step", "t": 7.0, "step": 3, "dt": 1.0},
          {"ev": "phase", "t": 7.5, "name": "checkpoint", "t0": 7.0, "dt": 0.5},
          {"ev": "step", "t": 8.5, "step": 4, "dt": 1.0},
          {"ev": "step", "t": 9.5, "step": 5, "dt": 1.0},
          {"ev": "step", "t": 9.6, "step": 6, "dt": 0.1, "torn": True},   # the line a kill tore is simply absent
          {"ev": "attempt", "t": 11.0, "t0": 11.0, "prev_exit": 10.0},
          {"ev": "restored", "t": 11.5, "source": "replica", "step": 3},
          {"ev": "phase", "t": 11.5, "name": "restore", "t0": 11.0, "dt": 0.5},
          {"ev": "step", "t": 13.0, "step": 4, "dt": 1.5},
          {"ev": "step", "t": 14.0, "step": 5, "dt": 1.0},
          {"ev": "step", "t": 15.0, "step": 6, "dt": 1.0},
          {"ev": "end", "t": 15.5}]
    ev = [e for e in ev if not e.get("torn")]
    a = account(ev)
    assert (a["attempts"], a["failures"], a["steps"], a["complete"]) == (2, 1, 6, True)
    assert a["wall_s"] == 15.5 and a["productive_s"] == pytest.approx(6.5)
    assert a["goodput"] == pytest.approx(6.5 / 15.5)
    lost = a["lost_s"]
    assert lost["lost steps"] == pytest.approx(2.0) and lost["startup"] == pytest.approx(1.0)
    assert lost["restore"] == pytest.approx(1.5) and lost["compile"] == 2.0 and lost["checkpoint"] == 0.5
    assert lost["killed step"] == pytest.approx(0.5) and lost["restart wait"] == pytest.approx(1.0)
    assert sum(lost.values()) + a["productive_s"] == pytest.approx(a["wall_s"])
    f = a["failure_list"][0]
    assert (f["died_at_step"], f["restored_from"], f["restored_step"], f["lost_steps"]) == (5, "replica", 3, 2)
    assert f["restore_s"] == 0.5 and f["time_to_recover_s"] == pytest.approx(4.0)   # death 10 -> step 5 at 14
    assert a["goodput_after_first_start"] == pytest.approx(6.5 / (15.5 - 3.0))


# ---- guard ------------------------------------------------------------------------------------------

def test_loss_guard_spikes_nans_escalation_and_limits():
    g = LossGuard(GuardConfig(window=10, min_history=5, z=6.0, min_delta=0.5, on_nan="rollback", on_spike="skip",
                              max_events=3))
    for s, loss in enumerate([3.0, 3.02, 2.98, 3.01, 2.99, 3.0, 3.03], 1):
        assert g.check(s, loss, 1.0) is None
    assert g.check(8, 3.3, 1.0) is None                    # within min_delta of the median
    ev = g.check(9, 4.0, 1.0)
    assert ev.kind == "spike" and ev.threshold == pytest.approx(3.505) and "loss spike at step 9" in ev.describe()
    assert g.action(ev, 17) == "skip"
    nan = g.check(10, float("nan"), 1.0)
    assert nan.kind == "nan" and g.check(10, 3.0, float("inf")).kind == "nan"
    assert g.action(nan, 18) == "rollback"                 # a transient fault is rolled back ...
    assert g.action(nan, 18) == "skip"                     # ... unless the same batch trips again
    assert g.action(nan, 19) == "stop"                     # more than max_events
    g.forget_after(5)
    assert list(g.history) == [1, 2, 3, 4, 5]
    assert LossGuard(GuardConfig()).action(ev, 1) == "warn"                  # the default for spikes


def test_guarded_source_skips_exactly_and_its_state_round_trips():
    def src():
        return SyntheticSource(2, 32, vocab_size=64, seed=1)
    ref = src()
    gs = GuardedSource(src())
    assert gs.fingerprint == ref.fingerprint and gs.source_names == ref.source_names
    gs.set_state(ref.get_state())
    gs.rebase(0)
    for n in range(3):
        assert np.array_equal(gs.next_batch()["inputs"], ref.batch_at(n)["inputs"])
    assert gs.get_state() == {"batches": 3}                 # no skips yet: the inner state, unchanged
    assert gs.index_for_step(2) == 1 and gs.index_for_step(4) is None
    gs.skip.add(3)
    state = json.loads(json.dumps(gs.get_state()))
    assert state["guard"] == {"skip": [3], "inner_n": 3}
    assert np.array_equal(gs.next_batch()["inputs"], ref.batch_at(4)["inputs"])   # batch 3 skipped
    resumed = GuardedSource(src())
    resumed.set_state(state)
    resumed.rebase(3)
    assert np.array_equal(resumed.next_batch()["inputs"], ref.batch_at(4)["inputs"])
    assert resumed.index_for_step(4) == 4


# ---- faults and config ------------------------------------------------------------------------------

def test_kill_schedule_is_seeded_one_per_window():
    s = kill_schedule(FaultConfig(kill_every=10, seed=3, kill_at=[2]), 35)
    steps = [x for x, _ in s]
    assert steps == sorted(steps) and 2 in steps and all(0 < x < 35 for x in steps)
    for w in range(3):
        assert sum(w * 10 < x <= (w + 1) * 10 for x in steps if x != 2) == 1
    assert all(0 <= f < 1 for _, f in s)
    assert s == kill_schedule(FaultConfig(kill_every=10, seed=3, kill_at=[2]), 35)
    assert s != kill_schedule(FaultConfig(kill_every=10, seed=4, kill_at=[2]), 35)


def test_resilience_config_is_validated_in_one_line_and_not_fingerprinted():
    base = resolve(None, [], {"preset": "tiny"})[0]
    on = resolve(None, ["resilience.replica.enabled=true", "resilience.guard.on_nan=rollback",
                        "resilience.faults.kill_every=5"], {"preset": "tiny"})[0]
    assert on.resilience.replica.enabled and on.fingerprint() == base.fingerprint()
    for sets, msg in ((["resilience.replica.every=0"], "resilience.replica.every"),
                      (["resilience.bogus=1"], "resilience.bogus: unknown key"),
                      (["resilience.guard.on_nan=ignore"], "resilience.guard.on_nan"),
                      (["resilience.guard.min_history=80"], "min_history 80 is larger than window 50"),
                      (["resilience.faults.bitflip.bit=40"], "resilience.faults.bitflip")):
        with pytest.raises(ConfigError, match=msg) as e:
            resolve(None, sets, {"preset": "tiny"})
        assert "\n" not in str(e.value)
