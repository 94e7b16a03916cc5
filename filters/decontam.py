"""Eval-set decontamination: normalised n-gram index, matching, span excision.

Pure, engine-free pieces (``pipelines/decontam.py`` wires them into Beam):

* **Normalisation / tokens.**  ``text`` family: Unicode NFKC + casefold, words
  are runs of letters/digits/marks, punctuation and whitespace are ignored, and
  every grapheme of a script written without spaces (Han, Hiragana, Katakana,
  Thai, Lao, Khmer, Myanmar, Tibetan) is a token of its own, so Chinese text is
  matched on character n-grams.  ``code`` family (HumanEval, MBPP, ...): the
  same, plus operators as tokens (``==``, ``+=``, ``**`` ...), identifiers kept
  whole (``snake_case``), doctest prompts (``>>>``, ``...``) dropped; whitespace
  and indentation never matter.
* **n-grams.**  Word ``n``-grams (13, GPT-3) for spaced scripts, ``char_n``
  grams for scripts without spaces, ``code_n`` code tokens for code sets.  A
  field shorter than ``n`` but at least ``min_short_words`` (``min_short_chars``)
  tokens contributes one n-gram of its whole length (see ``DecontamConfig``).
  Every counted field is indexed on its own (a question found without its
  answer is found), plus the question followed by its answer/solution.
* **Short fields** (fewer tokens than ``n``): one n-gram of the whole field when
  it has at least ``min_short_words`` (8) words / ``min_short_chars`` (12)
  graphemes, so the whole question must appear.  Measured on the dev corpus
  (1,698 clean documents): 8 words finds 39/40 planted question-only items with
  no false positive; 6 words finds 40/40, also without a false positive there,
  but 6-word questions ("How does the X work?") are ordinary web headings, so
  the default stays 8.  Symbolic items with too few words ("−4 + (−3) = −7")
  are indexed with code tokens, where operators count, under the same minimum.
* **Hashing.**  Tokens are hashed with xxh3-64; n-gram keys are a polynomial
  rolling hash over token hashes (all windows of a document in O(tokens) numpy
  operations), finalised with splitmix64 and salted by family and length.
* **Index.**  ``exact``: sorted unique uint64 keys with postings (item, field
  bits), searched with ``np.searchsorted``.  ``bloom``: one Bloom filter per
  eval set (``filters/bloom.py``) when the exact index is too big for memory;
  item attribution is then a distributed join in the pipeline.
* **Ignored n-grams.**  n-grams found in more than ``max_ngram_items`` distinct
  eval texts of a set, and n-grams overlapping a boilerplate phrase (licence
  headers, "Answer the following question"), are not indexed; both lists are
  reported.
* **Policies.**  ``drop`` the document, or ``excise`` every matched span plus
  ``margin_chars`` (GPT-3: 200) on each side and keep the remainder if it is
  cut into at most ``max_pieces`` pieces and still ``min_remaining_chars`` long.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import numpy as np
import regex
import xxhash
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from filters.base import TransformResult
from filters.bloom import BloomFilter, mix64
from filters.eval_sets import (
    CODE_LAYOUTS,
    CODE_NAME_HINTS,
    FIELDS,
    LAYOUTS,
    EvalItem,
    iter_item_texts,
)
from filters.normalize import dedup_key
from filters.schema import content_hash

log = logging.getLogger(__name__)

STAGE = "decontamination"

#: Phrases whose n-grams are never indexed (prompt templates, licence headers).
DEFAULT_BOILERPLATE = [
    "Answer the following question",
    "Answer the following multiple choice question",
    "The following are multiple choice questions (with answers) about",
    "Choose the best answer",
    "Read the passage and answer the question",
    "Let's think step by step",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software and "
    "associated documentation files (the \"Software\"), to deal in the Software without restriction",
    "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED",
    "Licensed under the Apache License, Version 2.0 (the \"License\"); you may not use this file except in "
    "compliance with the License",
    "This program is free software; you can redistribute it and/or modify it under the terms of the GNU "
    "General Public License as published by the Free Software Foundation",
    "if __name__ == \"__main__\":",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# =============================================================================== config
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalSetConfig(_Strict):
    """One benchmark in the registry (``decontamination.eval_sets``)."""
    name: str
    path: str | None = None          # file, directory or glob: .jsonl/.json/.parquet/.csv[.gz]
    tfds: str | None = None          # "name[/config][:version]", already prepared locally
    tfds_data_dir: str | None = None
    split: str = "test"              # tfds split
    format: Literal["auto", "jsonl", "parquet", "csv"] = "auto"
    layout: Literal[LAYOUTS] = "auto"  # type: ignore[valid-type]
    columns: dict[str, str] = {}     # canonical field (or "id") -> column, for unusual layouts
    fields: list[Literal[FIELDS]] | None = None  # type: ignore[valid-type]  # default: per layout
    normalizer: Literal["auto", "text", "code"] = "auto"
    # per-set overrides of the section defaults (None: use the default)
    n: int | None = Field(None, ge=3, le=64)
    policy: Literal["drop", "excise"] | None = None
    margin_chars: int | None = Field(None, ge=0)
    max_pieces: int | None = Field(None, ge=1)
    min_remaining_chars: int | None = Field(None, ge=0)
    max_ngram_items: int | None = Field(None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"eval set name {v!r} must match {_NAME.pattern}")
        return v

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(v) - set(FIELDS) - {"id"})
        if bad:
            raise ValueError(f"unknown canonical field(s) {bad} (choose from {['id', *FIELDS]})")
        return v

    @model_validator(mode="after")
    def _source(self) -> "EvalSetConfig":
        if bool(self.path) == bool(self.tfds):
            raise ValueError(f"eval set {self.name!r}: give exactly one of path or tfds")
        return self


class DecontamConfig(_Strict):
    enabled: bool = True
    eval_sets: list[EvalSetConfig] = []
    n: int = Field(13, ge=3, le=64)              # word n-grams (GPT-3: 13)
    char_n: int = Field(20, ge=3, le=128)        # scripts without spaces: grapheme n-grams
    code_n: int = Field(13, ge=3, le=128)        # code sets: code tokens
    #: A field shorter than n still counts as one n-gram of its whole length when
    #: it has at least this many words (graphemes for no-space scripts).
    min_short_words: int = Field(8, ge=3)
    min_short_chars: int = Field(12, ge=3)
    min_hits: int = Field(1, ge=1)               # matched n-grams of one set that make a document contaminated
    policy: Literal["drop", "excise"] = "drop"
    margin_chars: int = Field(200, ge=0)         # excise: characters cut on each side of a match (GPT-3: 200)
    max_pieces: int = Field(10, ge=1)            # excise: more pieces left than this -> drop (GPT-3: 10)
    min_piece_chars: int = Field(200, ge=0)      # excise: shorter pieces are discarded (GPT-3: 200)
    min_remaining_chars: int = Field(200, ge=0)  # excise: shorter remainder -> drop
    max_ngram_items: int = Field(10, ge=1)       # n-grams in more distinct eval texts of a set are ignored
    boilerplate: list[str] = list(DEFAULT_BOILERPLATE)
    index: Literal["auto", "exact", "bloom"] = "auto"
    bloom_fp_rate: float = Field(1e-9, gt=0, lt=0.01)
    max_exact_index_bytes: int = Field(2 * 1024**3, gt=0)  # index: auto switches to bloom above this
    full_field_coverage: float = Field(0.9, gt=0, le=1)    # report: a field counts as fully present
    report_max_docs: int = Field(20, ge=0)       # report: documents listed per eval item
    report_max_urls: int = Field(100, ge=0)      # report: URLs listed per benchmark

    @field_validator("eval_sets")
    @classmethod
    def _unique(cls, v: list[EvalSetConfig]) -> list[EvalSetConfig]:
        names = [e.name for e in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"eval set name(s) {dup} given more than once")
        return v


# =============================================================================== tokens
_NOSPACE = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"
_TEXT_RE = regex.compile(rf"(?V1)(?=[{_NOSPACE}])\X|[[\p{{L}}\p{{N}}\p{{M}}]--[{_NOSPACE}]]+")
_CODE_RE = regex.compile(
    r"(?V1)>>>|\.\.\.|[\p{L}\p{N}\p{M}_]+|==|!=|<=|>=|\*\*|//|<<|>>|->|\+=|-=|\*=|/=|%=|&&|\|\||[-+*/%=<>!&|^~@\u2212\u2010-\u2014\u00d7\u00f7]")
_CODE_SKIP = frozenset((">>>", "..."))
# Pure-ASCII text takes the (faster) stdlib ``re`` with the same tokens.
_TEXT_RE_ASCII = re.compile(r"[A-Za-z0-9]+")
_TEXT_RE_SPACED = regex.compile(r"[\p{L}\p{N}\p{M}]+")  # same tokens when no no-space script occurs
_NOSPACE_ANY = regex.compile(rf"[{_NOSPACE}]")
_CODE_RE_ASCII = re.compile(
    r">>>|\.\.\.|[A-Za-z0-9_]+|==|!=|<=|>=|\*\*|//|<<|>>|->|\+=|-=|\*=|/=|%=|&&|\|\||[-+*/%=<>!&|^~@]")
_NOSPACE_START = regex.compile(rf"[{_NOSPACE}]")
FAMILIES = ("text", "code")


_CODE_MAP = str.maketrans({"\u2212": "-", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-",
                           "\u2014": "-", "\u00d7": "*", "\u00f7": "/"})


def norm_token(t: str) -> str:
    if t.isascii():
        return t.lower()
    return unicodedata.normalize("NFKC", t).casefold().translate(_CODE_MAP)


def raw_tokens(text: str, family: str = "text") -> list[str]:
    """Tokens of ``text`` as they appear (not yet normalised), in order."""
    ascii = text.isascii()
    if family == "code":
        toks = (_CODE_RE_ASCII if ascii else _CODE_RE).findall(text)
        if ">>>" in text or "..." in text:
            toks = [t for t in toks if t not in _CODE_SKIP]
        return toks
    return _text_re(text, ascii).findall(text)


def _text_re(text: str, ascii: bool):
    if ascii:
        return _TEXT_RE_ASCII
    return _TEXT_RE if _NOSPACE_ANY.search(text) else _TEXT_RE_SPACED


def token_spans(text: str, family: str = "text") -> tuple[list[int], list[int]]:
    """Character (start, end) of every token of ``raw_tokens(text, family)`` (same order)."""
    starts: list[int] = []
    ends: list[int] = []
    ascii = text.isascii()
    if family == "code":
        rx = _CODE_RE_ASCII if ascii else _CODE_RE
    else:
        rx = _text_re(text, ascii)
    skip = _CODE_SKIP if family == "code" else ()
    for m in rx.finditer(text):
        if skip and m.group() in skip:
            continue
        s, e = m.span()
        starts.append(s)
        ends.append(e)
    return starts, ends


def normalized_words(text: str, family: str = "text") -> list[str]:
    return [norm_token(t) for t in raw_tokens(text, family)]


def is_nospace_text(text: str, n_tokens: int) -> bool:
    """True when most tokens of ``text`` are graphemes of a script written without spaces."""
    if not n_tokens or text.isascii():
        return False
    return len(_NOSPACE_ANY.findall(text)) * 2 >= n_tokens


# =============================================================================== hashing
_TOKEN_CACHE: dict[str, int] = {}
_TOKEN_CACHE_MAX = 2_000_000


def token_hashes(raw: list[str]) -> np.ndarray:
    """xxh3-64 of each token's normalised form (``raw`` may be raw or normalised
    tokens: normalisation is idempotent); cached per process."""
    cache = _TOKEN_CACHE
    get = cache.get
    out = [get(t) for t in raw]
    if None in out:
        h = xxhash.xxh3_64_intdigest
        for i, v in enumerate(out):
            if v is None:
                t = raw[i]
                v = h(norm_token(t).encode("utf-8", "surrogatepass"))
                if len(cache) < _TOKEN_CACHE_MAX:
                    cache[t] = v
                out[i] = v
    return np.array(out, dtype=np.uint64)


_P = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64
_Q = pow(_P, -1, 2**64)
_POW: dict[str, np.ndarray] = {"P": np.ones(1, dtype=np.uint64), "Q": np.ones(1, dtype=np.uint64)}


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**i and Q**i (mod 2**64) for i < n, grown geometrically and cached."""
    if len(_POW["P"]) < n:
        size = max(n, 2 * len(_POW["P"]), 4096)
        for name, base in (("P", _P), ("Q", _Q)):
            arr = np.full(size, base, dtype=np.uint64)
            arr[0] = 1
            _POW[name] = np.cumprod(arr, dtype=np.uint64)
    return _POW["P"], _POW["Q"]


