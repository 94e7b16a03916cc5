"""The decoder-only Transformer, in plain JAX over a dict of arrays.

Why plain JAX and not flax: the whole model is the ~150 lines below; parameters are a
nested dict whose leaves carry *logical axis names* (``param_axes``) that the trainer maps
onto a device mesh, layers are stacked along a leading axis and run with ``lax.scan``, and
nothing hides where a cast, a sharding constraint or a remat boundary happens.  Flax linen
would add ``nn.scan`` / partitioning boxes for the same result.

Block (pre-norm, as in Llama / Gemma):
    x = x + Wo · attention(RoPE(Wq·norm(x)), RoPE(Wk·norm(x)), Wv·norm(x))   # MQA / GQA / MHA
    x = x + W_down · (act(W_gate·norm(x)) * W_up·norm(x))                   # gated MLP
then a final RMSNorm and the output head (tied to the embedding or not).

The model knows nothing about meshes: every activation it wants laid out is passed
through ``shard(x, logical_axes)``, a no-op unless the trainer supplies one.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from model.attention import attention, doc_causal_mask
from model.config import ModelConfig
from model.encoders import encode_media, init_media_params, insert_media, media_param_axes

Shard = Callable[[jax.Array, tuple], jax.Array]


def no_shard(x: jax.Array, axes: tuple) -> jax.Array:
    return x


# ---- parameters -----------------------------------------------------------------------

def param_axes(cfg: ModelConfig) -> dict:
    """Logical axis names of every parameter (same tree as ``init_params``)."""
    layers = {
        "attn_norm": ("layers", "norm"),
        "wq": ("layers", "embed", "heads", "head_dim"),
        "wk": ("layers", "embed", "kv_heads", "head_dim"),
        "wv": ("layers", "embed", "kv_heads", "head_dim"),
        "wo": ("layers", "heads", "head_dim", "embed"),
        "mlp_norm": ("layers", "norm"),
        "w_gate": ("layers", "embed", "mlp"),
        "w_up": ("layers", "embed", "mlp"),
        "w_down": ("layers", "mlp", "embed"),
    }
    axes = {"embed": ("vocab", "embed"), "layers": layers, "final_norm": ("norm",)}
    if not cfg.tie_embeddings:
        axes["lm_head"] = ("embed", "vocab")
    if cfg.multimodal is not None:
        axes["media"] = media_param_axes(cfg)
    return axes


def param_shapes(cfg: ModelConfig) -> dict:
    L, D, N, K, H, F, V = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                           cfg.d_ff, cfg.vocab_size)
    layers = {
        "attn_norm": (L, D), "wq": (L, D, N, H), "wk": (L, D, K, H), "wv": (L, D, K, H), "wo": (L, N, H, D),
        "mlp_norm": (L, D), "w_gate": (L, D, F), "w_up": (L, D, F), "w_down": (L, F, D),
    }
    shapes = {"embed": (V, D), "layers": layers, "final_norm": (D,)}
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (D, V)
    return shapes


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32) -> dict:
    """Normal(init_std) matrices, output projections scaled by 1/sqrt(2·n_layers)
    (GPT-2), norm scales at one.  Pure, so it can be jitted straight into shards."""
    shapes = param_shapes(cfg)
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(key, len(flat))
    out_scale = 1.0 / (2 * cfg.n_layers) ** 0.5
    leaves = []
    for (path, shape), k in zip(flat, keys):
        name = path[-1].key
        if name.endswith("norm"):
            leaves.append(jnp.ones(shape, dtype))
            continue
        std = cfg.init_std * (out_scale if name in ("wo", "w_down") else 1.0)
        leaves.append((jax.random.normal(k, shape, jnp.float32) * std).astype(dtype))
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    if cfg.multimodal is not None:
        # a key of its own: the text parameters are the same with or without encoders
        params["media"] = init_media_params(cfg, jax.random.fold_in(key, 0x6D6D), dtype)
    return params


# ---- layers ---------------------------------------------------------------------------

def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (y * scale.astype(jnp.float32)).astype(x.dtype)


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """sin, cos [B, T, 1, head_dim/2] for per-token ``positions`` [B, T] (reset per
    document); computed once per forward pass, shared by every layer."""
    freqs = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    ang = positions.astype(jnp.float32)[:, :, None, None] * freqs
    return jnp.sin(ang), jnp.cos(ang)


def rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """Rotary embedding, rotate-half form, applied in float32."""
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def resolve_attention(cfg: ModelConfig, seq_len: int, dtype) -> str:
    """The implementation ``attention: auto`` picks for this backend, length and dtype."""
    if cfg.attention != "auto":
        return cfg.attention
    gpu_ok = jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and cfg.head_dim <= 128
    # cuDNN takes the document mask as a dense [B, 1, T, T] bias: fine up to 8k tokens
    if gpu_ok and (not cfg.document_mask or seq_len <= 8192):
        return "cudnn"
    if seq_len > 4096 and seq_len % cfg.attention_chunk == 0:
        return "chunked"       # the T x T scores of the dense path no longer fit comfortably
    return "xla"


def block(cfg: ModelConfig, p: dict, x: jax.Array, segment_ids: jax.Array, rope_sc: tuple[jax.Array, jax.Array],
          mask: jax.Array | None, attn_impl: str, shard: Shard) -> jax.Array:
    """One layer on the flattened tokens ``x`` [B·T, D].  Projections are plain 2-D
    matmuls over all tokens (on CPU that is ~1.4x faster than [B, T, D] einsums, whose
    backward passes XLA lays out with extra transposes); only attention sees [B, T, ...]."""
    b, t = segment_ids.shape
    h = rms_norm(x, p["attn_norm"], cfg.norm_eps)
    q = jnp.einsum("sd,dnh->snh", h, p["wq"]).reshape(b, t, cfg.n_heads, cfg.head_dim)
    k = jnp.einsum("sd,dkh->skh", h, p["wk"]).reshape(b, t, cfg.n_kv_heads, cfg.head_dim)
    v = jnp.einsum("sd,dkh->skh", h, p["wv"]).reshape(b, t, cfg.n_kv_heads, cfg.head_dim)
    q = shard(rope(q, *rope_sc), ("batch", "seq", "act_heads", None))
    k = shard(rope(k, *rope_sc), ("batch", "seq", "act_kv_heads", None))
    v = shard(v, ("batch", "seq", "act_kv_heads", None))
    a = attention(q, k, v, segment_ids if cfg.document_mask else None, impl=attn_impl, chunk=cfg.attention_chunk,
                  mask=mask)
    x = x + jnp.einsum("snh,nhd->sd", a.reshape(b * t, cfg.n_heads, cfg.head_dim), p["wo"])
    x = shard(x, ("batch", "act_embed"))

    h = rms_norm(x, p["mlp_norm"], cfg.norm_eps)
    act = jax.nn.silu if cfg.activation == "silu" else jax.nn.gelu
    g = act(h @ p["w_gate"]) * (h @ p["w_up"])
    g = shard(g, ("batch", "act_mlp"))
    return shard(x + g @ p["w_down"], ("batch", "act_embed"))


def forward(params: dict, cfg: ModelConfig, tokens: jax.Array, segment_ids: jax.Array, positions: jax.Array, *,
            compute_dtype=jnp.float32, shard: Shard = no_shard, attn_impl: str | None = None,
            return_hidden: bool = False, media: dict | None = None) -> jax.Array:
    """Logits [B, T, V] in float32 (or the final normed hidden states [B, T, D] with
    ``return_hidden``).  Params stay in their (master) dtype and are cast to
    ``compute_dtype`` here, so bf16 compute keeps fp32 master weights.

    ``media``: the batch's media fields (``model/encoders.py``); their embeddings
    replace the token embeddings where ``media_index > 0``."""
    b, t = tokens.shape
    impl = attn_impl or resolve_attention(cfg, t, compute_dtype)
    p = jax.tree.map(lambda w: w.astype(compute_dtype), params)
    x = shard(jnp.take(p["embed"], tokens.reshape(b * t), axis=0), ("batch", "act_embed"))     # [B·T, D]
    if media is not None:
        if cfg.multimodal is None:
            raise ValueError("a batch with media fields needs model.multimodal (the media encoders)")
        emb = encode_media(p["media"], cfg, media["media_patches"], media["media_kind"], media["media_positions"],
                           media["media_group"])
        x = shard(insert_media(x, emb, media["media_index"]), ("batch", "act_embed"))
    rope_sc = rope_tables(positions, cfg.head_dim, cfg.rope_theta)
    dense = impl in ("xla", "cudnn") and cfg.document_mask
    mask = doc_causal_mask(segment_ids) if dense else None                        # [B, 1, T, T], once

    def layer(x, lp):
        return block(cfg, lp, x, segment_ids, rope_sc, mask, impl, shard), None

    if cfg.remat == "full":
        layer = jax.checkpoint(layer)
    elif cfg.remat == "dots":
        layer = jax.checkpoint(layer, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)

    if cfg.scan_layers:
        x, _ = jax.lax.scan(layer, x, p["layers"])
    else:
        for i in range(cfg.n_layers):
            x, _ = layer(x, jax.tree.map(lambda w: w[i], p["layers"]))

    x = rms_norm(x, p["final_norm"], cfg.norm_eps)
    if return_hidden:
        return x.reshape(b, t, -1)
    return head(p, cfg, x, shard).reshape(b, t, -1)


def head(p: dict, cfg: ModelConfig, x: jax.Array, shard: Shard = no_shard) -> jax.Array:
    """Output projection of tokens [S, D] to float32 logits [S, V] (``p`` in the compute dtype)."""
    w = p["embed"] if cfg.tie_embeddings else p["lm_head"]
    eq = "sd,vd->sv" if cfg.tie_embeddings else "sd,dv->sv"
    return shard(jnp.einsum(eq, x, w.astype(x.dtype), preferred_element_type=jnp.float32), ("batch", "act_vocab"))


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-token negative log-likelihood [B, T] (float32)."""
    logz = jax.nn.logsumexp(logits, axis=-1)
    gold = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return logz - gold


