"""Reading a built corpus (what ``pipelines/build_corpus.py`` writes) and the
small per-document helpers the tokenizer jobs share: language key, dominant
script, sample units, word counts.

A corpus directory holds ``text/<source>-i-of-n.parquet`` (``filters.schema.TEXT_SCHEMA``)
and ``manifest.json`` (with ``manifest_hash`` and per-source counts).
"""
from __future__ import annotations

import json
import posixpath
import re
import unicodedata
from typing import Any, Iterator

from filters.schema import stable_hash

TEXT_COLUMNS = ["id", "text", "source", "lang", "script", "metadata"]


class CorpusError(ValueError):
    """A missing or unusable corpus directory, formatted as one line."""


def join(*parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(*parts) if "://" in parts[0] else posixpath.join(*parts)


def read_json(path: str) -> Any:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        return json.loads(f.read())


def exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(path)


def load_corpus_manifest(corpus_dir: str) -> dict[str, Any]:
    """The corpus manifest, checked for what the tokenizer jobs rely on."""
    path = join(corpus_dir, "manifest.json")
    if not exists(path):
        raise CorpusError(f"{corpus_dir}: no manifest.json (build a corpus first: make demo, or "
                          f"pipelines/build_corpus.py --output {corpus_dir})")
    try:
        m = read_json(path)
    except ValueError as e:
        raise CorpusError(f"{path}: not valid JSON ({e})") from None
    for key in ("manifest_hash", "sources"):
        if key not in m:
            raise CorpusError(f"{path}: lacks {key!r} (not a corpus manifest)")
    if m.get("dry_run"):
        raise CorpusError(f"{path}: built with --dry-run (nothing was filtered); build the corpus for real")
    shards = text_shards(m)
    if not shards:
        raise CorpusError(f"{corpus_dir}: the manifest lists no text shards (empty corpus)")
    for rel in shards:
        if not exists(join(corpus_dir, rel)):
            raise CorpusError(f"{corpus_dir}: text shard {rel} listed in manifest.json is missing")
    return m


def text_shards(manifest: dict[str, Any]) -> list[str]:
    """Relative paths of every text shard, sorted (deterministic input order)."""
    return sorted(sh["path"] for s in manifest["sources"].values() for sh in s.get("shards", []))


# ------------------------------------------------------------------ per document
def language_key(doc: dict[str, Any], metadata_keys: list[str], base: bool) -> str:
    """``lang`` when the language-ID stage set it, else a metadata hint, else ``und``."""
    lang = doc.get("lang")
    if not lang:
        meta = doc.get("metadata")
        if isinstance(meta, str) and meta:
            try:
                meta = json.loads(meta)
            except ValueError:
                meta = None
        if isinstance(meta, dict):
            for k in metadata_keys:
                v = meta.get(k)
                if isinstance(v, str) and v.strip():
                    lang = v.strip()
                    break
    if not lang:
        return "und"
    if base and not lang.startswith("code:"):
        lang = re.split(r"[-_]", lang, maxsplit=1)[0].lower()
    return lang


_SCRIPT_ALIASES = {"CJK": "Han", "HANGUL": "Hangul", "HIRAGANA": "Kana", "KATAKANA": "Kana"}


def char_script(ch: str) -> str | None:
    """Script of a letter from its Unicode name (``LATIN SMALL LETTER A`` -> Latin)."""
    try:
        first = unicodedata.name(ch).split(" ", 1)[0]
    except ValueError:
        return None
    if first in _SCRIPT_ALIASES:
        return _SCRIPT_ALIASES[first]
    return first.capitalize()


def dominant_script(text: str, max_letters: int = 4000) -> str:
    """The script of most letters of ``text`` (Kana counts for Japanese even next to Han).

    Used when the corpus has no ``script`` field yet (before the language-ID stage)."""
    counts: dict[str, int] = {}
    n = 0
    for ch in text:
        if ch.isalpha():
            s = char_script(ch)
            if s:
                counts[s] = counts.get(s, 0) + 1
            n += 1
            if n >= max_letters:
                break
    if not counts:
        return "Zyyy"  # ISO 15924 "common": digits/punctuation only
    if counts.get("Kana", 0) >= 0.1 * n:  # Japanese text is mostly Han with some kana
        return "Kana"
    return max(sorted(counts), key=counts.get)


def unit_script(unit: str) -> str:
    """Dominant script of one sample unit (a line): ASCII lines are Latin (or
    Zyyy without letters) without looking at each character."""
    if unit.isascii():
        return "Latin" if any(c.isalpha() for c in unit) else "Zyyy"
    return dominant_script(unit, max_letters=256)


# Scripts written without spaces between words: each character counts as a word.
_NO_SPACE = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff\u0f00-\u0fff]")


def count_words(text: str) -> int:
    """Words for tokens-per-word: whitespace-separated runs with a letter or digit;
    every Han/kana/Thai/Lao/Khmer/Myanmar/Tibetan character counts as one word."""
    n_dense = len(_NO_SPACE.findall(text))
    rest = _NO_SPACE.sub(" ", text) if n_dense else text
    return n_dense + sum(1 for w in rest.split() if any(c.isalnum() for c in w))


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？؟।॥])\s*")


def cut_long(unit: str, max_bytes: int) -> Iterator[str]:
    """Cut a unit into pieces of at most ``max_bytes`` UTF-8 bytes, at a space when
    one is in the second half of the window, else at a character boundary."""
    if len(unit) * 4 <= max_bytes or len(unit.encode("utf-8")) <= max_bytes:
        yield unit
        return
    b = unit.encode("utf-8")
    start = 0
    while start < len(b):
        end = min(start + max_bytes, len(b))
        if end < len(b):
            while end > start and (b[end] & 0xC0) == 0x80:  # not inside a character
                end -= 1
            sp = b.rfind(b" ", start + max_bytes // 2, end)
            if sp > start:
                end = sp + 1
        yield b[start:end].decode("utf-8")
        start = end


def split_units(text: str, unit: str, max_bytes: int, min_chars: int) -> Iterator[str]:
    """Sample units of a document: non-blank lines (or sentences), at most
    ``max_bytes`` each; never containing a newline (SentencePiece reads lines)."""
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = _SENTENCE_END.split(line) if unit == "sentence" else (line,)
        for part in parts:
            if len(part.strip()) < min_chars:
                continue
            yield from cut_long(part, max_bytes)


def unit_uniform(seed: int, doc_id: str, index: int) -> float:
    """A deterministic uniform number in [0, 1) for unit ``index`` of a document."""
    return int(stable_hash(str(seed), doc_id, str(index), size=8), 16) / 2.0**64


def doc_rank(seed: int, doc_id: str) -> int:
    """63-bit rank (Beam's integer coder is signed 64-bit)."""
    return int(stable_hash(str(seed), "holdout", doc_id, size=8), 16) >> 1
