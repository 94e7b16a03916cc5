"""Causal self-attention with document-boundary masking, for MHA, GQA and MQA.

Shapes: q [B, T, N, H], k and v [B, T, K, H] with N a multiple of K (K = 1 is
multi-query attention), segment_ids [B, T] (tokens attend only within their own
document; 0 = padding, which attends to padding and is never counted in the loss).

Three implementations, one contract:
  * ``xla``: ``jax.nn.dot_product_attention`` with an explicit boolean mask; fine up to a
    few thousand tokens (the T x T scores exist per head).
  * ``cudnn``: the same call with ``implementation="cudnn"`` (flash attention on NVIDIA
    GPUs, bf16/fp16 only); the document mask is passed as a mask, which cuDNN applies as
    a bias.  Falls back to nothing: it raises if cuDNN cannot take the shape.
  * ``chunked``: memory-efficient attention in plain JAX (Rabe & Staats 2021; the
    online softmax of flash attention): queries and keys are cut into blocks, each query
    block scans over the key blocks keeping a running max / sum, blocks entirely above the
    causal diagonal are skipped, and the per-query-block computation is rematerialised in
    the backward pass.  Peak memory is O(T * block) instead of O(T^2): the long-context
    (32k) path on CPU/TPU/GPU alike.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite, so fully masked rows never produce NaN


def doc_causal_mask(segment_ids: jax.Array) -> jax.Array:
    """[B, 1, T, T] boolean: causal and same document."""
    t = segment_ids.shape[1]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (same & causal)[:, None, :, :]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None, *,
              impl: str = "xla", chunk: int = 512, mask: jax.Array | None = None) -> jax.Array:
    """``segment_ids=None``: plain causal attention (one document per row).  ``mask``:
    ``doc_causal_mask(segment_ids)`` when the caller already has it (the model builds it
    once for all layers)."""
    if impl == "chunked":
        if segment_ids is None:
            segment_ids = jnp.ones(q.shape[:2], jnp.int32)
        return chunked_attention(q, k, v, segment_ids, chunk=chunk)
    if impl not in ("xla", "cudnn"):
        raise ValueError(f"unknown attention implementation {impl!r}")
    if segment_ids is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
    if mask is None:
        mask = doc_causal_mask(segment_ids)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *,
                      chunk: int = 512) -> jax.Array:
    # The whole computation is rematerialised in the backward pass (as flash attention's
    # backward recomputes the scores): only q, k, v, segment_ids are kept.  Without this
    # outer checkpoint, differentiating it inside the scan over layers stores per-block
    # residuals and memory grows ~T^2 again.
    return _chunked(q, k, v, segment_ids, chunk)


@partial(jax.checkpoint, static_argnums=(4,))
def _chunked(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, chunk: int) -> jax.Array:
    b, t, n, h = q.shape
    kh = k.shape[2]
    g = n // kh
    c = min(chunk, t)
    if t % c:
        raise ValueError(f"sequence length {t} must be a multiple of the attention chunk {c}")
    nb = t // c
    scale = 1.0 / jnp.sqrt(jnp.float32(h)).astype(q.dtype)
    # [nb, B, c, K, G, H] query blocks; [nb, B, c, K, H] key / value blocks
    qb = (q * scale).reshape(b, nb, c, kh, g, h).transpose(1, 0, 2, 3, 4, 5)
    kb = k.reshape(b, nb, c, kh, h).transpose(1, 0, 2, 3, 4)
    vb = v.reshape(b, nb, c, kh, h).transpose(1, 0, 2, 3, 4)
    sb = segment_ids.reshape(b, nb, c).transpose(1, 0, 2)
    pos = jnp.arange(c)

    def one_query_block(args):
        i, q_i, seg_i = args

        def kv_step(carry, j):
            def compute(carry):
                m, l, acc = carry
                s = jnp.einsum("bqkgh,bskh->bkgqs", q_i, kb[j], preferred_element_type=jnp.float32)
                ok = (seg_i[:, :, None] == sb[j][:, None, :]) & ((i * c + pos)[:, None] >= (j * c + pos)[None, :])
                s = jnp.where(ok[:, None, None], s, NEG_INF)
                m_new = jnp.maximum(m, s.max(-1))
                p = jnp.exp(s - m_new[..., None])
                corr = jnp.exp(m - m_new)
                l_new = l * corr + p.sum(-1)
                pv = jnp.einsum("bkgqs,bskh->bkgqh", p.astype(vb.dtype), vb[j], preferred_element_type=jnp.float32)
                return m_new, l_new, acc * corr[..., None] + pv

            # key blocks entirely in the future of this query block contribute nothing
            return jax.lax.cond(j <= i, compute, lambda x: x, carry), None

        init = (jnp.full((b, kh, g, c), NEG_INF, jnp.float32), jnp.zeros((b, kh, g, c), jnp.float32),
                jnp.zeros((b, kh, g, c, h), jnp.float32))
        (m, l, acc), _ = jax.lax.scan(kv_step, init, jnp.arange(nb))
        out = acc / l[..., None]                                       # [B, K, G, c, H]
        return out.transpose(0, 3, 1, 2, 4).reshape(b, c, n, h).astype(q.dtype)

    # Rematerialise each query block in the backward pass: only its inputs are saved.
    out = jax.lax.map(jax.checkpoint(one_query_block), (jnp.arange(nb), qb, sb))  # [nb, B, c, N, H]
    return out.transpose(1, 0, 2, 3, 4).reshape(b, t, n, h)
