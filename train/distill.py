"""Knowledge distillation: train a student preset against a frozen teacher checkpoint.

Enable with a ``distill:`` section in the training config (``train/config.py``
``DistillConfig``) or flags::

    python -m train --preset tiny --mixture configs/mixtures/nano_sample.yaml \\
        --set distill.teacher=runs/teacher --set distill.alpha=0.5 --set distill.temperature=2

Loss per token ``i`` (Hinton et al. 2015), averaged over the loss-masked tokens::

    alpha * CE(student, target_i) + (1 - alpha) * T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T))

``T^2`` keeps the soft-target gradients on the scale of the hard-target ones when
``T`` changes.  ``alpha = 1`` is plain training; ``alpha = 0`` pure distillation.
The student and teacher read the *same* batch (the run's staged mixture), so the
teacher's distribution is always over the student's exact context.  Train records
carry ``loss`` (the objective above), ``ce`` and ``kd`` (= T²·KL); per-source losses
and the validation loss stay plain cross-entropy, comparable with runs without a
teacher.

**Teacher logits on the fly, not cached top-k.**  The teacher runs forward (no
gradient) inside the same jitted step; costs 2·N_teacher FLOPs per token, against
6·N_student for the student's step.  Caching the teacher's top-k (id, log-prob)
pairs per token (as some pipelines do to amortise a huge teacher) was rejected here:
  * the cache is tied to the exact token stream: the staged mixture's order, its
    seed, seq_len and packing; change any of them (a new mixture weight, a resumed run
    with another batch size) and the cache is stale, while on the fly is exact by
    construction and keeps kill-and-resume bitwise (the teacher is deterministic);
  * size: k=64 pairs are ~384 bytes per token (int32 id + fp16 log-prob): 0.4 TB per
    billion training tokens, more than the data itself, to be re-read every epoch;
  * truncating to top-k biases the KL (the tail mass is dropped or lumped) exactly
    where a small vocabulary student learns most, and the temperature cannot be
    changed afterwards.
It pays off only when many students reuse one expensive teacher on a frozen stream;
for the sizes this toolkit trains on one host, the teacher forward is cheaper than
the bookkeeping.  (Measured on the sample mixture, bench/distill_experiment.py: a
distilled ``tiny`` step with the 5.5x larger ``depth:4`` teacher takes 2.0x a plain
one, median 1.20 s vs 0.61 s on a contended 2-core box.)  The logged MFU counts the
student's FLOPs only.

**Teacher pinning.**  The teacher step (``distill.teacher_step`` or the latest) and
the teacher's config fingerprint are written to ``<run_dir>/distill.json`` at the
start; a resumed run uses that step and fails with one line if the teacher's
checkpoint changed.  The distill section is part of the config fingerprint.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from model.config import ConfigError, ModelConfig, count_params, human
from model.transformer import forward, head, param_axes, resolve_attention, sequence_nll, token_nll
from train import model_io
from train.sharding import put_batch, tree_shardings

if TYPE_CHECKING:
    from train.trainer import Trainer

PIN_FILE = "distill.json"


@dataclass
class Teacher:
    params: Any
    cfg: ModelConfig
    path: str              # the teacher's checkpoints dir
    step: int
    fingerprint: str       # the teacher run's config fingerprint
    attn_impl: str
    shardings: Any


# ---- loss --------------------------------------------------------------------------------

def kd_terms(student_logits: jax.Array, teacher_logits: jax.Array, targets: jax.Array, temperature: float
             ) -> tuple[jax.Array, jax.Array]:
    """Per-token (CE of the targets, KL(teacher_T || student_T)), both [B, T] float32."""
    nll = token_nll(student_logits, targets)
    log_ps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    log_pt = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
    return nll, kl


def token_losses(params: dict, cfg: ModelConfig, t_params: dict, t_cfg: ModelConfig, batch: dict, temperature: float,
                 *, compute_dtype=jnp.float32, shard=None, attn_impl=None, t_attn_impl=None
                 ) -> tuple[jax.Array, jax.Array]:
    """(nll, kl) [B, T] of the student against the teacher on one batch.  With the
    student's ``loss_chunk`` the two output heads and the losses run chunk by chunk of
    the sequence (rematerialised), so neither [B, T, V] logits tensor exists at once."""
    from model.transformer import no_shard
    shard = shard or no_shard
    t_params = jax.lax.stop_gradient(t_params)
    args = (batch["inputs"], batch["segment_ids"], batch["positions"])
    kw = dict(compute_dtype=compute_dtype, shard=shard)
    c = cfg.loss_chunk
    b, t = batch["inputs"].shape
    if not c or t <= c:
        s_logits = forward(params, cfg, *args, attn_impl=attn_impl, **kw)
        t_logits = forward(t_params, t_cfg, *args, attn_impl=t_attn_impl, **kw)
        return kd_terms(s_logits, jax.lax.stop_gradient(t_logits), batch["targets"], temperature)
    if t % c:
        raise ValueError(f"sequence length {t} must be a multiple of loss_chunk {c}")
    xs = forward(params, cfg, *args, attn_impl=attn_impl, return_hidden=True, **kw)
    xt = jax.lax.stop_gradient(forward(t_params, t_cfg, *args, attn_impl=t_attn_impl, return_hidden=True, **kw))
    ps = {k: params[k].astype(compute_dtype) for k in ("embed", "lm_head") if k in params}
    pt = {k: t_params[k].astype(compute_dtype) for k in ("embed", "lm_head") if k in t_params}

    def split(a):
        return a.reshape(b, t // c, c, *a.shape[2:]).swapaxes(0, 1)

    @jax.checkpoint
    def chunk(_, inp):
        s_c, t_c, y = inp
        zs = head(ps, cfg, s_c.reshape(b * c, -1), shard)
        zt = head(pt, t_cfg, t_c.reshape(b * c, -1), shard)
        nll, kl = kd_terms(zs, zt, y.reshape(b * c), temperature)
        return None, (nll.reshape(b, c), kl.reshape(b, c))

    _, (nll, kl) = jax.lax.scan(chunk, None, (split(xs), split(xt), split(batch["targets"])))
    return nll.swapaxes(0, 1).reshape(b, t), kl.swapaxes(0, 1).reshape(b, t)


def loss_terms(trainer: "Trainer", params: dict, t_params: dict, batch: dict, denom) -> tuple[jax.Array, tuple]:
    """The trainer's ``_loss_terms`` with a teacher: (objective, per-source CE sums/counts)."""
    d = trainer.cfg.distill
    teacher = trainer.teacher
    nll, kl = token_losses(params, trainer.model_cfg, t_params, teacher.cfg, batch, d.temperature,
                           compute_dtype=trainer.compute_dtype, shard=trainer.shard, attn_impl=trainer.attn_impl,
                           t_attn_impl=teacher.attn_impl)
    mask = batch["loss_mask"]
    nll, kl = nll * mask, kl * mask
    loss = (d.alpha * nll.sum() + (1.0 - d.alpha) * d.temperature ** 2 * kl.sum()) / denom
    return loss, trainer._per_source(nll, batch)


