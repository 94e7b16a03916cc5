"""Precision of the default filters: genre (input-format) scopes, hard-wrapped and
unpunctuated text, curly brackets, language-ID macrolanguages and mixed documents,
and the safety term lists' hygiene (word boundaries in scripts without spaces,
romanised entries, Traditional Chinese, code-switching, weak evidence)."""
import gzip
import json
import os
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.base import run_filter
from filters.heuristics import (C4Config, C4Rules, FineWebConfig, FineWebRules, GopherQuality, GopherQualityConfig,
                                GopherRepetition, unwrap_lines)
from filters.language import LanguageConfig, LanguageID
from filters.safety import SafetyConfig, TermFilter
from filters.schema import new_text_record
from filters.scope import record_format
from pipelines.config import ReadConfig, SourceConfig
from pipelines.readers import read_file
from tests.filters_util import EN, TH, doc
from tests.test_readers import HTML, _warc

NO_HYGIENE = dict(common_words_top_n=0, own_language_top_n=0)
#: a few languages keep the wordfreq lists loaded by these tests small
FEW = ["en", "fr", "de", "zh", "ja"]


def with_format(d: dict, fmt: str | None) -> dict:
    d = dict(d)
    d["metadata"] = json.dumps({"format": fmt} if fmt else {})
    return d


# ------------------------------------------------------------------ readers record the format
def _read(path, reader):
    src = SourceConfig(name="s", input=[str(path)])
    return [d for k, d in read_file(str(path), reader, "s", src, ReadConfig(), os.path.basename(str(path)))
            if k == "doc"]


def test_readers_record_the_input_format(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "hello", "format": "mine"}) + "\n")
    pq.write_table(pa.table({"text": ["hello"]}), tmp_path / "a.parquet")
    (tmp_path / "book.txt").write_text("Chapter 1\n\nIt was a dark night.")
    (tmp_path / "m.py").write_text("def f():\n    return 1\n")
    wet_body = b"Plain text of a page. It has two sentences."
    wet = (b"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Record-ID: <urn:uuid:1>\r\n"
           b"WARC-Target-URI: http://b/\r\nContent-Type: text/plain\r\n"
           b"Content-Length: " + str(len(wet_body)).encode() + b"\r\n\r\n" + wet_body + b"\r\n\r\n")
    (tmp_path / "x.warc.gz").write_bytes(gzip.compress(_warc("http://a/", HTML) + wet))
    [j] = _read(tmp_path / "a.jsonl", "jsonl")
    md = json.loads(j["metadata"])
    assert md["format"] == "jsonl" and md["record_format"] == "mine"  # a record's own field is kept aside
    assert record_format(j) == "jsonl"
    assert record_format(_read(tmp_path / "a.parquet", "parquet")[0]) == "parquet"
    assert record_format(_read(tmp_path / "book.txt", "text")[0]) == "text"
    assert record_format(_read(tmp_path / "m.py", "code")[0]) == "code"
    assert sorted(record_format(d) for d in _read(tmp_path / "x.warc.gz", "warc")) == ["warc", "wet"]
    assert record_format(new_text_record("x", "s", id="1")) is None


# ------------------------------------------------------------------ format scopes
def test_web_rules_do_not_judge_text_trees():
    # a book longer than Gopher's 100,000 words with a code example: a web page
    # that size would go, a book read from a text tree is not judged by web rules
    book = "\n\n".join([EN] * 2000) + "\n\nfor (i = 0; i < n; i++) { x += i; }\n"
    for rules in (GopherQuality(), C4Rules(), FineWebRules()):
        assert run_filter(rules, with_format(doc(book, lang="en"), "text")).doc["scores"] == {}
        assert rules.thresholds(with_format(doc(book, lang="en"), "text")) == {}
    assert run_filter(GopherQuality(), with_format(doc(book, lang="en"), "jsonl")).reason == "gopher_quality:n_words"
    # no recorded format (a record built outside the readers): every rule applies
    assert run_filter(GopherQuality(), doc(book, lang="en")).reason == "gopher_quality:n_words"
    # Gopher repetition judges every format
    assert run_filter(GopherRepetition(), with_format(doc(book, lang="en"), "text")).reason is not None
    # the scope is configuration
    everywhere = GopherQuality(GopherQualityConfig(formats=["*"]))
    assert run_filter(everywhere, with_format(doc(book, lang="en"), "text")).reason == "gopher_quality:n_words"
    only_wet = GopherQuality(GopherQualityConfig(formats=["we?"]))
    assert run_filter(only_wet, with_format(doc(book, lang="en"), "warc")).doc["scores"] == {}


