"""int4 export (model/quant.py): nibble packing, group-wise quantization error bounds,
the quantized forward pass against the float one, the file format and its loader."""
from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import ConfigError, ModelConfig
from model.decode import forward_cached, init_cache
from model.quant import (QuantConfig, QuantizedModel, dequantize_matrix, load_quant_config, pack_int4,
                         quantize_matrix, unpack_int4)
from model.transformer import forward as _forward
from model.transformer import init_params as _init_params

forward = jax.jit(_forward, static_argnums=1)
init_params = jax.jit(_init_params, static_argnums=0)


def cfg_small(**kw) -> ModelConfig:
    base = dict(name="q", vocab_size=256, d_model=128, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=32, d_ff=256,
                init_std=0.05)
    base.update(kw)
    return ModelConfig(**base)


# ---- packing -------------------------------------------------------------------------------

def test_pack_unpack_round_trip_numpy_and_jax():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 16, (3, 64, 5)).astype(np.uint8)
    p = pack_int4(q)
    assert p.shape == (3, 32, 5) and p.dtype == np.uint8
    np.testing.assert_array_equal(unpack_int4(p), q)
    pj = pack_int4(jnp.asarray(q))
    np.testing.assert_array_equal(np.asarray(pj), p)
    np.testing.assert_array_equal(np.asarray(unpack_int4(pj)), q)
    # entry 2i in the low nibble, 2i+1 in the high one
    assert pack_int4(np.array([[1], [2], [15], [0]], np.uint8)).ravel().tolist() == [0x21, 0x0F]


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_quantize_error_is_bounded_by_the_group_scale(scheme):
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.02, (2, 100, 7)).astype(np.float32)         # IN = 100: the last group is padded
    w[0, :64, 0] *= 50                                               # one loud group must not hurt the others
    qt = quantize_matrix(w, 32, scheme, "float32")
    assert qt["packed"].shape == (2, 64, 7) and qt["scale"].shape == (2, 4, 7)
    assert ("zero" in qt) == (scheme == "asymmetric")
    deq = dequantize_matrix(qt, 100, 32)
    assert deq.shape == w.shape
    step = np.repeat(qt["scale"], 32, axis=1)[:, :100]                # each entry's group scale
    err = np.abs(deq - w)
    # round-to-nearest: half a step (asymmetric: a step where the zero point rounds the range to 16 levels)
    assert np.all(err <= (0.5 if scheme == "symmetric" else 1.0) * step + 1e-7)
    assert np.mean(err / step) < 0.3                                  # ~uniform rounding error: mean 1/4 step
    # the loud group's scale stays its own
    assert qt["scale"][0, 0, 0] > 20 * qt["scale"][0, 2, 0]
    # the jax path (what the model runs) agrees with numpy
    np.testing.assert_allclose(np.asarray(dequantize_matrix(jax.tree.map(jnp.asarray, qt), 100, 32)), deq, atol=1e-7)


def test_exactly_representable_values_and_zero_groups():
    s = 0.125
    w = (np.arange(-7, 9) % 15 - 7).astype(np.float32).reshape(16, 1) * s    # integers in [-7, 7] times s
    w[0] = 7 * s                                                             # pins max|w| = 7 s
    qt = quantize_matrix(w, 16, "symmetric", "float32")
    np.testing.assert_array_equal(dequantize_matrix(qt, 16, 16), w)
    z = quantize_matrix(np.zeros((8, 3), np.float32), 8, "asymmetric")
    out = dequantize_matrix(z, 8, 8)
    assert np.all(out == 0) and np.all(np.isfinite(out))


def test_quant_config_is_validated():
    assert QuantConfig().group_size == 64
    with pytest.raises(ValueError, match="even"):
        QuantConfig(group_size=33)
    with pytest.raises(ConfigError, match="unknown key"):
        load_quant_config(None, {"groupsize": 32})
    with pytest.raises(ConfigError, match="scheme"):
        load_quant_config(None, {"scheme": "nf4"})


# ---- the model ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    cfg = cfg_small()
    params = init_params(cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    tok = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 32)), jnp.int32)
    seg, pos = jnp.ones_like(tok), jnp.tile(jnp.arange(32, dtype=jnp.int32), (2, 1))
    return cfg, params, (tok, seg, pos), forward(params, cfg, tok, seg, pos)


def _errors(ref, out):
    rel = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
    p, q = jax.nn.log_softmax(ref), jax.nn.log_softmax(out)
    return rel, float(jnp.mean(jnp.sum(jnp.exp(p) * (p - q), -1)))