def sequence_nll(params: dict, cfg: ModelConfig, tokens: jax.Array, segment_ids: jax.Array, positions: jax.Array,
                 targets: jax.Array, *, compute_dtype=jnp.float32, shard: Shard = no_shard,
                 attn_impl: str | None = None, media: dict | None = None) -> jax.Array:
    """Per-token NLL [B, T].  With ``cfg.loss_chunk`` the logits are computed chunk by chunk
    of the sequence and rematerialised in the backward pass, so the [B, T, V] logits
    (tens of GB for a 256k vocabulary at 8k context) never exist at once."""
    kw = dict(compute_dtype=compute_dtype, shard=shard, attn_impl=attn_impl)
    if media is not None:
        kw["media"] = media
    c = cfg.loss_chunk
    if not c or tokens.shape[1] <= c:
        return token_nll(forward(params, cfg, tokens, segment_ids, positions, **kw), targets)
    b, t = tokens.shape
    if t % c:
        raise ValueError(f"sequence length {t} must be a multiple of loss_chunk {c}")
    x = forward(params, cfg, tokens, segment_ids, positions, return_hidden=True, **kw)
    p = {k: params[k].astype(compute_dtype) for k in ("embed", "lm_head") if k in params}
    xs = x.reshape(b, t // c, c, -1).swapaxes(0, 1)                  # [T/c, B, c, D]
    ts = targets.reshape(b, t // c, c).swapaxes(0, 1)

    @jax.checkpoint
    def chunk(_, xt):
        xc, tc = xt                                                   # [B, c, D], [B, c]
        return None, token_nll(head(p, cfg, xc.reshape(b * c, -1), shard), tc.reshape(b * c)).reshape(b, c)

    _, nll = jax.lax.scan(chunk, None, (xs, ts))
    return nll.swapaxes(0, 1).reshape(b, t)
