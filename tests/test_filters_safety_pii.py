import pytest

from filters.base import run_filter, run_transform
from filters.pii import PIIConfig, PIIRedactor, luhn_ok
from filters.safety import SafetyConfig, TermFilter, UrlBlocklist
from tests.filters_util import EDGE_TEXTS, big_text, doc

NO_HYGIENE = dict(common_words_top_n=0, own_language_top_n=0)


@pytest.fixture(scope="module")
def terms():
    lists = {"en": ["badword", "two words", "ab"], "zh": ["坏蛋"], "de": ["schimpf"]}
    return TermFilter(SafetyConfig(**NO_HYGIENE), lists=lists)


def test_terms_whole_words_only(terms):
    assert [m[2] for m in terms.matches("a BadWord here")] == ["badword"]
    assert terms.matches("badwords and notbadword") == []
    assert [m[2] for m in terms.matches("these two\nwords")] == ["two words"]
    assert terms.matches("ab is too short to be listed") == []  # min_term_chars


def test_terms_in_scripts_without_spaces(terms):
    assert [m[2] for m in terms.matches("他是一个坏蛋。")] == ["坏蛋"]
    # a Latin term inserted between Kana has word boundaries
    t2 = TermFilter(SafetyConfig(**NO_HYGIENE), lists={"ja": ["kouno"]})
    assert t2.matches("パッkounoケージ")


def test_term_filter_scores_and_decides(terms):
    out = run_filter(terms, doc("badword and schimpf and badword", lang="en"))
    assert out.doc["scores"]["safety_terms.matches"] == 3 and out.doc["scores"]["safety_terms.distinct"] == 2
    assert out.doc["scores"]["safety_terms.weight"] == 2
    assert out.reason == "safety_terms:weight"
    assert run_filter(terms, doc("clean text", lang="en")).reason is None


def test_term_scope_document_language():
    cfg = SafetyConfig(term_scope="document_language", **NO_HYGIENE)
    t = TermFilter(cfg, lists={"de": ["schimpf"]})
    assert run_filter(t, doc("ein schimpf", lang="de")).reason is not None
    assert run_filter(t, doc("a schimpf", lang="en")).reason is None


def test_list_hygiene_uses_word_frequencies():
    # "does" in a French list is an English function word; "merde" stays a French term
    t = TermFilter(SafetyConfig(), lists={"fr": ["does", "merde", "faire"], "en": ["fuck"]})
    assert t.ignored["does"].startswith("common word of") and "faire" in t.ignored and "merde" not in t.ignored
    assert [m[2] for m in t.matches("what does merde mean? fuck.")] == ["merde", "fuck"]


def test_ordinary_words_of_the_document_language_are_weak_evidence():
    t = TermFilter(SafetyConfig(), lists={"fr": ["envoyer", "zorglub"]})
    one = run_filter(t, doc("Il faut envoyer le fichier.", lang="fr"))
    assert one.doc["scores"]["safety_terms.weight"] == 0.25 and one.reason is None
    two = run_filter(t, doc("Il faut envoyer le zorglub.", lang="fr"))
    assert two.reason == "safety_terms:weight"


def test_default_lists_come_from_the_safetext_wheel():
    t = TermFilter(SafetyConfig())
    assert t.n_terms > 5000 and {"ar", "de", "en", "ja", "zh"} <= set(t.languages)


def test_url_blocklist(tmp_path):
    f = tmp_path / "block.txt"
    f.write_text("# comment\nbad.example\nhttps://worse.example/path\n")
    b = UrlBlocklist([str(f)])
    assert run_filter(b, doc("x", url="http://sub.bad.example/a")).reason == "url_blocklist:blocked"
    assert run_filter(b, doc("x", url="https://worse.example")).reason == "url_blocklist:blocked"
    assert run_filter(b, doc("x", url="https://notbad.example")).reason is None
    assert run_filter(b, doc("x", url=None)).doc["scores"] == {}
    with pytest.raises(ValueError, match="no such file"):
        UrlBlocklist([str(tmp_path / "missing.txt")])


# ----------------------------------------------------------------------- PII
@pytest.mark.parametrize("text,kind", [
    ("write to jane.doe+x@mail.example.org today", "email"),
    ("call +1 415-555-0100 now", "phone"),
    ("call (415) 555-0101 now", "phone"),
    ("server at 8.8.4.4 answers", "ipv4"),
    ("v6 2001:4860:4860::8844 answers", "ipv6"),
    ("card 4111 1111 1111 1111 expires", "credit_card"),
    ("card 378282246310005 expires", "credit_card"),
    ("key = 'AKIAIOSFODNN7EXAMPLE'", "secret"),
    ("token ghp_" + "a1B2" * 9 + " used", "secret"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----", "secret"),
])
def test_pii_types_are_redacted_and_counted(text, kind):
    r = PIIRedactor()
    res = run_transform(r, doc(text))
    assert res.counts == {kind: 1}, (text, res.counts)
    ph = r.config.placeholders[kind]
    assert ph in res.doc["text"] and res.modified
    assert res.doc["scores"][f"pii.{kind}"] == 1.0
    assert res.doc["content_hash"] != doc(text)["content_hash"]


@pytest.mark.parametrize("text", [
    "localhost 127.0.0.1 and lan 192.168.1.10 and doc range 203.0.113.5",
    "version 4.2.13.1 of the tool",
    "number 4111 1111 1111 1112 fails Luhn",
    "std::vector<int> and a::b in C++",
    "the year 2024 and 12:30:45 o'clock",
    "no at-sign here, only text",
])
def test_pii_negatives(text):
    assert PIIRedactor().find(text) == []


def test_pii_private_ips_when_asked():
    r = PIIRedactor(PIIConfig(public_ips_only=False))
    assert [k for _, _, k in r.find("lan 192.168.1.10")] == ["ipv4"]
    with pytest.raises(Exception, match="unknown PII type"):
        PIIConfig(types=["email", "ssn"])


def test_luhn():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


@pytest.mark.parametrize("name", sorted(EDGE_TEXTS))
def test_edge_cases(terms, name):
    text = EDGE_TEXTS[name]
    assert run_filter(terms, doc(text)).reason is None
    res = run_transform(PIIRedactor(), doc(text))
    assert res.doc is not None and res.counts == {}


def test_ten_megabyte_document(terms):
    text = big_text(10) + " mail me at someone@example.com "
    res = run_transform(PIIRedactor(), doc(text))
    assert res.counts.get("email") == 1
    assert run_filter(terms, doc(text)).reason is None


def test_global_term_list_applies_whatever_the_document_language(tmp_path):
    from filters.safety import SafetyConfig, TermFilter

    lang_dir = tmp_path / "fr"
    lang_dir.mkdir()
    (lang_dir / "words.txt").write_text("gros mot\n")
    glob_list = tmp_path / "global.txt"
    glob_list.write_text("zorblax\n")
    cfg = SafetyConfig(term_lists=[str(lang_dir / "words.txt")], term_scope="document_language",
                       global_term_lists={"en": [str(glob_list)]}, common_words_top_n=0, own_language_top_n=0)
    tf = TermFilter(cfg)
    # the per-language list only applies to French documents ...
    assert [m[2] for m in tf.matches("un gros mot ici", "fr")] == ["gros mot"]
    assert tf.matches("un gros mot ici", "de") == []
    # ... the global one to every document
    assert [m[2] for m in tf.matches("ein zorblax hier", "de")] == ["zorblax"]
    assert [m[2] for m in tf.matches("un zorblax ici", "fr")] == ["zorblax"]