def _salt(n: int, family: str) -> np.uint64:
    return np.uint64((0xA0761D6478BD642F * (n * 4 + FAMILIES.index(family) + 1)) % 2**64)


def gram_keys(h: np.ndarray, n: int, family: str = "text") -> np.ndarray:
    """Keys of all ``n``-token windows of the token hashes ``h`` (length ``len(h)-n+1``).

    Rolling polynomial hash: with prefix sums ``S[i] = sum_{j<i} h_j Q^j`` (Q = P^-1),
    window ``i`` is ``(S[i+n] - S[i]) * P^(i+n-1) = sum_j h_j P^(i+n-1-j)`` mod 2**64."""
    T = len(h)
    if T < n:
        return np.zeros(0, dtype=np.uint64)
    pw, qw = _powers(T + 1)
    S = np.zeros(T + 1, dtype=np.uint64)
    np.cumsum(h * qw[:T], dtype=np.uint64, out=S[1:])
    g = (S[n:] - S[:-n]) * pw[n - 1:T]
    return mix64(g ^ _salt(n, family))


# =============================================================================== index
FIELD_BITS = {"question": 1, "choices": 2, "answer": 4, "code": 8, "passage": 16, "joined": 32}
BIT_NAMES = tuple(FIELD_BITS)
JOINED = ("question", "answer", "code")  # question followed by its answer / prompt by its solution


