"""Autoregressive decoding: a KV-cached forward pass, sampling, and the generation loop.

**Cache.**  ``{"k", "v"}: [n_layers, B, S, n_kv_heads, head_dim]`` for ``S`` = prompt +
new tokens.  With multi-query attention (``n_kv_heads = 1``) it is ``n_heads`` times
smaller than a multi-head cache (``cache_bytes``): the report's reason for MQA on
device.

**Batching.**  Prompts of different lengths are left-padded to a common length ``P``;
row ``b`` has ``pad[b]`` padding slots that no query ever attends to, and its RoPE
positions start at 0 on its first real token, so a row generates exactly what it
would alone.  Every row then advances one token per step at the same cache index.

**Two ways to get the next token's logits**, which must agree:

* ``forward_cached``: the new tokens' keys and values are written into the cache at
  ``start``; queries attend over the cache (``[0, start + t]``, minus the row's
  padding).  Prefill runs the whole prompt through it once; each decode step then
  costs one token.
* recompute: ``model.transformer.forward`` (the training forward pass) over the whole
  prefix at every step (``generate(..., use_cache=False)``).  Lengths are rounded up
  to a multiple of ``bucket`` so only a few shapes compile; the causal mask makes the
  slots after the prefix irrelevant.

The layer math of ``forward_cached`` mirrors ``model.transformer.block`` (same norms,
projections, RoPE, gated MLP); tests check both paths give the same logits (fp32,
1e-4) and the same greedy tokens.

**Weights.**  ``unpack(params)`` / ``unpack_layer(layer)`` map the stored parameters
to float weights: identity casts for a float checkpoint, int4 dequantization for a
``model.quant.QuantizedModel`` — done per layer inside the layer loop.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from model.attention import NEG_INF
from model.config import ModelConfig
from model.transformer import forward, head, rms_norm, rope, rope_tables

Unpack = Callable[[dict], dict]


def _cast(dtype) -> Unpack:
    return lambda tree: jax.tree.map(lambda w: w.astype(dtype), tree)


# ---- the cache --------------------------------------------------------------------------

def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=jnp.float32) -> dict:
    shape = (cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def cache_bytes(cfg: ModelConfig, batch: int, length: int, dtype=jnp.float32, kv_heads: int | None = None) -> int:
    """Bytes of the K and V cache (``kv_heads`` to price another attention variant)."""
    kv = cfg.n_kv_heads if kv_heads is None else kv_heads
    return 2 * cfg.n_layers * batch * length * kv * cfg.head_dim * jnp.dtype(dtype).itemsize


def forward_cached(params: dict, cfg: ModelConfig, tokens: jax.Array, cache: dict, start, pad: jax.Array, *,
                   compute_dtype=jnp.float32, unpack: Unpack | None = None,
                   unpack_layer: Unpack | None = None) -> tuple[jax.Array, dict]:
    """Logits ``[B, T, V]`` (float32) of ``tokens [B, T]`` placed at cache slots
    ``[start, start + T)``, and the updated cache.  ``pad [B]``: left-padding slots of
    each row (never attended to; RoPE position = slot - pad)."""
    unpack = unpack or _cast(compute_dtype)
    unpack_layer = unpack_layer or _cast(compute_dtype)
    b, t = tokens.shape
    s_len = cache["k"].shape[2]
    p = unpack(params)
    x = jnp.take(p["embed"], tokens.reshape(b * t), axis=0).astype(compute_dtype)       # [B·T, D]
    slots = start + jnp.arange(t)                                                        # [T]
    positions = jnp.maximum(slots[None, :] - pad[:, None], 0)                            # [B, T]
    rope_sc = rope_tables(positions, cfg.head_dim, cfg.rope_theta)
    keys = jnp.arange(s_len)
    # [B, T, S]: causal over the cache, and never the row's padding
    mask = (keys[None, None, :] <= slots[None, :, None]) & (keys[None, None, :] >= pad[:, None, None])
    g = cfg.n_heads // cfg.n_kv_heads
    scale = 1.0 / math.sqrt(cfg.head_dim)
    act = jax.nn.silu if cfg.activation == "silu" else jax.nn.gelu

    def layer(carry, lp):
        x, ck, cv, i = carry
        w = unpack_layer(lp)
        h = rms_norm(x, w["attn_norm"], cfg.norm_eps)
        q = jnp.einsum("sd,dnh->snh", h, w["wq"]).reshape(b, t, cfg.n_heads, cfg.head_dim)
        k = jnp.einsum("sd,dkh->skh", h, w["wk"]).reshape(b, t, cfg.n_kv_heads, cfg.head_dim)
        v = jnp.einsum("sd,dkh->skh", h, w["wv"]).reshape(b, t, cfg.n_kv_heads, cfg.head_dim)
        q, k = rope(q, *rope_sc), rope(k, *rope_sc)
        ck = jax.lax.dynamic_update_slice(ck, k[None].astype(ck.dtype), (i, 0, start, 0, 0))
        cv = jax.lax.dynamic_update_slice(cv, v[None].astype(cv.dtype), (i, 0, start, 0, 0))
        kl, vl = ck[i].astype(compute_dtype), cv[i].astype(compute_dtype)                  # [B, S, K, H]
        qg = q.reshape(b, t, cfg.n_kv_heads, g, cfg.head_dim)
        sc = jnp.einsum("btkgh,bskh->bkgts", qg, kl, preferred_element_type=jnp.float32) * scale
        sc = jnp.where(mask[:, None, None], sc, NEG_INF)
        pr = jax.nn.softmax(sc, axis=-1).astype(compute_dtype)
        a = jnp.einsum("bkgts,bskh->btkgh", pr, vl).reshape(b * t, cfg.n_heads, cfg.head_dim)
        x = x + jnp.einsum("snh,nhd->sd", a, w["wo"])
        h = rms_norm(x, w["mlp_norm"], cfg.norm_eps)
        x = x + (act(h @ w["w_gate"]) * (h @ w["w_up"])) @ w["w_down"]
        return (x, ck, cv, i + 1), None

    (x, ck, cv, _), _ = jax.lax.scan(layer, (x, cache["k"], cache["v"], 0), params["layers"])
    x = rms_norm(x, p["final_norm"], cfg.norm_eps)
    return head(p, cfg, x).reshape(b, t, -1), {"k": ck, "v": cv}


# ---- sampling ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Sampling:
    """``temperature`` 0 = greedy (argmax).  ``top_k`` 0 = off; ``top_p`` 1 = off.
    Filters apply to the temperature-scaled logits: top-k keeps the k largest (and
    ties with the k-th), top-p the smallest set whose probability reaches p (the most
    likely token is always kept).  ``vocab_limit`` > 0 never picks ids >= it (a model
    whose vocabulary is padded beyond its tokenizer's)."""
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    vocab_limit: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: jax.Array, s: Sampling) -> jax.Array:
    """[B, V] float32 -> temperature-scaled logits with the filtered-out tokens at -inf."""
    x = logits.astype(jnp.float32) / s.temperature
    if s.top_k and s.top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, s.top_k)[0][:, -1:]
        x = jnp.where(x < kth, -jnp.inf, x)
    if s.top_p < 1.0:
        srt = jnp.sort(x, axis=-1)[:, ::-1]
        pr = jax.nn.softmax(srt, axis=-1)
        before = jnp.cumsum(pr, axis=-1) - pr                 # mass of the more likely tokens
        keep = before < s.top_p                               # the first is always kept
        cutoff = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
        x = jnp.where(x < cutoff, -jnp.inf, x)
    return x


