"""MFU of the trainer's step, side by side with the hardware peak (and, on CPU, a plain
flax + optax step of the same shape).

    python bench/bench_mfu.py                  # CPU: the `cpu` preset; GPU: `base-1b` in bf16
    python bench/bench_mfu.py --preset depth:8 --batch 8 --seq 512 --steps 5

MFU = model FLOPs per step / step time / peak FLOP/s, with model FLOPs from
model/config.py (6 x matmul params + causal attention, remat not counted).
Peak: on CPU the best float32 2048x2048 jnp.dot measured in this same run (interleaved with
the step timings, because a shared machine's speed drifts); on GPU the bf16 dense
datasheet peak (H100/H200 SXM: 989 TFLOP/s).

Each step is the real jitted train step (forward, loss, backward, clipping, AdamW) on
device-resident batches; the time is the best of several repeats of ``--steps`` steps.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

# GPU: let XLA use most of the card (the default preallocates 75%)
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from model.config import ModelConfig, describe, flops_per_token, load_preset  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.data import SyntheticSource  # noqa: E402
from train.metrics import PEAK_BF16, measure_cpu_matmul_peak  # noqa: E402
from train.sharding import put_batch  # noqa: E402
from train.trainer import Trainer  # noqa: E402


def trainer_step(mc: ModelConfig, batch: int, seq: int, dtype: str, run_dir: str):
    """(compiled step, state, device batches) of the real trainer."""
    cfg = TrainConfig(preset=mc.name, batch_size=batch, seq_len=seq, steps=1000, run_dir=run_dir,
                      precision={"compute_dtype": dtype}, log={"tensorboard": False})
    # one document per row: the long-context layout, and valid for every attention path
    src = SyntheticSource(batch, seq, vocab_size=mc.vocab_size, seed=0, min_doc=seq + 1)
    t = Trainer(cfg, mc, train_source=src)
    t.init_or_restore()
    compiled = t.compile_step()          # falls back from cuDNN attention if it cannot take the shape
    batches = [put_batch(t._with_sources(src.next_batch()), t.batch_sharding) for _ in range(2)]
    return compiled, t.state, batches, t.attn_impl


def flax_step(mc: ModelConfig, batch: int, seq: int):
    """A plain flax.linen + optax step of the same shape: the usual way to write it
    (Dense layers, a Python loop over layers, flax's dot_product_attention, no scan, no
    donation).  Same architecture and FLOPs as the trainer's model."""
    import flax.linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, mask, sin, cos):
            def rope(t):
                t1, t2 = jnp.split(t, 2, axis=-1)
                return jnp.concatenate([t1 * cos - t2 * sin, t2 * cos + t1 * sin], axis=-1)
            h = nn.RMSNorm()(x)
            q = rope(nn.DenseGeneral((mc.n_heads, mc.head_dim), use_bias=False)(h))
            k = rope(nn.DenseGeneral((mc.n_kv_heads, mc.head_dim), use_bias=False)(h))
            v = nn.DenseGeneral((mc.n_kv_heads, mc.head_dim), use_bias=False)(h)
            rep = mc.n_heads // mc.n_kv_heads
            a = nn.dot_product_attention(q, jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2), mask=mask)
            x = x + nn.DenseGeneral(mc.d_model, axis=(-2, -1), use_bias=False)(a)
            h = nn.RMSNorm()(x)
            g = nn.silu(nn.Dense(mc.d_ff, use_bias=False)(h)) * nn.Dense(mc.d_ff, use_bias=False)(h)
            return x + nn.Dense(mc.d_model, use_bias=False)(g)

    class LM(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            emb = nn.Embed(mc.vocab_size, mc.d_model)
            x = emb(tokens)
            mask = nn.make_causal_mask(tokens)
            pos = jnp.arange(tokens.shape[1], dtype=jnp.float32)
            freqs = mc.rope_theta ** (-jnp.arange(0, mc.head_dim, 2, dtype=jnp.float32) / mc.head_dim)
            ang = (pos[:, None] * freqs)[None, :, None, :]
            for _ in range(mc.n_layers):
                x = Block()(x, mask, jnp.sin(ang), jnp.cos(ang))
            return emb.attend(nn.RMSNorm()(x))

    model = LM()
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, mc.vocab_size, (batch, seq + 1)), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), tokens[:, :-1])
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, b2=0.95, weight_decay=0.1))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, tokens):
        def loss_fn(p):
            logits = model.apply(p, tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    t0 = time.perf_counter()
    compiled = step.lower(params, opt, tokens).compile()
    print(f"  compiled flax baseline step in {time.perf_counter() - t0:.1f}s", flush=True)
    return compiled, (params, opt), tokens


def time_ours(compiled, state, batches, steps):
    t0 = time.perf_counter()
    for i in range(steps):
        state, m = compiled(state, batches[i % len(batches)])
    jax.block_until_ready(m)
    return (time.perf_counter() - t0) / steps, state


def time_flax(compiled, carry, tokens, steps):
    params, opt = carry
    t0 = time.perf_counter()
    for _ in range(steps):
        params, opt, loss = compiled(params, opt, tokens)
    jax.block_until_ready(loss)
    return (time.perf_counter() - t0) / steps, (params, opt)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=None, help="default: cpu on CPU, base-1b on GPU/TPU")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="steps per timing repeat")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-flax", action="store_true", help="skip the flax baseline (CPU)")
    ap.add_argument("--attention", default=None, help="override the attention implementation")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                    help="compute dtype (default: float32 on CPU, bfloat16 on accelerators)")
    ap.add_argument("--remat", choices=("none", "full", "dots"), default=None, help="override the preset's remat")
    ap.add_argument("--document-mask", choices=("on", "off"), default=None,
                    help="mask at document boundaries (default: on for CPU, as in training; off on GPU, where the "
                         "benchmark rows hold one document each and cuDNN then runs its causal flash kernel)")
    args = ap.parse_args()

    backend = jax.default_backend()
    dev = jax.devices()[0]
    cpu = backend == "cpu"
    preset = load_preset(args.preset or ("cpu" if cpu else "base-1b"))
    mc = preset.model
    if args.attention:
        mc = mc.model_copy(update={"attention": args.attention})
    doc_mask = (args.document_mask or ("on" if cpu else "off")) == "on"
    mc = mc.model_copy(update={"document_mask": doc_mask})
    batch = args.batch or (preset.run.get("batch_size", 8) if cpu else 8)
    seq = args.seq or preset.run.get("seq_len", 512)
    steps = args.steps or (3 if cpu else 10)
    repeats = args.repeats or (5 if cpu else 3)
    dtype = args.dtype or ("float32" if cpu else "bfloat16")
    if args.remat:
        mc = mc.model_copy(update={"remat": args.remat})
    n_dev = len(jax.devices())
    fpt = flops_per_token(mc, seq)
    step_flops = fpt * batch * seq
    print(f"backend {backend}: {n_dev} x {dev.device_kind}; {describe(mc, seq)}")
    print(f"batch {batch} x seq {seq}, compute {dtype}, remat {mc.remat}, document mask {'on' if doc_mask else 'off'} "
          f"(one document per row); {step_flops / 1e9:.1f} GFLOP per step (6N + causal attention; "
          f"model/config.py)", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ours = trainer_step(mc, batch, seq, dtype, tmp)
        compiled, state, batches, impl = ours
        state = compiled(state, batches[0])[0]                         # warm-up
        base = flax_step(mc, batch, seq) if cpu and not args.no_flax else None
        if base:
            carry = time_flax(base[0], base[1], base[2], 1)[1]
        best = {"peak": 0.0, "ours": float("inf"), "flax": float("inf")}
        for r in range(repeats):
            if cpu:
                best["peak"] = max(best["peak"], measure_cpu_matmul_peak(repeats=6))
            dt, state = time_ours(compiled, state, batches, steps)
            best["ours"] = min(best["ours"], dt)
            if base:
                dtf, carry = time_flax(base[0], carry, base[2], steps)
                best["flax"] = min(best["flax"], dtf)
            print(f"  repeat {r + 1}/{repeats}: corpusforge {dt * 1e3:.0f} ms/step"
                  + (f", flax {dtf * 1e3:.0f} ms/step" if base else "")
                  + (f", matmul peak {best['peak'] / 1e9:.0f} GFLOP/s" if cpu else ""), flush=True)

    if cpu:
        peak, how = best["peak"], "measured float32 2048x2048 jnp.dot (best of run)"
        rows.append(("float32 matmul 2048^2 (peak)", None, None, peak, 1.0))
    else:
        kind = dev.device_kind.lower()
        key = next((k for k in sorted(PEAK_BF16, key=len, reverse=True) if k in kind), None)
        peak = PEAK_BF16[key] * n_dev if key else 0.0
        how = f"{dev.device_kind} bf16 dense datasheet peak x {n_dev}" if key else "unknown device peak"
    for name, dt in ((f"corpusforge train step ({impl} attention)", best["ours"]),
                     ("plain flax + optax step", best["flax"])):
        if dt == float("inf"):
            continue
        fl = step_flops / dt
        rows.append((name, dt, batch * seq / dt, fl, fl / peak if peak else float("nan")))

    stats = {}
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # not every backend reports memory
        pass
    if stats.get("peak_bytes_in_use"):
        print(f"\npeak device memory in use: {stats['peak_bytes_in_use'] / 2 ** 30:.1f} GiB"
              + (f" of {stats['bytes_limit'] / 2 ** 30:.1f} GiB" if stats.get("bytes_limit") else ""))
    print(f"\nMFU against {how}: {peak / 1e12:.3f} TFLOP/s\n")
    print(f"| {'what':44s} | {'ms/step':>8s} | {'tokens/s':>10s} | {'TFLOP/s':>8s} | {'MFU':>6s} |")
    print(f"|{'-' * 46}|{'-' * 9}:|{'-' * 11}:|{'-' * 9}:|{'-' * 7}:|")
    for name, dt, tps, fl, mfu in rows:
        print(f"| {name:44s} | {'' if dt is None else f'{dt * 1e3:.1f}':>8s} | "
              f"{'' if tps is None else f'{tps:,.0f}':>10s} | {fl / 1e12:8.4f} | {100 * mfu:5.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