@dataclass
class SetSpec:
    """Effective settings of one eval set (config defaults + per-set overrides)."""
    name: str
    family: str
    n: int
    char_n: int
    min_short_words: int
    min_short_chars: int
    policy: str
    margin_chars: int
    max_pieces: int
    min_piece_chars: int
    min_remaining_chars: int
    max_ngram_items: int
    fields: tuple[str, ...]
    layout: str = "generic"
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, es: EvalSetConfig, cfg: DecontamConfig, layout: str, fields: Iterable[str],
                    info: dict[str, Any] | None = None) -> "SetSpec":
        family = es.normalizer
        if family == "auto":
            code = layout in CODE_LAYOUTS or any(es.name.lower().startswith(h) for h in CODE_NAME_HINTS)
            family = "code" if code else "text"
        pick = lambda v, d: d if v is None else v  # noqa: E731
        return cls(name=es.name, family=family, n=pick(es.n, cfg.code_n if family == "code" else cfg.n),
                   char_n=cfg.char_n, min_short_words=cfg.min_short_words, min_short_chars=cfg.min_short_chars,
                   policy=pick(es.policy, cfg.policy), margin_chars=pick(es.margin_chars, cfg.margin_chars),
                   max_pieces=pick(es.max_pieces, cfg.max_pieces), min_piece_chars=cfg.min_piece_chars,
                   min_remaining_chars=pick(es.min_remaining_chars, cfg.min_remaining_chars),
                   max_ngram_items=pick(es.max_ngram_items, cfg.max_ngram_items), fields=tuple(fields),
                   layout=layout, info=dict(info or {}))


