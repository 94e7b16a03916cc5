"""How common a listed term is in each language: wordfreq's frequency lists,
looked up without wordfreq's own CJK tokenizers.

``wordfreq.word_frequency`` tokenizes Chinese with ``jieba`` and Japanese/Korean
with ``MeCab`` (optional extras that this project does not install: importing
them fails).  The frequency *lists* need neither, so terms are split here the
way wordfreq would split them:

* text with spaces: into words (wordfreq's lists hold single, case-folded words);
* scripts written without spaces (Han, Kana, Hangul, Thai ...): into the most
  likely sequence of words *of that language's list* (a unigram segmentation over
  the list's own vocabulary, which is what jieba does with its dictionary), each
  inferred word break costing a factor 10 as in wordfreq (``INFERRED_SPACE_FACTOR``:
  any string splits into list words, nonsense included);
* Chinese is looked up in Simplified characters (wordfreq's lists are Simplified),
  with wordfreq's own Traditional→Simplified table.

Frequencies of several words combine as in wordfreq: ``1/f = 1/f1 + 1/f2 + ...``,
and, unlike wordfreq, a phrase of several space-separated words pays the same
factor 10 per word break: the harmonic estimate alone makes any phrase of two
common words common ("gang bang" would be as common as "bang").
A term is *common* in a language when its frequency is at least that of the
language's ``top_n``-th most frequent word.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

#: lid.176 / term-list codes -> wordfreq codes (Norwegian, Serbo-Croatian, Tagalog, safetext's "ch")
WORDFREQ_ALIASES = {"no": "nb", "nn": "nb", "sr": "sh", "hr": "sh", "bs": "sh", "tl": "fil", "ch": "zh",
                    "zh-cn": "zh", "zh-tw": "zh", "iw": "he", "in": "id"}
INFERRED_SPACE_FACTOR = 10.0
_MAX_PIECE = 12  # longest word looked up while segmenting (characters)

# characters of scripts written without spaces between words (segmented here)
_NO_SPACE_RE = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u0f00-\u0fff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\u1100-\u11ff\uf900-\ufaff]"
)
_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def wordfreq_lang(code: str | None) -> str | None:
    """The wordfreq language code for a lid.176 / list code, or None."""
    if not code:
        return None
    c = code.lower()
    for cand in (c, c.split("-")[0].split("_")[0]):
        cand = WORDFREQ_ALIASES.get(cand, cand)
        if cand in available_languages():
            return cand
    return None


@lru_cache(maxsize=1)
def available_languages() -> frozenset[str]:
    import wordfreq

    return frozenset(wordfreq.available_languages("best"))


@lru_cache(maxsize=1)
def _simplified_table() -> dict[int, str]:
    """wordfreq's Traditional→Simplified character table (its module imports jieba;
    the table itself is a data file of the wheel)."""
    try:
        from wordfreq.chinese import SIMPLIFIED_MAP  # needs jieba

        return SIMPLIFIED_MAP
    except ImportError:
        import gzip

        import msgpack
        from wordfreq.util import data_path

        with gzip.open(data_path("_chinese_mapping.msgpack.gz")) as f:
            try:
                return msgpack.load(f, raw=False, strict_map_key=False)
            except TypeError:  # pure-Python msgpack
                f.seek(0)
                return msgpack.load(f, raw=False)


def simplify_chinese(text: str) -> str:
    return text.translate(_simplified_table())


def _segment_freq(s: str, freqs: dict[str, float]) -> float:
    """Frequency of a string without spaces: best unigram segmentation into list words."""
    n = len(s)
    neg_inf = -math.inf
    best = [neg_inf] * (n + 1)   # log-probability of the best segmentation of s[:i]
    back = [0] * (n + 1)
    best[0] = 0.0
    log_penalty = math.log(INFERRED_SPACE_FACTOR)
    for i in range(1, n + 1):
        for j in range(max(0, i - _MAX_PIECE), i):
            if best[j] == neg_inf:
                continue
            f = freqs.get(s[j:i])
            if f is None:
                continue
            v = best[j] + math.log(f) - (log_penalty if j else 0.0)
            if v > best[i]:
                best[i], back[i] = v, j
    if best[n] == neg_inf:
        return 0.0
    pieces = []
    i = n
    while i > 0:
        pieces.append(s[back[i]:i])
        i = back[i]
    one_over = sum(1.0 / freqs[p] for p in pieces)
    return (1.0 / one_over) * INFERRED_SPACE_FACTOR ** -(len(pieces) - 1)


def _pieces(term: str) -> tuple[int, list[tuple[bool, str]]]:
    """(word breaks between space-separated chunks, [(needs segmentation, word)])."""
    chunks = term.split()
    out = []
    for chunk in chunks:
        for w in _WORD_RE.findall(chunk):
            out.append((_NO_SPACE_RE.search(w) is not None, w))
    return max(len(chunks) - 1, 0), out


def term_frequency(term: str, lang: str, freqs: dict[str, float], pieces=None) -> float:
    """wordfreq-style frequency of ``term`` (lower-case) in ``lang`` given its frequency dict."""
    if lang == "zh" and _NO_SPACE_RE.search(term):
        term = simplify_chinese(term)
        pieces = None
    breaks, parts = pieces if pieces is not None else _pieces(term)
    if not parts:
        return 0.0
    one_over = 0.0
    for dense, w in parts:
        f = _segment_freq(w, freqs) if dense else freqs.get(w, 0.0)
        if f <= 0.0:
            return 0.0
        one_over += 1.0 / f
    return (1.0 / one_over) * INFERRED_SPACE_FACTOR ** -breaks


def _cutoff(buckets: list[list[str]], freqs: dict[str, float], top_n: int) -> float:
    """Frequency of the ``top_n``-th most frequent word (inf when ``top_n`` is 0)."""
    if top_n <= 0:
        return math.inf
    seen = 0
    last = None
    for bucket in buckets:
        if bucket:
            last = bucket[0]
            seen += len(bucket)
            if seen >= top_n:
                break
    return freqs[last] if last is not None else math.inf


_SCRIPT_FAMILY = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "CJK": "CJK", "BOPOMOFO": "CJK"}


def script_family(text: str) -> str | None:
    """The writing system of most letters of ``text`` (the first word of their Unicode
    names: LATIN, CYRILLIC, ARABIC, CJK for Han and Kana ...); ties go to the non-Latin."""
    import unicodedata

    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            fam = unicodedata.name(ch, "?").split(" ")[0]
            fam = _SCRIPT_FAMILY.get(fam, fam)
            counts[fam] = counts.get(fam, 0) + 1
    return max(counts, key=lambda k: (counts[k], k != "LATIN", k)) if counts else None


def _freq_dict(buckets: list[list[str]], wanted: set[str]) -> dict[str, float]:
    """The frequencies of the ``wanted`` words only (wordfreq's list: bucket i holds
    the words of frequency 10^(-i/100))."""
    out = {}
    for i, bucket in enumerate(buckets):
        if bucket:
            hit = wanted.intersection(bucket)
            if hit:
                f = 10.0 ** (-i / 100)
                for w in hit:
                    out[w] = f
    return out


@dataclass
class TermStats:
    #: term -> languages where it is among the ``top_n`` most frequent words
    common: dict[str, frozenset[str]]
    #: term -> languages where it is among the ``own_top_n`` most frequent words
    top: dict[str, frozenset[str]]
    #: term -> {language: frequency} wherever it occurs in the lists
    freq: dict[str, dict[str, float]]
    #: language -> its script (``script_family`` of its 200 most frequent words)
    scripts: dict[str, str | None]


def common_languages(terms: Iterable[str], langs: Iterable[str], top_n: int, own_top_n: int) -> "TermStats":
    """How common each term is in each of ``langs`` (see ``TermStats``).

    Each frequency list is loaded once and released afterwards (they are large)."""
    import wordfreq

    logging.getLogger("wordfreq").setLevel(logging.ERROR)
    terms = sorted(set(terms))
    pieces = {t: _pieces(t) for t in terms}
    # every string a lookup can ask for: words, and substrings of unsegmented words
    wanted: set[str] = set()
    for t in terms:
        for dense, w in pieces[t][1]:
            if dense:
                for variant in {w, simplify_chinese(w)}:
                    for i in range(len(variant)):
                        for j in range(i + 1, min(len(variant), i + _MAX_PIECE) + 1):
                            wanted.add(variant[i:j])
            else:
                wanted.add(w)
    common: dict[str, set[str]] = {}
    top: dict[str, set[str]] = {}
    freq: dict[str, dict[str, float]] = {}
    scripts: dict[str, str | None] = {}
    for lang in sorted({wordfreq_lang(x) for x in langs} - {None}):
        buckets = wordfreq.get_frequency_list(lang, "best")
        freqs = _freq_dict(buckets, wanted | {b[0] for b in buckets if b})
        head = [w for b in buckets for w in b][:200] if buckets else []
        scripts[lang] = script_family(" ".join(head))
        # (1/(1/f) is not always f again in floating point: compare with a tolerance)
        c_common = _cutoff(buckets, freqs, top_n) * (1 - 1e-9)
        c_top = _cutoff(buckets, freqs, own_top_n) * (1 - 1e-9)
        for t in terms:
            f = term_frequency(t, lang, freqs, pieces[t])
            if f <= 0.0:
                continue
            freq.setdefault(t, {})[lang] = f
            if f >= c_common:
                common.setdefault(t, set()).add(lang)
            if f >= c_top:
                top.setdefault(t, set()).add(lang)
        wordfreq.get_frequency_list.cache_clear()
    return TermStats({t: frozenset(v) for t, v in common.items()}, {t: frozenset(v) for t, v in top.items()},
                     freq, scripts)
