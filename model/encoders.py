"""Media encoders: images, video frames and audio as embeddings in the token sequence.

The data side (``mixtures/multimodal.py``) turns every media item into "media tokens"
on the host, in numpy, and hands the trainer one padded array per batch:

  ``media_patches``    float32 [B, M, F]  one row per media token: an image / video-frame
                       patch (``patch_size``² x 3 pixels in [-1, 1], row-major inside the
                       patch) or an audio token (``frames_per_token`` log-mel frames x
                       ``n_mels``), zero-padded to F = ``MultimodalConfig.feature_dim``
  ``media_kind``       int32 [B, M]  0 = empty slot, 1 = image patch, 2 = video-frame
                       patch, 3 = audio token
  ``media_positions``  int32 [B, M, 3]  (t, row, col): the patch's grid cell and, for
                       video, its frame index t; for audio (index within the clip, 0, 0)
  ``media_group``      int32 [B, M]  which media item of the row (1, 2, ...; 0 = empty):
                       the ViT attends and the audio convolution mixes only inside one
  ``media_index``      int32 [B, L]  per sequence position: 0 = a text token, k = the
                       embedding of media slot k-1 replaces the token embedding there

``M`` is a bucketed budget (powers of two up to L), so XLA compiles once per bucket,
not once per batch.

Encoders (all outputs RMS-normalised with a learned scale initialised to ``init_std``,
the scale of the token embeddings, then masked to 0 on empty slots):

* image / video frame ("linear"): ``W_patch · patch + b + row_emb[r] + col_emb[c]``,
  plus ``time_emb[t]`` for video frames (the temporal position); "vit" adds
  ``vit_layers`` pre-norm bidirectional Transformer layers whose attention stays
  inside one image or one video frame;
* audio: ``W2 · conv3(gelu(W1 · frames + b1)) + b2``, where conv3 is a depthwise
  temporal convolution (kernel 3) that does not cross clip boundaries;
* a learned type embedding per kind (image, video frame, audio).

The language model gets the media embeddings in place of the placeholder tokens
between the modality's begin and end control tokens (``insert_media``); the loss
never counts media positions (the data side masks them).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from model.config import ModelConfig

MEDIA_KEYS = ("media_patches", "media_kind", "media_positions", "media_group", "media_index")
KIND_NONE, KIND_IMAGE, KIND_FRAME, KIND_AUDIO = 0, 1, 2, 3


def media_param_shapes(cfg: ModelConfig) -> dict:
    mm, d = cfg.multimodal, cfg.d_model
    shapes = {
        "patch_w": (mm.patch_dim, d), "patch_b": (d,),
        "row_emb": (mm.max_grid, d), "col_emb": (mm.max_grid, d), "time_emb": (mm.max_frames, d),
        "audio_w1": (mm.audio_dim, d), "audio_b1": (d,), "audio_conv": (3, d), "audio_w2": (d, d), "audio_b2": (d,),
        "type_emb": (4, d), "out_norm": (d,),
    }
    if mm.vit_layers:
        n = mm.vit_layers
        shapes["vit"] = {"attn_norm": (n, d), "wqkv": (n, 3, d, d), "wo": (n, d, d), "mlp_norm": (n, d),
                         "w_in": (n, d, 4 * d), "w_out": (n, 4 * d, d)}
    return shapes


def media_param_axes(cfg: ModelConfig) -> dict:
    """Logical axes (``train/sharding.py``): the model width is ``embed`` like the LM's;
    the rest is small and replicated."""
    axes = {
        "patch_w": ("media_in", "embed"), "patch_b": ("norm",),
        "row_emb": (None, "embed"), "col_emb": (None, "embed"), "time_emb": (None, "embed"),
        "audio_w1": ("media_in", "embed"), "audio_b1": ("norm",), "audio_conv": (None, "norm"),
        "audio_w2": ("embed", None), "audio_b2": ("norm",), "type_emb": (None, "embed"), "out_norm": ("norm",),
    }
    if cfg.multimodal.vit_layers:
        axes["vit"] = {"attn_norm": ("layers", "norm"), "wqkv": ("layers", None, "embed", None),
                       "wo": ("layers", None, "embed"), "mlp_norm": ("layers", "norm"),
                       "w_in": ("layers", "embed", None), "w_out": ("layers", None, "embed")}
    return axes


def init_media_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32) -> dict:
    """Matrices ~ N(0, 1/fan_in) for the input projections (patch pixels and log-mels
    are O(1)), N(0, init_std) elsewhere; biases 0; norm scales 1, except the output
    scale: ``init_std``, so a media embedding starts as large as a token embedding."""
    shapes = media_param_shapes(cfg)
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(key, len(flat))
    leaves = []
    for (path, shape), k in zip(flat, keys):
        name = path[-1].key
        if name == "out_norm":
            leaves.append(jnp.full(shape, cfg.init_std, dtype))
        elif name.endswith("norm"):
            leaves.append(jnp.ones(shape, dtype))
        elif name.endswith("_b1") or name.endswith("_b2") or name == "patch_b":
            leaves.append(jnp.zeros(shape, dtype))
        else:
            std = shape[-2] ** -0.5 if name in ("patch_w", "audio_w1") else cfg.init_std
            if name == "audio_conv":
                std = 0.1
            leaves.append((jax.random.normal(k, shape, jnp.float32) * std).astype(dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _rms(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (y * scale.astype(jnp.float32)).astype(x.dtype)


def _vit(p: dict, cfg: ModelConfig, h: jax.Array, same: jax.Array) -> jax.Array:
    """Bidirectional pre-norm layers over [B, M, D]; ``same`` [B, 1, M, M] masks
    attention to one image / frame."""
    mm = cfg.multimodal
    b, m, d = h.shape
    nh = mm.vit_heads if d % mm.vit_heads == 0 else 1

    def layer(h, lp):
        x = _rms(h, lp["attn_norm"], cfg.norm_eps)
        qkv = jnp.einsum("bmd,kde->kbme", x, lp["wqkv"]).reshape(3, b, m, nh, d // nh)
        a = jax.nn.dot_product_attention(qkv[0], qkv[1], qkv[2], mask=same)
        h = h + a.reshape(b, m, d) @ lp["wo"]
        x = _rms(h, lp["mlp_norm"], cfg.norm_eps)
        return h + jax.nn.gelu(x @ lp["w_in"]) @ lp["w_out"], None

    h, _ = jax.lax.scan(layer, h, p["vit"])
    return h


def encode_media(p: dict, cfg: ModelConfig, patches: jax.Array, kind: jax.Array, positions: jax.Array,
                 group: jax.Array) -> jax.Array:
    """Media embeddings [B, M, D] (in ``p``'s dtype) for the batch fields above."""
    mm = cfg.multimodal
    dt = p["patch_w"].dtype
    x = patches.astype(dt)
    t = jnp.clip(positions[..., 0], 0, mm.max_frames - 1)
    r = jnp.clip(positions[..., 1], 0, mm.max_grid - 1)
    c = jnp.clip(positions[..., 2], 0, mm.max_grid - 1)
    is_frame = (kind == KIND_FRAME)[..., None]

    # images and video frames: patch projection + 2-D position (+ time for video)
    img = x[..., :mm.patch_dim] @ p["patch_w"] + p["patch_b"]
    img = img + jnp.take(p["row_emb"], r, axis=0) + jnp.take(p["col_emb"], c, axis=0)
    img = img + jnp.where(is_frame, jnp.take(p["time_emb"], t, axis=0), 0)
    if mm.vit_layers:
        visual = (kind == KIND_IMAGE) | (kind == KIND_FRAME)
        # one attention island per image / video frame: same group, same frame
        key = jnp.where(visual, group * (mm.max_frames + 1) + t + 1, 0)
        same = (key[:, :, None] == key[:, None, :]) & visual[:, :, None]
        same = same | jnp.eye(key.shape[1], dtype=bool)[None]          # empty slots attend to themselves
        img = _vit(p, cfg, img, same[:, None])

    # audio: per-token MLP with a depthwise temporal convolution inside each clip
    a = jax.nn.gelu(x[..., :mm.audio_dim] @ p["audio_w1"] + p["audio_b1"])
    same_prev = jnp.concatenate([jnp.zeros_like(group[:, :1], bool), group[:, 1:] == group[:, :-1]], axis=1)
    same_next = jnp.concatenate([group[:, :-1] == group[:, 1:], jnp.zeros_like(group[:, :1], bool)], axis=1)
    prev = jnp.where(same_prev[..., None], jnp.roll(a, 1, axis=1), 0)
    nxt = jnp.where(same_next[..., None], jnp.roll(a, -1, axis=1), 0)
    w = p["audio_conv"]
    a = a + w[0] * prev + w[1] * a + w[2] * nxt
    aud = a @ p["audio_w2"] + p["audio_b2"]

    e = jnp.where((kind == KIND_AUDIO)[..., None], aud, img) + jnp.take(p["type_emb"], kind, axis=0)
    e = _rms(e, p["out_norm"], cfg.norm_eps)
    return jnp.where((kind > KIND_NONE)[..., None], e, 0)


def insert_media(x: jax.Array, emb: jax.Array, media_index: jax.Array) -> jax.Array:
    """Token embeddings ``x`` [B·T, D] with position (b, t) replaced by ``emb[b,
    media_index[b, t] - 1]`` wherever ``media_index > 0``."""
    b, t = media_index.shape
    padded = jnp.concatenate([jnp.zeros_like(emb[:, :1]), emb.astype(x.dtype)], axis=1)      # [B, M+1, D]
    picked = jnp.take_along_axis(padded, media_index[..., None], axis=1).reshape(b * t, -1)   # [B·T, D]
    return jnp.where((media_index > 0).reshape(b * t, 1), picked, x)
