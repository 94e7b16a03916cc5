"""Heuristic quality rules: Gopher quality, Gopher repetition, C4, FineWeb, code.

Every rule set is a ``DocFilter``: ``score(doc)`` computes all of its metrics
(stored as ``"<name>.<metric>"``), ``decide(scores, doc)`` compares them with the
thresholds in force for the document's language and script.  Defaults are the
published ones (Gopher: Rae et al. 2021 table A1; C4: Raffel et al. 2020;
FineWeb: Penedo et al. 2024; code: Codex/StarCoder) as collected in
``shared/reference/anchors.md``.

Multilingual by construction (datatrove #135):

* words come from ``filters.textseg`` (ICU dictionary segmentation for Chinese,
  Japanese, Thai, Lao, Khmer, Myanmar, Tibetan; regex elsewhere);
* word length counts base characters (combining marks excluded), so vocalised
  Arabic or Devanagari vowel signs do not make words "too long";
* sentence ends are Unicode terminal punctuation (``。 । ؟ ።`` ...), not only ``.?!``;
* the stop-word rule uses a list for the document's language (the Gopher eight
  for English, stopwords-iso for 57 more) and is *not applied* (no score
  written) for a language without a list — never an English list on other text;
* thresholds that depend on the writing system have per-script (and
  per-language) overrides, e.g. mean word length 1–4 for Han/Kana.

Code documents (``lang = "code:<language>"``) get ``CodeQuality`` only; prose
rules skip them.

Genre, not quality (precise defaults):

* every rule set has a ``formats:`` scope next to ``sources:`` (``filters.scope``):
  Gopher quality, C4 and FineWeb were made for web pages (MassiveText applied
  Gopher's quality filter to MassiveWeb only) and by default judge web-like input
  (warc, wet, jsonl, parquet), not books or manuals read as text trees; Gopher
  repetition and the code rules judge every format;
* hard-wrapped plain text is unwrapped before the line rules (``unwrap_lines``):
  C4's and FineWeb's "line" is an HTML block, a paragraph;
* a text with no sentence-ending punctuation at all (verse, scripture, Thai) is
  not judged by punctuation (``skip_unpunctuated``), while text whose words carry
  punctuation that no line ends in (shuffled or broken text) still is;
* C4's curly-bracket rule drops a page when more than a share of its lines hold
  a "{" (``max_curly_bracket_line_frac``), not for a single code example.
"""
from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from filters import textseg
from filters.scope import WEB_FORMATS, check_globs, in_scope

# --------------------------------------------------------------------------- config


