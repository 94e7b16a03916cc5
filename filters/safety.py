"""Safety filters: URL/domain blocklists, per-language term lists, toxicity model.

Everything the filters match against is an *input*: list files named in the
config (``pkg://`` finds them inside an installed wheel, e.g. the 14 language
lists that ``safetext`` ships), never a list written into this code.

``UrlBlocklist``   drops documents whose URL host (or a parent domain) is listed.
``TermFilter``     counts whole-word matches of listed terms (Aho-Corasick over the
                   lower-cased text, one pass for all lists).  Terms in scripts
                   written without spaces (Han, Kana, Thai ...) match as
                   substrings; others need non-word characters on both sides.
                   Scores ``matches``, ``distinct`` and ``weight``; drops at ``min_weight``.
``ToxicityClassifier``  P(toxic) from a fastText model trained with
                   ``python -m filters.safety train --positive TOXIC --negative CLEAN
                   --output MODEL`` (same machinery as the quality classifier).
"""
from __future__ import annotations

import os
import re
import sys
import unicodedata
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from filters.resources import read_list, resolve

# ----------------------------------------------------------------------------- config


class ToxicityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: fastText model from ``python -m filters.safety train``; null: no toxicity stage
    model: str | None = None
    #: drop when P(toxic) is above this
    max_score: float = Field(0.5, ge=0, le=1)
    max_chars: int = Field(20000, gt=0)


class SafetyConfig(BaseModel):
    """``safety:`` section of configs/corpus.yaml."""

    model_config = ConfigDict(extra="forbid")
    #: files of blocked domains (one per line; "#" comments); subdomains are blocked too
    url_blocklists: list[str] = []
    #: term list files (globs, ``pkg://``); a list's language is its parent folder's name
    term_lists: list[str] = ["pkg://safetext/languages/*/words.txt"]
    #: term lists matched in every document whatever ``term_scope`` says, keyed by the
    #: list's own language (used for list hygiene): profanity crosses languages
    #: (English terms turn up in text of every language), so a curated English list
    #: applies everywhere, while the uncurated per-language lists above only apply
    #: to documents of their language
    global_term_lists: dict[str, list[str]] = {}
    #: ``all``: every list applies to every document (insertions and code-switching
    #: cross languages); ``document_language``: only lists of the doc's language
    term_scope: Literal["all", "document_language"] = "all"
    #: terms shorter than this are ignored (single letters in some lists match everywhere)
    min_term_chars: int = Field(3, ge=1)
    #: the same for terms in dense scripts (Han, Kana, Hangul, Thai ...): 2 characters
    min_term_chars_dense: int = Field(2, ge=1)
    #: drop a document whose distinct listed terms weigh at least this much: a term
    #: weighs 1, or ``weak_term_weight`` when it is also among the ``common_words_top_n``
    #: words of the document's own language (uncurated lists hold ordinary words:
    #: French "envoyer", Chinese "提示"; one of those alone is weak evidence)
    min_weight: float = Field(1.0, gt=0)
    weak_term_weight: float = Field(0.5, ge=0, le=1)
    #: List hygiene (uncurated lists hold ordinary words: "does", "tool", "http" ...).
    #: A term that is among the ``common_words_top_n`` most frequent words (wordfreq)
    #: of any of ``common_word_languages`` other than its own list's language, but
    #: not of its own, is a cross-language false friend and is ignored; a term among the
    #: ``own_language_top_n`` most frequent words of its own language (function
    #: words such as French "faire") is ignored too.  Terms need a letter.
    common_word_languages: list[str] = [
        "ar", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hu", "id", "it", "ja", "ko",
        "nb", "nl", "pl", "pt", "ro", "ru", "sv", "tr", "uk", "vi", "zh"]
    common_words_top_n: int = Field(10000, ge=0)
    own_language_top_n: int = Field(150, ge=0)
    #: terms never counted (a user's allowlist, like datatrove's ["グロ", "性"])
    allow_terms: list[str] = []
    toxicity: ToxicityConfig = ToxicityConfig()


