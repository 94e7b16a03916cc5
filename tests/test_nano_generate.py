"""Generation (model/decode.py, train/generate.py): the KV cache against full recompute,
batching, sampling filters, the CLI on float and int4 checkpoints, one-line errors."""
from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import ModelConfig
from model.decode import Sampling, cache_bytes, filter_logits, generate, sample
from model.quant import QuantConfig, QuantizedModel
from model.transformer import init_params as _init_params

init_params = jax.jit(_init_params, static_argnums=0)

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [40, 41, 42, 43]]


@pytest.fixture(scope="module")
def model():
    # init_std 0.2 gives peaked next-token distributions (few near-ties for argmax)
    cfg = ModelConfig(name="g", vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=16, d_ff=128,
                      init_std=0.2, max_seq_len=64)
    return cfg, init_params(cfg, jax.random.PRNGKey(0))


def test_kv_cache_greedy_equals_full_recompute(model):
    cfg, params = model
    a = generate(params, cfg, PROMPTS, max_new_tokens=16, return_logits=True)
    b = generate(params, cfg, PROMPTS, max_new_tokens=16, use_cache=False, return_logits=True, bucket=8)
    assert a.tokens == b.tokens
    assert all(len(t) == 16 for t in a.tokens) and a.new_tokens == 48
    # fp32: the cached logits are the training forward pass's, to float rounding
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-4, rtol=1e-4)
    # not vacuous: the greedy choice is clear of the numerical error at every step
    top2 = np.sort(b.logits, axis=-1)[..., -2:]
    assert np.min(top2[..., 1] - top2[..., 0]) > 10 * np.abs(a.logits - b.logits).max()


def test_batched_generation_equals_one_prompt_at_a_time(model):
    cfg, params = model
    batch = generate(params, cfg, PROMPTS, max_new_tokens=10).tokens
    alone = [generate(params, cfg, [p], max_new_tokens=10).tokens[0] for p in PROMPTS]
    assert batch == alone


def test_int4_cache_equals_int4_recompute(model):
    cfg, params = model
    qm = QuantizedModel.from_params(params, cfg, QuantConfig(group_size=32))
    up, ul, dq = qm.unpackers()
    q = qm.device_arrays()
    a = generate(q, cfg, PROMPTS, max_new_tokens=12, unpack=up, unpack_layer=ul, return_logits=True)
    b = generate(q, cfg, PROMPTS, max_new_tokens=12, use_cache=False, dequantize=dq, return_logits=True)
    assert a.tokens == b.tokens
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-4, rtol=1e-4)


def test_eos_stops_a_row_and_sampling_is_seeded(model):
    cfg, params = model
    free = generate(params, cfg, PROMPTS, max_new_tokens=8).tokens
    eos = free[0][2]                                     # row 0 stops at its third token
    stopped = generate(params, cfg, PROMPTS, max_new_tokens=8, eos_id=eos).tokens
    assert stopped[0] == free[0][: free[0].index(eos)]
    for got, full in zip(stopped[1:], free[1:]):
        assert got == (full[: full.index(eos)] if eos in full else full)
    s = Sampling(temperature=1.0, top_k=20, top_p=0.9)
    x = generate(params, cfg, PROMPTS, max_new_tokens=8, sampling=s, seed=3).tokens
    assert x == generate(params, cfg, PROMPTS, max_new_tokens=8, sampling=s, seed=3).tokens
    assert x == generate(params, cfg, PROMPTS, max_new_tokens=8, sampling=s, seed=3, use_cache=False).tokens
    assert x != generate(params, cfg, PROMPTS, max_new_tokens=8, sampling=s, seed=4).tokens


