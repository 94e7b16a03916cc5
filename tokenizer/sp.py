"""SentencePiece: training (in a child process, with progress) and the
``Tokenizer`` wrapper every other module uses.

Why a child process: SentencePiece's trainer logs from C++ straight to stderr and
holds the whole sample in memory; in a child we can turn its log into progress
lines and the memory is returned when it ends.  (Also, per ``stack_notes.md``,
fastText training is unreliable in a process that already trained SentencePiece.)

Lossless encoding: with ``byte_fallback``, ``identity`` normalisation, no extra
whitespace removal and no dummy prefix, SentencePiece round-trips every text
except one character: U+2581 "▁", which it uses for the space and so decodes as a
space.  ``Tokenizer.encode`` writes that character as its three UTF-8 byte pieces,
which decode back to "▁", so ``decode(encode(text)) == text`` for all text.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from typing import Any, Iterable, Sequence

log = logging.getLogger("tokenizer.sp")

META_FILE = "tokenizer.json"
MODEL_FILE = "spm.model"
META_FORMAT = "corpusforge-tokenizer/1"
_SPACE_CHAR = "\u2581"


class TrainError(RuntimeError):
    """SentencePiece refused the sample/config; the message is one line."""


# ----------------------------------------------------------------- options
def spm_options(train_cfg, max_sentence_bytes: int, vocab_size: int | None = None) -> dict[str, Any]:
    """Trainer keyword arguments from the validated config (ids fixed: pad 0, eod 1, bos 2, unk 3)."""
    c = train_cfg
    opts = {
        "model_type": c.model_type,
        "vocab_size": vocab_size or c.vocab_size,
        "character_coverage": c.character_coverage,
        "byte_fallback": c.byte_fallback,
        "split_digits": c.split_digits,
        "normalization_rule_name": c.normalization_rule_name,
        "remove_extra_whitespaces": c.remove_extra_whitespaces,
        "add_dummy_prefix": c.add_dummy_prefix,
        "allow_whitespace_only_pieces": c.allow_whitespace_only_pieces,
        "split_by_whitespace": c.split_by_whitespace,
        "split_by_number": c.split_by_number,
        "split_by_unicode_script": c.split_by_unicode_script,
        "max_sentencepiece_length": c.max_sentencepiece_length,
        "pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3,
        "pad_piece": c.pad_piece, "eos_piece": c.eod_piece, "bos_piece": c.bos_piece, "unk_piece": c.unk_piece,
        "num_threads": c.num_threads,
        "max_sentence_length": max_sentence_bytes,
        "input_sentence_size": 0,          # the sample is already the sample: load it all
        "shuffle_input_sentence": False,
        "hard_vocab_limit": True,
        "minloglevel": 0,
    }
    if c.all_control_symbols():
        opts["control_symbols"] = c.all_control_symbols()
    if c.user_defined_symbols:
        opts["user_defined_symbols"] = list(c.user_defined_symbols)
    opts.update(c.extra_options)
    return opts


# ----------------------------------------------------------------- training
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_REQUIRED = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")
_BPE_ADDED = re.compile(r"Added: freq=\d+ size=(\d+)")
#: absl log lines: ``I0000 00:00:1795790672.532822   21847 trainer_interface.cc:446] Loaded all 203 sentences``
_LOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+\.cc:\d+\] (.*)$")


def _worker() -> None:
    """Child process: read the spec from stdin, train, write the model file."""
    import sentencepiece as spm

    spec = json.load(sys.stdin)

    def sentences() -> Iterable[str]:
        for path in spec["files"]:
            if "://" in path:
                from apache_beam.io.filesystems import FileSystems

                fh = io.TextIOWrapper(FileSystems.open(path), encoding="utf-8", newline="\n")
            else:
                fh = open(path, encoding="utf-8", newline="\n")
            with fh:
                for line in fh:
                    yield line[:-1] if line.endswith("\n") else line

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=sentences(), model_writer=buf, **spec["options"])
    with open(spec["output"], "wb") as f:
        f.write(buf.getvalue())


def _run_trainer(files: list[str], options: dict[str, Any], output: str, label: str) -> tuple[int, list[str]]:
    spec = json.dumps({"files": files, "options": options, "output": output})
    cmd = [sys.executable, "-c", "from tokenizer.sp import _worker; _worker()"]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env=env, text=True, encoding="utf-8", errors="replace")
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(spec)
    proc.stdin.close()
    tail: list[str] = []
    vocab = options["vocab_size"]
    next_pct = 10
    for raw in proc.stderr:
        line = raw.rstrip("\n")
        tail = (tail + [line])[-40:]
        m = _LOG_LINE.match(line)
        msg = m.group(1) if m else line
        if not m:
            continue
        b = _BPE_ADDED.search(msg)
        if b:  # BPE logs every new piece: show every 10% of the vocabulary
            if int(b.group(1)) * 100 >= next_pct * vocab:
                log.info("[%s] bpe merges: %s/%s pieces", label, b.group(1), vocab)
                next_pct += 10
            continue
        if msg.startswith(("Adding meta_piece", "Starts training with", "Unicode", "trainer_spec", "normalizer_spec",
                           "denormalizer_spec", "}", "  ")):
            continue
        if any(k in msg for k in ("Loaded all", "Alphabet size", "Final character coverage", "Initialized",
                                  "EM sub_iter", "Saving model", "Completed", "Extracting seed", "Using")):
            log.info("[%s] %s", label, msg)
    return proc.wait(), tail


def train_model(files: list[str], train_cfg, max_sentence_bytes: int, model_path: str, *, label: str,
                vocab_size: int | None = None) -> dict[str, Any]:
    """Trains SentencePiece on the sample ``files`` (one sentence per line) and writes
    ``model_path``; returns {vocab_size, requested_vocab_size, seconds, note}."""
    requested = vocab_size or train_cfg.vocab_size
    size = requested
    note = None
    t0 = time.time()
    for attempt in range(3):
        opts = spm_options(train_cfg, max_sentence_bytes, size)
        log.info("[%s] training SentencePiece %s, vocab %s, on %d sample file(s)", label, train_cfg.model_type,
                 f"{size:,}", len(files))
        tmp = model_path + ".tmp"
        rc, tail = _run_trainer(files, opts, tmp, label)
        text = "\n".join(tail)
        if rc == 0 and os.path.exists(tmp):
            os.replace(tmp, model_path)
            break
        too_high = _TOO_HIGH.search(text)
        if too_high and train_cfg.vocab_size_policy == "fit" and attempt < 2:
            size = int(too_high.group(2))
            note = (f"the sample supports at most {size:,} pieces; trained {size:,} instead of the requested "
                    f"{requested:,} (train.vocab_size_policy: fit)")
            log.warning("[%s] %s", label, note)
            continue
        if too_high:
            raise TrainError(f"vocab_size {size} is too large for this sample (SentencePiece allows <= "
                             f"{too_high.group(2)}); lower train.vocab_size or set train.vocab_size_policy: fit")
        req = _REQUIRED.search(text)
        if req:
            raise TrainError(f"vocab_size {req.group(1)} cannot hold the {req.group(2)} required characters and "
                             f"special pieces at character_coverage {train_cfg.character_coverage}; raise "
                             f"train.vocab_size or lower train.character_coverage (>= 0.98)")
        last = next((line for line in reversed(tail) if line.strip()), f"exit code {rc}")
        raise TrainError(f"SentencePiece training failed: {last.strip()}")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_path)
    return {"vocab_size": sp.get_piece_size(), "requested_vocab_size": requested,
            "seconds": round(time.time() - t0, 2), "note": note}


# ----------------------------------------------------------------- the tokenizer
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Tokenizer:
    """A trained SentencePiece model plus the metadata it was made with.

    ``encode`` is lossless for models trained with the default (lossless) config;
    ``eod_id`` ends a document, ``pad_id`` pads a packed sequence."""

    def __init__(self, model_proto: bytes, meta: dict[str, Any] | None = None):
        self.model_proto = bytes(model_proto)
        self.meta = meta or {}
        self.sha256 = sha256_bytes(self.model_proto)
        self._load()

    def _load(self) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        sp = self.sp
        self.vocab_size = sp.get_piece_size()
        self.pad_id, self.eod_id, self.bos_id, self.unk_id = sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()
        bytes_ids = [sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_CHAR.encode("utf-8")]
        has_bytes = all(i != self.unk_id and sp.is_byte(i) for i in bytes_ids)
        pieces = sp.encode("a", out_type=str)
        dummy_prefix = bool(pieces) and pieces[0].startswith(_SPACE_CHAR)
        # Splitting on U+2581 is only exact without a dummy prefix (else each part gets one).
        self._space_char_ids = bytes_ids if has_bytes and not dummy_prefix else None

    def __getstate__(self):
        return {"model_proto": self.model_proto, "meta": self.meta}

    def __setstate__(self, state):
        self.model_proto = state["model_proto"]
        self.meta = state["meta"]
        self.sha256 = sha256_bytes(self.model_proto)
        self._load()

    # -- loading
    @classmethod
    def load(cls, path: str, *, verify: bool = True) -> "Tokenizer":
        """``path``: a tokenizer directory (``tokenizer.json`` + ``spm.model``) or a
        ``.model`` file (its ``tokenizer.json`` is read when next to it)."""
        from tokenizer.corpus import exists, join, read_json
        from tokenizer.format import FingerprintMismatch

        if path.endswith(".model"):
            model_path = path
            meta_path = join(os.path.dirname(path) or ".", META_FILE)
        else:
            meta_path = join(path, META_FILE)
            model_path = join(path, MODEL_FILE)
        if not exists(model_path):
            from tokenizer.cli import UsageError

            raise UsageError(f"{path}: no SentencePiece model at {model_path} (train one: python -m tokenizer.train)")
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(model_path) as f:
            proto = f.read()
        meta = read_json(meta_path) if exists(meta_path) else {}
        sha = sha256_bytes(proto)
        if verify and meta and meta.get("model_sha256") != sha:
            raise FingerprintMismatch(
                f"{model_path}: model sha256 {sha[:12]} differs from {meta_path}'s {str(meta.get('model_sha256'))[:12]} "
                f"(the model file was replaced after training)")
        try:
            return cls(proto, meta)
        except RuntimeError as e:
            from tokenizer.cli import UsageError

            raise UsageError(f"{model_path}: not a SentencePiece model ({str(e).splitlines()[0][:120]})") from None

    # -- ids
    def piece_to_id(self, piece: str) -> int:
        i = self.sp.piece_to_id(piece)
        if i == self.unk_id and piece != self.sp.id_to_piece(self.unk_id):
            raise KeyError(f"{piece!r} is not in the vocabulary")
        return i

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    # -- encode / decode
    def encode(self, text: str) -> list[int]:
        if self._space_char_ids is None or _SPACE_CHAR not in text:
            return self.sp.encode(text)
        out: list[int] = []
        for j, part in enumerate(text.split(_SPACE_CHAR)):
            if j:
                out += self._space_char_ids
            if part:
                out += self.sp.encode(part)
        return out

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """Encodes many texts in one call (SentencePiece's own threads)."""
        plain = [i for i, t in enumerate(texts) if self._space_char_ids is None or _SPACE_CHAR not in t]
        res: list[list[int] | None] = [None] * len(texts)
        if plain:
            for i, ids in zip(plain, self.sp.encode([texts[i] for i in plain], num_threads=num_threads)):
                res[i] = ids
        for i, t in enumerate(texts):
            if res[i] is None:
                res[i] = self.encode(t)
        return res  # type: ignore[return-value]

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def special_ids(self) -> dict[str, int]:
        sp = self.sp
        out = {"pad": self.pad_id, "eod": self.eod_id, "bos": self.bos_id, "unk": self.unk_id}
        for i in range(sp.get_piece_size()):
            if sp.is_control(i) and i not in out.values():
                out[sp.id_to_piece(i)] = i
        return out