# ---- setup --------------------------------------------------------------------------------

def load_teacher(trainer: "Trainer") -> Teacher:
    """Load (and pin) the teacher for ``trainer.cfg.distill``; one-line errors."""
    d = trainer.cfg.distill
    pin_path = os.path.join(trainer.run_dir, PIN_FILE)
    resuming = trainer.checkpointer.latest_step() is not None
    pinned = None
    if resuming and os.path.exists(pin_path):
        with open(pin_path, encoding="utf-8") as f:
            pinned = json.load(f)
    step = pinned["teacher_step"] if pinned else d.teacher_step
    ckpt_dir, step, meta = model_io.read_meta(d.teacher, step)
    if os.path.abspath(ckpt_dir) == os.path.abspath(trainer.checkpointer.directory):
        raise ConfigError(f"distill.teacher {d.teacher} is this run's own checkpoint directory")
    if pinned and meta.get("config_fingerprint") != pinned["teacher_fingerprint"]:
        raise ConfigError(f"distill.teacher {d.teacher} step {step} is not the teacher this run started with "
                          f"(fingerprint {meta.get('config_fingerprint')} != {pinned['teacher_fingerprint']}); "
                          "use --fresh to restart")
    t_cfg = ModelConfig.model_validate(meta["model"])
    s_cfg = trainer.model_cfg
    if t_cfg.vocab_size != s_cfg.vocab_size:
        raise ConfigError(f"distill.teacher {d.teacher}: vocab_size {t_cfg.vocab_size} != the student's "
                          f"{s_cfg.vocab_size} (teacher and student must share the tokenizer)")
    if trainer.cfg.seq_len > t_cfg.max_seq_len:
        raise ConfigError(f"distill.teacher {d.teacher}: seq_len {trainer.cfg.seq_len} exceeds the teacher's "
                          f"max_seq_len {t_cfg.max_seq_len}")

    def shardings(abstract, cfg):
        return tree_shardings(abstract, param_axes(cfg), trainer.mesh, trainer.rules)

    loaded = model_io.load_params(ckpt_dir, step, dtype=trainer.compute_dtype, shardings=shardings)
    teacher = Teacher(params=loaded.params, cfg=t_cfg, path=ckpt_dir, step=step,
                      fingerprint=str(meta.get("config_fingerprint")),
                      attn_impl=resolve_attention(t_cfg, trainer.cfg.seq_len, trainer.compute_dtype),
                      shardings=jax.tree.map(lambda x: x.sharding, loaded.params))
    os.makedirs(trainer.run_dir, exist_ok=True)
    with open(pin_path, "w", encoding="utf-8") as f:
        json.dump({"teacher": ckpt_dir, "teacher_step": step, "teacher_fingerprint": teacher.fingerprint,
                   "teacher_model": t_cfg.model_dump(mode="json")}, f, indent=2)
    trainer.hooks.append(DistillHook())
    return teacher


