"""The training loop: one jitted step, partitioned over the device mesh, exact resume.

Reading order: ``make_schedule`` / ``make_optimizer`` (optax), ``Trainer.__init__`` (mesh,
shardings, sources, checkpoints), ``Trainer._make_step`` (the whole step: forward, loss,
backward, clip, AdamW, metrics — one XLA program), ``Trainer.run`` (the loop).

Exact resume: the train state (step, fp32 master weights, optimizer state, rng) and the
data source's state are checkpointed together; batch n is a pure function of the source
state, the step is deterministic XLA, and metrics after the restored step are discarded,
so kill -9 + rerun continues the loss sequence bit for bit (on the same hardware).

Hooks (``Hook``) are the extension points later issues use (in-memory replicas and
goodput accounting, replay, distillation): they see the trainer at start, after every
step, at every checkpoint and at the end.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from model.config import ConfigError, ModelConfig, count_params, describe, flops_per_token
from model.encoders import MEDIA_KEYS
from model.transformer import forward, init_params, param_axes, resolve_attention, sequence_nll
from train import distill, probes
from train.checkpoint import Checkpointer, abstract_like
from train.config import OptimConfig, TrainConfig
from train.data import BatchSource, DataError, SyntheticSource, build_source, validate_batch
from train.metrics import (MetricsLog, measure_cpu_matmul_peak, peak_flops_per_device, plot_run, run_summary,
                           summarize)
from train.sharding import (batch_sharding, make_mesh, make_rules, make_shard_fn, put_batch, replicated,
                            tree_shardings)


# ---- optimizer --------------------------------------------------------------------------

def make_schedule(o: OptimConfig, steps: int) -> optax.Schedule:
    warm = min(o.warmup_steps, max(steps - 1, 0))
    end = o.lr * o.min_lr_ratio
    if o.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, o.lr, warm, max(steps, warm + 1), end_value=end)
    warmup = optax.linear_schedule(0.0, o.lr, warm) if warm else optax.constant_schedule(o.lr)
    if o.schedule == "constant":
        return optax.join_schedules([warmup, optax.constant_schedule(o.lr)], [warm])
    # wsd: warmup, stable at peak, linear decay over the last decay_frac of the steps
    decay_start = max(warm, int(round(steps * (1 - o.decay_frac))))
    return optax.join_schedules(
        [warmup, optax.constant_schedule(o.lr), optax.linear_schedule(o.lr, end, max(steps - decay_start, 1))],
        [warm, decay_start])


def decay_mask(params: dict) -> dict:
    """Weight decay on matrices, not on norm scales."""
    return jax.tree_util.tree_map_with_path(lambda path, _: not path[-1].key.endswith("norm"), params)


def make_optimizer(o: OptimConfig, steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(o, steps)
    tx = optax.chain(optax.clip_by_global_norm(o.clip_norm),
                     optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                                 mask=decay_mask))
    return tx, schedule


# ---- hooks --------------------------------------------------------------------------------

class Hook:
    """Override what you need; ``record`` is the JSONL record of the step."""
    def on_start(self, trainer: "Trainer") -> None: ...
    def on_step(self, trainer: "Trainer", step: int, record: dict) -> None: ...
    def on_checkpoint(self, trainer: "Trainer", step: int) -> None: ...
    def on_end(self, trainer: "Trainer") -> None: ...

    def restore(self, trainer: "Trainer") -> int | None:
        """Called first by ``init_or_restore``: put a state in place (``trainer.state`` and the
        source's state) and return its step, or None to let the trainer use its latest checkpoint."""
        return None

    def on_phase(self, trainer: "Trainer", name: str, t0: float, seconds: float) -> None:
        """A non-step part of the run finished: restore, compile, eval, checkpoint, peak, end."""

    def on_state(self, trainer: "Trainer", step: int) -> None:
        """The state after ``step`` was just put in place (dispatched, maybe still computing;
        the next step donates it).  Called once per step, before that step's record."""


class Rollback(Exception):
    """Raised by a hook's ``on_step`` after it has put an earlier state (step ``step``) in
    place, e.g. after a loss spike: the loop drops later records and continues from there."""
    def __init__(self, step: int):
        super().__init__(f"rolled back to step {step}")
        self.step = step


def say(msg: str) -> None:
    print(msg, flush=True)


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ---- trainer ------------------------------------------------------------------------------

class Trainer:
    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, *, why: str = "", hooks: Sequence[Hook] = (),
                 train_source: BatchSource | None = None, val_source_factory=None, devices=None,
                 init_from: str | None = None):
        self.cfg, self.model_cfg, self.why, self.hooks = cfg, model_cfg, why, list(hooks)
        self.init_from = init_from            # --init-from: warm start (see _warm_start)
        self.warm_started: tuple[str, int] | None = None
        self.run_dir = cfg.run_dir
        self.compute_dtype = jnp.dtype(cfg.precision.compute_dtype)
        self.param_dtype = jnp.dtype(cfg.precision.param_dtype)

        # -- mesh and layouts
        m = cfg.mesh
        try:
            self.mesh = make_mesh(m.data, m.fsdp, m.tensor, devices=devices)
            self.rules = make_rules(m.rules)
        except ValueError as e:
            raise ConfigError(f"mesh: {e}") from None
        dp = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if (cfg.batch_size // cfg.grad_accum) % dp:
            raise ConfigError(f"batch_size/grad_accum = {cfg.batch_size // cfg.grad_accum} must be a multiple of "
                              f"the data-parallel size data x fsdp = {dp}")
        self.shard = make_shard_fn(self.mesh, self.rules)
        self.attn_impl = resolve_attention(model_cfg, cfg.seq_len, self.compute_dtype)

        # -- data
        d = cfg.data
        # with fit_vocab the source reports its own vocabulary (synthetic tasks are generated for one)
        src_vocab = None if (d.fit_vocab and d.kind != "synthetic") else model_cfg.vocab_size
        self.train_source = train_source or build_source(d.kind, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                                                         seed=d.seed, split="train", vocab_size=src_vocab,
                                                         options=d.options)
        self._val_factory = val_source_factory or (lambda: build_source(
            d.kind, batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=d.seed, split="validation",
            vocab_size=src_vocab, options=d.options))
        if self.train_source.vocab_size > model_cfg.vocab_size and d.fit_vocab:
            fitted = -(-self.train_source.vocab_size // 128) * 128
            print(f"model.vocab_size {model_cfg.vocab_size} -> {fitted} to fit the data's vocabulary "
                  f"({self.train_source.vocab_size}; data.fit_vocab)", flush=True)
            model_cfg = self.model_cfg = model_cfg.model_copy(update={"vocab_size": fitted})
        # multimodal data: the media encoders, with the settings the data was costed with
        self.multimodal = bool(getattr(self.train_source, "media_spec", None))
        if self.multimodal:
            model_cfg = self.model_cfg = with_media_encoders(model_cfg, self.train_source.media_spec)
            self._media_steps: dict[tuple, Any] = {}
            if cfg.distill:
                raise ConfigError("distill: the teacher is text-only; distillation on a mixture with media "
                                  "sources is not supported yet")
        if self.train_source.vocab_size > model_cfg.vocab_size:
            raise DataError(f"data vocabulary ({self.train_source.vocab_size}) is larger than the model's "
                            f"vocab_size ({model_cfg.vocab_size}); set model.vocab_size")
        self.source_names = list(self.train_source.source_names)
        total = getattr(self.train_source, "total_examples", None)  # finite sources (staged mixtures)
        if total is not None and cfg.steps * cfg.batch_size > total:
            raise DataError(f"the run needs {cfg.steps} steps x {cfg.batch_size} = {cfg.steps * cfg.batch_size:,} "
                            f"examples but the data plans {total:,}; raise the mixture's budget or train "
                            f"at most {total // cfg.batch_size} steps")

        # -- state, optimizer, shardings
        self.tx, self.schedule = make_optimizer(cfg.optim, cfg.steps)
        key = jax.random.PRNGKey(cfg.seed)
        abstract = jax.eval_shape(self._init_state, key)
        p_sh = tree_shardings(abstract["params"], param_axes(model_cfg), self.mesh, self.rules)
        rep = replicated(self.mesh)
        o_sh = optax.tree_map_params(self.tx, lambda _, s: s, abstract["opt_state"], p_sh,
                                     transform_non_params=lambda _: rep,
                                     is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
        self.state_sharding = {"step": rep, "params": p_sh, "opt_state": o_sh, "rng": rep}
        self.abstract_state = abstract_like(abstract, self.state_sharding)
        self.batch_sharding = batch_sharding(self.mesh, self.rules, cfg.batch_size)
        self._checkpointer: Checkpointer | None = None
        self.flops_per_token = flops_per_token(model_cfg, cfg.seq_len)
        self.state = None
        self.restored_from = "checkpoint"
        self._compiled = None
        self.log: MetricsLog | None = None
        self.teacher = distill.load_teacher(self) if cfg.distill else None     # frozen, not in the state

    @property
    def checkpointer(self) -> Checkpointer:
        """Opened on first use: a standby trainer (train/supervise.py) compiles before it may
        touch the run dir (opening the manager cleans up a live run's temporaries)."""
        if self._checkpointer is None:
            self._checkpointer = Checkpointer(os.path.join(self.run_dir, "checkpoints"), keep=self.cfg.checkpoint.keep,
                                              async_save=self.cfg.checkpoint.async_save,
                                              keep_period=self.cfg.checkpoint.keep_period)
        return self._checkpointer

    @contextlib.contextmanager
    def phase(self, name: str):
        """Time a non-step part of the run for the hooks (goodput accounting)."""
        t0 = time.time()
        try:
            yield
        finally:
            for h in self.hooks:
                h.on_phase(self, name, t0, time.time() - t0)

    # -- state ---------------------------------------------------------------------------
    def _init_state(self, key):
        pkey, rkey = jax.random.split(key)
        params = init_params(self.model_cfg, pkey, self.param_dtype)
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": self.tx.init(params), "rng": rkey}

    def init_or_restore(self) -> int:
        for h in self.hooks:              # e.g. an in-memory replica, or checksum-verified checkpoints
            step = h.restore(self)
            if step is not None:
                return step
        latest = self.checkpointer.latest_step()
        if latest is None and self.init_from:
            return self._warm_start()
        if latest is not None and self.init_from:
            say(f"note: {self.run_dir} has its own checkpoint (step {latest}): resuming it; --init-from is ignored")
        if latest is None:
            self.init_fresh()
            return 0
        self.restore_checkpoint(latest)
        return int(latest)

    def init_fresh(self) -> None:
        self.state = jax.jit(self._init_state, out_shardings=self.state_sharding)(jax.random.PRNGKey(self.cfg.seed))

    def restore_checkpoint(self, latest: int) -> None:
        data_state, meta = self.checkpointer.read_json(latest)        # check before loading the state
        if meta.get("config_fingerprint") != self.cfg.fingerprint():
            raise ConfigError(f"{self.run_dir} holds a run with a different config (fingerprint "
                              f"{meta.get('config_fingerprint')} != {self.cfg.fingerprint()}); use --fresh or another --run-dir")
        if meta.get("steps") != self.cfg.steps:
            say(f"note: the checkpointed run was planned for {meta.get('steps')} steps, now {self.cfg.steps}: "
                "the learning-rate schedule changes from here")
        saved = data_state["train"]
        if saved["fingerprint"] != self.train_source.fingerprint:
            raise DataError(f"{self.run_dir}: the data source changed since the checkpoint (fingerprint "
                            f"{saved['fingerprint']} != {self.train_source.fingerprint}); use --fresh to restart")
        self.state = self.checkpointer.restore(latest, self.abstract_state)[0]
        self.train_source.set_state(saved["state"])
        self.restored_from = "checkpoint"

    #: ModelConfig fields that fix the parameter shapes (a warm start needs them equal)
    SHAPE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                    "tie_embeddings", "scan_layers")

    def _warm_start(self) -> int:
        """``--init-from RUN_DIR``: a new run starts from another run's latest checkpoint —
        step, parameters, optimizer state and rng — while its config and data source may
        differ (a staged-mixture ablation trains stage 2 under many mixtures from one
        stage-1 checkpoint).  Unlike a resume, the config and data fingerprints are not
        required to match; the parameter shapes are, and the data source must be able to
        continue the saved position (``warm_start(state)``: the mixture loader accepts it
        only when the stages already trained on are planned identically in the new
        mixture, so the run equals one trained on the new mixture from the start).  The
        learning-rate schedule is this run's, evaluated from the restored step.  The run
        then checkpoints into its own run dir, and reruns resume from there."""
        src = self.init_from
        ck_dir = os.path.join(src, "checkpoints") if os.path.isdir(os.path.join(src, "checkpoints")) else src
        if not os.path.isdir(ck_dir):
            raise ConfigError(f"--init-from {src}: no such run or checkpoint directory")
        ck = Checkpointer(ck_dir, read_only=True)
        try:
            step = ck.latest_step()
            if step is None:
                raise ConfigError(f"--init-from {src}: no checkpoint in {ck_dir}")
            data_state, meta = ck.read_json(step)
            got, want = meta.get("model") or {}, self.model_cfg.model_dump(mode="json")
            diff = [f"{k} {got.get(k)} != {want.get(k)}" for k in self.SHAPE_FIELDS if got.get(k) != want.get(k)]
            if diff:
                raise ConfigError(f"--init-from {src}: the checkpoint's model has other shapes ({', '.join(diff)})")
            if step >= self.cfg.steps:
                raise ConfigError(f"--init-from {src}: its checkpoint is at step {step}, but this run has only "
                                  f"{self.cfg.steps} steps")
            warm = getattr(self.train_source, "warm_start", None)
            if warm is None:
                raise DataError(f"--init-from: data kind {self.cfg.data.kind!r} cannot continue another run's data "
                                "position (mixture sources can)")
            try:
                warm(data_state["train"]["state"])
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"--init-from {src}: {str(e).splitlines()[0]}") from None
            self.state = ck.restore(step, self.abstract_state)[0]
        finally:
            ck.close()
        self.warm_started = (os.path.abspath(ck_dir), int(step))
        say(f"warm start from {ck_dir} step {step}: parameters, optimizer state and step restored; "
            f"data continues at the same position under this run's data source")
        return int(step)

    # -- the step ------------------------------------------------------------------------
    def _loss_terms(self, params, batch, denom, teacher=None):
        if teacher is not None:
            return distill.loss_terms(self, params, teacher, batch, denom)
        nll = self._nll(params, batch) * batch["loss_mask"]
        return nll.sum() / denom, self._per_source(nll, batch)

    def _nll(self, params, batch):
        media = {k: batch[k] for k in MEDIA_KEYS if k in batch}
        return sequence_nll(params, self.model_cfg, batch["inputs"], batch["segment_ids"], batch["positions"],
                            batch["targets"], compute_dtype=self.compute_dtype, shard=self.shard,
                            attn_impl=self.attn_impl, **({"media": media} if media else {}))

    def _per_source(self, nll, batch):
        n = len(self.source_names)
        if "source_ids" not in batch or n == 1:
            return nll.sum()[None], batch["loss_mask"].sum()[None]
        onehot = jax.nn.one_hot(batch["source_ids"], n, dtype=jnp.float32)
        return (jnp.einsum("bl,bls->s", nll, onehot), jnp.einsum("bl,bls->s", batch["loss_mask"], onehot))

    def _make_step(self, media: bool = False):
        accum = self.cfg.grad_accum

        def step_fn(state, batch, *teacher):
            params = state["params"]
            denom = jnp.maximum(batch["loss_mask"].sum(), 1.0)
            grad_fn = jax.value_and_grad(self._loss_terms, has_aux=True)
            if accum == 1:
                (loss, src), grads = grad_fn(params, batch, denom, *teacher)
            else:
                # [B, L] -> [accum, B/accum, L], keeping each device's rows on that device
                micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1),
                                     batch)

                def body(carry, mb):
                    (l, s), g = grad_fn(params, mb, denom, *teacher)
                    return jax.tree.map(jnp.add, carry, (l, s, g)), None

                zeros = (jnp.zeros((), jnp.float32), (jnp.zeros(len(self.source_names)),) * 2,
                         jax.tree.map(jnp.zeros_like, params))
                (loss, src, grads), _ = jax.lax.scan(body, zeros, micro)
            updates, opt_state = self.tx.update(grads, state["opt_state"], params)
            new_state = {"step": state["step"] + 1, "params": optax.apply_updates(params, updates),
                         "opt_state": opt_state, "rng": state["rng"]}
            metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": self.schedule(state["step"]),
                       "tokens": batch["loss_mask"].sum(), "src_sum": src[0], "src_count": src[1]}
            if teacher:
                metrics.update(distill.kd_metrics(self, loss, src, denom))
            return new_state, metrics

        batch_sh = {k: self.batch_sharding for k in ("inputs", "targets", "segment_ids", "positions", "loss_mask",
                                                     "source_ids") + (MEDIA_KEYS if media else ())}
        rep = replicated(self.mesh)
        teacher_sh = (self.teacher.shardings,) if self.teacher else ()
        return jax.jit(step_fn, in_shardings=(self.state_sharding, batch_sh, *teacher_sh),
                       out_shardings=(self.state_sharding, rep), donate_argnums=0), batch_sh

    def _teacher_args(self) -> tuple:
        return (self.teacher.params,) if self.teacher else ()

    def _make_eval(self):
        def eval_fn(params, batch):
            return self._per_source(self._nll(params, batch) * batch["loss_mask"], batch)
        return jax.jit(eval_fn)

    def _with_sources(self, batch: dict) -> dict:
        if "source_ids" not in batch:
            batch = {**batch, "source_ids": np.zeros_like(batch["inputs"])}
        return batch

    # -- records ---------------------------------------------------------------------------
    def _losses_by_source(self, sums, counts) -> dict[str, float]:
        out = {}
        if len(self.source_names) > 1:
            for name, s, c in zip(self.source_names, np.asarray(sums), np.asarray(counts)):
                if c > 0:
                    out[f"loss/{name}"] = float(s / c)
        return out

    def evaluate(self, step: int) -> dict | None:
        if self.cfg.eval.batches == 0:
            return None
        src = self._val_factory()
        sums = counts = None
        for i in range(self.cfg.eval.batches):
            b = self._with_sources(src.next_batch())
            if i == 0:
                validate_batch(b, self.cfg.batch_size, self.cfg.seq_len, self.model_cfg.vocab_size)
            s, c = self._eval_fn(self.state["params"], put_batch(b, self.batch_sharding))
            s, c = np.asarray(s, np.float64), np.asarray(c, np.float64)
            sums, counts = (s, c) if sums is None else (sums + s, counts + c)
        rec = {"kind": "eval", "step": step, "loss": float(sums.sum() / max(counts.sum(), 1.0))}
        rec.update(self._losses_by_source(sums, counts))
        self.log.write(rec)
        return rec

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, mc = self.cfg, self.model_cfg
        with self.phase("restore"):
            start = self.init_or_restore()
        resumed = start > 0 and self.warm_started is None
        self.log = MetricsLog(self.run_dir, start if resumed else None, tensorboard=cfg.log.tensorboard)
        n_dev = self.mesh.size
        peak, peak_how = peak_flops_per_device(cfg.log.peak_flops)
        # MFU denominator: the peak of all devices; simulated CPU devices share the same cores
        self.peak = peak * (1 if jax.default_backend() == "cpu" else n_dev)
        # a measured CPU peak is re-measured at every pause and the best kept (shared machines drift)
        self._remeasure_peak = jax.default_backend() == "cpu" and not cfg.log.peak_flops
        header = [describe(mc, cfg.seq_len),
                  f"preset {cfg.preset} ({self.why})",
                  f"devices: {n_dev} x {jax.devices()[0].device_kind} ({jax.default_backend()}); mesh "
                  + " x ".join(f"{k}={v}" for k, v in self.mesh.shape.items()),
                  f"batch {cfg.batch_size} x seq {cfg.seq_len} = {cfg.batch_size * cfg.seq_len:,} tokens/step"
                  + (f" in {cfg.grad_accum} micro-batches" if cfg.grad_accum > 1 else "")
                  + f"; {cfg.steps} steps; attention {self.attn_impl}; compute {cfg.precision.compute_dtype}, "
                  f"master weights {cfg.precision.param_dtype}; remat {mc.remat}",
                  f"data: {cfg.data.kind} (sources: {', '.join(self.source_names)})",
                  f"MFU peak: {peak / 1e12:.3f} TFLOP/s per device ({peak_how}); model FLOPs/token "
                  f"{self.flops_per_token / 1e6:.2f}M (6N + causal attention, see model/config.py)",
                  f"run dir: {self.run_dir}"]
        if self.multimodal:
            mm = mc.multimodal
            header.insert(5, f"media encoders: images / video frames as {mm.patch_size}px patches ({mm.image_encoder}"
                             f"{f', {mm.vit_layers} layers' if mm.vit_layers else ''}), audio as {mm.frames_per_token} x "
                             f"10 ms log-mel frames per token; {count_params(mc)['media']:,} params (not in the MFU FLOPs)")
        for h in header:
            say(h)
        layout = {jax.tree_util.keystr(path): str(sh.spec) for path, sh in
                  jax.tree_util.tree_leaves_with_path(self.state_sharding["params"])}
        self.log.write({"kind": "run", "event": "resume" if resumed else "warm_start" if self.warm_started else "start",
                        "step": start, "time": time.time(), "header": header, "param_layout": layout,
                        **({"init_from": self.warm_started[0]} if self.warm_started else {})})
        if start >= cfg.steps:
            say(f"training is complete (checkpoint step {start}); redoing the probes, plots and report")
        elif resumed:
            say(f"resumed from {self.restored_from} step {start}")
        for h in self.hooks:
            h.on_start(self)

        self._eval_fn = self._make_eval()
        with self.phase("compile"):
            # multimodal: one program per media budget, compiled at its first batch (_step_for)
            compiled = self.compile_step() if start < cfg.steps and not self.multimodal else None
        if (start == 0 or self.warm_started) and cfg.eval.batches:
            with self.phase("eval"):
                self.evaluate(start)
        while start < cfg.steps:
            try:
                self._train_loop(start, compiled)
                break
            except Rollback as rb:       # a hook put an earlier state back (loss spike / NaN guard)
                start = rb.step
                self.log.close()
                self.log = MetricsLog(self.run_dir, start, tensorboard=cfg.log.tensorboard)
        with self.phase("end"):
            self.checkpointer.wait()
            final = int(self.state["step"])
            if cfg.probes.enabled:
                self.run_probes(final)
            if cfg.log.plots:
                plot_run(self.run_dir)
            summarize(self.run_dir, header)
            summary = run_summary(self.run_dir, final, cfg.fingerprint())
        for h in self.hooks:
            h.on_end(self)
        self.log.close()
        self.checkpointer.close()
        say(f"done: report {os.path.join(self.run_dir, 'report.md')}, metrics {self.log.path}")
        return summary

    def compile_step(self):
        """Compile the train step ahead of time (from shapes only).  If cuDNN flash
        attention (picked by ``attention: auto`` on GPUs) refuses this shape or version,
        fall back to the XLA / chunked path instead of failing the run.  Compiled once per
        trainer (from the abstract state when no state is in place yet: a standby trainer)."""
        if self._compiled is not None:
            return self._compiled
        cfg = self.cfg
        state = self.state if self.state is not None else self.abstract_state
        abstract_batch = {k: jax.ShapeDtypeStruct((cfg.batch_size, cfg.seq_len), dt, sharding=self.batch_sharding)
                          for k, dt in (("inputs", jnp.int32), ("targets", jnp.int32), ("segment_ids", jnp.int32),
                                        ("positions", jnp.int32), ("loss_mask", jnp.float32),
                                        ("source_ids", jnp.int32))}
        t0 = time.perf_counter()
        try:
            compiled = self._make_step()[0].lower(state, abstract_batch, *self._teacher_args()).compile()
        except Exception as e:
            if self.attn_impl != "cudnn" or self.model_cfg.attention != "auto":
                raise
            self.attn_impl = "chunked" if cfg.seq_len > 4096 else "xla"
            say(f"cuDNN attention unavailable here ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                f"using the {self.attn_impl} attention path")
            self._eval_fn = self._make_eval()
            compiled = self._make_step()[0].lower(state, abstract_batch, *self._teacher_args()).compile()
        say(f"compiled the train step in {time.perf_counter() - t0:.1f}s")
        self._compiled = compiled
        return compiled

    def _step_for(self, batch: dict):
        """The compiled step for a multimodal batch's media budget [M, F] (a few buckets)."""
        shape = batch["media_patches"].shape[1:]
        if shape not in self._media_steps:
            abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=self.batch_sharding)
                        for k, v in batch.items()}
            t0 = time.perf_counter()
            self._media_steps[shape] = self._make_step(media=True)[0].lower(self.state, abstract, *self._teacher_args()).compile()
            say(f"compiled the train step for media budget {shape[0]} in {time.perf_counter() - t0:.1f}s")
        return self._media_steps[shape]

    def _train_loop(self, start: int, compiled) -> None:
        cfg = self.cfg
        first = self._with_sources(self.train_source.next_batch())
        validate_batch(first, cfg.batch_size, cfg.seq_len, self.model_cfg.vocab_size)
        say(f"training steps {start + 1}..{cfg.steps}")
        tokens_per_step = cfg.batch_size * cfg.seq_len
        pending: list[tuple[int, Any]] = []
        last_t = [time.perf_counter()]
        times: list[float] = []
        timed_ok = [False]

        def drain():
            while pending:
                step, m = pending.pop(0)
                m = jax.device_get(m)
                now = time.perf_counter()
                dt = now - last_t[0] if timed_ok[0] else None
                last_t[0], timed_ok[0] = now, True
                rec = {"kind": "train", "step": step, "loss": float(m["loss"]), "grad_norm": float(m["grad_norm"]),
                       "lr": float(m["lr"]), "tokens": int(m["tokens"])}
                rec.update(self._losses_by_source(m["src_sum"], m["src_count"]))
                distill.add_to_record(rec, m)
                if dt:
                    times.append(dt)
                    rec["step_time_s"] = dt
                    rec["tokens_per_s"] = tokens_per_step / dt
                    rec["mfu"] = (self.flops_per_token * tokens_per_step / dt / self.peak) if self.peak else None
                    rec["peak_flops"] = self.peak
                self.log.write(rec)
                for h in self.hooks:     # first: a guard hook may roll back (raises Rollback)
                    h.on_step(self, step, rec)
                if not math.isfinite(rec["loss"]):
                    raise FloatingPointError(f"loss is {rec['loss']} at step {step}; stopping")
                if step % cfg.log.every == 0 or step == cfg.steps:
                    recent = times[-cfg.log.every:]
                    speed = ""
                    if recent:
                        dt_med = float(np.median(recent))
                        speed = (f" | {tokens_per_step / dt_med:,.0f} tok/s"
                                 + (f", MFU {100 * self.flops_per_token * tokens_per_step / dt_med / self.peak:.1f}%"
                                    if self.peak else "")
                                 + f" | ETA {_fmt_time(dt_med * (cfg.steps - step))}")
                    say(f"step {step:>6}/{cfg.steps} | loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | "
                        f"gnorm {rec['grad_norm']:.3f}{speed}")

        batch = first
        for step in range(start, cfg.steps):
            if step > start:
                batch = self._with_sources(self.train_source.next_batch())
                validate_batch(batch, cfg.batch_size, cfg.seq_len, self.model_cfg.vocab_size)
            step_fn = compiled
            if self.multimodal:
                n_programs = len(self._media_steps)
                step_fn = self._step_for(batch)
                if len(self._media_steps) != n_programs:
                    timed_ok[0] = False  # a compile is not a step time
            self.state, metrics = step_fn(self.state, put_batch(batch, self.batch_sharding), *self._teacher_args())
            for h in self.hooks:
                h.on_state(self, step + 1)
            drain()                      # the previous step's metrics: keeps one step in flight
            pending.append((step + 1, metrics))
            done = step + 1
            do_eval = done % cfg.eval.every == 0 or done == cfg.steps
            do_ckpt = done % cfg.checkpoint.every == 0 or done == cfg.steps
            if do_eval or do_ckpt:
                drain()
                if do_eval:
                    with self.phase("eval"):
                        self.evaluate(done)
                if do_ckpt:
                    with self.phase("checkpoint"):
                        self.save(done)
                if self._remeasure_peak:
                    with self.phase("peak"):
                        self.peak = max(self.peak, measure_cpu_matmul_peak(repeats=3))
                timed_ok[0] = False      # the pause is not a step time
        drain()

    def save(self, step: int) -> None:
        data_state = {"train": {"fingerprint": self.train_source.fingerprint, "state": self.train_source.get_state()}}
        meta = {"config_fingerprint": self.cfg.fingerprint(), "preset": self.cfg.preset, "steps": self.cfg.steps,
                "model": self.model_cfg.model_dump(mode="json"), "jax": jax.__version__,
                "data": self.cfg.data.model_dump(mode="json"), "seq_len": self.cfg.seq_len,
                "batch_size": self.cfg.batch_size, "eval_batches": self.cfg.eval.batches}
        self.checkpointer.save(step, self.state, data_state, meta)
        for h in self.hooks:
            h.on_checkpoint(self, step)

    # -- probes ------------------------------------------------------------------------------
    def run_probes(self, step: int) -> None:
        cfg, mc = self.cfg, self.model_cfg
        params = self.state["params"]

        @jax.jit
        def logits_fn(params, tokens, seg, pos):
            return forward(params, mc, tokens, seg, pos, compute_dtype=self.compute_dtype, shard=self.shard,
                           attn_impl=self.attn_impl)

        nll_fn = jax.jit(self._nll)

        if cfg.probes.nll_docs:
            rows = cfg.batch_size
            n_batches = max(1, math.ceil(cfg.probes.nll_docs / rows))
            src = self._long_documents(rows)
            batches = [src.next_batch() for _ in range(n_batches)]
            rec = probes.nll_by_position(lambda b: nll_fn(params, put_batch(b, self.batch_sharding)), batches,
                                         cfg.seq_len)
            rec["step"] = step
            self.log.write(rec)
            say("NLL by position: " + ", ".join(f"[{a},{b}) {v:.3f}" for a, b, v in
                                                 zip(rec["bucket_start"], rec["bucket_end"], rec["nll"])))
        lengths = cfg.probes.kv_lengths or [2 ** k for k in range(5, 30) if 2 ** k <= 2 * cfg.seq_len]
        rec = probes.kv_retrieval(lambda t, s, p: logits_fn(params, t, s, p), mc.vocab_size, lengths,
                                  pairs=cfg.probes.kv_pairs, trials=cfg.probes.kv_trials)
        rec.update(step=step, train_seq_len=cfg.seq_len)
        self.log.write(rec)
        say("key-value retrieval accuracy: " + ", ".join(f"{n}: {a:.2f}" for n, a in zip(rec["lengths"], rec["accuracy"]))
            + f" (chance {rec['chance']:.3f})")

    def _long_documents(self, rows: int) -> BatchSource:
        """Held-out long documents: one full-length synthetic document per row, or the
        validation split of the configured data."""
        if self.cfg.data.kind == "synthetic":
            opts = {k: v for k, v in self.cfg.data.options.items() if k == "weights"}
            return SyntheticSource(rows, self.cfg.seq_len, self.model_cfg.vocab_size, seed=self.cfg.data.seed,
                                   split="probe", min_doc=self.cfg.seq_len + 1, **opts)
        return self._val_factory()