@dataclass
class SeqGrams:
    keys: np.ndarray     # uint64 keys of the windows kept
    pos: np.ndarray      # window start (token index) of each key
    n: int               # window length
    bit: int             # FIELD_BITS of the field
    passage: str | None  # the passage text (passages shared by several items count once)
    toks: list[str]
    family: str = "text"


class GramMaker:
    """The n-grams of an eval item under one set's settings (used by the index
    builder and, in Bloom mode, by the pipeline's attribution join)."""

    def __init__(self, spec: SetSpec, boilerplate: Iterable[str] = ()):
        self.spec = spec
        self._bp: list[tuple[str, int]] = []  # (joined tokens, length)
        for phrase in boilerplate:
            toks = raw_tokens(phrase, spec.family)
            if toks:
                self._bp.append((" ".join(toks).lower(), len(toks)))
        self.boilerplate_hits: dict[str, int] = {}

    def _boiler_mask(self, toks: list[str], found: set[str]) -> np.ndarray | None:
        """Token positions covered by a boilerplate phrase (None when none occurs)."""
        if not self._bp:
            return None
        joined = " " + " ".join(toks).lower() + " "  # raw tokens hold no spaces
        covered = None
        for phrase, length in self._bp:
            needle = " " + phrase + " "
            at = joined.find(needle)
            if at < 0:
                continue
            found.add(phrase)
            if covered is None:
                covered = np.zeros(len(toks), dtype=bool)
            while at >= 0:
                first = joined.count(" ", 0, at + 1) - 1  # token index of the match start
                covered[first:first + length] = True
                at = joined.find(needle, at + 1)
        return covered

    def sequences(self, item: EvalItem) -> list[tuple[int, str, str | None]]:
        seqs = [(FIELD_BITS[f], t, t if f == "passage" else None) for f, t in iter_item_texts(item, self.spec.fields)]
        parts = [item.get(f) for f in JOINED if f in self.spec.fields and item.get(f).strip()]
        if len(parts) > 1:
            seqs.append((FIELD_BITS["joined"], "\n".join(parts), None))
        return seqs

    def grams(self, item: EvalItem) -> list[SeqGrams]:
        sp = self.spec
        out = []
        found: set[str] = set()
        for bit, text, passage in self.sequences(item):
            fam = sp.family
            toks = raw_tokens(text, fam)  # hashed through their normalised form (token_hashes)
            T = len(toks)
            nospace = fam == "text" and is_nospace_text(text, T)
            n = sp.char_n if nospace else sp.n
            min_short = sp.min_short_chars if nospace else sp.min_short_words
            if T >= n:
                pass
            elif T >= min_short:
                n = T  # a short field counts as one n-gram of its whole length
            elif fam == "text" and not nospace:
                # Symbolic items ("−4 + (−3) = −7"): too few words, but with operators
                # as tokens (code normalisation) long enough to be specific.
                ctoks = raw_tokens(text, "code")
                ops = sum(1 for t in ctoks if not t[0].isalnum() and t[0] != "_")
                if len(ctoks) < min_short or ops < 2:
                    continue
                fam, toks, n = "code", ctoks, len(ctoks)
            else:
                continue
            keys = gram_keys(token_hashes(toks), n, fam)
            pos = np.arange(len(keys), dtype=np.int64)
            covered = self._boiler_mask(toks, found) if fam == sp.family else None
            if covered is not None:
                c = np.concatenate([[0], np.cumsum(covered)])
                ok = (c[n:] - c[:-n]) == 0  # windows that touch no boilerplate token
                keys, pos = keys[ok], pos[ok]
            if len(keys):
                out.append(SeqGrams(keys, pos, n, bit, passage, toks, fam))
        for phrase in found:  # items holding each phrase, for the report
            self.boilerplate_hits[phrase] = self.boilerplate_hits.get(phrase, 0) + 1
        return out