class _RuleConfig(BaseModel):
    """Common fields: on/off, which sources and input formats, and per-script/per-language overrides."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    #: source-name globs the rules apply to (e.g. ["web*"] for web-only rules)
    sources: list[str] = ["*"]
    #: input-format globs the rules apply to: the reader records ``metadata.format``
    #: (warc | wet | jsonl | parquet | text | code); a record without one (built
    #: outside the readers) is in every scope.  Both scopes must match.
    formats: list[str] = ["*"]
    #: key: a Unicode script (Han, Thai, ...) or a language code (zh, ar, ...);
    #: value: fields of this section to override.  Language beats script.
    overrides: dict[str, dict[str, Any]] = {}

    @field_validator("sources", "formats")
    @classmethod
    def _globs(cls, v: list[str], info) -> list[str]:
        return check_globs(v, info.field_name)

    @model_validator(mode="after")
    def _check_overrides(self):
        fields = set(type(self).model_fields) - {"enabled", "sources", "formats", "overrides"}
        for key, vals in self.overrides.items():
            bad = sorted(set(vals) - fields)
            if bad:
                raise ValueError(f"overrides.{key}: unknown field(s) {bad} (choose from {sorted(fields)})")
            type(self).model_validate({**self.model_dump(exclude={"overrides"}), **vals, "overrides": {}})
        return self


_CJK_SCRIPTS = ("Han", "Hiragana", "Katakana")
_DENSE_SCRIPTS = ("Thai", "Lao", "Khmer", "Myanmar", "Tibetan")
_ABUGIDAS = ("Devanagari", "Bengali", "Gurmukhi", "Gujarati", "Oriya", "Tamil", "Telugu", "Kannada",
             "Malayalam", "Sinhala")
# The same groups by language code (lid.176 labels): a Chinese or Japanese man page
# may have more Latin letters than Han ones, but its words are still segmented
# by the dictionary, so the language decides as well as the dominant script.
_CJK_LANGS = ("zh", "ja", "yue", "wuu", "gan")
_DENSE_LANGS = ("th", "lo", "km", "my", "bo", "dz")
_ABUGIDA_LANGS = ("hi", "mr", "ne", "sa", "bh", "new", "mai", "bn", "as", "bpy", "pa", "gu", "or", "ta",
                  "te", "kn", "ml", "si")


def _by_group(cjk: dict, dense: dict, abugida: dict, korean: dict) -> dict[str, dict[str, Any]]:
    o: dict[str, dict[str, Any]] = {}
    for keys, vals in ((_CJK_SCRIPTS + _CJK_LANGS, cjk), (_DENSE_SCRIPTS + _DENSE_LANGS, dense),
                       (_ABUGIDAS + _ABUGIDA_LANGS, abugida), (("Hangul", "ko"), korean)):
        if vals:
            for k in keys:
                o[k] = dict(vals)
    return o


GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


def _default_gopher_overrides() -> dict[str, dict[str, Any]]:
    # Mean word length is 3-10 letters for English-like text.  Dictionary words of
    # Chinese/Japanese average ~1.5-2.5 characters; Thai-like ~3-5; Indic abugidas
    # put a syllable into one base letter plus marks, ~2-4 base letters per word;
    # Korean eojeol ~3 syllables.
    return _by_group(
        cjk={"min_mean_word_length": 1.0, "max_mean_word_length": 4.0},
        dense={"min_mean_word_length": 1.5, "max_mean_word_length": 12.0},
        abugida={"min_mean_word_length": 1.5, "max_mean_word_length": 10.0},
        korean={"min_mean_word_length": 1.5, "max_mean_word_length": 10.0},
    )


class GopherQualityConfig(_RuleConfig):
    #: designed for and applied to web pages only (MassiveText: MassiveWeb); books,
    #: manuals and other text trees (``text``) are out of scope by default
    formats: list[str] = list(WEB_FORMATS)
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1       # '#' and '...' per token
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    bullets: list[str] = ["•", "-"]
    #: false (Gopher as published): ratios are per word, punctuation-only tokens are
    #: not words.  true: per token, punctuation included, split the way datatrove
    #: >= 0.3 does with spaCy (stricter; bench/ uses it for a like-for-like run).
    count_punctuation_as_words: bool = False
    #: datatrove compares stop words case-sensitively ("The" is not "the"); we lower-case
    stop_words_case_sensitive: bool = False
    #: explicit stop-word lists per language; other languages use ``stop_words_package``
    stop_words: dict[str, list[str]] = {"en": GOPHER_STOP_WORDS}
    #: package providing lists for more languages ("stopwordsiso" or "none")
    stop_words_package: str = "stopwordsiso"
    overrides: dict[str, dict[str, Any]] = Field(default_factory=_default_gopher_overrides)


class GopherRepetitionConfig(_RuleConfig):
    #: n-grams over tokens split like datatrove's spaCy tokenizer (bench/ only)
    spacy_like_tokens: bool = False
    max_dup_para_frac: float = 0.3
    max_dup_para_char_frac: float = 0.2
    max_dup_line_frac: float = 0.3
    max_dup_line_char_frac: float = 0.2
    #: n -> max share of characters in the most frequent n-gram
    max_top_ngram_char_frac: dict[int, float] = {2: 0.20, 3: 0.18, 4: 0.16}
    #: n -> max share of characters in duplicated n-grams
    max_dup_ngram_char_frac: dict[int, float] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


C4_POLICY = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]


class C4Config(_RuleConfig):
    #: web rules (C4 cleaned Common Crawl): not applied to text trees by default
    formats: list[str] = list(WEB_FORMATS)
    min_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    remove_citations: bool = True
    #: lines must end in terminal punctuation: "unicode" (. ! ? 。 । ؟ ...) or "c4" (. ? ! " ')
    terminal_punctuation: str = "unicode"
    drop_lorem_ipsum: bool = True
    drop_curly_bracket: bool = True
    #: lines containing these (lower-case) substrings do not count (English defaults)
    skip_line_substrings: list[str] = ["javascript", *C4_POLICY]
    #: C4 drops a page with a single "{" (code in a web page).  A number: drop only
    #: when more than this share of the non-blank lines holds a curly bracket used as
    #: code, so a manual or a tutorial with one code example is kept, and braces
    #: around words (cross-references, markup: "See {hacker}") do not count
    #: (C4: null, any bracket).
    max_curly_bracket_line_frac: float | None = Field(0.1, ge=0, le=1)
    #: join hard-wrapped lines before the line rules (see ``unwrap_lines``)
    unwrap_lines: bool = True
    #: a text that uses no sentence-ending punctuation at all (verse and scripture
    #: written without it, word lists, Thai, which ends sentences with a space) is
    #: not judged by the sentence count: C4 made it for web pages whose sentences
    #: end in punctuation.  Text whose words carry punctuation that no line ends in
    #: (shuffled or broken text) is still judged.
    skip_unpunctuated: bool = True

    @field_validator("terminal_punctuation")
    @classmethod
    def _tp(cls, v: str) -> str:
        if v not in ("unicode", "c4"):
            raise ValueError("must be 'unicode' or 'c4'")
        return v


def _default_fineweb_overrides() -> dict[str, dict[str, Any]]:
    # A "short line" of 30 Latin characters holds about 12 CJK characters of content.
    return _by_group(cjk={"short_line_length": 12}, dense={}, abugida={}, korean={"short_line_length": 12})


class FineWebConfig(_RuleConfig):
    #: web rules (FineWeb filtered Common Crawl): not applied to text trees by default
    formats: list[str] = list(WEB_FORMATS)
    min_line_punct_ratio: float = 0.12
    #: documents with no line ending in punctuation at all pass the rule above
    #: (FineWeb's ``line_punct_exclude_zero``; verse and tables have none)
    line_punct_exclude_zero: bool = False
    #: the same, stricter: only a text with no sentence-ending punctuation anywhere
    #: (see ``C4Config.skip_unpunctuated``) is not judged by ``min_line_punct_ratio``
    skip_unpunctuated: bool = True
    #: join hard-wrapped lines before computing ``line_punct_ratio``
    unwrap_lines: bool = True
    max_short_line_ratio: float = 0.67
    short_line_length: int = 30
    max_char_dup_ratio: float = 0.1
    max_newline_word_ratio: float = 0.3
    overrides: dict[str, dict[str, Any]] = Field(default_factory=_default_fineweb_overrides)


AUTOGEN_MARKERS = ["auto-generated", "autogenerated", "automatically generated", "generated by",
                   "do not edit", "code generated", "this file was generated"]


class CodeQualityConfig(_RuleConfig):
    max_line_length: int = 1000           # Codex / StarCoder
    max_mean_line_length: float = 100.0
    min_alnum_frac: float = 0.25
    drop_autogenerated: bool = True
    autogen_markers: list[str] = AUTOGEN_MARKERS
    autogen_scan_lines: int = 5           # markers are looked for in the first lines
    #: share of characters in data-like lines (numbers, hex, literals and separators only)
    max_data_line_frac: float = 0.5
    #: share of characters in long base64 / hex / escaped-byte runs (StarCoder: 0.5)
    max_encoded_frac: float = 0.5
    min_encoded_run: int = 64
    #: share of non-blank lines that repeat an earlier line (trivial lines excluded)
    max_dup_line_frac: float = 0.5


class QualityRulesConfig(BaseModel):
    """The heuristic rule sets of the ``quality:`` section (see ``filters.quality``)."""

    model_config = ConfigDict(extra="forbid")
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    c4: C4Config = C4Config()
    fineweb: FineWebConfig = FineWebConfig()
    code: CodeQualityConfig = CodeQualityConfig()


# --------------------------------------------------------------------------- shared analysis
_tls = threading.local()


class Analysis:
    """Per-text measurements shared by the rule sets (tokenized once per document)."""

    __slots__ = ("text", "spacy_like", "_tokens", "_words", "_lines", "_word_chars", "_logical", "_marks")

    def __init__(self, text: str, spacy_like: bool = False):
        self.text = text
        self.spacy_like = spacy_like
        self._tokens = self._words = self._lines = None
        self._word_chars = None
        self._logical = self._marks = None

    @property
    def logical_lines(self) -> list[str]:
        """Lines with hard-wrapped sentences joined again (``unwrap_lines``)."""
        if self._logical is None:
            self._logical = unwrap_lines(self.lines)
        return self._logical

    @property
    def sentence_marks(self) -> int:
        """Terminal punctuation used to end a sentence (followed by a space or the end)."""
        if self._marks is None:
            self._marks = textseg.sentence_mark_count(self.text)
        return self._marks

    @property
    def tokens(self) -> list[str]:
        if self._tokens is None:
            self._tokens = (textseg.tokens_spacy_like if self.spacy_like else textseg.tokens)(self.text)
        return self._tokens

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = [t for t in self.tokens if textseg.is_word(t)]
        return self._words

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = self.text.splitlines()
        return self._lines

    @property
    def word_chars(self) -> int:
        """Base characters in words (combining marks excluded)."""
        if self._word_chars is None:
            n = sum(map(len, self.words))
            if not self.text.isascii():
                n -= textseg.count_marks("".join(self.words))
            self._word_chars = n
        return self._word_chars


def _continues_sentence(prev: str, nxt: str) -> bool:
    """``nxt`` carries on the sentence ``prev`` left open: ``prev`` ends in a word
    (no terminal punctuation, colon, semicolon or closing bracket) and ``nxt``
    starts with a lower-case letter."""
    p = prev.rstrip()
    n = nxt.lstrip()
    if not p or not n or not n[0].islower():
        return False
    last = p[-1]
    return (last.isalnum() or last in ",-–—") and not textseg.ends_with_terminal(p)


def unwrap_lines(lines: list[str]) -> list[str]:
    """Plain text wrapped at a fixed width (mail, fortunes, manuals converted from
    roff or PDF) breaks sentences across lines; the line rules of C4 and FineWeb
    were made for text extracted from HTML, where a line is a block element
    (a paragraph).  Consecutive non-blank lines are joined where the second
    continues the first's open sentence (see ``_continues_sentence``); blank lines
    stay paragraph breaks.  Scripts without letter case are left as they are."""
    out: list[str] = []
    joined = False
    for line in lines:
        if out and line.strip() and out[-1].strip() and _continues_sentence(out[-1], line):
            out[-1] = out[-1].rstrip() + " " + line.strip()
            joined = True
        else:
            out.append(line)
    return out if joined else lines


def analysis(text: str, spacy_like: bool = False) -> Analysis:
    """The analysis of ``text``, reused while the same string object is scored."""
    a = getattr(_tls, "last", None)
    if a is not None and a.text is text and a.spacy_like == spacy_like:
        return a
    a = Analysis(text, spacy_like)
    _tls.last = a
    return a


# --------------------------------------------------------------------------- base class
class _Rules:
    name: ClassVar[str]
    stage: ClassVar[str] = "quality"
    decide_with_doc: ClassVar[bool] = True
    for_code: ClassVar[bool] = False

    def __init__(self, config: _RuleConfig):
        self.config = config
        self._resolved: dict[tuple[str, str], Any] = {}

    def applies(self, doc: dict[str, Any]) -> bool:
        if not self.config.enabled:
            return False
        is_code = (doc.get("lang") or "").startswith("code:")
        if is_code != self.for_code:
            return False
        return in_scope(doc, self.config.sources, self.config.formats)

    def params(self, doc: dict[str, Any] | None):
        """The config with the overrides for the doc's script, then language, applied."""
        lang = (doc or {}).get("lang") or ""
        script = (doc or {}).get("script") or ""
        key = (lang, script)
        p = self._resolved.get(key)
        if p is None:
            upd: dict[str, Any] = {}
            ov = self.config.overrides
            if script in ov:
                upd.update(ov[script])
            if lang in ov:
                upd.update(ov[lang])
            elif lang.split("-")[0] in ov:
                upd.update(ov[lang.split("-")[0]])
            p = self.config.model_copy(update=upd) if upd else self.config
            if len(self._resolved) < 4096:
                self._resolved[key] = p
        return p

    # subclasses: _score(doc, params) -> dict, _limits(params) -> {metric: (kind, value)}
    def score(self, doc: dict[str, Any]) -> dict[str, float]:
        if not self.applies(doc):
            return {}
        return self._score(doc, self.params(doc))

    def thresholds(self, doc: dict[str, Any] | None = None) -> dict[str, tuple[str, float]]:
        """metric -> (``min``|``max``, value) in force for ``doc``; ``min`` keeps >= value."""
        if doc is not None and not self.applies(doc):
            return {}
        return self._limits(self.params(doc))

    def decide(self, scores: dict[str, float], doc: dict[str, Any] | None = None) -> str | None:
        if not scores:
            return None
        for metric, (kind, limit) in self.thresholds(doc).items():
            v = scores.get(metric)
            if v is None:
                continue
            if (kind == "min" and v < limit) or (kind == "max" and v > limit):
                return f"{self.name}:{metric}"
        return None

    def _score(self, doc, p) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _limits(self, p) -> dict[str, tuple[str, float]]:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------- Gopher quality