def with_media_encoders(model_cfg: ModelConfig, spec: dict[str, int]) -> ModelConfig:
    """``model_cfg`` with ``multimodal`` set for data that needs ``spec`` (patch size,
    mel bins, frames per audio token): values the user set must agree, the others are
    taken from the data."""
    from model.config import MultimodalConfig

    mm = model_cfg.multimodal
    if mm is None:
        mm = MultimodalConfig(**spec)
    else:
        bad = [f"{k}={getattr(mm, k)} (the data needs {v})" for k, v in spec.items()
               if k in mm.model_fields_set and getattr(mm, k) != v]
        if bad:
            raise ConfigError(f"model.multimodal {', '.join(bad)}: the corpus costed its media with these settings")
        mm = mm.model_copy(update=spec)
    return model_cfg.model_copy(update={"multimodal": mm})


def fresh_run_dir(run_dir: str) -> None:
    """--fresh: forget checkpoints and metrics of a previous run in this directory."""
    for name in ("checkpoints", "metrics.jsonl", "tb", "plots", "report.md", "summary.json",
                 # train/resilience.py: checksums, events, replay records, fault schedule, replica ids
                 "checksums", "resilience.jsonl", "replay", "faults.json", "replica", "corrupt"):
        p = os.path.join(run_dir, name)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)


def main(argv: list[str] | None = None) -> int:
    from train.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