@dataclass
class EvalIndex:
    """The decontamination index shipped to every worker (a Beam side input)."""
    sets: list[SetSpec]
    item_ids: list[str]
    item_set: np.ndarray              # int32 [items]
    item_field_counts: np.ndarray     # int32 [items, len(FIELD_BITS)]: distinct keys per field
    lengths: dict[str, list[int]]     # family -> window lengths a document must be scanned with
    set_lengths: list[dict[str, list[int]]]  # per set: family -> window lengths
    mode: str                         # "exact" | "bloom"
    keys: np.ndarray | None = None    # exact: sorted unique keys
    ptr: np.ndarray | None = None     # exact: postings of keys[i] are [ptr[i], ptr[i+1])
    post_item: np.ndarray | None = None
    post_mask: np.ndarray | None = None
    prefilter: np.ndarray | None = None  # exact: bitmap over the keys' top bits (skips most lookups)
    prefilter_log2: int = 0
    blooms: list[BloomFilter] | None = None
    ignored_keys: list[np.ndarray] = field(default_factory=list)  # per set: too-common keys (sorted)
    report: list[dict[str, Any]] = field(default_factory=list)   # per set: counts and ignored lists

    @property
    def nbytes(self) -> int:
        arrays = [self.item_set, self.item_field_counts, self.keys, self.ptr, self.post_item, self.post_mask,
                  self.prefilter, *self.ignored_keys]
        n = sum(a.nbytes for a in arrays if a is not None)
        n += sum(len(s) + 50 for s in self.item_ids)
        if self.blooms:
            n += sum(b.nbytes for b in self.blooms)
        return int(n)

    @property
    def n_entries(self) -> int:
        if self.mode == "exact":
            return int(len(self.keys))
        return int(sum(b.n_added for b in self.blooms or []))

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "entries": self.n_entries, "bytes": self.nbytes, "items": len(self.item_ids),
                "lengths": {k: list(v) for k, v in self.lengths.items()},
                "sets": [s.name for s in self.sets]}

    # ------------------------------------------------------------------ matching
    def scan(self, text: str) -> "DocMatch":
        """Every window of ``text`` whose key is in the index, by eval set.

        All window lengths of a token family are hashed first and looked up
        together: one prefilter pass, then a sorted search (exact) or one Bloom
        query per set (bloom) on the few windows that pass."""
        m = DocMatch()
        for fam in sorted(self.lengths):
            lens = self.lengths[fam]
            toks = raw_tokens(text, fam)
            if len(toks) < lens[0]:
                continue
            h = token_hashes(toks)
            parts = [(gram_keys(h, n, fam), n) for n in lens if len(h) >= n]
            G = np.concatenate([g for g, _ in parts])
            N = np.concatenate([np.full(len(g), n, dtype=np.int32) for g, n in parts])
            W = np.concatenate([np.arange(len(g), dtype=np.int64) for g, _ in parts])
            cand = self._maybe(G)
            if not len(cand):
                continue
            spans = None
            if self.mode == "exact":
                pos = np.searchsorted(self.keys, G[cand])
                pos[pos == len(self.keys)] = 0
                ok = self.keys[pos] == G[cand]
                if ok.any():
                    spans = token_spans(text, fam)
                    for c, k in zip(cand[ok].tolist(), pos[ok].tolist()):
                        self._record_exact(int(G[c]), int(W[c]), int(N[c]), k, spans, m)
                continue
            for si in range(len(self.sets)):
                sl = self.set_lengths[si].get(fam)
                if not sl:
                    continue
                sel = cand if len(sl) == len(lens) else cand[np.isin(N[cand], sl)]
                hit = sel[self.blooms[si].contains(G[sel])]
                if len(hit):
                    spans = spans or token_spans(text, fam)
                    starts, ends = spans
                    for c in hit.tolist():
                        i, n = int(W[c]), int(N[c])
                        m.add_window(si, (starts[i], ends[i + n - 1]), int(G[c]))
        return m

    def _maybe(self, g: np.ndarray) -> np.ndarray:
        """Indices of the windows that pass the prefilter bitmap."""
        slot = g >> np.uint64(64 - self.prefilter_log2)
        bit = (self.prefilter[(slot >> np.uint64(3)).astype(np.int64)] >> (slot & np.uint64(7)).astype(np.uint8)) & 1
        return np.flatnonzero(bit)

    def _record_exact(self, key: int, i: int, n: int, k: int, spans, m: "DocMatch") -> None:
        starts, ends = spans
        lo, hi = int(self.ptr[k]), int(self.ptr[k + 1])
        items = self.post_item[lo:hi]
        masks = self.post_mask[lo:hi]
        span = (starts[i], ends[i + n - 1])
        for si in np.unique(self.item_set[items]).tolist():
            m.add_window(si, span, key)
        for it, mk in zip(items.tolist(), masks.tolist()):
            d = m.item_keys.setdefault(it, {})
            d[key] = d.get(key, 0) | mk

    # ------------------------------------------------------------------ attribution
    def item_summary(self, item: int, key_masks: dict[int, int], full_coverage: float) -> dict[str, Any]:
        """Which fields of an item a document holds: coverage per field and a kind
        (``question+answer``, ``question``, ``answer``, ``passage``, ``choices``, ``partial``)."""
        return item_summary(self.item_field_counts[item], key_masks.values(), full_coverage)