def test_sampling_filters():
    logits = jnp.log(jnp.array([[0.4, 0.3, 0.15, 0.1, 0.05]], jnp.float32))
    kept = lambda s: np.isfinite(np.asarray(filter_logits(logits, s)))[0].tolist()
    assert kept(Sampling(1.0, top_k=2)) == [True, True, False, False, False]
    assert kept(Sampling(1.0, top_p=0.7)) == [True, True, False, False, False]        # 0.4 + 0.3 reaches 0.7
    assert kept(Sampling(1.0, top_p=0.71)) == [True, True, True, False, False]
    assert kept(Sampling(1.0, top_p=0.01)) == [True, False, False, False, False]       # the top token always stays
    # temperature sharpens; draws stay inside the kept set
    t = np.asarray(jax.nn.softmax(filter_logits(logits, Sampling(0.5))))[0]
    assert t[0] > 0.4 and abs(t.sum() - 1) < 1e-6
    draws = jax.vmap(lambda k: sample(jnp.tile(logits, (1, 1)), k, Sampling(1.0, top_k=3)))(
        jax.random.split(jax.random.PRNGKey(0), 400))
    counts = np.bincount(np.asarray(draws).ravel(), minlength=5)
    assert counts[3] == counts[4] == 0 and counts[0] > counts[1] > counts[2] > 0
    assert int(sample(logits, jax.random.PRNGKey(0), Sampling()).item()) == 0        # greedy
    # ids past the tokenizer's vocabulary (a padded model vocabulary) are never picked
    rev = logits[:, ::-1]
    assert int(sample(rev, jax.random.PRNGKey(0), Sampling()).item()) == 4
    assert int(sample(rev, jax.random.PRNGKey(0), Sampling(vocab_limit=3)).item()) == 2
    limited = jax.vmap(lambda k: sample(rev, k, Sampling(1.0, vocab_limit=3)))(jax.random.split(jax.random.PRNGKey(1), 200))
    assert int(np.asarray(limited).max()) <= 2
    with pytest.raises(ValueError):
        Sampling(top_p=0.0)


def test_multi_query_cache_is_n_heads_times_smaller():
    cfg = ModelConfig(name="c", vocab_size=256, d_model=256, n_layers=4, n_heads=8, n_kv_heads=1, head_dim=32, d_ff=512)
    mqa = cache_bytes(cfg, 4, 1024)
    assert mqa == 2 * 4 * 4 * 1024 * 1 * 32 * 4
    assert cache_bytes(cfg, 4, 1024, kv_heads=8) == 8 * mqa


# ---- the CLI ---------------------------------------------------------------------------------

def _checkpoint(run_dir, cfg, params, data):
    """A run dir as the trainer writes it (Orbax; params + the meta the tools read)."""
    from train.checkpoint import Checkpointer
    ck = Checkpointer(os.path.join(run_dir, "checkpoints"), async_save=False)
    state = {"step": jnp.int32(5), "params": params, "opt_state": {"mu": params}, "rng": jax.random.PRNGKey(1)}
    meta = {"config_fingerprint": "test", "preset": "test", "steps": 5, "model": cfg.model_dump(mode="json"),
            "data": data, "seq_len": 32, "batch_size": 4, "eval_batches": 2}
    ck.save(5, state, {"train": {}}, meta)
    ck.close()


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, model):
    cfg, params = model
    run = tmp_path_factory.mktemp("synthetic_run")
    _checkpoint(str(run), cfg, params, {"kind": "synthetic", "options": {}, "seed": 0})
    return str(run)


def _gen(capsys, *argv):
    from train.generate import main
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_on_a_synthetic_run_float_and_int4(synthetic_run, model, tmp_path, capsys):
    cfg, params = model
    rc, out, err = _gen(capsys, "--checkpoint", synthetic_run, "--prompt", "5 6 7 8 9 10 11", "--prompt", "12 13",
                        "--max-new-tokens", "6", "--json")
    assert rc == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    expect = generate(params, cfg, PROMPTS[:2], max_new_tokens=6).tokens
    assert [r["ids"] for r in rows] == expect and rows[0]["completion"] == " ".join(map(str, expect[0]))
    assert "KV cache" in err and "MQA" in err
    rc, out2, _ = _gen(capsys, "--checkpoint", synthetic_run, "--prompt", "5 6 7 8 9 10 11", "--prompt", "12 13",
                       "--max-new-tokens", "6", "--json", "--no-cache")
    assert rc == 0 and out2 == out
    # export, then generate from the export (the source run's data config travels with it)
    from train.quantize import main as quantize_main
    assert quantize_main(["--checkpoint", synthetic_run, "--output", str(tmp_path / "q"), "--eval-batches", "0",
                          "--set", "group_size=32"]) == 0
    assert "int4 matrices" in capsys.readouterr().out
    rc, out3, err3 = _gen(capsys, "--checkpoint", str(tmp_path / "q"), "--prompt", "5 6 7 8 9 10 11",
                          "--max-new-tokens", "6", "--json")
    assert rc == 0 and err3.startswith("int4 ")
    qm = QuantizedModel.from_params(params, cfg, QuantConfig(group_size=32))
    up, ul, _ = qm.unpackers()
    assert json.loads(out3)["ids"] == generate(qm.device_arrays(), cfg, PROMPTS[:1], max_new_tokens=6, unpack=up,
                                               unpack_layer=ul).tokens[0]