class DistillHook:
    """Says what is distilled at the start and logs the teacher's validation loss (the
    bar the student is measured against) as a ``distill`` record."""

    def on_start(self, trainer: "Trainer") -> None:
        t, d = trainer.teacher, trainer.cfg.distill
        n_t, n_s = count_params(t.cfg)["total"], count_params(trainer.model_cfg)["total"]
        rec = {"kind": "distill", "teacher": t.path, "teacher_step": t.step, "teacher_params": n_t,
               "student_params": n_s, "alpha": d.alpha, "temperature": d.temperature}
        msg = (f"distilling from {t.cfg.name} ({human(n_t)} params, {t.path} step {t.step}) into "
               f"{trainer.model_cfg.name} ({human(n_s)}): loss = {d.alpha:g}·CE + {1 - d.alpha:g}·T²·KL, T = "
               f"{d.temperature:g}; teacher logits on the fly")
        if trainer.cfg.eval.batches:
            rec["teacher_val_loss"] = teacher_val_loss(trainer)
            msg += f"; teacher validation loss {rec['teacher_val_loss']:.4f}"
        trainer.log.write(rec)
        print(msg, flush=True)

    # the rest of train.trainer.Hook (not subclassed: train.trainer imports this module)
    def on_step(self, trainer, step, record) -> None: ...
    def on_checkpoint(self, trainer, step) -> None: ...
    def on_end(self, trainer) -> None: ...
    def on_phase(self, trainer, name, t0, seconds) -> None: ...
    def on_state(self, trainer, step) -> None: ...

    def restore(self, trainer) -> None:
        return None


def teacher_val_loss(trainer: "Trainer") -> float:
    t = trainer.teacher

    @jax.jit
    def nll_fn(tp, batch):
        nll = sequence_nll(tp, t.cfg, batch["inputs"], batch["segment_ids"], batch["positions"], batch["targets"],
                           compute_dtype=trainer.compute_dtype, shard=trainer.shard, attn_impl=t.attn_impl)
        return (nll * batch["loss_mask"]).sum(), batch["loss_mask"].sum()

    src = trainer._val_factory()
    s = c = 0.0
    for _ in range(trainer.cfg.eval.batches):
        a, b = nll_fn(t.params, put_batch(trainer._with_sources(src.next_batch()), trainer.batch_sharding))
        s, c = s + float(a), c + float(b)
    return s / max(c, 1.0)


def kd_metrics(trainer: "Trainer", loss, src, denom) -> dict:
    """Extra step metrics: the CE part and the distillation part of the objective."""
    d = trainer.cfg.distill
    ce = src[0].sum() / denom
    kd = (loss - d.alpha * ce) / (1.0 - d.alpha) if d.alpha < 1 else jnp.zeros(())
    return {"ce": ce, "kd": kd}


def add_to_record(rec: dict, m: dict) -> None:
    for k in ("ce", "kd"):
        if k in m:
            rec[k] = float(np.asarray(m[k]))