def item_summary(field_counts: np.ndarray, masks: Iterable[int], full_coverage: float) -> dict[str, Any]:
    masks = list(masks)
    cov: dict[str, float] = {}
    for b, name in enumerate(BIT_NAMES):
        total = int(field_counts[b])
        if total:
            bit = FIELD_BITS[name]
            cov[name] = round(sum(1 for mk in masks if mk & bit) / total, 4)
    full = {f for f, c in cov.items() if c >= full_coverage}
    if cov.get("joined", 0) < 1.0:
        full.discard("joined")  # the question *followed by* its answer: every window of it
    if "joined" in full or {"question", "answer"} <= full or {"question", "code"} <= full:
        kind = "question+answer"
    elif "question" in full:
        kind = "question"
    elif full & {"answer", "code"}:
        kind = "answer"
    elif "passage" in full:
        kind = "passage"
    elif "choices" in full:
        kind = "choices"
    else:
        kind = "partial"
    return {"kind": kind, "coverage": cov, "ngrams": len(masks), "max_coverage": max(cov.values(), default=0.0)}


@dataclass
class DocMatch:
    windows: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # set -> char spans
    set_keys: dict[int, set[int]] = field(default_factory=dict)              # set -> matched keys
    item_keys: dict[int, dict[int, int]] = field(default_factory=dict)       # item -> {key: field bits}

    def add_window(self, si: int, span: tuple[int, int], key: int) -> None:
        self.windows.setdefault(si, []).append(span)
        self.set_keys.setdefault(si, set()).add(key)