@lru_cache(maxsize=256)
def _package_stop_words(package: str, lang: str) -> frozenset[str] | None:
    if package == "stopwordsiso":
        import stopwordsiso

        base = lang.split("-")[0].split("_")[0].lower()
        if not stopwordsiso.has_lang(base):
            return None
        return frozenset(textseg.strip_vocalisation(w.lower()) for w in stopwordsiso.stopwords(base))
    if package in ("none", ""):
        return None
    raise ValueError(f"stop_words_package: unknown package {package!r} (choose stopwordsiso or none)")


class GopherQuality(_Rules):
    name = "gopher_quality"

    def __init__(self, config: GopherQualityConfig | None = None):
        super().__init__(config or GopherQualityConfig())
        self._explicit = {k: frozenset(w.lower() for w in v) for k, v in self.config.stop_words.items()}

    def stop_words_for(self, lang: str | None) -> frozenset[str] | None:
        if not lang:
            return None
        if lang in self._explicit:
            return self._explicit[lang]
        return _package_stop_words(self.config.stop_words_package, lang)

    def _score(self, doc, p: GopherQualityConfig) -> dict[str, float]:
        a = analysis(doc["text"], p.count_punctuation_as_words)
        text = a.text
        words = a.words
        n_words = len(words)
        lines = a.lines or [""]
        denom_items = a.tokens if p.count_punctuation_as_words else words
        denom = len(denom_items)
        out = {
            "n_words": float(n_words),
            "mean_word_length": a.word_chars / n_words if n_words else 0.0,
            "hash_ratio": text.count("#") / denom if denom else 0.0,
            "ellipsis_ratio": (text.count("...") + text.count("…")) / denom if denom else 0.0,
            "bullet_lines_ratio": sum(1 for s in lines if s.lstrip().startswith(tuple(p.bullets))) / len(lines),
            "ellipsis_lines_ratio": sum(1 for s in lines if s.rstrip().endswith(("...", "…"))) / len(lines),
            "alpha_words_ratio": (sum(1 for t in denom_items if _has_alpha(t)) / denom) if denom else 0.0,
        }
        sw = self.stop_words_for(doc.get("lang"))
        if sw is not None:
            present = set()
            cs = p.stop_words_case_sensitive
            plain = not text.isascii()
            for w in words:
                lw = w if cs else w.lower()
                if plain:  # vocalised Arabic/Hebrew: "فِى" is the stop word "فى"
                    lw = textseg.strip_vocalisation(lw)
                if lw in sw:
                    present.add(lw)
                    if len(present) >= 64:
                        break
            out["stop_words"] = float(len(present))
        return out

    def _limits(self, p: GopherQualityConfig):
        return {
            "n_words": ("min", p.min_words),
            "n_words_max": ("max", p.max_words),
            "mean_word_length": ("min", p.min_mean_word_length),
            "mean_word_length_max": ("max", p.max_mean_word_length),
            "hash_ratio": ("max", p.max_symbol_word_ratio),
            "ellipsis_ratio": ("max", p.max_symbol_word_ratio),
            "bullet_lines_ratio": ("max", p.max_bullet_lines_ratio),
            "ellipsis_lines_ratio": ("max", p.max_ellipsis_lines_ratio),
            "alpha_words_ratio": ("min", p.min_alpha_words_ratio),
            "stop_words": ("min", p.min_stop_words),
        }

    def decide(self, scores, doc=None):
        # two-sided limits are listed as "<metric>" (min) and "<metric>_max" (max)
        if not scores:
            return None
        for metric, (kind, limit) in self.thresholds(doc).items():
            key = metric[:-4] if metric.endswith("_max") else metric
            v = scores.get(key)
            if v is None:
                continue
            if (kind == "min" and v < limit) or (kind == "max" and v > limit):
                return f"{self.name}:{key}"
        return None


