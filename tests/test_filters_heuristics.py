import random

import numpy as np
import pytest
from pydantic import ValidationError

from filters.base import run_filter
from filters.heuristics import (
    C4Config,
    C4Rules,
    CodeQuality,
    FineWebRules,
    GopherQuality,
    GopherQualityConfig,
    GopherRepetition,
    _ngram_hashes,
    dup_ngram_chars,
)
from tests.filters_util import AR, EDGE_TEXTS, EN, HI, JA, RU, ZH, big_text, doc

PROSE_RULES = [GopherQuality, GopherRepetition, C4Rules, FineWebRules]


def prose(text, lang="en", script="Latin"):
    return doc(text, lang=lang, script=script)


SENTENCES = [
    "The committee met on Tuesday to discuss the budget for the coming year.",
    "Several members argued that the library needed more funding than the park.",
    "After a long debate, they agreed to postpone the decision until spring.",
    "Meanwhile, the town continued to grow as new families moved into the valley.",
    "Local farmers reported an unusually good harvest of apples and pears.",
    "Children at the school have started a project to measure rainfall every day.",
    "Their teacher hopes that the data will be useful for the regional weather office.",
    "A small bakery opened near the station and quickly became popular with commuters.",
    "The owner says that she learned to bake bread from her grandmother.",
    "On weekends, musicians play in the square while people sit with coffee.",
    "The river that runs through the centre was cleaned by volunteers last month.",
    "Fish have returned to its waters for the first time in many years.",
]


def paragraphs(base: str = "", n: int = 2) -> str:
    """Natural, non-repetitive English paragraphs."""
    return "\n\n".join(" ".join(SENTENCES[(i * 6 + j) % len(SENTENCES)] for j in range(6)) for i in range(n))


def test_clean_english_passes_every_prose_rule():
    d = prose(paragraphs(EN))
    for cls in PROSE_RULES:
        out = run_filter(cls(), d)
        assert out.reason is None, (cls.name, out.reason, out.doc["scores"])


@pytest.mark.parametrize("text,lang,script", [
    (ZH * 6, "zh", "Han"), (JA * 6, "ja", "Han"), (RU * 6, "ru", "Cyrillic"), (AR * 6, "ar", "Arabic"),
    (HI * 6, "hi", "Devanagari"),
])
def test_gopher_quality_is_not_english_only(text, lang, script):
    text = "\n".join(text[i:i + 80] for i in range(0, len(text), 80))
    out = run_filter(GopherQuality(), prose(text, lang, script))
    assert out.reason is None, (lang, out.doc["scores"])
    s = out.doc["scores"]
    assert s["gopher_quality.n_words"] >= 50          # whitespace splitting would give a handful
    assert s["gopher_quality.stop_words"] >= 2       # the language's own list, not English


def test_stop_word_rule_off_without_a_list():
    out = run_filter(GopherQuality(), prose(EN * 3, lang="xx"))
    assert "gopher_quality.stop_words" not in out.doc["scores"] and out.reason is None
    # an English stop-word list is never applied to other languages
    s = run_filter(GopherQuality(), prose(RU * 6, "ru", "Cyrillic")).doc["scores"]
    assert s["gopher_quality.stop_words"] > 2


def test_gopher_quality_rules_fire():
    g = GopherQuality()
    assert run_filter(g, prose("Too short a document.")).reason == "gopher_quality:n_words"
    hashes = " ".join(f"#tag{i} word{i}" for i in range(80))
    assert run_filter(g, prose(hashes)).reason == "gopher_quality:hash_ratio"
    bullets = "\n".join(f"- item {i} of the list and the rest" for i in range(60))
    assert run_filter(g, prose(bullets)).reason == "gopher_quality:bullet_lines_ratio"
    numbers = " ".join(str(i) for i in range(200)) + " the and of"
    assert run_filter(g, prose(numbers)).reason in ("gopher_quality:alpha_words_ratio", "gopher_quality:mean_word_length")
    longw = " ".join("incomprehensibilities" for _ in range(60)) + " the of"
    assert run_filter(g, prose(longw)).reason == "gopher_quality:mean_word_length"


def test_rethreshold_without_rescoring():
    d = run_filter(GopherQuality(), prose(paragraphs(EN))).doc
    scores = {k.split(".", 1)[1]: v for k, v in d["scores"].items() if k.startswith("gopher_quality.")}
    strict = GopherQuality(GopherQualityConfig(min_words=10_000))
    assert strict.decide(scores, d) == "gopher_quality:n_words"
    assert GopherQuality().decide(scores, d) is None


def test_overrides_validated_and_applied():
    with pytest.raises(ValidationError, match="unknown field"):
        GopherQualityConfig(overrides={"Han": {"min_wrods": 1}})
    g = GopherQuality(GopherQualityConfig(overrides={"de": {"min_words": 5}}))
    d = prose("Das ist ein kurzer Satz und der Text.", lang="de")
    assert run_filter(g, d).reason is None
    assert run_filter(GopherQuality(), d).reason == "gopher_quality:n_words"


def _dup_ref(words, n):
    """datatrove's find_all_duplicate (the Gopher definition), for reference."""
    unique, rep, idx = set(), 0, 0
    while idx < len(words) - n + 1:
        g = tuple(words[idx:idx + n])
        if g in unique:
            rep += sum(len(w) for w in g)
            idx += n
        else:
            unique.add(g)
            idx += 1
    return rep


