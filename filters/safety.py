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
                   List hygiene with wordfreq's frequency lists (see ``TermFilter``
                   and ``filters.wordfreqs``); by default only web-like input
                   formats are screened (``term_formats``).
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

from pydantic import BaseModel, ConfigDict, Field, field_validator

from filters.resources import read_list, resolve
from filters.scope import WEB_FORMATS, check_globs, in_scope

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
    #: input formats (``metadata.format``, see ``filters.scope``) the term lists apply
    #: to: word lists are a web-page heuristic (C4's list screened Common Crawl pages);
    #: a book or a manual read from a text tree is not judged by counting listed
    #: words (a 240,000-word book always contains some).  ["*"]: every document.
    term_formats: list[str] = list(WEB_FORMATS)
    #: terms whose edge is in a script written without spaces (Han, Kana, Thai ...)
    #: match only on dictionary word boundaries (ICU): "グロ" not inside "グローバル"
    dense_word_boundaries: bool = True
    #: terms shorter than this are ignored (single letters in some lists match everywhere)
    min_term_chars: int = Field(3, ge=1)
    #: the same for terms in dense scripts (Han, Kana, Hangul, Thai ...): 2 characters
    min_term_chars_dense: int = Field(2, ge=1)
    #: drop a document whose distinct listed terms weigh at least this much: a term
    #: weighs 1, or ``weak_term_weight`` when it is also among the ``common_words_top_n``
    #: words of its own language (uncurated lists hold ordinary words: French
    #: "envoyer" send, Chinese "系統" system, "提示" hint; word frequency cannot tell
    #: them from common swear words, so four distinct ones make one term)
    min_weight: float = Field(1.0, gt=0)
    weak_term_weight: float = Field(0.25, ge=0, le=1)
    #: List hygiene (uncurated lists hold ordinary words: "does", "tool", "http" ...).
    #: A term that is among the ``common_words_top_n`` most frequent words (wordfreq)
    #: of any of ``common_word_languages`` other than its own list's language, but
    #: not of its own, is a cross-language false friend and is ignored; a term among the
    #: ``own_language_top_n`` most frequent words of its own language (function
    #: words such as French "faire") is ignored too.  Terms need a letter.
    #: (every language wordfreq has a "best" list for; lid.176 codes such as no, sr,
    #: hr map onto wordfreq's nb and sh)
    common_word_languages: list[str] = [
        "ar", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fil", "fr", "he", "hi", "hu",
        "id", "is", "it", "ja", "ko", "lt", "lv", "mk", "ms", "nb", "nl", "pl", "pt", "ro", "ru", "sh", "sk",
        "sl", "sv", "ta", "tr", "uk", "ur", "vi", "zh"]
    common_words_top_n: int = Field(10000, ge=0)
    own_language_top_n: int = Field(150, ge=0)
    #: languages whose words turn up in documents of every language (technical terms,
    #: quotations, commands): a term from another language's list that is a common
    #: word of one of these is skipped in every document ("pipe" from the French
    #: list in a German manual), as it is in documents of that language
    code_switch_languages: list[str] = ["en"]
    #: a term of a code-switching language's own list that is a common word of that
    #: language weighs ``weak_term_weight`` in every document, not only in documents
    #: of that language (English "dirty" quoted in a French text is no stronger
    #: evidence than in an English one).  A common word of another language found
    #: in a document of a third one is no quotation and keeps its full weight.
    weak_everywhere: bool = True
    #: a term from another language's list is skipped in a document whose language
    #: uses the word at least as often as the list's own language does (wordfreq):
    #: it is that language's word there ("mongol" from the Azerbaijani list in a
    #: French page), and so in every document when English, quoted everywhere, does
    #: ("sieve" from the French list); a romanised entry has no frequency in its
    #: own (native-script) language
    skip_if_more_common_here: bool = True
    #: terms never counted (a user's allowlist, like datatrove's ["グロ", "性"])
    allow_terms: list[str] = []
    toxicity: ToxicityConfig = ToxicityConfig()

    @field_validator("term_formats")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        return check_globs(v, "term_formats")


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
_HANGUL_RE = re.compile("[\uac00-\ud7af\u1100-\u11ff]")


@lru_cache(maxsize=4)
def _frequencies(terms: tuple[str, ...], langs: tuple[str, ...], top_n: int, own_top_n: int):
    """(term -> languages where it is common, term -> languages where it is a top
    word, language -> script); computed once per process for a given set of lists."""
    from filters.wordfreqs import common_languages

    if not langs or (top_n == 0 and own_top_n == 0):  # no hygiene
        return {}, {}, {}, {}
    st = common_languages(terms, langs, top_n, own_top_n)
    return st.common, st.top, st.freq, st.scripts


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or (ch.isprintable() and not ch.isspace() and _category(ch)[0] == "M")