_ALPHA_RE = re.compile(r"[^\W\d_]")


def _has_alpha(tok: str) -> bool:
    return _ALPHA_RE.search(tok) is not None


# --------------------------------------------------------------------------- Gopher repetition
_PARA_RE = re.compile(r"\n{2,}")
_LINES_RE = re.compile(r"\n+")
_MULT = np.uint64(0x9E3779B97F4A7C15)


def _dup_stats(items: list[str]) -> tuple[int, int]:
    """(elements that repeat an earlier one, their characters)."""
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


def _ngram_hashes(ids: np.ndarray, n: int, prev: np.ndarray | None) -> np.ndarray:
    """64-bit rolling hashes of all n-grams, from the (n-1)-gram hashes."""
    if prev is None:
        return ids.astype(np.uint64)
    with np.errstate(over="ignore"):
        return prev[:-1] * _MULT + ids[n - 1:].astype(np.uint64) + np.uint64(n)


def dup_ngram_chars(h: np.ndarray, ngram_chars: np.ndarray, n: int) -> int:
    """Characters in duplicated n-grams, exactly as Gopher/datatrove count them:
    scan left to right; an n-gram seen before counts and the scan jumps past it.

    Only positions whose n-gram occurred earlier can count, so the Python loop
    runs over those (few, in clean text) instead of over every position."""
    if len(h) < 2:
        return 0
    uniq, first, inv = np.unique(h, return_index=True, return_inverse=True)
    pos = np.arange(len(h))
    cand = np.nonzero(first[inv] < pos)[0]
    if not len(cand):
        return 0
    total = 0
    skip_until = 0                      # positions < skip_until are jumped over
    win_starts: list[int] = []          # skip windows [s, e) created so far
    win_ends: list[int] = []
    known: set[int] = set()             # n-gram ids already in the "seen" set
    from bisect import bisect_right

    for i in cand.tolist():
        if i < skip_until:
            continue
        g = int(inv[i])
        if g not in known:
            f = int(first[g])
            k = bisect_right(win_starts, f) - 1
            if k >= 0 and f < win_ends[k]:
                # first occurrence was jumped over: look for a later visited one
                # among earlier candidates (they were visited iff not skipped)
                known.add(g)  # this occurrence is visited now and enters the set
                continue
            known.add(g)
        total += int(ngram_chars[i])
        skip_until = i + n
        win_starts.append(i + 1)
        win_ends.append(i + n)
    return total