# ----------------------------------------------------------------------------- URL blocklist
def url_host(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    return host.rstrip(".").lower() if host else None


class UrlBlocklist:
    name = "url_blocklist"
    stage = "safety"

    def __init__(self, paths: list[str]):
        self.domains: set[str] = set()
        for spec in paths:
            for p in resolve(spec):
                for line in read_list(p):
                    d = line.split()[0].lower().strip(".")
                    if "://" in d:
                        d = url_host(d) or ""
                    if d:
                        self.domains.add(d)

    def score(self, doc: dict[str, Any]) -> dict[str, float]:
        host = url_host(doc.get("url"))
        if host is None:
            return {}
        parts = host.split(".")
        blocked = any(".".join(parts[i:]) in self.domains for i in range(len(parts)))
        return {"blocked": 1.0 if blocked else 0.0}

    def decide(self, scores: dict[str, float]) -> str | None:
        return "url_blocklist:blocked" if scores.get("blocked") else None

    def thresholds(self, doc=None):
        return {"blocked": ("max", 0.0)}


# ----------------------------------------------------------------------------- terms
_DENSE_RE = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)


_LETTER_RE = re.compile(r"[^\W\d_]")
#: list folder names that are not ISO 639-1 codes (safetext's "ch" is Chinese)
_LIST_LANG_ALIASES = {"ch": "zh"}


@lru_cache(maxsize=4)
def _common_words(langs: tuple[str, ...], top_n: int, own_top_n: int) -> dict[str, tuple[set[str], set[str]]]:
    """lang -> (top ``top_n`` words, top ``own_top_n`` words), from wordfreq (once per process)."""
    if not langs or (top_n == 0 and own_top_n == 0):
        return {}
    import logging

    import wordfreq

    logging.getLogger("wordfreq").setLevel(logging.ERROR)
    out = {}
    for lang in langs:
        words = wordfreq.top_n_list(lang, max(top_n, own_top_n), wordlist="best")
        out[lang] = (set(words[:top_n]), set(words[:own_top_n]))
    wordfreq.get_frequency_list.cache_clear()  # the full lists are large; keep only ours
    wordfreq.get_frequency_dict.cache_clear()
    return out


def _why_common(term: str, own: str, common: dict[str, tuple[set[str], set[str]]]) -> str | None:
    """Why a listed term is ignored: a function word of its own language, or a
    common word of another language that is *not* a common word of its own
    (a false friend like "does" in a French list; "fuck" stays in the English
    list although German and Dutch use it too)."""
    own_top, own_func = common.get(own, (set(), set()))
    if term in own_func:
        return f"function word of {own}"
    if term in own_top:
        return None
    for lang, (top, _) in common.items():
        if lang != own and term in top:
            return f"common word of {lang}"
    return None


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or (ch.isprintable() and not ch.isspace() and _category(ch)[0] == "M")


def _continues(ch: str) -> bool:
    return _is_word_char(ch) and _DENSE_RE.match(ch) is None


def _category(ch: str) -> str:
    return unicodedata.category(ch)