def _continues(ch: str) -> bool:
    return _is_word_char(ch) and _DENSE_RE.match(ch) is None


def _category(ch: str) -> str:
    return unicodedata.category(ch)


class TermFilter:
    """Listed terms in a document (see the module docstring and ``SafetyConfig``).

    List hygiene, decided once when the lists are loaded (``ignored`` says why):

    * a term among the ``own_language_top_n`` most frequent words of its list's
      language is a function word ("faire" in the French list): ignored;
    * a term that is a common word (``common_words_top_n``) of some other language
      but not of its own is a false friend ("does" in the French list): ignored;
    * a term written in another script than most of its list (romanisations such
      as "http" or "diu" in the Chinese list, "sm" in the Japanese one) cannot be
      judged by its list language's frequencies (they are in the native script):
      it is ignored when it is a common word of *any* language.

    At match time a term that is a common word of the *document's* language is
    skipped when it comes from another language's list (cross-language false
    friend) and weighs ``weak_term_weight`` when it comes from the document's own
    language's list (an ordinary word the uncurated list also holds: French
    "envoyer", Chinese "提示" hint, Japanese "挿入" insertion).  Terms whose edge
    is in a script written without spaces must begin and end on a dictionary word
    boundary (ICU), so that "グロ" does not match inside "グローバル" (global);
    Korean terms need a boundary before them only (particles attach after).
    """

    name = "safety_terms"
    stage = "safety"
    decide_with_doc = False

    def __init__(self, config: SafetyConfig | None = None, lists: dict[str, list[str]] | None = None):
        """``lists``: language -> terms (tests); else read from ``config.term_lists``."""
        import ahocorasick

        from filters.wordfreqs import script_family, wordfreq_lang

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
        self.ignored: dict[str, str] = {}
        allowed = {" ".join(t.lower().split()) for t in self.config.allow_terms}

        # normalised entries and each list's main script
        entries: list = []  # (term, own language, global, list name) -> (..., foreign script)
        for lang, terms in sorted(lists.items()):
            is_global = lang in global_langs
            lang = lang.rstrip("*") if is_global else lang
            own = _LIST_LANG_ALIASES.get(lang, lang)
            norm = []
            for t in terms:
                term = " ".join(t.lower().split())
                dense = _DENSE_RE.search(term) is not None
                if len(term) < (self.config.min_term_chars_dense if dense else self.config.min_term_chars):
                    continue
                if not _LETTER_RE.search(term):
                    continue
                norm.append(term)
            entries += [(term, own, is_global, lang) for term in norm]
        # a list's script is its language's (that of its most frequent words:
        # safetext's Arabic list holds more romanised than Arabic-script entries),
        # or without a frequency list the script of most of its entries
        langs = tuple(sorted(set(self.config.common_word_languages) | {e[1] for e in entries}))
        common, top, freq, scripts = _frequencies(tuple(sorted({e[0] for e in entries})), langs,
                                            self.config.common_words_top_n, self.config.own_language_top_n)
        main: dict[str, str | None] = {}
        for lang in {e[3] for e in entries}:
            own = _LIST_LANG_ALIASES.get(lang, lang)
            main[lang] = scripts.get(wordfreq_lang(own) or "")
            if main[lang] is None:
                fams: dict[str | None, int] = {}
                for e in entries:
                    if e[3] == lang:
                        f = script_family(e[0])
                        fams[f] = fams.get(f, 0) + 1
                main[lang] = max(fams, key=lambda k: (fams[k], k or "")) if fams else None
        entries = [(t, own, g, script_family(t) != main[lang]) for t, own, g, lang in entries]

        self._common = common
        switch_langs = {x for x in (wordfreq_lang(c) for c in self.config.code_switch_languages) if x}
        n = 0
        for term, own, is_global, foreign in entries:
            own_wf = wordfreq_lang(own)
            c_in = common.get(term, frozenset())
            why = None
            if term in allowed:
                why = "allowed"
            elif foreign:
                if c_in:
                    why = f"romanised entry that is a common word of {min(c_in)}"
            elif own_wf is not None and own_wf in top.get(term, ()):
                why = f"function word of {own}"
            elif own_wf not in c_in and c_in:
                why = f"common word of {min(c_in)}"
            if why:
                self.ignored[term] = why
                continue
            # edges need a word boundary: a non-word neighbour, or for the scripts
            # written without spaces a dictionary word boundary
            dense_l = _DENSE_RE.match(term[0]) is not None
            dense_r = _DENSE_RE.match(term[-1]) is not None and _HANGUL_RE.match(term[-1]) is None
            need_l = _is_word_char(term[0]) and not dense_l
            need_r = _is_word_char(term[-1]) and _DENSE_RE.match(term[-1]) is None
            tags = {own, "*"} if is_global else {own}
            tags_wf = {x for x in (wordfreq_lang(t) for t in tags) if x}
            # weak wherever it counts: a common word of its own, code-switching, language
            weak = self.config.weak_everywhere and own_wf is not None and own_wf in c_in and own_wf in switch_langs
            fr = freq.get(term, {})
            f_own = 0.0 if foreign or own_wf is None else fr.get(own_wf, 0.0)
            # skipped wherever it counts from another language's list: a word of a
            # code-switching language (English) that is not that list's language,
            # common there or used there at least as often as in its list's language
            switch = own_wf not in switch_langs and (bool(c_in & switch_langs) or (
                self.config.skip_if_more_common_here and any(x in fr and fr[x] >= f_own for x in switch_langs)))
            if term in self._auto:
                v = self._auto.get(term)
                self._auto.add_word(term, (term, v[1] | tags, v[2], v[3], v[4], v[5], v[6] | tags_wf, c_in,
                                           v[8] and weak, v[9] and switch, max(v[10], f_own), fr))
            else:
                self._auto.add_word(term, (term, frozenset(tags), need_l, need_r, dense_l, dense_r,
                                           frozenset(tags_wf), c_in, weak, switch, f_own, fr))
                n += 1
        self.n_terms = n
        if n:
            self._auto.make_automaton()

    def matches(self, text: str, lang: str | None = None) -> list[tuple[int, int, str, bool]]:
        """(start, end, term, weak) of every whole-word match in ``text`` (lower-cased);
        ``weak``: the term is also an ordinary word of the document's language."""
        from filters.wordfreqs import wordfreq_lang

        if not self.n_terms or not text:
            return []
        low = text.lower()
        if " " in low and ("\n" in low or "\t" in low):
            low = re.sub(r"\s", " ", low)  # terms with spaces match across line breaks too
        scope_lang = lang if self.config.term_scope == "document_language" else None
        doc_lang = "en" if (lang or "").startswith("code:") else (lang or "")
        doc_wf = wordfreq_lang(doc_lang)
        boundaries = self.config.dense_word_boundaries
        out = []
        n = len(low)
        relative = self.config.skip_if_more_common_here
        for end, value in self._auto.iter(low):
            term, langs, need_l, need_r, dense_l, dense_r, langs_wf, c_in, weak, switch, f_own, fr = value
            if scope_lang is not None and scope_lang not in langs and "*" not in langs:
                continue
            own_lang = doc_lang in langs or (doc_wf is not None and doc_wf in langs_wf)
            # a term from another language's list that is an ordinary word of the
            # document's language ("queue" from the French list in English text),
            # or of English, which every language quotes, or that the document's
            # language uses at least as often as the list's language
            common_here = doc_wf is not None and doc_wf in c_in
            if not own_lang and (common_here or switch or (
                    relative and doc_wf is not None and fr.get(doc_wf, 0.0) >= f_own and doc_wf in fr)):
                continue
            start = end - len(term) + 1
            # a neighbour continues the word only if it is a word character outside
            # the dense scripts: "パッkounoケージ" has boundaries around "kouno"
            if need_l and start > 0 and _continues(low[start - 1]):
                continue
            if need_r and end + 1 < n and _continues(low[end + 1]):
                continue
            if boundaries and (dense_l or dense_r) and not self._on_word_boundaries(low, start, end + 1, dense_l, dense_r):
                continue
            out.append((start, end + 1, term, common_here or weak))
        return out

    @staticmethod
    def _on_word_boundaries(low: str, start: int, end: int, left: bool, right: bool) -> bool:
        from filters import textseg

        a = max(0, start - 24)
        b = min(len(low), end + 24)
        bounds = textseg.word_boundaries(low[a:b])
        return (not left or start - a in bounds) and (not right or end - a in bounds)

    def score(self, doc: dict[str, Any]) -> dict[str, float]:
        if not in_scope(doc, ["*"], self.config.term_formats):
            return {}
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
        if doc is not None and not in_scope(doc, ["*"], self.config.term_formats):
            return {}
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