def sample(logits: jax.Array, key: jax.Array, s: Sampling) -> jax.Array:
    """Next token ids [B] (int32) from logits [B, V]."""
    if 0 < s.vocab_limit < logits.shape[-1]:
        logits = jnp.where(jnp.arange(logits.shape[-1]) < s.vocab_limit, logits, -jnp.inf)
    if s.temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits, s), axis=-1).astype(jnp.int32)


# ---- generation -------------------------------------------------------------------------

@dataclass
class Generation:
    tokens: list[list[int]]                # new tokens per prompt (up to and without EOS)
    logits: np.ndarray | None = None       # [B, N, V] of every step (return_logits)
    new_tokens: int = 0                    # generated tokens, all rows (EOS counted, padding not)
    prefill_s: float = 0.0
    decode_s: float = 0.0
    stats: dict = field(default_factory=dict)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    n = max(len(p) for p in prompts)
    toks = np.full((len(prompts), n), pad_id, np.int32)
    pad = np.zeros(len(prompts), np.int32)
    for i, p in enumerate(prompts):
        toks[i, n - len(p):] = p
        pad[i] = n - len(p)
    return toks, pad


@partial(jax.jit, static_argnames=("cfg", "n_new", "compute_dtype", "unpack", "unpack_layer", "cache_dtype"))
def _prefill(params, tokens, pad, *, cfg, n_new, compute_dtype, unpack, unpack_layer, cache_dtype):
    b, p_len = tokens.shape
    cache = init_cache(cfg, b, p_len + n_new, cache_dtype)
    logits, cache = forward_cached(params, cfg, tokens, cache, 0, pad, compute_dtype=compute_dtype, unpack=unpack,
                                   unpack_layer=unpack_layer)
    return logits[:, -1], cache