class GopherRepetition(_Rules):
    name = "gopher_repetition"

    def __init__(self, config: GopherRepetitionConfig | None = None):
        super().__init__(config or GopherRepetitionConfig())

    def _score(self, doc, p: GopherRepetitionConfig) -> dict[str, float]:
        text = doc["text"]
        n_chars = len(text)
        out: dict[str, float] = {}
        if not n_chars:
            return {"dup_para_frac": 0.0, "dup_para_char_frac": 0.0, "dup_line_frac": 0.0, "dup_line_char_frac": 0.0}
        paras = _PARA_RE.split(text.strip())
        nd, cd = _dup_stats(paras)
        out["dup_para_frac"] = nd / len(paras)
        out["dup_para_char_frac"] = cd / n_chars
        lines = _LINES_RE.split(text)
        nd, cd = _dup_stats(lines)
        out["dup_line_frac"] = nd / len(lines)
        out["dup_line_char_frac"] = cd / n_chars

        toks = analysis(text, p.spacy_like_tokens).tokens
        if not toks:
            return out
        vocab: dict[str, int] = {}
        ids = np.fromiter((vocab.setdefault(t, len(vocab)) for t in toks), dtype=np.int64, count=len(toks))
        lens = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
        csum = np.concatenate(([0], np.cumsum(lens)))
        max_n = max([*p.max_top_ngram_char_frac, *p.max_dup_ngram_char_frac, 1])
        h = None
        for n in range(1, max_n + 1):
            if len(toks) < n:
                break
            h = _ngram_hashes(ids, n, h)
            if n == 1:
                continue
            chars = csum[n:] - csum[:-n]  # characters of each n-gram, separators excluded
            if n in p.max_top_ngram_char_frac:
                uniq, first, counts = np.unique(h, return_index=True, return_counts=True)
                top = counts.max()
                j = first[counts == top].min()  # first-seen among the most frequent
                # the top n-gram's characters include the n-1 separating spaces
                out[f"top_{n}gram_char_frac"] = float(top * (chars[j] + n - 1)) / n_chars
            if n in p.max_dup_ngram_char_frac:
                out[f"dup_{n}gram_char_frac"] = dup_ngram_chars(h, chars, n) / n_chars
        return out

    def _limits(self, p: GopherRepetitionConfig):
        lim = {
            "dup_para_frac": ("max", p.max_dup_para_frac),
            "dup_para_char_frac": ("max", p.max_dup_para_char_frac),
            "dup_line_frac": ("max", p.max_dup_line_frac),
            "dup_line_char_frac": ("max", p.max_dup_line_char_frac),
        }
        for n, v in sorted(p.max_top_ngram_char_frac.items()):
            lim[f"top_{n}gram_char_frac"] = ("max", v)
        for n, v in sorted(p.max_dup_ngram_char_frac.items()):
            lim[f"dup_{n}gram_char_frac"] = ("max", v)
        return lim