def test_cli_errors_are_one_line(synthetic_run, tmp_path, capsys):
    cases = [
        (["--checkpoint", str(tmp_path / "missing"), "--prompt", "1"], "checkpoint directory not found"),
        (["--checkpoint", str(tmp_path), "--prompt", "1"], "no checkpoints in it"),
        (["--checkpoint", synthetic_run, "--prompt", "hello world"], "token ids"),
        (["--checkpoint", synthetic_run, "--prompt", "1 999"], "outside the model's vocabulary"),
        (["--checkpoint", synthetic_run], "no prompt"),
        (["--checkpoint", synthetic_run, "--prompt", "1", "--top-p", "1.5"], "--top-p"),
        (["--checkpoint", synthetic_run, "--prompt", "1", "--max-new-tokens", "500"], "max_seq_len"),
        (["--checkpoint", synthetic_run, "--prompt", "1", "--step", "9"], "no checkpoint at step 9"),
        (["--checkpoint", synthetic_run, "--prompt", "x", "--tokenizer", str(tmp_path / "tok")], "tokenizer not found"),
    ]
    for argv, msg in cases:
        rc, out, err = _gen(capsys, *argv)
        lines = [x for x in err.splitlines() if x.startswith("error:")]
        assert rc == 2 and len(lines) == 1 and msg in lines[0], (argv, err)


def test_cli_text_run_uses_its_tokenizer(model, tmp_path, capsys):
    """A run on a tokenizer's ids: prompts are encoded, completions decoded, <eod> stops;
    with no recorded tokenizer the CLI asks for one."""
    import sentencepiece as spm
    cfg, params = model
    text = tmp_path / "t.txt"
    text.write_text("\n".join(f"the cat {i} sat on the mat {i % 7}" for i in range(200)))
    (tmp_path / "tok").mkdir()
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "tok" / "spm"), vocab_size=40, hard_vocab_limit=False,
                                   model_type="unigram", pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                                   minloglevel=2)
    import hashlib

    from tests.mixtures_data import make_docs, write_mixture, write_pack
    run = tmp_path / "run"
    _checkpoint(str(run), cfg, params, {"kind": "tokens", "options": {"path": "x.npy"}, "seed": 0})
    rc, _, err = _gen(capsys, "--checkpoint", str(run), "--prompt", "the cat")
    assert rc == 2 and "pass --tokenizer" in err
    # a mixture run: its token manifest names the tokenizer (sha256), which must match
    sha = hashlib.sha256((tmp_path / "tok" / "spm.model").read_bytes()).hexdigest()
    for name, tok_sha in (("good", sha), ("other", "f" * 64)):
        write_pack(tmp_path / f"pack_{name}", {"web": make_docs("web", 4, 10, 20)}, 16, tokenizer_sha=tok_sha)
        mix = write_mixture(tmp_path / f"mix_{name}.yaml", {"name": name, "tokens_dir": str(tmp_path / f"pack_{name}"),
                                                            "sources": {"web": {}},
                                                            "stages": [{"name": "s", "tokens": 64,
                                                                        "weights": {"web": 1.0}}]})
        _checkpoint(str(tmp_path / f"run_{name}"), cfg, params, {"kind": "mixture", "options": {"config": mix}})
    rc, _, err = _gen(capsys, "--checkpoint", str(tmp_path / "run_other"), "--prompt", "the cat", "--tokenizer",
                      str(tmp_path / "tok"))
    assert rc == 2 and "is not the one the run was trained with" in err
    rc, out, err = _gen(capsys, "--checkpoint", str(tmp_path / "run_good"), "--prompt", "the cat", "--tokenizer",
                        str(tmp_path / "tok"), "--max-new-tokens", "8", "--json")
    assert rc == 0, err
    r = json.loads(out)
    tok = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok" / "spm.model"))
    assert r["prompt_ids"] == tok.encode("the cat")
    assert r["completion"] == tok.decode(r["ids"]) and 1 not in r["ids"]         # stops before <eod>
    n = tok.get_piece_size()
    assert all(i < n for i in r["ids"])                      # the model's padded vocabulary is masked
    expect = generate(params, cfg, [r["prompt_ids"]], max_new_tokens=8, eos_id=1,
                      sampling=Sampling(vocab_limit=n)).tokens[0]
    assert r["ids"] == expect
