import collections
import json
import pathlib

import pytest

from filters.base import run_filter, run_transform
from filters.language import LanguageConfig, LanguageFilter, LanguageID
from tests.filters_util import AR, EDGE_TEXTS, EN, ZH, big_text, doc

DATA = pathlib.Path(__file__).parent / "data" / "lid_labelled.jsonl"


@pytest.fixture(scope="module")
def lid():
    return LanguageID()


def test_labelled_set_agreement(lid):
    """Passages whose language is certain (see tests/data/build_lid_set.py)."""
    items = [json.loads(x) for x in DATA.read_text(encoding="utf-8").splitlines()]
    langs = {i["lang"] for i in items}
    assert len(langs) >= 10 and {"zh", "ja", "ru", "ar", "hi", "ko"} <= langs
    assert all(i["source"] and i["licence"] for i in items)
    ok = collections.Counter()
    for it in items:
        ok[it["lang"]] += lid.predict(it["text"])[0] == it["lang"]
    total = sum(ok.values()) / len(items)
    assert total >= 0.95, f"agreement {total:.3f}"
    per_lang = {k: ok[k] / sum(1 for i in items if i["lang"] == k) for k in langs}
    assert min(per_lang.values()) >= 0.8, per_lang


def test_labels_doc_and_stores_scores(lid):
    out = run_transform(lid, doc(EN * 2)).doc
    assert out["lang"] == "en" and out["lang_score"] > 0.9 and out["script"] == "Latin"
    assert out["scores"]["lid.score"] == out["lang_score"]
    out = run_transform(lid, doc(ZH)).doc
    assert out["lang"] == "zh" and out["script"] == "Han"


def test_vocalised_arabic_is_arabic(lid):
    quranic = "وَٱلْكِتَـٰبِ ٱلْمُبِينِ إِنَّا جَعَلْنَـٰهُ قُرْءَٰنًا عَرَبِيًّا لَّعَلَّكُمْ تَعْقِلُونَ وَإِنَّهُۥ فِىٓ أُمِّ ٱلْكِتَـٰبِ لَدَيْنَا لَعَلِىٌّ حَكِيمٌ"
    lang, score = lid.predict(quranic)
    assert lang == "ar" and score > 0.65


def test_code_keeps_its_language(lid):
    d = doc("def f(x):\n    return x + 1\n", lang="code:python")
    out = run_transform(lid, d).doc
    assert out["lang"] == "code:python" and "lid.score" not in out["scores"]
    assert run_filter(LanguageFilter(), out).reason is None


def test_thresholds_per_language_and_keep_list(lid):
    d = run_transform(lid, doc(AR)).doc
    assert run_filter(LanguageFilter(LanguageConfig()), d).reason is None
    strict = LanguageConfig(min_score_by_lang={"ar": 0.9999})
    out = run_filter(LanguageFilter(strict), d)
    assert out.reason == "lid:score" and out.score == pytest.approx(d["lang_score"])
    assert run_filter(LanguageFilter(LanguageConfig(keep=["en", "zh"])), d).reason == "lid:not_kept"
    # re-thresholding reads the stored score only
    flt = LanguageFilter(LanguageConfig(min_score=0.5))
    assert flt.decide({"score": 0.4}, {"lang": "de"}) == "lid:score"
    assert flt.decide({"score": 0.6}, {"lang": "de"}) is None


@pytest.mark.parametrize("name", sorted(EDGE_TEXTS))
def test_edge_cases(lid, name):
    d = run_transform(lid, doc(EDGE_TEXTS[name])).doc
    if name in ("empty", "whitespace", "emoji_only"):
        assert d["lang"] == "und" and d["lang_score"] == 0.0
        assert run_filter(LanguageFilter(), d).reason == "lid:score"
    if name == "rtl":
        assert d["lang"] == "ar" and d["script"] == "Arabic"
    if name == "mixed_scripts":
        assert d["lang"] and 0 < d["scores"]["lid.script_share"] < 1


def test_ten_megabyte_document(lid):
    text = big_text(10)
    d = run_transform(lid, doc(text)).doc  # the model reads the first max_chars only
    assert d["lang"] in ("en", "zh", "ru", "uk", "ar") and d["lang_score"] > 0
    assert d["script"] in ("Latin", "Han", "Cyrillic", "Arabic")
