"""Model: preset shapes and counts, attention variants, document masking, chunked paths."""
from __future__ import annotations

import os

# These tests are dominated by XLA compile time; LLVM -O0 halves it (results agree to float
# rounding, and every pair of runs that is compared bitwise uses the same flags).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.attention import attention
from model.config import (ConfigError, ModelConfig, count_params, flops_per_token, list_presets, load_preset,
                          matmul_params)
from model.transformer import forward as _forward
from model.transformer import init_params as _init_params
from model.transformer import param_axes, param_shapes, sequence_nll

# Everything runs jitted: eager dispatch compiles op by op and is far slower on CPU.


init_params = jax.jit(_init_params, static_argnums=0)
forward = jax.jit(_forward, static_argnums=1, static_argnames=("compute_dtype", "attn_impl"))


def small(**kw) -> ModelConfig:
    base = dict(name="t", vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=16, d_ff=128)
    base.update(kw)
    return ModelConfig(**base)


def packed_inputs(b=2, t=48, vocab=128, seed=0):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(0, vocab, (b, t)), jnp.int32)
    lens = [16, 20, 12]
    seg = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lens)])
    pos = np.concatenate([np.arange(n) for n in lens])
    return tokens, jnp.asarray(np.tile(seg, (b, 1)), jnp.int32), jnp.asarray(np.tile(pos, (b, 1)), jnp.int32)


# ---- presets ---------------------------------------------------------------------------

def test_every_preset_loads_and_counts_match_the_initialised_tree():
    assert {"tiny", "cpu", "nano-1", "nano-2", "pro", "base-1b"} <= set(list_presets())
    for name in list_presets():
        cfg = load_preset(name).model
        shapes = jax.eval_shape(lambda k, c=cfg: _init_params(c, k), jax.random.key(0))   # no allocation
        n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
        assert n == count_params(cfg)["total"], name
        # every parameter has a logical axis name per dimension
        axes = param_axes(cfg)
        jax.tree.map(lambda ax, s: len(ax) == len(s.shape) or pytest.fail(f"{name}: {ax} vs {s.shape}"),
                     axes, shapes, is_leaf=lambda x: isinstance(x, tuple))


@pytest.mark.parametrize("name,target", [("nano-1", 1.8e9), ("nano-2", 3.25e9)])
def test_nano_presets_have_the_reported_sizes(name, target):
    cfg = load_preset(name).model
    total = count_params(cfg)["total"]
    assert abs(total - target) / target < 0.01, total
    assert cfg.n_kv_heads == 1 and cfg.max_seq_len == 32768          # MQA, 32k context as in the report


def test_depth_dial_and_overrides():
    a, b = load_preset("depth:4").model, load_preset("depth:12").model
    assert (a.n_layers, a.d_model, a.head_dim) == (4, 256, 64)
    assert (b.n_layers, b.d_model, b.n_heads, b.d_ff) == (12, 768, 6, 2048)
    assert count_params(b)["total"] > count_params(a)["total"]
    assert load_preset("tiny", {"n_kv_heads": 2}).model.n_kv_heads == 2
    with pytest.raises(ConfigError, match="depth"):
        load_preset("depth:x")
    with pytest.raises(ConfigError, match="n_heads"):
        load_preset("tiny", {"n_kv_heads": 3})
    with pytest.raises(ConfigError, match="unknown key"):
        load_preset("tiny", {"n_experts": 8})
    with pytest.raises(ConfigError, match="not found"):
        load_preset("nano-9")


def test_flop_formula():
    cfg = load_preset("base-1b").model
    n = matmul_params(cfg)
    # 6N plus the causal attention term 6 * L * N_heads * H * S
    assert flops_per_token(cfg, 2048) == 6 * n + 6 * cfg.n_layers * cfg.n_heads * cfg.head_dim * 2048
    assert flops_per_token(cfg, 4096) > flops_per_token(cfg, 2048)


# ---- forward ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    cfg = small()
    return cfg, init_params(cfg, jax.random.key(0))


def test_forward_shapes_and_dtypes(tiny):
    cfg, params = tiny
    assert jax.tree.map(lambda x: x.shape, params) == jax.tree.map(tuple, param_shapes(cfg),
                                                                    is_leaf=lambda x: isinstance(x, tuple))
    tokens, seg, pos = packed_inputs()
    logits = forward(params, cfg, tokens, seg, pos)
    assert logits.shape == (2, 48, 128) and logits.dtype == jnp.float32
    bf = forward(params, cfg, tokens, seg, pos, compute_dtype=jnp.bfloat16)
    assert bf.dtype == jnp.float32                                      # logits stay float32
    assert 0 < float(jnp.abs(bf - logits).max()) < 0.05
    untied = jax.eval_shape(lambda k: _init_params(small(tie_embeddings=False), k), jax.random.key(0))
    assert untied["lm_head"].shape == (64, 128)