@pytest.mark.parametrize("seed", range(6))
def test_dup_ngram_chars_matches_reference(seed):
    rnd = random.Random(seed)
    vocab = [f"w{i}" * rnd.randint(1, 3) for i in range(rnd.choice([3, 8, 40]))]
    words = [rnd.choice(vocab) for _ in range(rnd.randint(0, 400))]
    ids = {}
    arr = np.array([ids.setdefault(w, len(ids)) for w in words], dtype=np.int64)
    lens = np.array([len(w) for w in words], dtype=np.int64)
    cs = np.concatenate(([0], np.cumsum(lens)))
    h = None
    for n in range(1, 11):
        if len(words) < n:
            break
        h = _ngram_hashes(arr, n, h)
        if n >= 5:
            assert dup_ngram_chars(h, cs[n:] - cs[:-n], n) == _dup_ref(words, n), (seed, n)


def test_repetition_rules_fire():
    r = GopherRepetition()
    lines = "\n".join(["This same line is repeated again and again."] * 30 + [EN])
    assert run_filter(r, prose(lines)).reason.startswith("gopher_repetition:dup_")
    ngram = ("buy cheap pills now " * 200) + EN
    assert run_filter(r, prose(ngram)).reason is not None


def test_c4_rules():
    c4 = C4Rules()
    text = "\n".join(f"This is sentence number {i} of a good document." for i in range(6))
    assert run_filter(c4, prose(text)).reason is None
    assert run_filter(c4, prose(text + "\nLorem ipsum dolor sit amet, consectetur.")).reason == "c4:lorem_ipsum"
    # a curly bracket in more than a tenth of the lines (code), or in any line as C4 did
    assert run_filter(c4, prose(text + "\nThe code is { return x; } here.")).reason == "c4:curly_bracket_line_frac"
    c4_any = C4Rules(C4Config(max_curly_bracket_line_frac=None))
    long_text = "\n".join([text] * 3)
    assert run_filter(c4, prose(long_text + "\nThe code is { return x; } here.")).reason is None
    assert run_filter(c4_any, prose(long_text + "\nThe code is { return x; } here.")).reason == "c4:curly_bracket"
    # punctuation inside the lines but at no line end: judged (broken or shuffled text)
    assert run_filter(c4, prose("no punctuation. at the end\nanother line")).reason == "c4:sentences"
    # Chinese sentences end with 。 and are found without spaces
    zh = "\n".join([ZH] * 3)
    assert run_filter(c4, prose(zh, "zh", "Han")).doc["scores"]["c4.sentences"] >= 5
    # the English-only end-punctuation of the original C4 would drop it
    assert run_filter(C4Rules(C4Config(terminal_punctuation="c4")), prose(zh, "zh", "Han")).reason == "c4:sentences"


def test_fineweb_rules():
    fw = FineWebRules()
    assert run_filter(fw, prose(paragraphs(EN))).reason is None
    short = "\n".join(f"item {i}" for i in range(50))
    assert run_filter(fw, prose(short)).reason in ("fineweb:line_punct_ratio", "fineweb:short_line_ratio")


def test_code_rules_and_prose_rules_split_by_kind():
    code = "".join(f"def f{i}(x, y={i}):\n    return x * {i} + y - {i * 7}\n\n" for i in range(20))
    c = doc(code, lang="code:python")
    assert run_filter(CodeQuality(), c).reason is None
    for cls in PROSE_RULES:  # prose rules do not judge code
        assert run_filter(cls(), c).doc["scores"] == {}
    assert run_filter(CodeQuality(), prose(EN)).doc["scores"] == {}
    gen = "# Code generated by protoc. DO NOT EDIT.\n" + code
    assert run_filter(CodeQuality(), doc(gen, lang="code:go")).reason == "code_quality:autogenerated"
    long_line = "x = [" + ", ".join(str(i) for i in range(600)) + "]\n"
    assert run_filter(CodeQuality(), doc(long_line, lang="code:python")).reason in (
        "code_quality:max_line_length", "code_quality:mean_line_length")
    data = "static const int table[] = {\n" + "".join(f"  0x{i:04x}, {i}, {i * 3}, {i * 7},\n" for i in range(200)) + "};\n"
    assert run_filter(CodeQuality(), doc(data, lang="code:c")).reason == "code_quality:data_line_frac"
    blob = 'KEY = "' + "QUJDRA" * 400 + '"\n'
    assert run_filter(CodeQuality(), doc(blob, lang="code:python")).reason in (
        "code_quality:encoded_frac", "code_quality:max_line_length")


ALL_RULES = [GopherQuality, GopherRepetition, C4Rules, FineWebRules, CodeQuality]


@pytest.mark.parametrize("name", sorted(EDGE_TEXTS))
@pytest.mark.parametrize("cls", ALL_RULES)
def test_edge_cases(cls, name):
    lang = "code:python" if cls is CodeQuality else "en"
    out = run_filter(cls(), doc(EDGE_TEXTS[name], lang=lang, script="Latin"))
    assert all(np.isfinite(v) for v in out.doc["scores"].values())
    if name in ("empty", "whitespace", "emoji_only") and cls in (GopherQuality, C4Rules):
        assert out.reason is not None  # nothing to keep


@pytest.fixture(scope="module")
def ten_mb():
    return big_text(10)


@pytest.mark.parametrize("cls", [GopherQuality, GopherRepetition, C4Rules, FineWebRules])
def test_ten_megabyte_document(cls, ten_mb):
    out = run_filter(cls(), prose(ten_mb))
    assert out.doc["scores"] and all(np.isfinite(v) for v in out.doc["scores"].values())
