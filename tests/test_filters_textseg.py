import pytest

from filters import textseg
from tests.filters_util import AR, EDGE_TEXTS, EMOJI, HI, JA, RU, TH, ZH


def test_space_delimited_tokens_keep_words_whole():
    toks = textseg.tokens("Hello, world! Don't split x86-64 or 3.14 (really).")
    assert toks == ["Hello", ",", "world", "!", "Don't", "split", "x86-64", "or", "3.14", "(", "really", ")", "."]


def test_combining_marks_stay_inside_words():
    # re's \w would split Devanagari vowel signs and Arabic harakat off their letters
    assert textseg.tokens("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert textseg.tokens("وَٱلْكِتَـٰبِ ٱلْمُبِينِ") == ["وَٱلْكِتَـٰبِ", "ٱلْمُبِينِ"]


@pytest.mark.parametrize("text,min_words", [(ZH, 15), (JA, 12), (TH, 8)])
def test_no_space_scripts_are_segmented_into_words(text, min_words):
    words = textseg.words(text)
    assert len(words) >= min_words            # whitespace splitting gives 1-3 "words"
    assert len(text.split()) <= 3
    mean = sum(map(len, words)) / len(words)
    assert 1.0 <= mean <= 5.0


def test_icu_offsets_survive_astral_characters():
    text = "漢字😀テスト𠀀文字です"
    toks = textseg.tokens(text)
    assert "".join(toks) == text.replace(" ", "")
    assert "😀" in toks


def test_spacy_like_tokens_split_like_spacy_english():
    toks = textseg.tokens_spacy_like("(Don't) stop e.g. well-known /usr/bin __init__ cannot.")
    assert toks == ["(", "Do", "n't", ")", "stop", "e.g.", "well", "-", "known", "/usr", "/", "bin",
                    "_", "_", "init", "_", "_", "can", "not", "."]


def test_sentences_and_terminal_punctuation_in_many_scripts():
    assert textseg.sentence_count("One. Two! Three? 四。五。") == 5
    assert textseg.sentence_count(HI) == 2
    assert textseg.sentence_count("no end mark here") == 1
    assert textseg.ends_with_terminal('He said "hi."')
    assert textseg.ends_with_terminal("هل أنت بخير؟")
    assert not textseg.ends_with_terminal("a line without")


def test_script_profile():
    p = textseg.script_profile(RU + "abc")
    assert p.dominant == "Cyrillic" and 0.9 < p.dominant_frac < 1
    p = textseg.script_profile(AR)
    assert p.dominant == "Arabic"
    p = textseg.script_profile(ZH + JA)
    assert p.dominant == "Han" and p.counts.get("Hiragana", 0) > 0
    assert textseg.script_profile(EMOJI).dominant is None


@pytest.mark.parametrize("name", sorted(EDGE_TEXTS))
def test_edge_texts(name):
    text = EDGE_TEXTS[name]
    toks = textseg.tokens(text)
    assert all(t.strip() for t in toks)
    textseg.script_profile(text)
    textseg.sentence_count(text)
    if name in ("empty", "whitespace"):
        assert toks == []