class TermFilter:
    name = "safety_terms"
    stage = "safety"
    decide_with_doc = False

    def __init__(self, config: SafetyConfig | None = None, lists: dict[str, list[str]] | None = None):
        """``lists``: language -> terms (tests); else read from ``config.term_lists``."""
        import ahocorasick

        self.config = config or SafetyConfig()
        global_langs: set[str] = set()
        if lists is None:
            lists = {}
            for spec in self.config.term_lists:
                for p in resolve(spec):
                    lang = os.path.basename(os.path.dirname(p)) or "*"
                    lists.setdefault(lang, []).extend(read_list(p))
            for lang, specs in self.config.global_term_lists.items():
                key = f"{lang}*"  # a global list: matched in every document
                global_langs.add(key)
                for spec in specs:
                    for p in resolve(spec):
                        lists.setdefault(key, []).extend(read_list(p))
        self.languages = sorted(lists)
        self._auto = ahocorasick.Automaton()
        common = _common_words(tuple(self.config.common_word_languages), self.config.common_words_top_n,
                               self.config.own_language_top_n)
        self._common = {_LIST_LANG_ALIASES.get(k, k): v for k, v in common.items()}
        self.ignored: dict[str, str] = {}
        allowed = {" ".join(t.lower().split()) for t in self.config.allow_terms}
        n = 0
        for lang, terms in sorted(lists.items()):
            is_global = lang in global_langs
            lang = lang.rstrip("*") if is_global else lang
            own = _LIST_LANG_ALIASES.get(lang, lang)
            for t in terms:
                term = " ".join(t.lower().split())
                dense = _DENSE_RE.search(term) is not None
                if len(term) < (self.config.min_term_chars_dense if dense else self.config.min_term_chars):
                    continue
                if not _LETTER_RE.search(term):
                    continue
                why = _why_common(term, own, common) or ("allowed" if term in allowed else None)
                if why:
                    self.ignored[term] = why
                    continue
                # edges need a word boundary unless they are in a dense script
                need_l = _is_word_char(term[0]) and not _DENSE_RE.match(term[0])
                need_r = _is_word_char(term[-1]) and not _DENSE_RE.match(term[-1])
                tags = {own, "*"} if is_global else {own}
                if term in self._auto:
                    _, langs, nl, nr = self._auto.get(term)
                    self._auto.add_word(term, (term, langs | tags, nl, nr))
                else:
                    self._auto.add_word(term, (term, frozenset(tags), need_l, need_r))
                    n += 1
        self.n_terms = n
        if n:
            self._auto.make_automaton()

    def matches(self, text: str, lang: str | None = None) -> list[tuple[int, int, str, bool]]:
        """(start, end, term, weak) of every whole-word match in ``text`` (lower-cased);
        ``weak``: the term is also an ordinary word of the document's language."""
        if not self.n_terms or not text:
            return []
        low = text.lower()
        if " " in low and ("\n" in low or "\t" in low):
            low = re.sub(r"\s", " ", low)  # terms with spaces match across line breaks too
        scope_lang = lang if self.config.term_scope == "document_language" else None
        doc_lang = "en" if (lang or "").startswith("code:") else (lang or "")
        doc_common = self._common.get(doc_lang, (set(), set()))[0]
        out = []
        n = len(low)
        for end, (term, langs, need_l, need_r) in self._auto.iter(low):
            if scope_lang is not None and scope_lang not in langs and "*" not in langs:
                continue
            # a term from another language's list that is an ordinary word of the
            # document's language ("queue" from the French list in English text)
            common_here = term in doc_common
            if doc_lang not in langs and common_here:
                continue
            start = end - len(term) + 1
            # a neighbour continues the word only if it is a word character outside
            # the dense scripts: "パッkounoケージ" has boundaries around "kouno"
            if need_l and start > 0 and _continues(low[start - 1]):
                continue
            if need_r and end + 1 < n and _continues(low[end + 1]):
                continue
            out.append((start, end + 1, term, common_here))
        return out

    def score(self, doc: dict[str, Any]) -> dict[str, float]:
        m = self.matches(doc["text"], doc.get("lang"))
        strength: dict[str, float] = {}
        for _, _, t, weak in m:
            strength[t] = max(strength.get(t, 0.0), self.config.weak_term_weight if weak else 1.0)
        return {"matches": float(len(m)), "distinct": float(len(strength)),
                "weight": round(sum(strength.values()), 6)}

    def decide(self, scores: dict[str, float]) -> str | None:
        if scores.get("weight", 0.0) >= self.config.min_weight:
            return "safety_terms:weight"
        return None

    def thresholds(self, doc=None):
        return {"weight": ("max", self.config.min_weight - 1e-9)}


# ----------------------------------------------------------------------------- toxicity
class ToxicityClassifier:
    name = "toxicity"
    stage = "safety"

    def __init__(self, config: ToxicityConfig, scorer: Any = None):
        from filters.classifier import FastTextScorer

        self.config = config
        self.scorer = scorer or FastTextScorer(config.model, max_chars=config.max_chars)

    def score(self, doc: dict[str, Any]) -> dict[str, float]:
        return {"score": round(self.scorer.prob(doc["text"]), 6)}

    def decide(self, scores: dict[str, float]) -> str | None:
        s = scores.get("score")
        return "toxicity:score" if s is not None and s > self.config.max_score else None

    def thresholds(self, doc=None):
        return {"score": ("max", self.config.max_score)}


def build_safety(cfg: SafetyConfig) -> list[Any]:
    ops: list[Any] = []
    if cfg.url_blocklists:
        ops.append(UrlBlocklist(cfg.url_blocklists))
    if cfg.term_lists:
        ops.append(TermFilter(cfg))
    if cfg.toxicity.model:
        ops.append(ToxicityClassifier(cfg.toxicity))
    return ops


def main(argv: list[str] | None = None) -> int:
    from filters.classifier import cli

    return cli(argv, "python -m filters.safety", "toxicity",
               "toxic examples (e.g. Jigsaw toxic comments)", "non-toxic examples")


if __name__ == "__main__":
    sys.exit(main())