@partial(jax.jit, static_argnames=("cfg", "n_new", "sampling", "eos_id", "compute_dtype", "unpack", "unpack_layer",
                                   "return_logits"))
def _decode(params, last_logits, cache, pad, key, *, cfg, n_new, sampling, eos_id, compute_dtype, unpack,
            unpack_layer, return_logits):
    """All decode steps in one while_loop (stops early when every row has hit EOS)."""
    b = last_logits.shape[0]
    p_len = cache["k"].shape[2] - n_new
    v = last_logits.shape[-1]
    out = jnp.full((b, n_new), -1, jnp.int32)
    all_logits = jnp.zeros((b, n_new if return_logits else 0, v), jnp.float32)

    def cond(c):
        i, done = c[0], c[4]
        return (i < n_new) & ~jnp.all(done)

    def body(c):
        i, logits, cache, out, done, all_logits = c
        if return_logits:
            all_logits = jax.lax.dynamic_update_slice(all_logits, logits[:, None], (0, i, 0))
        tok = sample(logits, jax.random.fold_in(key, i), sampling)
        out = jax.lax.dynamic_update_slice(out, jnp.where(done, -1, tok)[:, None], (0, i))
        if eos_id is not None:
            done = done | (tok == eos_id)
        logits, cache = forward_cached(params, cfg, tok[:, None], cache, p_len + i, pad, compute_dtype=compute_dtype,
                                       unpack=unpack, unpack_layer=unpack_layer)
        return i + 1, logits[:, 0], cache, out, done, all_logits

    c = (jnp.int32(0), last_logits, cache, out, jnp.zeros((b,), bool), all_logits)
    i, _, _, out, _, all_logits = jax.lax.while_loop(cond, body, c)
    return out, all_logits, i


@partial(jax.jit, static_argnames=("cfg", "compute_dtype", "dequantize"))
def _full_logits(params, tokens, seg, pos, idx, *, cfg, compute_dtype, dequantize):
    """The training forward pass over the whole (bucketed) prefix; logits at ``idx``."""
    w = dequantize(params) if dequantize is not None else params
    logits = forward(w, cfg, tokens, seg, pos, compute_dtype=compute_dtype, attn_impl="xla")
    return logits[:, idx]


_sample_jit = jax.jit(sample, static_argnames=("s",))


