"""Media encoders (model/encoders.py): shapes per modality, isolation between media items,
temporal position for video, insertion into the token sequence, and the text path left
bit-for-bit unchanged."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import ConfigError, MultimodalConfig, count_params, load_preset
from model.encoders import KIND_AUDIO, KIND_FRAME, KIND_IMAGE, insert_media
from model.encoders import encode_media as _encode_media
from model.transformer import forward as _forward
from model.transformer import init_params, param_axes, sequence_nll

# jitted: one compile per shape instead of one per primitive (eager op-by-op is slow on CPU)
encode_media = jax.jit(_encode_media, static_argnums=1)
forward = jax.jit(_forward, static_argnums=1, static_argnames=("media",))


def _cfg(**mm):
    base = load_preset("tiny").model
    return base.model_copy(update={"multimodal": MultimodalConfig(patch_size=4, **mm)})


def _media(cfg, rng, kinds, groups, positions=None):
    b, m = len(kinds), len(kinds[0])
    kind = jnp.asarray(kinds, jnp.int32)
    pos = jnp.zeros((b, m, 3), jnp.int32) if positions is None else jnp.asarray(positions, jnp.int32)
    feats = jnp.asarray(rng.normal(size=(b, m, cfg.multimodal.feature_dim)), jnp.float32)
    return feats, kind, pos, jnp.asarray(groups, jnp.int32)


@pytest.mark.parametrize("encoder", ["linear", "vit"])
def test_image_audio_video_shapes_and_empty_slots(encoder):
    cfg = _cfg(**({"image_encoder": "vit", "vit_layers": 2} if encoder == "vit" else {}))
    p = init_params(cfg, jax.random.PRNGKey(0))
    # patch 4 -> 48 pixel values; audio 4 frames x 80 mels = 320 -> F = 320
    assert cfg.multimodal.patch_dim == 48 and cfg.multimodal.feature_dim == 320
    rng = np.random.default_rng(0)
    kinds = [[KIND_IMAGE] * 4 + [KIND_FRAME] * 4 + [KIND_AUDIO] * 3 + [0]]
    groups = [[1] * 4 + [2] * 4 + [3] * 3 + [0]]
    e = encode_media(p["media"], cfg, *_media(cfg, rng, kinds, groups))
    assert e.shape == (1, 12, cfg.d_model) and e.dtype == jnp.float32
    assert bool(jnp.all(e[0, 11] == 0)) and bool(jnp.all(jnp.abs(e[0, :11]).sum(-1) > 0))
    # output scale starts at the token embeddings' (RMS = init_std)
    rms = jnp.sqrt(jnp.mean(e[0, :11] ** 2, axis=-1))
    assert np.allclose(np.asarray(rms), cfg.init_std, rtol=1e-3)


@pytest.mark.parametrize("encoder", ["linear", "vit"])
def test_media_items_do_not_see_each_other(encoder):
    cfg = _cfg(**({"image_encoder": "vit", "vit_layers": 1} if encoder == "vit" else {}))
    p = init_params(cfg, jax.random.PRNGKey(1))
    rng = np.random.default_rng(1)
    kinds = [[KIND_IMAGE] * 4 + [KIND_IMAGE] * 4 + [KIND_AUDIO] * 3 + [KIND_AUDIO] * 3]
    groups = [[1] * 4 + [2] * 4 + [3] * 3 + [4] * 3]
    feats, kind, pos, group = _media(cfg, rng, kinds, groups)
    e1 = encode_media(p["media"], cfg, feats, kind, pos, group)
    # change the second image and the second audio clip only
    feats2 = feats.at[0, 4:8].set(feats[0, 4:8] * -2.0).at[0, 11:14].set(feats[0, 11:14] + 1.0)
    e2 = encode_media(p["media"], cfg, feats2, kind, pos, group)
    assert bool(jnp.all(e1[0, :4] == e2[0, :4])) and bool(jnp.all(e1[0, 8:11] == e2[0, 8:11]))
    assert not bool(jnp.allclose(e1[0, 4:8], e2[0, 4:8])) and not bool(jnp.allclose(e1[0, 11:], e2[0, 11:]))
    if encoder == "vit":   # inside one image the patches do interact
        feats3 = feats.at[0, 0].set(feats[0, 0] + 1.0)
        e3 = encode_media(p["media"], cfg, feats3, kind, pos, group)
        assert not bool(jnp.allclose(e1[0, 1], e3[0, 1]))
    # the audio convolution mixes neighbours inside a clip
    feats4 = feats.at[0, 8].set(feats[0, 8] + 1.0)
    e4 = encode_media(p["media"], cfg, feats4, kind, pos, group)
    assert not bool(jnp.allclose(e1[0, 9], e4[0, 9])) and bool(jnp.all(e1[0, 11] == e4[0, 11]))


def test_positions_and_video_time():
    cfg = _cfg()
    p = init_params(cfg, jax.random.PRNGKey(2))
    rng = np.random.default_rng(2)
    same = np.repeat(rng.normal(size=(1, 1, cfg.multimodal.feature_dim)), 4, axis=1).astype(np.float32)
    pos = jnp.asarray([[[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0]]], jnp.int32)
    kind = jnp.asarray([[KIND_FRAME, KIND_FRAME, KIND_FRAME, KIND_IMAGE]], jnp.int32)
    e = np.asarray(encode_media(p["media"], cfg, jnp.asarray(same), kind, pos, jnp.ones((1, 4), jnp.int32)))
    assert not np.allclose(e[0, 0], e[0, 1])          # column position
    assert not np.allclose(e[0, 0], e[0, 2])          # frame time (the temporal position)
    kind_i = kind.at[0, 2].set(KIND_IMAGE)
    e_i = np.asarray(encode_media(p["media"], cfg, jnp.asarray(same), kind_i, pos, jnp.ones((1, 4), jnp.int32)))
    assert np.array_equal(e_i[0, 2], e_i[0, 3])        # an image ignores t


def test_insert_media_places_embeddings_in_order():
    x = jnp.arange(2 * 6 * 3, dtype=jnp.float32).reshape(12, 3)
    emb = -jnp.arange(1, 2 * 4 * 3 + 1, dtype=jnp.float32).reshape(2, 4, 3)
    idx = jnp.asarray([[0, 1, 2, 0, 0, 0], [0, 0, 0, 1, 2, 3]], jnp.int32)
    y = np.asarray(insert_media(x, emb, idx)).reshape(2, 6, 3)
    xs = np.asarray(x).reshape(2, 6, 3)
    assert np.array_equal(y[0, [0, 3, 4, 5]], xs[0, [0, 3, 4, 5]])
    assert np.array_equal(y[0, 1], emb[0, 0]) and np.array_equal(y[0, 2], emb[0, 1])
    assert np.array_equal(y[1, 3:], np.asarray(emb[1, :3]))


def test_text_path_is_bitwise_unchanged_and_counts_match():
    text_cfg = load_preset("tiny").model
    cfg = _cfg(image_encoder="vit", vit_layers=1)
    p_text = init_params(text_cfg, jax.random.PRNGKey(3))
    p_mm = init_params(cfg, jax.random.PRNGKey(3))
    assert set(p_mm) == set(p_text) | {"media"}
    for a, b in zip(jax.tree.leaves(p_text), jax.tree.leaves({k: v for k, v in p_mm.items() if k != "media"})):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    assert sum(x.size for x in jax.tree.leaves(p_mm)) == count_params(cfg)["total"]
    assert count_params(cfg)["total"] - count_params(text_cfg)["total"] == count_params(cfg)["media"]
    axes = param_axes(cfg)
    assert jax.tree.structure(axes, is_leaf=lambda a: isinstance(a, tuple)) == jax.tree.structure(p_mm)
    for ax, leaf in zip(jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, tuple)), jax.tree.leaves(p_mm)):
        assert len(ax) == leaf.ndim
    rng = np.random.default_rng(3)
    tok = jnp.asarray(rng.integers(0, 256, size=(2, 16)), jnp.int32)
    seg, pos = jnp.ones((2, 16), jnp.int32), jnp.broadcast_to(jnp.arange(16), (2, 16))
    assert np.array_equal(np.asarray(forward(p_text, text_cfg, tok, seg, pos)),
                          np.asarray(forward(p_mm, cfg, tok, seg, pos)))
    with pytest.raises(ValueError, match="model.multimodal"):
        _forward(p_text, text_cfg, tok, seg, pos, media={"media_patches": None})


def test_text_loss_trains_the_encoders():
    cfg = _cfg()
    p = init_params(cfg, jax.random.PRNGKey(4))
    rng = np.random.default_rng(4)
    feats, kind, mpos, group = _media(cfg, rng, [[KIND_IMAGE] * 4 + [KIND_AUDIO] * 2 + [0, 0]],
                                      [[1] * 4 + [2] * 2 + [0, 0]])
    idx = jnp.asarray([[0, 1, 2, 3, 4, 0, 5, 6, 0, 0, 0, 0]], jnp.int32)
    media = {"media_patches": feats, "media_kind": kind, "media_positions": mpos, "media_group": group,
             "media_index": idx}
    tok = jnp.asarray(rng.integers(10, 256, size=(1, 12)), jnp.int32)
    seg, pos = jnp.ones((1, 12), jnp.int32), jnp.arange(12)[None]
    mask = (idx == 0).astype(jnp.float32)

    def loss(p):
        return (sequence_nll(p, cfg, tok, seg, pos, tok, media=media) * mask).sum()

    g = jax.jit(jax.grad(loss))(p)["media"]
    assert float(jnp.abs(g["patch_w"]).sum()) > 0 and float(jnp.abs(g["audio_w1"]).sum()) > 0
    assert float(jnp.abs(g["time_emb"]).sum()) == 0           # no video frame in this batch


def test_config_validation():
    with pytest.raises(ValueError, match="vit_layers"):
        MultimodalConfig(image_encoder="vit")
    with pytest.raises(ValueError, match="vit_layers is for"):
        MultimodalConfig(vit_layers=2)
    with pytest.raises(ConfigError, match="multimodal.bogus: unknown key"):
        load_preset("tiny", {"multimodal": {"bogus": 1}})
    assert load_preset("tiny", {"multimodal": {"patch_size": 8}}).model.multimodal.patch_dim == 192