def test_scope_globs_are_validated():
    with pytest.raises(ValueError, match="at least one glob"):
        C4Config(formats=[])
    with pytest.raises(ValueError, match="non-empty"):
        SafetyConfig(term_formats=[""])


# ------------------------------------------------------------------ line rules
#: varied prose (no repeated lines), wrapped at 60 columns as plain-text files are
PROSE = " ".join(f"On day {i} the {w} walked to the {p} and wrote down what {n} neighbours had seen there."
                 for i, (w, p, n) in enumerate(zip(["farmer", "teacher", "baker", "sailor", "doctor", "painter"] * 3,
                                                   ["river", "market", "station", "harbour", "hill", "bridge"] * 3,
                                                   range(3, 21))))
WRAPPED = textwrap.fill(PROSE[: len(PROSE) // 2], 60) + "\n\n" + textwrap.fill(PROSE[len(PROSE) // 2:], 60)


def test_unwrap_lines_joins_only_open_sentences():
    lines = ["Options", "This sentence goes on", "on the next line, and", "ends here.", "Next Heading",
             "Note:", "lower-case line after a colon", "中文没有大小写", "所以不合并"]
    assert unwrap_lines(lines) == ["Options", "This sentence goes on on the next line, and ends here.",
                                   "Next Heading", "Note:", "lower-case line after a colon", "中文没有大小写", "所以不合并"]
    assert unwrap_lines(["a.", "b."]) == ["a.", "b."]


def test_hard_wrapped_prose_is_judged_by_its_sentences():
    d = doc(WRAPPED, lang="en")
    assert max(len(x) for x in WRAPPED.splitlines()) <= 60
    assert run_filter(FineWebRules(), d).reason is None
    assert run_filter(C4Rules(), d).reason is None
    # as published (a line is a line): most lines end mid-sentence
    raw = FineWebRules(FineWebConfig(unwrap_lines=False))
    assert run_filter(raw, d).doc["scores"]["fineweb.line_punct_ratio"] < \
        run_filter(FineWebRules(), d).doc["scores"]["fineweb.line_punct_ratio"]


VERSE = "\n".join(f"{a} the {b} of {c} is {d} in the morning light" for a, b, c, d in zip(
    ["And", "So", "Now", "Then", "Yet", "For"] * 3, ["song", "voice", "word", "name", "way", "gift"] * 3,
    ["heaven", "earth", "the sea", "the hills", "the night", "the day"] * 3, [f"number {i}" for i in range(18)]))
THAI = "\n".join(f"{TH} {i}" for i in range(8))


def test_text_without_sentence_punctuation_is_not_judged_by_it():
    for text, lang in ((VERSE, "en"), (THAI, "th")):
        d = doc(text, lang=lang)
        c4, fw = run_filter(C4Rules(), d), run_filter(FineWebRules(), d)
        assert c4.reason is None and fw.reason is None, lang
        # the thresholds in force (calibration, report) say the same
        assert "sentences" not in C4Rules().thresholds(c4.doc) and "sentences" in C4Rules().thresholds(doc(EN, lang="en"))
        assert "line_punct_ratio" not in FineWebRules().thresholds(fw.doc)
        assert "line_punct_ratio" in FineWebRules().thresholds(doc(EN, lang="en"))
        assert run_filter(C4Rules(C4Config(skip_unpunctuated=False)), d).reason == "c4:sentences"
        assert run_filter(FineWebRules(FineWebConfig(skip_unpunctuated=False)), d).reason == \
            "fineweb:line_punct_ratio"
    # shuffled words that carry their punctuation into the middle of lines are judged
    shuffled = " ".join(sorted(EN.split(), key=lambda w: w[::-1]))
    assert run_filter(C4Rules(), doc(shuffled + "\n" + shuffled, lang="en")).reason == "c4:sentences"
    # one long line without any punctuation is no verse either
    blob = " ".join(w.strip(".,") for w in EN.split()) * 3
    assert run_filter(C4Rules(), doc(blob, lang="en")).reason == "c4:sentences"


def test_curly_brackets_count_as_code_only_when_used_as_code():
    c4 = C4Rules()
    base = [f"Line {i} of a page that has sentences ending in full stops." for i in range(12)]
    xref = "\n".join(base + ["See {hacker}, {wizard} and {Real Programmer} for more.",
                              "The {line eater} bug was {nailed", "} down later, see {bogus}."] * 2)
    code = "\n".join(base + ["function f() {", "  return {a: 1};", "}"] * 2)
    assert run_filter(c4, doc(xref, lang="en")).doc["scores"]["c4.curly_bracket_line_frac"] < 0.1
    assert run_filter(c4, doc(code, lang="en")).reason == "c4:curly_bracket_line_frac"
    # C4 as published: any bracket
    assert run_filter(C4Rules(C4Config(max_curly_bracket_line_frac=None)), doc(xref, lang="en")).reason == \
        "c4:curly_bracket"


# ------------------------------------------------------------------ language ID
class FakeModel:
    def __init__(self, pairs):
        self.pairs = pairs

    def predict(self, text, k=1):
        pairs = self.pairs[:k]
        return [f"__label__{a}" for a, _ in pairs], [p for _, p in pairs]


def test_lid_adds_up_a_macrolanguage_and_keeps_bilingual_documents():
    bokmal = FakeModel([("no", 0.55), ("nn", 0.20), ("da", 0.15), ("sv", 0.05)])
    assert LanguageID(LanguageConfig(mixed_languages=1, macrolanguages={}), model=bokmal).predict("x") == ("no", 0.55)
    lang, p = LanguageID(LanguageConfig(mixed_languages=1), model=bokmal).predict("x")
    assert lang == "no" and p == pytest.approx(0.75)
    lang, p = LanguageID(LanguageConfig(), model=bokmal).predict("x")  # + Danish, the second language
    assert lang == "no" and p == pytest.approx(0.90)
    # the label is the likeliest label of the likeliest language
    split = FakeModel([("sv", 0.40), ("no", 0.30), ("nn", 0.20), ("da", 0.05)])
    assert LanguageID(LanguageConfig(mixed_languages=1), model=split).predict("x")[0] == "no"
    # a translated page with untranslated English passages
    mixed = FakeModel([("en", 0.55), ("ro", 0.15), ("pt", 0.02)])
    assert LanguageID(model=mixed).predict("x") == ("en", pytest.approx(0.70))
    assert LanguageID(LanguageConfig(mixed_languages=1), model=mixed).predict("x")[1] == pytest.approx(0.55)
    with pytest.raises(ValueError, match="two groups"):
        LanguageConfig(macrolanguages={"a": ["x", "y"], "b": ["y"]})


def test_lid_real_model_still_sure_of_monolingual_text():
    lang, p = LanguageID().predict(EN)
    assert lang == "en" and p > 0.9


# ------------------------------------------------------------------ safety terms
@pytest.fixture(scope="module")
def hygiene():
    lists = {"ja": ["グロ"], "zh": ["http", "傻逼", "管理員", "提示"],
             "fr": ["pipe", "zorglub", "envoyer", "mettre", "sieve"], "en": ["dirty"], "de": ["nackt"],
             "az": ["mongol"]}
    return TermFilter(SafetyConfig(common_word_languages=FEW), lists=lists)


def test_terms_in_scripts_without_spaces_need_dictionary_word_boundaries():
    t = TermFilter(SafetyConfig(**NO_HYGIENE), lists={"ja": ["グロ"], "ko": ["호로"]})
    assert t.matches("グローバル変数を設定する", "ja") == []          # "global"
    assert [m[2] for m in t.matches("これはグロ画像です", "ja")] == ["グロ"]
    assert t.matches("가호로 소리", "ko") == []                      # not the start of a word
    assert [m[2] for m in t.matches("저 호로가 왔다", "ko")] == ["호로"]  # particles attach after a Korean word
    old = TermFilter(SafetyConfig(dense_word_boundaries=False, **NO_HYGIENE), lists={"ja": ["グロ"]})
    assert old.matches("グローバル変数を設定する", "ja")


def test_list_hygiene_romanised_entries_and_traditional_chinese(hygiene):
    # "http" in the Chinese list is a common word of every language: ignored;
    # the native-script entries are judged by Chinese frequencies
    assert hygiene.ignored["http"].startswith("romanised entry")
    assert "傻逼" not in hygiene.ignored
    # Traditional 管理員 ("administrator") is looked up as Simplified 管理员, a common word
    assert "zh" in hygiene._common["管理員"]
    assert "jieba" not in sys.modules  # wordfreq's Chinese tokenizer is not needed
    [(_, _, term, weak)] = hygiene.matches("请联系系统管理員。", "zh")
    assert term == "管理員" and weak


def test_ordinary_words_are_weak_everywhere_and_english_is_quoted_everywhere(hygiene):
    de = run_filter(hygiene, doc("Die pipe ist voll, sagt der zorglub.", lang="de"))
    assert de.doc["scores"]["safety_terms.distinct"] == 1                # "pipe": an English word in German text
    fr = hygiene.matches("Il faut envoyer le fichier dans le pipe.", "fr")
    assert {(m[2], m[3]) for m in fr} == {("envoyer", True), ("pipe", True)}
    # an ordinary English word weighs weak_term_weight in every document: English
    # "dirty" quoted in a French text is no stronger evidence than in an English one;
    # an ordinary French word in a German text is no quotation: full weight
    assert run_filter(hygiene, doc("un travail dirty", lang="fr")).doc["scores"]["safety_terms.weight"] == 0.25
    assert run_filter(hygiene, doc("Er will envoyer sagen.", lang="de")).doc["scores"]["safety_terms.weight"] == 1.0
    strict = TermFilter(SafetyConfig(common_word_languages=FEW, weak_everywhere=False), lists={"en": ["dirty"]})
    assert run_filter(strict, doc("un travail dirty", lang="fr")).reason == "safety_terms:weight"
    # four distinct ordinary words make one term
    four = run_filter(hygiene, doc("envoyer mettre pipe dirty", lang="fr"))
    assert four.doc["scores"]["safety_terms.weight"] == 1.0 and four.reason == "safety_terms:weight"


def test_a_word_the_document_language_uses_more_is_that_languages_word(hygiene):
    # "mongol" (Azerbaijani list, no frequency list of its own) is a French word in French text
    assert hygiene.matches("le peuple mongol", "fr") == []
    # "sieve" (French list) is an English word, and English is quoted everywhere
    assert hygiene.matches("the sieve algorithm", "en") == [] and hygiene.matches("der sieve Filter", "de") == []
    # a German word inserted into French text is still German
    assert [m[2] for m in hygiene.matches("une photo nackt ici", "fr")] == ["nackt"]
    off = TermFilter(SafetyConfig(common_word_languages=FEW, skip_if_more_common_here=False), lists={"az": ["mongol"]})
    assert [m[2] for m in off.matches("le peuple mongol", "fr")] == ["mongol"]


def test_term_lists_judge_web_formats_only_by_default():
    t = TermFilter(SafetyConfig(**NO_HYGIENE), lists={"en": ["zorglub"]})
    text = "a novel that mentions zorglub once"
    assert run_filter(t, with_format(doc(text, lang="en"), "jsonl")).reason == "safety_terms:weight"
    out = run_filter(t, with_format(doc(text, lang="en"), "text"))
    assert out.reason is None and out.doc["scores"] == {} and t.thresholds(with_format(doc(text), "text")) == {}
    everywhere = TermFilter(SafetyConfig(term_formats=["*"], **NO_HYGIENE), lists={"en": ["zorglub"]})
    assert run_filter(everywhere, with_format(doc(text, lang="en"), "text")).reason == "safety_terms:weight"


def test_wordfreq_segmentation_without_cjk_tokenizers():
    from filters.wordfreqs import common_languages, wordfreq_lang

    st = common_languages(["管理者", "グローバル", "se faire", "gang bang", "ggxqzv"], ["ja", "fr", "en", "no"],
                          10000, 150)
    assert "ja" in st.common["管理者"]          # 管理 + 者, one inferred word break
    assert "fr" in st.common["se faire"] and "en" not in st.common.get("gang bang", ())  # phrases pay per break
    assert "ggxqzv" not in st.common and "ggxqzv" not in st.freq
    assert st.freq["se faire"]["fr"] > st.freq["se faire"].get("en", 0.0)
    assert st.scripts["ja"] == "CJK" and st.scripts["en"] == "LATIN" and st.scripts["nb"] == "LATIN"
    assert wordfreq_lang("no") == "nb" and wordfreq_lang("hr") == "sh" and wordfreq_lang("xx") is None


# ------------------------------------------------------------------ the bundled books
def test_bundled_books_survive_the_default_filters(repo_root):
    from filters.base import DocFilter, DocTransform, run_transform
    from pipelines.config import load_config
    from pipelines.operators import build_operators

    ops = build_operators(load_config())
    books = sorted((repo_root / "data" / "sample" / "books").iterdir())
    assert len(books) == 2
    for path in books:
        [rec] = _read(path, "text")
        for op in ops:
            if isinstance(op, DocTransform) and not isinstance(op, DocFilter):
                res = run_transform(op, rec)
                assert res.doc is not None, (path.name, res.reason)
                rec = res.doc
            else:
                out = run_filter(op, rec)
                assert out.reason is None, (path.name, out.reason)
                rec = out.doc