def _mqa_to_mha(params, n_heads):
    """Expand shared key/value heads into one per query head (query head n uses kv head n // G)."""
    lp = dict(params["layers"])
    g = n_heads // lp["wk"].shape[2]
    lp["wk"] = jnp.repeat(lp["wk"], g, axis=2)
    lp["wv"] = jnp.repeat(lp["wv"], g, axis=2)
    return {**params, "layers": lp}


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_mqa_and_gqa_equal_multi_head_with_tied_heads(kv_heads):
    cfg = small(n_kv_heads=kv_heads, attention_chunk=16)
    mha = cfg.model_copy(update={"n_kv_heads": cfg.n_heads})
    params = init_params(cfg, jax.random.key(1))
    tokens, seg, pos = packed_inputs()
    mha_params = _mqa_to_mha(params, cfg.n_heads)
    ref = forward(mha_params, mha, tokens, seg, pos, attn_impl="xla")
    for impl in ("xla", "chunked"):
        out = forward(params, cfg, tokens, seg, pos, attn_impl=impl)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5, rtol=1e-5, err_msg=impl)
    # untie one head's keys: multi-head attention now differs (so the check above can fail)
    lp = dict(mha_params["layers"])
    lp["wk"] = lp["wk"].at[:, :, 0].multiply(-1.0)
    untied = forward({**mha_params, "layers": lp}, mha, tokens, seg, pos, attn_impl="xla")
    assert float(jnp.abs(untied - ref).max()) > 1e-4


def test_document_masking_isolates_packed_documents(tiny):
    """A document's outputs in a packed row equal those of the document alone."""
    cfg, params = tiny
    tokens, seg, pos = packed_inputs()
    packed = forward(params, cfg, tokens, seg, pos)
    alone = forward(params, cfg, tokens[:, 16:36], jnp.ones((2, 20), jnp.int32), pos[:, 16:36])
    np.testing.assert_allclose(np.asarray(packed[:, 16:36]), np.asarray(alone), atol=2e-5)
    # plain causal attention (document_mask: false) is the same thing for a one-document row
    causal = forward(params, cfg.model_copy(update={"document_mask": False}), tokens[:, 16:36],
                     jnp.ones((2, 20), jnp.int32), pos[:, 16:36])
    np.testing.assert_allclose(np.asarray(causal), np.asarray(alone), atol=2e-5)
    # without the boundary (one segment) the second document sees the first: outputs change
    joined = forward(params, cfg, tokens, jnp.ones_like(seg), pos)
    assert float(jnp.abs(joined[:, 16:36] - packed[:, 16:36]).max()) > 1e-4


def test_chunked_attention_matches_dense_values_and_gradients():
    rng = np.random.default_rng(0)
    b, t, n, k, h = 2, 64, 4, 2, 16
    q, kk, v = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((b, t, n, h), (b, t, k, h), (b, t, k, h)))
    seg = jnp.asarray(np.tile(np.repeat([1, 2, 3, 0], [20, 30, 10, 4]), (b, 1)), jnp.int32)

    def value_and_grads(impl):
        f = lambda q, kk, v: attention(q, kk, v, seg, impl=impl, chunk=16)
        out = f(q, kk, v)
        return out, jax.grad(lambda *a: (f(*a) * out).sum(), argnums=(0, 1, 2))(q, kk, v)

    out_c, g_c = jax.jit(lambda: value_and_grads("chunked"))()
    out_d, g_d = jax.jit(lambda: value_and_grads("xla"))()
    np.testing.assert_allclose(np.asarray(out_c), np.asarray(out_d), atol=1e-5)
    for a, b_ in zip(g_c, g_d):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b_), atol=1e-4, rtol=1e-4)


def test_chunked_loss_equals_full_loss_and_gradient(tiny):
    cfg, params = tiny
    tokens, seg, pos = packed_inputs()
    targets = jnp.roll(tokens, -1, axis=1)

    def loss(c):
        return jax.jit(jax.value_and_grad(lambda p: sequence_nll(p, c, tokens, seg, pos, targets).mean()))(params)

    (l1, g1), (l2, g2) = loss(cfg), loss(cfg.model_copy(update={"loss_chunk": 16}))
    assert abs(float(l1) - float(l2)) < 1e-5
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6), g1, g2)


def test_unrolled_layers_and_remat_give_the_same_loss(tiny):
    cfg, params = tiny
    tokens, seg, pos = packed_inputs()
    targets = jnp.roll(tokens, -1, axis=1)

    def loss(c):
        return jax.jit(jax.value_and_grad(lambda p: sequence_nll(p, c, tokens, seg, pos, targets).mean()))(params)

    ref_l, ref_g = loss(cfg)
    for upd in ({"scan_layers": False, "remat": "full"}, {"remat": "dots"}):
        l, g = loss(cfg.model_copy(update=upd))
        assert abs(float(l) - float(ref_l)) < 1e-5, upd
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5), g, ref_g)


def test_chunked_attention_memory_grows_linearly_inside_the_layer_scan():
    """The long-context path: training-step temporaries grow ~T (dense attention: ~T^2)."""
    cfg = small(attention_chunk=256, max_seq_len=8192)
    params = jax.eval_shape(lambda k: _init_params(cfg, k), jax.random.key(0))

    def temp_mb(t, impl):
        s = jax.ShapeDtypeStruct((1, t), jnp.int32)
        f = jax.jit(jax.grad(lambda p, x: sequence_nll(p, cfg, x, x, x, x, attn_impl=impl).sum()))
        return f.lower(params, s).compile().memory_analysis().temp_size_in_bytes / 2 ** 20

    c2, c4 = temp_mb(2048, "chunked"), temp_mb(4096, "chunked")
    d4 = temp_mb(4096, "xla")
    assert c4 / c2 < 2.5, (c2, c4)
    assert c4 < d4 / 4, (c4, d4)