def test_quantized_forward_matches_the_float_one_within_tolerance(model):
    """Tolerance (random-init weights, N(0, 0.05), the hardest case for 4 bits: no
    outliers to spend the range on): relative L2 error of the logits <= 0.30 and mean
    KL(float || int4) <= 0.02 nats at group 64 symmetric (measured 0.26 / 0.011); smaller
    groups and the asymmetric scheme are more accurate."""
    cfg, params, inputs, ref = model
    errs = {}
    for g in (16, 64, 128):
        for scheme in ("symmetric", "asymmetric"):
            qm = QuantizedModel.from_params(params, cfg, QuantConfig(group_size=g, scheme=scheme, embedding="float32"))
            dq = jax.jit(qm.unpackers()[2])
            out = forward(dq(qm.device_arrays()), cfg, *inputs)
            errs[g, scheme] = _errors(ref, out)
    rel, kl = errs[64, "symmetric"]
    assert rel <= 0.30 and kl <= 0.02, errs
    assert errs[16, "symmetric"][0] < errs[64, "symmetric"][0] < errs[128, "symmetric"][0], errs
    assert all(errs[g, "asymmetric"][1] < errs[g, "symmetric"][1] for g in (16, 64, 128)), errs
    # int4 embedding costs more, bf16 embedding almost nothing
    qe = QuantizedModel.from_params(params, cfg, QuantConfig(embedding="int4"))
    qb = QuantizedModel.from_params(params, cfg, QuantConfig(embedding="bfloat16"))
    kl_e = _errors(ref, forward(qe.dequantize(), cfg, *inputs))[1]
    kl_b = _errors(ref, forward(qb.dequantize(), cfg, *inputs))[1]
    assert kl_b < kl_e and abs(kl_b - kl) < 0.2 * kl


def test_the_runtime_int4_path_equals_the_dequantized_model(model):
    """The cached decoder dequantizes per layer inside its layer loop; it must compute the
    same function as the training forward pass over the dequantized weights."""
    cfg, params, (tok, seg, pos), _ = model
    qm = QuantizedModel.from_params(params, cfg, QuantConfig(group_size=32, scheme="asymmetric"))
    ref = forward(qm.dequantize(), cfg, tok, seg, pos)
    up, ul, _ = qm.unpackers()
    run = jax.jit(lambda p, t: forward_cached(p, cfg, t, init_cache(cfg, 2, 32), 0, jnp.zeros(2, jnp.int32),
                                              unpack=up, unpack_layer=ul)[0])
    np.testing.assert_allclose(np.asarray(run(qm.device_arrays(), tok)), np.asarray(ref), atol=1e-4, rtol=1e-4)


def test_sizes_file_format_and_loader(model, tmp_path):
    cfg, params, inputs, _ = model
    qcfg = QuantConfig(group_size=64, scheme="asymmetric", embedding="bfloat16")
    qm = QuantizedModel.from_params(params, cfg, qcfg)
    n = qm.nbytes()
    # 4 bits per weight + a float16 scale and a uint8 zero per 64 weights, exactly
    assert n["int4_bytes"] == n["int4_params"] // 2 + n["int4_params"] // 64 * 3
    assert 3.6 < 2 * n["int4_params"] / n["int4_bytes"] < 3.7                 # vs bf16
    out = tmp_path / "int4"
    saved = qm.save(str(out), extra={"source": {"step": 7}})
    assert saved["weights_bytes"] == os.path.getsize(out / "model.safetensors")
    assert saved["weights_bytes"] < n["total_bytes"] + 8192                   # header only on top
    back, meta = QuantizedModel.load(str(out))
    assert meta["source"]["step"] == 7 and back.model_cfg == cfg and back.qcfg == qcfg
    for k, v in qm.arrays.items():
        for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(back.arrays[k])):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    # one-line errors: corrupted weights, truncated weights, not an export
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="sha256"):
        QuantizedModel.load(str(out))
    (out / "model.safetensors").write_bytes(bytes(data[:-10]))
    with pytest.raises(ConfigError, match="truncated"):
        QuantizedModel.load(str(out))
    with pytest.raises(ConfigError, match="not an int4 export"):
        QuantizedModel.load(str(tmp_path))
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["format"] == "corpusforge-int4/1" and cfg_json["tensors"]["layers.wq"]["kind"] == "int4"
    assert cfg_json["tensors"]["embed"]["kind"] == "bfloat16"
