"""Generation throughput: KV cache vs recomputing the prefix, float vs int4 weights.

    python bench/bench_generate.py                                  # the cpu preset's shape, random weights
    python bench/bench_generate.py --checkpoint runs/nano/teacher   # a trained run (and its int4 export)
    python bench/bench_generate.py --preset tiny --batch 1 8 --new 128

Greedy decoding of ``--new`` tokens after a ``--prompt-len`` prompt, for each batch
size; every configuration runs once to compile and is then timed (median of
``--repeats``).  "recompute" runs the training forward pass over the whole prefix at
every step (lengths bucketed by 32).  tokens/s counts generated tokens of all rows.
The int4 rows dequantize weights inside the forward pass (weight-only quantization:
smaller weights, same matmuls; without int4 matmul kernels, as on CPU, that costs time:
int4 buys disk and memory, not speed); also printed: the KV cache size with multi-query
attention against the multi-head equivalent, and the tokens agreeing between modes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--checkpoint", default=None, help="a run dir (overrides --preset)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from model.config import count_params, human, load_preset
    from model.decode import cache_bytes, generate
    from model.quant import QuantConfig, QuantizedModel
    from model.transformer import init_params

    if a.checkpoint:
        from train.model_io import load_params
        loaded = load_params(a.checkpoint)
        cfg, params, what = loaded.model_cfg, loaded.params, f"{a.checkpoint} step {loaded.step}"
    else:
        cfg = load_preset(a.preset).model
        params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.PRNGKey(0))
        what = f"preset {a.preset}, random weights"
    qm = QuantizedModel.from_params(params, cfg, QuantConfig(group_size=a.group_size))
    up, ul, dq = qm.unpackers()
    qparams = qm.device_arrays()
    sizes = qm.nbytes()
    print(f"model: {cfg.name} ({human(count_params(cfg)['total'])} params, {cfg.n_layers} layers, d_model {cfg.d_model}, "
          f"{cfg.n_heads} heads, {cfg.attention_kind}) — {what}; {jax.devices()[0].device_kind}, "
          f"{os.cpu_count()} cores")
    print(f"weights: fp32 {4 * sizes['params']:,} B, bf16 {2 * sizes['params']:,} B, int4 (g{a.group_size}, "
          f"embedding bf16) {sizes['total_bytes']:,} B")
    print(f"greedy, prompt {a.prompt_len} tokens, {a.new} new tokens per row; median of {a.repeats} after a "
          "compile run\n")

    rng = np.random.default_rng(0)
    rows = []
    for b in a.batch:
        prompts = [list(map(int, rng.integers(4, cfg.vocab_size, a.prompt_len))) for _ in range(b)]
        results = {}
        for weights in ("float", "int4"):
            for cache in (True, False):
                kw = dict(max_new_tokens=a.new, use_cache=cache)
                if weights == "int4":
                    kw.update(unpack=up, unpack_layer=ul, dequantize=dq)
                p = params if weights == "float" else qparams
                generate(p, cfg, prompts, **kw)                     # compile
                times, res = [], None
                for _ in range(a.repeats):
                    t = time.perf_counter()
                    res = generate(p, cfg, prompts, **kw)
                    times.append(time.perf_counter() - t)
                dt = statistics.median(times)
                results[weights, cache] = (res, dt)
        for weights in ("float", "int4"):
            base = results[weights, False][1]
            for cache in (True, False):
                res, dt = results[weights, cache]
                same = sum(x == y for r1, r2 in zip(res.tokens, results["float", True][0].tokens)
                           for x, y in zip(r1, r2)) / (b * a.new)
                rows.append([str(b), weights, "KV cache" if cache else "recompute", f"{res.new_tokens}",
                             f"{dt:.3f}", f"{res.new_tokens / dt:,.1f}", f"{base / dt:.1f}x",
                             f"{100 * same:.0f}%"])
        kv = cache_bytes(cfg, b, a.prompt_len + a.new)
        mha = cache_bytes(cfg, b, a.prompt_len + a.new, kv_heads=cfg.n_heads)
        print(f"batch {b}: KV cache {kv / 1024:,.1f} KiB ({cfg.attention_kind}); a multi-head cache would be "
              f"{mha / 1024:,.1f} KiB ({mha // kv}x)")

    headers = ["batch", "weights", "mode", "new tokens", "seconds", "tokens/s", "vs recompute", "= float+cache"]
    w = [max(len(r[i]) for r in rows + [headers]) for i in range(len(headers))]
    print()
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(headers)))
    print("  ".join("-" * x for x in w))
    for r in rows:
        print("  ".join(c.ljust(w[i]) if i < 3 else c.rjust(w[i]) for i, c in enumerate(r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