# --------------------------------------------------------------------------- C4
_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_C4_END = (".", "?", "!", '"', "'")


class C4Rules(_Rules):
    name = "c4"

    def __init__(self, config: C4Config | None = None):
        super().__init__(config or C4Config())

    def _line_ends_ok(self, line: str, p: C4Config) -> bool:
        if p.terminal_punctuation == "c4":
            return line.endswith(_C4_END) and not line.endswith("...")
        return textseg.ends_with_terminal(line) and not line.endswith(("...", "…"))

    def _score(self, doc, p: C4Config) -> dict[str, float]:
        a = analysis(doc["text"])
        lines = a.logical_lines if p.unwrap_lines else a.lines
        n_sent = 0
        kept = 0
        lorem = curly = 0.0
        skip = tuple(s.lower() for s in p.skip_line_substrings)
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            if p.max_word_length > 0 and len(line) > p.max_word_length and any(
                len(w) > p.max_word_length for w in line.split()
            ):
                continue
            if p.remove_citations and "[" in line:
                line = _CITATION_RE.sub("", line)
            if not self._line_ends_ok(line, p):
                continue
            if textseg.count_words(line) < p.min_words_per_line:
                continue
            low = line.lower()
            if "lorem ipsum" in low:
                lorem = 1.0
            if skip and any(s in low for s in skip):
                continue
            if "{" in line:
                curly = 1.0
            kept += 1
            n_sent += textseg.sentence_count(line)
        nonblank = [x for x in a.lines if x.strip()]
        n_lines = sum(1 for x in lines if x.strip())
        out = {
            "sentences": float(n_sent),
            "kept_line_frac": kept / n_lines if n_lines else 0.0,
            "lorem_ipsum": lorem,
            "curly_bracket": curly,
            "curly_bracket_line_frac": (sum(1 for x in nonblank if "{" in x and _code_brace(x)) / len(nonblank))
            if nonblank else 0.0,
            "sentence_marks": float(a.sentence_marks),
        }
        return out

    def _limits(self, p: C4Config):
        lim: dict[str, tuple[str, float]] = {}
        if p.drop_lorem_ipsum:
            lim["lorem_ipsum"] = ("max", 0.0)
        if p.drop_curly_bracket:
            if p.max_curly_bracket_line_frac is None:
                lim["curly_bracket"] = ("max", 0.0)
            else:
                lim["curly_bracket_line_frac"] = ("max", p.max_curly_bracket_line_frac)
        lim["sentences"] = ("min", p.min_sentences)
        return lim

    def decide(self, scores, doc=None):
        p = self.params(doc)
        if p.skip_unpunctuated and _unpunctuated(scores, doc):
            scores = {k: v for k, v in scores.items() if k != "sentences"}
        return super().decide(scores, doc)

    def thresholds(self, doc=None):
        lim = super().thresholds(doc)
        if doc is not None and lim and self.params(doc).skip_unpunctuated and _unpunctuated(
                _stored(doc, self.name), doc):
            lim.pop("sentences", None)
        return lim