def generate(params: dict, cfg: ModelConfig, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             sampling: Sampling = Sampling(), seed: int = 0, eos_id: int | None = None, use_cache: bool = True,
             compute_dtype=jnp.float32, cache_dtype=None, unpack: Unpack | None = None,
             unpack_layer: Unpack | None = None, dequantize: Unpack | None = None, pad_id: int = 0,
             bucket: int = 32, return_logits: bool = False) -> Generation:
    """Generate up to ``max_new_tokens`` for every prompt (a batch).  Stops a row at
    ``eos_id``; the whole batch stops when every row has.  ``unpack``/``unpack_layer``
    (cached path) and ``dequantize`` (recompute path) turn stored weights into float
    ones (int4 checkpoints).  Random draws depend on (seed, step) only, so the cached
    and the recompute paths sample the same tokens from the same logits."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    tokens, pad = left_pad(prompts, pad_id)
    b, p_len = tokens.shape
    total = p_len + max_new_tokens
    if total - int(pad.min()) > cfg.max_seq_len:
        raise ValueError(f"prompt ({p_len - int(pad.min())} tokens) + {max_new_tokens} new tokens exceeds the model's "
                         f"max_seq_len {cfg.max_seq_len}")
    key = jax.random.PRNGKey(seed)
    cdt = jnp.dtype(compute_dtype)
    if use_cache:
        kw = dict(cfg=cfg, n_new=max_new_tokens, compute_dtype=cdt, unpack=unpack, unpack_layer=unpack_layer)
        t0 = time.perf_counter()
        last, cache = _prefill(params, jnp.asarray(tokens), jnp.asarray(pad), cache_dtype=jnp.dtype(cache_dtype or cdt),
                               **kw)
        last.block_until_ready()
        t1 = time.perf_counter()
        out, all_logits, steps = _decode(params, last, cache, jnp.asarray(pad), key, sampling=sampling, eos_id=eos_id,
                                         return_logits=return_logits, **kw)
        out = np.asarray(out)
        t2 = time.perf_counter()
        logits = np.asarray(all_logits)[:, : int(steps)] if return_logits else None
        res = _finish(out[:, : int(steps)], eos_id, logits)
        res.prefill_s, res.decode_s = t1 - t0, t2 - t1
        res.stats = {"cache_bytes": cache_bytes(cfg, b, total, cache_dtype or cdt), "steps": int(steps)}
        return res

    # recompute the full prefix at every step
    buf = np.full((b, _round_up(total, bucket)), pad_id, np.int32)
    buf[:, :p_len] = tokens
    slots = np.arange(buf.shape[1])
    seg = (slots[None, :] >= pad[:, None]).astype(np.int32)               # 0 = left padding
    pos = np.maximum(slots[None, :] - pad[:, None], 0).astype(np.int32)
    out = np.full((b, max_new_tokens), -1, np.int32)
    done = np.zeros(b, bool)
    logits_all = []
    t0 = time.perf_counter()
    steps = 0
    for i in range(max_new_tokens):
        cur = p_len + i                                                     # tokens known so far
        width = min(_round_up(cur, bucket), buf.shape[1])
        logits = _full_logits(params, jnp.asarray(buf[:, :width]), jnp.asarray(seg[:, :width]),
                              jnp.asarray(pos[:, :width]), cur - 1, cfg=cfg, compute_dtype=cdt, dequantize=dequantize)
        if return_logits:
            logits_all.append(np.asarray(logits))
        tok = np.asarray(_sample_jit(logits, jax.random.fold_in(key, i), sampling))
        out[:, i] = np.where(done, -1, tok)
        buf[:, cur] = np.where(done, pad_id, tok)
        steps += 1
        if eos_id is not None:
            done |= tok == eos_id
            if done.all():
                break
    res = _finish(out[:, :steps], eos_id, np.stack(logits_all, 1) if return_logits else None)
    res.decode_s = time.perf_counter() - t0
    res.stats = {"steps": steps}
    return res


def _finish(out: np.ndarray, eos_id: int | None, logits) -> Generation:
    rows = []
    n = 0
    for r in out:
        r = [int(x) for x in r if x >= 0]
        n += len(r)
        if eos_id is not None and eos_id in r:
            r = r[: r.index(eos_id)]
        rows.append(r)
    return Generation(tokens=rows, logits=logits, new_tokens=n)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m
