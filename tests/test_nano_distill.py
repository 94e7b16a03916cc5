"""Distillation (train/distill.py): the loss terms, the trainer wiring (the logged objective
equals an independent computation from the teacher checkpoint), teacher pinning and
bitwise resume, one-line errors.  The benefit on real data is measured by
bench/distill_experiment.py, not here."""
from __future__ import annotations

import os

O0 = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", O0)

import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import ModelConfig
from model.transformer import forward, init_params
from train.distill import kd_terms, token_losses
from train.metrics import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHER = ModelConfig(name="teacher", vocab_size=256, d_model=128, n_layers=3, n_heads=4, n_kv_heads=1, head_dim=32,
                      d_ff=256, init_std=0.1)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_objective(zs, zt, targets, mask, alpha, temp):
    """The distillation objective in float64 numpy, from the definition."""
    zs, zt = np.asarray(zs, np.float64), np.asarray(zt, np.float64)
    ce = -np.take_along_axis(np_log_softmax(zs), targets[..., None], -1)[..., 0]
    ls, lt = np_log_softmax(zs / temp), np_log_softmax(zt / temp)
    kl = (np.exp(lt) * (lt - ls)).sum(-1)
    return (alpha * (ce * mask).sum() + (1 - alpha) * temp ** 2 * (kl * mask).sum()) / mask.sum(), ce, kl


# ---- loss terms --------------------------------------------------------------------------

def test_kd_terms_match_the_definition():
    rng = np.random.default_rng(0)
    zs, zt = rng.normal(0, 2, (2, 5, 11)).astype(np.float32), rng.normal(0, 2, (2, 5, 11)).astype(np.float32)
    y = rng.integers(0, 11, (2, 5))
    for temp in (1.0, 2.5):
        nll, kl = kd_terms(jnp.asarray(zs), jnp.asarray(zt), jnp.asarray(y), temp)
        _, ce_ref, kl_ref = np_objective(zs, zt, y, np.ones((2, 5)), 0.5, temp)
        np.testing.assert_allclose(nll, ce_ref, rtol=1e-5)
        np.testing.assert_allclose(kl, kl_ref, rtol=1e-4, atol=1e-6)
        assert float(kl.min()) >= -1e-6
    _, kl_same = kd_terms(jnp.asarray(zs), jnp.asarray(zs), jnp.asarray(y), 2.0)
    assert float(jnp.abs(kl_same).max()) < 1e-5


def test_chunked_distillation_loss_equals_full_and_gradients_skip_the_teacher():
    s_cfg = ModelConfig(name="s", vocab_size=256, d_model=64, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=32, d_ff=128)
    sp = init_params(s_cfg, jax.random.PRNGKey(0))
    tp = init_params(TEACHER, jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    batch = {"inputs": jnp.asarray(rng.integers(0, 256, (2, 32)), jnp.int32),
             "targets": jnp.asarray(rng.integers(0, 256, (2, 32)), jnp.int32),
             "segment_ids": jnp.ones((2, 32), jnp.int32), "positions": jnp.tile(jnp.arange(32), (2, 1))}

    def total(p, t, cfg):
        nll, kl = token_losses(p, cfg, t, TEACHER, batch, 2.0)
        return nll.mean() + kl.mean()

    full = jax.jit(jax.value_and_grad(total, argnums=(0, 1)), static_argnums=2)
    chunked = jax.jit(jax.value_and_grad(total, argnums=(0, 1)), static_argnums=2)
    (l1, (g1, gt)), (l2, (g2, _)) = full(sp, tp, s_cfg), chunked(sp, tp, s_cfg.model_copy(update={"loss_chunk": 8}))
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), g1, g2)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(gt))    # the teacher is frozen


# ---- the trainer -------------------------------------------------------------------------

def save_teacher(run_dir: str, step: int, seed: int = 1) -> None:
    from train.checkpoint import Checkpointer
    params = init_params(TEACHER, jax.random.PRNGKey(seed))
    ck = Checkpointer(os.path.join(run_dir, "checkpoints"), async_save=False)
    meta = {"config_fingerprint": f"teacher-{seed}", "preset": "teacher", "steps": step,
            "model": TEACHER.model_dump(mode="json"), "data": {"kind": "synthetic"}}
    ck.save(step, {"step": jnp.int32(step), "params": params, "rng": jax.random.PRNGKey(0)}, {"train": {}}, meta)
    ck.close()