# a brace that encloses words only (up to its "}" or the line end): a cross-reference
# or markup ("See {hacker}", "{Knights" ... "of the Lambda Calculus}"), not code
_WORD_BRACES_RE = re.compile(r"(?<![$%@#])\{[^\W\d_][\w \t'’\-.]*(?:\}|$)")


def _code_brace(line: str) -> bool:
    """The line holds a curly bracket used as code ("{ return x; }", "{a,b}",
    "{color:red}", "${HOME}"): one left after removing braces around words
    (not after ``$ % @ #``, which make a template or shell variable)."""
    return "{" in _WORD_BRACES_RE.sub("", line.rstrip())


def _stored(doc: dict[str, Any], name: str) -> dict[str, float]:
    """The scores of operator ``name`` already stored in ``doc``, without the prefix."""
    pre = name + "."
    return {k[len(pre):]: v for k, v in (doc.get("scores") or {}).items() if k.startswith(pre)}


def _unpunctuated(scores: dict[str, float], doc: dict[str, Any] | None) -> bool:
    """No sentence-ending punctuation anywhere, in a text of several lines."""
    if scores.get("sentence_marks") != 0.0:
        return False
    text = (doc or {}).get("text") or ""
    return text.strip().count("\n") >= 1


# --------------------------------------------------------------------------- FineWeb
class FineWebRules(_Rules):
    name = "fineweb"

    def __init__(self, config: FineWebConfig | None = None):
        super().__init__(config or FineWebConfig())

    def _score(self, doc, p: FineWebConfig) -> dict[str, float]:
        text = doc["text"]
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if not lines:
            return {"line_punct_ratio": 0.0, "short_line_ratio": 1.0, "char_dup_ratio": 0.0, "newline_word_ratio": 0.0,
                    "sentence_marks": 0.0}
        a = analysis(text)
        plines = [ln for ln in a.logical_lines if ln.strip()] if p.unwrap_lines else lines
        punct = sum(1 for ln in plines if textseg.ends_with_terminal(ln.rstrip(), closers="")) / len(plines)
        short = sum(1 for ln in lines if len(ln) <= p.short_line_length) / len(lines)
        dup_chars = _dup_stats(lines)[1]
        n_nonnl = len(text) - text.count("\n")
        n_words = len(analysis(text).tokens)
        out = {
            "line_punct_ratio": punct,
            "short_line_ratio": short,
            "char_dup_ratio": dup_chars / n_nonnl if n_nonnl else 0.0,
            "newline_word_ratio": text.count("\n") / n_words if n_words else 0.0,
            "sentence_marks": float(a.sentence_marks),
        }
        return out

    def _limits(self, p: FineWebConfig):
        return {
            "line_punct_ratio": ("min", p.min_line_punct_ratio),
            "short_line_ratio": ("max", p.max_short_line_ratio),
            "char_dup_ratio": ("max", p.max_char_dup_ratio),
            "newline_word_ratio": ("max", p.max_newline_word_ratio),
        }

    def decide(self, scores, doc=None):
        p = self.params(doc)
        if (p.line_punct_exclude_zero and scores.get("line_punct_ratio") == 0.0) or (
                p.skip_unpunctuated and _unpunctuated(scores, doc)):
            scores = {k: v for k, v in scores.items() if k != "line_punct_ratio"}
        return super().decide(scores, doc)

    def thresholds(self, doc=None):
        lim = super().thresholds(doc)
        if doc is not None and lim:
            p = self.params(doc)
            own = _stored(doc, self.name)
            if (p.line_punct_exclude_zero and own.get("line_punct_ratio") == 0.0) or (
                    p.skip_unpunctuated and _unpunctuated(own, doc)):
                lim.pop("line_punct_ratio", None)
        return lim


