"""SentencePiece training through ``tokenizer.sp`` (child process): unigram and BPE,
vocabulary fit/strict, one-line errors, and the lossless ``Tokenizer``.
Small samples from the shipped UDHR text; no Beam."""
from __future__ import annotations

import ast
import json
import os
import pathlib

import pytest

from tokenizer.config import load_config
from tokenizer.sp import Tokenizer, TrainError, train_model

ROOT = pathlib.Path(__file__).resolve().parent.parent
UDHR = ROOT / "tokenizer" / "data" / "udhr.jsonl"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> pathlib.Path:
    """English, Russian, Hindi and Korean declaration lines (few required characters)."""
    path = tmp_path_factory.mktemp("spm") / "sample.txt"
    lines = []
    for line in UDHR.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        if d["lang"] in ("en", "ru", "hi", "ko"):
            lines += [x for x in d["text"].split("\n") if x.strip()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _texts():
    return [json.loads(x)["text"] for x in UDHR.read_text(encoding="utf-8").splitlines()
            if json.loads(x)["lang"] in ("en", "ru", "hi", "ko", "zh")]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_train_both_model_types_lossless(sample, tmp_path, model_type):
    cfg = load_config(overrides=[f"train.model_type={model_type}", "train.vocab_size=900", "train.num_threads=2",
                                 "train.character_coverage=0.9995"])
    info = train_model([str(sample)], cfg.train, 4096, str(tmp_path / "m.model"), label=model_type)
    assert info["vocab_size"] == 900 and info["note"] is None
    tok = Tokenizer((tmp_path / "m.model").read_bytes())
    assert (tok.pad_id, tok.eod_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.piece_to_id("<boi>") == 4 and tok.piece_to_id("\n") > 9
    # Chinese was not in the sample: byte fallback keeps it exact
    for text in _texts():
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("Article 12 ▁ 第十二条 १२")
    assert tok.unk_id not in ids
    assert [tok.id_to_piece(i) for i in tok.encode("2024")] == ["2", "0", "2", "4"]  # split digits
    with pytest.raises(KeyError):
        tok.piece_to_id("no such piece")


def test_training_is_deterministic_for_fixed_threads(sample, tmp_path):
    cfg = load_config(overrides=["train.vocab_size=900", "train.num_threads=2"])
    a = tmp_path / "a.model"
    b = tmp_path / "b.model"
    train_model([str(sample)], cfg.train, 4096, str(a), label="a")
    train_model([str(sample)], cfg.train, 4096, str(b), label="b")
    assert a.read_bytes() == b.read_bytes()


def test_vocab_fit_and_strict(sample, tmp_path):
    fit = load_config(overrides=["train.vocab_size=60000", "train.num_threads=2"])
    info = train_model([str(sample)], fit.train, 4096, str(tmp_path / "f.model"), label="fit")
    assert info["vocab_size"] < 60000 and info["requested_vocab_size"] == 60000
    assert "trained" in info["note"] and "vocab_size_policy: fit" in info["note"]
    strict = load_config(overrides=["train.vocab_size=60000", "train.vocab_size_policy=strict", "train.num_threads=2"])
    with pytest.raises(TrainError, match="too large for this sample") as e:
        train_model([str(sample)], strict.train, 4096, str(tmp_path / "s.model"), label="strict")
    assert "\n" not in str(e.value)
    small = load_config(overrides=["train.vocab_size=300", "train.num_threads=2"])
    with pytest.raises(TrainError, match="required characters"):
        train_model([str(sample)], small.train, 4096, str(tmp_path / "r.model"), label="small")
    assert not (tmp_path / "s.model").exists() and not (tmp_path / "r.model").exists()


def test_tokenizer_pickles(sample, tmp_path):
    import pickle

    cfg = load_config(overrides=["train.vocab_size=900", "train.num_threads=2"])
    train_model([str(sample)], cfg.train, 4096, str(tmp_path / "m.model"), label="p")
    tok = Tokenizer((tmp_path / "m.model").read_bytes(), {"x": 1})
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.sha256 == tok.sha256 and clone.meta == {"x": 1}
    assert clone.encode("a▁b") == tok.encode("a▁b") and clone.decode(tok.encode("a▁b")) == "a▁b"


def test_tokenizer_package_does_not_import_trainer_or_model():
    for path in (ROOT / "tokenizer").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in ("train", "model", "mixtures"), f"{path.name} imports {n}"
    assert os.path.exists(ROOT / "tokenizer" / "FORMAT.md")


def test_doc_tokens_bos_and_eod(sample, tmp_path):
    from tokenizer.pack import bucket_of, doc_tokens

    cfg = load_config(overrides=["train.vocab_size=900", "train.num_threads=2"])
    train_model([str(sample)], cfg.train, 4096, str(tmp_path / "m.model"), label="d")
    tok = Tokenizer((tmp_path / "m.model").read_bytes())
    plain = doc_tokens(tok, "Everyone has the right to life.", add_bos=False)
    with_bos = doc_tokens(tok, "Everyone has the right to life.", add_bos=True)
    assert plain[-1] == tok.eod_id and plain.dtype.name == "uint32"
    assert with_bos[0] == tok.bos_id and with_bos[1:].tolist() == plain.tolist()
    assert tok.decode(plain[:-1].tolist()) == "Everyone has the right to life."
    # key-range buckets keep the key order
    keys = [0, 1, 2**61, 2**62, 2**63 - 1]
    assert [bucket_of(k, 4) for k in keys] == [0, 0, 1, 2, 3]