def _sorted_unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort by (a, b); return the order and a boolean 'first of its (a, b) run'."""
    order = np.lexsort((b, a))
    a2, b2 = a[order], b[order]
    first = np.ones(len(a2), dtype=bool)
    if len(a2) > 1:
        first[1:] = (a2[1:] != a2[:-1]) | (b2[1:] != b2[:-1])
    return order, first, a2


def build_index(sets: list[tuple[SetSpec, list[EvalItem]]], cfg: DecontamConfig, mode: str = "exact",
                progress=None) -> EvalIndex:
    """Build the index from loaded eval sets.  ``mode``: exact | bloom | auto
    (bloom when the exact index would exceed ``cfg.max_exact_index_bytes``)."""
    item_ids: list[str] = []
    item_set: list[int] = []
    lengths: dict[str, set[int]] = {}
    set_lengths: list[dict[str, list[int]]] = []
    per_set_entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    ignored_keys: list[np.ndarray] = []
    reports: list[dict[str, Any]] = []
    makers: list[GramMaker] = []
    for si, (spec, items) in enumerate(sets):
        maker = GramMaker(spec, cfg.boilerplate)
        makers.append(maker)
        ks, its, mks, srcs = [], [], [], []
        passages: dict[str, int] = {}
        lens: dict[str, set[int]] = {}
        no_grams = 0
        boiler_dropped = 0
        for it in items:
            ii = len(item_ids)
            item_ids.append(it.id)
            item_set.append(si)
            grams = maker.grams(it)
            if not grams:
                no_grams += 1
            for sg in grams:
                lens.setdefault(sg.family, set()).add(sg.n)
                k = len(sg.keys)
                ks.append(sg.keys)
                its.append(np.full(k, ii, dtype=np.int32))
                mks.append(np.full(k, sg.bit, dtype=np.uint8))
                src = ii if sg.passage is None else -1 - passages.setdefault(sg.passage, len(passages))
                srcs.append(np.full(k, src, dtype=np.int64))
                full = len(sg.toks) - sg.n + 1
                boiler_dropped += full - k
            if progress and ii % 20000 == 0:
                progress(f"indexing {spec.name}: {ii:,} items")
        keys = np.concatenate(ks) if ks else np.zeros(0, dtype=np.uint64)
        item = np.concatenate(its) if its else np.zeros(0, dtype=np.int32)
        mask = np.concatenate(mks) if mks else np.zeros(0, dtype=np.uint8)
        src = np.concatenate(srcs) if srcs else np.zeros(0, dtype=np.int64)
        # too common: a key in more than max_ngram_items distinct eval texts of this set
        order, first, k_sorted = _sorted_unique_pairs(keys, src)
        uk, counts = np.unique(k_sorted[first], return_counts=True)
        common = uk[counts > spec.max_ngram_items]
        common_counts = counts[counts > spec.max_ngram_items]
        if len(common):
            keep = ~np.isin(keys, common)
            keys, item, mask = keys[keep], item[keep], mask[keep]
        # one posting per (key, item), field bits OR-ed
        order, first, k_sorted = _sorted_unique_pairs(keys, item.astype(np.int64))
        starts = np.flatnonzero(first)
        keys_u = k_sorted[first]
        item_u = item[order][first]
        mask_u = np.bitwise_or.reduceat(mask[order], starts) if len(starts) else mask[:0]
        per_set_entries.append((keys_u, item_u, mask_u))
        ignored_keys.append(common)
        set_lengths.append({f: sorted(v) for f, v in sorted(lens.items())})
        for f, v in lens.items():
            lengths.setdefault(f, set()).update(v)
        reports.append({
            "name": spec.name, "layout": spec.layout, "family": spec.family, "fields": list(spec.fields),
            "n": spec.n, "policy": spec.policy, "items": len(items), "items_without_ngrams": no_grams,
            "keys": int(len(np.unique(keys_u))), "too_common_count": int(len(common)),
            "_common": (common, common_counts), "boilerplate_windows": int(boiler_dropped),
            "boilerplate_phrases": dict(sorted(maker.boilerplate_hits.items())), **spec.info,
        })
    n_items = len(item_ids)
    all_keys = np.concatenate([e[0] for e in per_set_entries]) if per_set_entries else np.zeros(0, np.uint64)
    all_item = np.concatenate([e[1] for e in per_set_entries]) if per_set_entries else np.zeros(0, np.int32)
    all_mask = np.concatenate([e[2] for e in per_set_entries]) if per_set_entries else np.zeros(0, np.uint8)
    field_counts = np.zeros((n_items, len(BIT_NAMES)), dtype=np.int32)
    for b, name in enumerate(BIT_NAMES):
        sel = (all_mask & FIELD_BITS[name]) != 0
        field_counts[:, b] = np.bincount(all_item[sel], minlength=n_items)[:n_items]
    exact_bytes = all_keys.nbytes * 2 + all_item.nbytes + all_mask.nbytes
    if mode == "auto":
        mode = "bloom" if exact_bytes > cfg.max_exact_index_bytes else "exact"
    index = EvalIndex(sets=[s for s, _ in sets], item_ids=item_ids, item_set=np.array(item_set, dtype=np.int32),
                      item_field_counts=field_counts, lengths={k: sorted(v) for k, v in lengths.items()},
                      set_lengths=set_lengths, mode=mode, ignored_keys=ignored_keys)
    if mode == "exact":
        order = np.argsort(all_keys, kind="stable")
        k_sorted = all_keys[order]
        uk, first_idx = np.unique(k_sorted, return_index=True)
        index.keys = uk
        index.ptr = np.append(first_idx, len(k_sorted)).astype(np.int64)
        index.post_item = all_item[order]
        index.post_mask = all_mask[order]
        index.prefilter, index.prefilter_log2 = _prefilter(uk)
    else:
        index.prefilter, index.prefilter_log2 = _prefilter(np.unique(all_keys))
        index.blooms = []
        for keys_u, _, _ in per_set_entries:
            uk = np.unique(keys_u)
            bf = BloomFilter.for_capacity(len(uk), cfg.bloom_fp_rate)
            bf.add(uk)
            index.blooms.append(bf)
    _name_ignored(sets, makers, reports)
    index.report = reports
    return index


def _prefilter(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """A one-probe bitmap over the keys' top bits, ~16 bits per key (between 2**20
    and 2**31 bits): about 94% of the windows of a document stop here."""
    log2 = int(min(31, max(20, np.ceil(np.log2(max(len(keys), 1) * 16)))))
    slots = keys >> np.uint64(64 - log2)
    bits = np.zeros(1 << (log2 - 3), dtype=np.uint8)
    np.bitwise_or.at(bits, (slots >> np.uint64(3)).astype(np.int64),
                     np.uint8(1) << (slots & np.uint64(7)).astype(np.uint8))
    return bits, log2


def _name_ignored(sets, makers, reports, cap: int = 200) -> None:
    """Text of the too-common n-grams (most frequent first) for the report."""
    for (spec, items), maker, rep in zip(sets, makers, reports):
        common, counts = rep.pop("_common")
        if not len(common):
            rep["too_common"] = []
            continue
        order = np.lexsort((common, -counts))[:cap]
        want = {int(common[i]): int(counts[i]) for i in order}
        found: dict[int, str] = {}
        plain = GramMaker(spec, ())  # windows before boilerplate masking, same keys
        for it in items:
            for sg in plain.grams(it):
                for j in np.flatnonzero(np.isin(sg.keys, list(want))):
                    k = int(sg.keys[j])
                    if k not in found:
                        found[k] = " ".join(norm_token(t) for t in sg.toks[sg.pos[j]:sg.pos[j] + sg.n])
            if len(found) == len(want):
                break
        rep["too_common"] = sorted(([found.get(k, f"#{k:016x}"), c] for k, c in want.items()),
                                   key=lambda x: (-x[1], x[0]))


# =============================================================================== excision
def excise(text: str, spans: Iterable[tuple[int, int]], *, margin: int, min_piece_chars: int, max_pieces: int,
           min_remaining_chars: int, snap: int = 40) -> tuple[str | None, dict[str, Any], str | None]:
    """Cut every span plus ``margin`` characters on each side (widened to the next
    whitespace, at most ``snap`` more characters) out of ``text``.

    Returns ``(new_text, info, reason)``; ``new_text`` is None and ``reason`` says
    why when the document should be dropped instead (``too_many_pieces``,
    ``too_short_after_excision``).  Kept pieces are joined with a blank line."""
    L = len(text)
    cuts = []
    for s, e in sorted(spans):
        a, b = max(0, s - margin), min(L, e + margin)
        lim = max(0, a - snap)
        while a > lim and not text[a - 1].isspace():
            a -= 1
        lim = min(L, b + snap)
        while b < lim and not text[b].isspace():
            b += 1
        if cuts and a <= cuts[-1][1]:
            cuts[-1][1] = max(cuts[-1][1], b)
        else:
            cuts.append([a, b])
    pieces, prev = [], 0
    for a, b in cuts:
        pieces.append(text[prev:a])
        prev = b
    pieces.append(text[prev:])
    pieces = [p.strip("\n").rstrip() for p in pieces]
    pieces = [p for p in pieces if p.strip()]
    cut_chars = sum(b - a for a, b in cuts)
    info = {"cuts": [[a, b] for a, b in cuts], "cut_chars": cut_chars, "pieces": len(pieces)}
    if len(pieces) > max_pieces:
        return None, info, "too_many_pieces"
    kept = [p for p in pieces if len(p.strip()) >= min_piece_chars]
    new = "\n\n".join(kept)
    info["kept_pieces"] = len(kept)
    if len(new.strip()) < min_remaining_chars or not new.strip():
        return None, info, "too_short_after_excision"
    return new, info, None


# =============================================================================== operator
@dataclass
class Decision:
    action: str | None                    # None (clean) | "drop" | "excise"
    doc: dict[str, Any] | None            # the document to keep (excised copy), None when dropped
    reason: str | None = None
    sets: list[str] = field(default_factory=list)
    windows: dict[str, int] = field(default_factory=dict)       # set -> matched windows
    items: list[dict[str, Any]] = field(default_factory=list)   # exact mode: one per (set, item)
    set_keys: dict[str, list[int]] = field(default_factory=dict)  # bloom mode: matched keys per set
    excision: dict[str, Any] | None = None


class Decontaminator:
    """Scans documents against an ``EvalIndex`` and applies each set's policy.

    ``inspect(doc)`` returns a ``Decision`` with everything the report needs;
    ``apply(doc)`` is the ``DocTransform`` form (``TransformResult``)."""

    name = STAGE
    stage = STAGE

    def __init__(self, index: EvalIndex, cfg: DecontamConfig):
        self.index = index
        self.cfg = cfg

    def inspect(self, doc: dict[str, Any]) -> Decision:
        idx, cfg = self.index, self.cfg
        text = doc["text"]
        m = idx.scan(text)
        hit = sorted(si for si, w in m.windows.items() if len(w) >= cfg.min_hits)
        if not hit:
            return Decision(action=None, doc=doc)
        specs = [idx.sets[si] for si in hit]
        names = sorted(s.name for s in specs)
        dec = Decision(action=None, doc=None, sets=names,
                       windows={idx.sets[si].name: len(m.windows[si]) for si in hit})
        if idx.mode == "exact":
            hit_set = set(hit)
            for it in sorted(m.item_keys):
                si = int(idx.item_set[it])
                if si in hit_set:
                    s = idx.item_summary(it, m.item_keys[it], cfg.full_field_coverage)
                    dec.items.append({"set": idx.sets[si].name, "item": idx.item_ids[it], **s})
        else:
            dec.set_keys = {idx.sets[si].name: sorted(m.set_keys[si]) for si in hit}
        label = "+".join(names)
        if any(s.policy == "drop" for s in specs):
            dec.action, dec.reason = "drop", f"contaminated:{label}"
            return dec
        spans = [sp for si in hit for sp in m.windows[si]]
        new, info, why = excise(
            text, spans, margin=max(s.margin_chars for s in specs), min_piece_chars=max(s.min_piece_chars for s in specs),
            max_pieces=min(s.max_pieces for s in specs), min_remaining_chars=max(s.min_remaining_chars for s in specs))
        dec.excision = info
        if new is None:
            dec.action, dec.reason = "drop", f"contaminated:{label}:{why}"
            return dec
        dec.action = "excise"
        dec.doc = {**doc, "text": new, "content_hash": content_hash(dedup_key(new))}
        return dec

    def apply(self, doc: dict[str, Any]) -> TransformResult:
        d = self.inspect(doc)
        if d.action is None:
            return TransformResult(doc=doc)
        if d.action == "drop":
            return TransformResult(doc=None, reason=d.reason, counts={"dropped": 1})
        return TransformResult(doc=d.doc, modified=True,
                               counts={"excised_spans": len(d.excision["cuts"]), "excised_chars": d.excision["cut_chars"]})


# =============================================================================== loading
def load_sets(cfg: DecontamConfig, base_dir: str | None = None) -> list[tuple[SetSpec, list[EvalItem]]]:
    """Load every configured eval set (``EvalSetError`` on a missing one)."""
    from filters.eval_sets import load_eval_set

    out = []
    for es in cfg.eval_sets:
        items, info = load_eval_set(es, base_dir)
        spec = SetSpec.from_config(es, cfg, info["layout"], info["fields"], info)
        out.append((spec, items))
    return out