# --------------------------------------------------------------------------- code
_DATA_LINE_RE = re.compile(
    r"^[\s\[\]{}(),;:'\"]*"
    r"(?:(?:0[xX][0-9a-fA-F]+|[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[uUlLfF]*|'[^']{0,4}'|\"[^\"]{0,8}\"|true|false|null|None|NULL)"
    r"[\s\[\]{}(),;:]*){3,}$"
)
@lru_cache(maxsize=8)
def _encoded_re(min_run: int) -> re.Pattern:
    return re.compile(
        r"[A-Za-z0-9+/]{%d,}={0,2}" % min_run                       # base64
        + r"|(?:0[xX])?[0-9a-fA-F]{%d,}" % min_run                 # hex
        + r"|(?:\\[xu][0-9a-fA-F]{2,4}){%d,}" % max(min_run // 4, 4)  # escaped bytes
    )


class CodeQuality(_Rules):
    name = "code_quality"
    for_code = True

    def __init__(self, config: CodeQualityConfig | None = None):
        super().__init__(config or CodeQualityConfig())
        self._markers = tuple(m.lower() for m in self.config.autogen_markers)

    def _score(self, doc, p: CodeQualityConfig) -> dict[str, float]:
        text = doc["text"]
        lines = text.split("\n")
        n = len(text)
        lens = [len(x) for x in lines]
        alnum = sum(1 for c in text if c.isalnum()) if n < 2_000_000 else _alnum_fast(text)
        head = "\n".join(lines[: p.autogen_scan_lines]).lower()
        autogen = 1.0 if any(m in head for m in self._markers) else 0.0
        data_chars = sum(len(x) for x in lines if len(x) > 8 and _DATA_LINE_RE.match(x))
        enc_chars = sum(len(m) for m in _encoded_re(p.min_encoded_run).findall(text))
        nonblank = [x.strip() for x in lines if len(x.strip()) > 3]  # "}", "end", "" are not repetition
        dups = _dup_stats(nonblank)[0]
        return {
            "max_line_length": float(max(lens) if lens else 0),
            "mean_line_length": (n - text.count("\n")) / len(lines) if lines else 0.0,
            "alnum_frac": alnum / n if n else 0.0,
            "autogenerated": autogen,
            "data_line_frac": data_chars / n if n else 0.0,
            "encoded_frac": enc_chars / n if n else 0.0,
            "dup_line_frac": dups / len(nonblank) if nonblank else 0.0,
        }

    def _limits(self, p: CodeQualityConfig):
        lim = {
            "max_line_length": ("max", p.max_line_length),
            "mean_line_length": ("max", p.max_mean_line_length),
            "alnum_frac": ("min", p.min_alnum_frac),
            "data_line_frac": ("max", p.max_data_line_frac),
            "encoded_frac": ("max", p.max_encoded_frac),
            "dup_line_frac": ("max", p.max_dup_line_frac),
        }
        if p.drop_autogenerated:
            lim["autogenerated"] = ("max", 0.0)
        return lim


def _alnum_fast(text: str) -> int:
    return len(re.findall(r"[^\W_]", text))


def build_rules(cfg: QualityRulesConfig) -> list[Any]:
    ops: list[Any] = []
    if cfg.gopher_quality.enabled:
        ops.append(GopherQuality(cfg.gopher_quality))
    if cfg.gopher_repetition.enabled:
        ops.append(GopherRepetition(cfg.gopher_repetition))
    if cfg.c4.enabled:
        ops.append(C4Rules(cfg.c4))
    if cfg.fineweb.enabled:
        ops.append(FineWebRules(cfg.fineweb))
    if cfg.code.enabled:
        ops.append(CodeQuality(cfg.code))
    return ops