def args(run_dir, teacher, *extra):
    return ["--preset", "tiny", "--steps", "6", "--run-dir", str(run_dir), "--set", "batch_size=4",
            "--set", "seq_len=32", "--set", "checkpoint.every=3", "--set", "eval.every=3", "--set", "eval.batches=1",
            "--set", "probes.enabled=false", "--set", "log.plots=false", "--set", "log.tensorboard=false",
            "--set", "log.peak_flops=1e11", "--set", f"distill.teacher={teacher}", "--set", "distill.alpha=0.3",
            "--set", "distill.temperature=2.0", *extra]


def cli(argv, ok=True):
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": O0, "PYTHONHASHSEED": "0"}
    p = subprocess.run([sys.executable, "-m", "train", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    if ok:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def records(run_dir):
    keep = ("kind", "step", "loss", "ce", "kd", "grad_norm")
    return [{k: r[k] for k in keep if k in r} for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
            if r["kind"] in ("train", "eval")]


def test_distilled_training_logs_the_objective_pins_the_teacher_and_resumes_bitwise(tmp_path):
    teacher = tmp_path / "teacher"
    save_teacher(str(teacher), 5)
    run = tmp_path / "student"
    p = cli(args(run, teacher))
    assert "distilling from teacher" in p.stdout and "teacher validation loss" in p.stdout
    first = records(run)
    train = [r for r in first if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all(r["kd"] >= 0 and abs(r["loss"] - (0.3 * r["ce"] + 0.7 * r["kd"])) < 1e-4 for r in train)
    dist = [r for r in read_jsonl(str(run / "metrics.jsonl")) if r["kind"] == "distill"][0]
    assert dist["teacher_step"] == 5 and dist["teacher_val_loss"] > 0
    assert json.loads((run / "distill.json").read_text())["teacher_step"] == 5

    # the logged step-1 objective, recomputed independently: the trainer's initial student
    # (built in process, same config) and the teacher read back from its checkpoint, on batch 1
    from train.config import resolve
    from train.trainer import Trainer
    argv = args(tmp_path / "replica", teacher)
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    cfg, mcfg, _, _ = resolve(None, sets, {"preset": "tiny", "steps": 6, "run_dir": str(tmp_path / "replica")})
    tr = Trainer(cfg, mcfg)
    tr.init_or_restore()
    b = tr.train_source.next_batch()
    ins = (b["inputs"], b["segment_ids"], b["positions"])
    zs = jax.jit(forward, static_argnums=1)(tr.state["params"], mcfg, *ins)
    zt = jax.jit(forward, static_argnums=1)(init_params(TEACHER, jax.random.PRNGKey(1)), TEACHER, *ins)
    obj, _, _ = np_objective(zs, zt, b["targets"], b["loss_mask"], 0.3, 2.0)
    assert abs(train[0]["loss"] - obj) < 1e-4 * obj, (train[0], obj)

    # a crash after step 3 (drop the later checkpoint) while the teacher dir gets a newer
    # checkpoint: the resumed run keeps the pinned teacher and continues bit for bit
    shutil.rmtree(run / "checkpoints" / "6")
    save_teacher(str(teacher), 9, seed=2)
    p = cli(args(run, teacher))
    assert "resumed from checkpoint step 3" in p.stdout and "step 5" in p.stdout
    assert records(run) == first


def test_teacher_errors_are_one_line(tmp_path, capsys):
    from train.cli import main
    teacher = tmp_path / "teacher"
    save_teacher(str(teacher), 5)
    cases = [(args(tmp_path / "s1", teacher, "--set", "model.vocab_size=512"), "vocab_size 256 != the student's 512"),
             (args(tmp_path / "s2", tmp_path / "nothing"), "checkpoint directory not found"),
             (args(tmp_path / "s3", teacher, "--set", "distill.alpha=1.5"), "distill.alpha"),
             (args(tmp_path / "s4", teacher, "--set", "distill.teacher_step=4"), "no checkpoint at step 4"),
             (args(teacher, teacher), "this run's own checkpoint directory")]
    for argv, msg in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error:") and msg in err[-1], (argv, err)


def test_distill_hook_implements_every_trainer_hook_method():
    from train.distill import DistillHook
    from train.trainer import Hook
    missing = [m for m in vars(Hook) if not m.startswith("_") and callable(getattr(Hook, m))
               and not callable(getattr(DistillHook, m, None))]
    assert missing == []
