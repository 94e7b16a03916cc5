"""Builds tests/data/lid_labelled.jsonl: short passages whose language is certain.

Provenance: documents of ../shared/dev_corpus that come from translated Debian
documentation and PyPI data whose licence allows redistribution (recorded per
line), never from documents the planting modified.  The language is the source's
translation language; a passage is kept only if an *independent* check agrees:
for non-Latin scripts >= 90% of its letters are in the language's script; for
Latin-script languages it holds >= 4 distinct stop words of the language
(stopwords-iso) and more of them than of English (for English: than of the
other languages).  Language ID itself is never used to select passages.

    PYTHONPATH=. python tests/data/build_lid_set.py ../shared/dev_corpus/text
"""
from __future__ import annotations

import json
import re
import sys

import stopwordsiso

from filters import textseg

SOURCES = {  # source prefix -> licence
    "debian:debian-handbook": "GPL-2+ or CC-BY-SA-3.0 (Debian Administrator's Handbook)",
    "debian:debian-reference": "GPL-2+ (Debian Reference)",
    "debian:manpages": "GPL-2+/GPL-3+ (manpages / manpages-l10n translations)",
    "pypi:chatterbot-corpus": "BSD-3-Clause (chatterbot-corpus)",
    "debian:gettext/gtk20": "LGPL-2+ (GTK+ 2 translations)",
    "debian:python3.11-doc": "PSF-2.0 (Python documentation)",
}
LANGS = {  # lang_hint -> (expected lid.176 label, script or None for Latin stop-word check)
    "en": ("en", None), "de": ("de", None), "fr": ("fr", None), "es": ("es", None), "it": ("it", None),
    "pt": ("pt", None), "pt-BR": ("pt", None), "pl": ("pl", None), "nl": ("nl", None), "cs": ("cs", None),
    "tr": ("tr", None), "vi": ("vi", None), "sv": ("sv", None), "fi": ("fi", None),
    "ru": ("ru", "Cyrillic"), "uk": ("uk", "Cyrillic"), "el": ("el", "Greek"),
    "zh-CN": ("zh", "Han"), "zh-TW": ("zh", "Han"), "ja": ("ja", "Japanese"), "ko": ("ko", "Hangul"),
    "ar": ("ar", "Arabic"), "fa": ("fa", "Arabic"), "hi": ("hi", "Devanagari"), "he": ("he", "Hebrew"),
}
PER_LANG = 12
PER_DOC = 4
WORD = re.compile(r"\w+")


def script_ok(text: str, script: str) -> bool:
    prof = textseg.script_profile(text)
    if not prof.letters:
        return False
    if script == "Japanese":
        kana = prof.share("Hiragana", "Katakana")
        return kana >= 0.15 and prof.share("Hiragana", "Katakana", "Han") >= 0.9
    return prof.share(script) >= 0.9


def stop_ok(text: str, lang: str) -> bool:
    words = {w.lower() for w in WORD.findall(text)}
    own = len(words & stopwordsiso.stopwords(lang))
    if lang == "en":
        others = max(len(words & stopwordsiso.stopwords(x)) for x in ("de", "fr", "es", "it", "nl"))
        return own >= 4 and own > 2 * others
    return own >= 4 and own > len(words & stopwordsiso.stopwords("en"))


def passages(text: str, join_short: bool = False):
    """Paragraphs of 120-700 characters; for message catalogues (one short UI
    string per block) consecutive messages joined until >= 150 characters."""
    if join_short:
        buf = ""
        for msg in re.split(r"\n\s*\n", text):
            m = " ".join(msg.split())
            if not m or "%" in m or "<" in m:  # format strings and markup carry no language
                continue
            buf = f"{buf} {m}".strip()
            if len(buf) >= 150:
                yield buf
                buf = ""
        return
    for para in re.split(r"\n\s*\n|\n(?=[A-Z\u0400-\u04ff])", text):
        p = " ".join(para.split())
        if 120 <= len(p) <= 700:
            yield p


def main(corpus_dir: str) -> None:
    # documents changed by planting (edited copies, insertions); originals and byte copies are real text
    planted = {x["doc_id"] for x in map(json.loads, open(f"{corpus_dir}/labels.jsonl"))
               if x["type"] not in ("exact_dup", "natural_near_dup")}
    out, count = [], {}
    for line in open(f"{corpus_dir}/corpus.jsonl", encoding="utf-8"):
        d = json.loads(line)
        lic = next((v for k, v in SOURCES.items() if d["source"].startswith(k)), None)
        if lic is None or d["id"] in planted or d["lang_hint"] not in LANGS:
            continue
        label, script = LANGS[d["lang_hint"]]
        per_doc = 0
        seen_texts = {r["text"] for r in out}
        for p in passages(d["text"], join_short=d["source"].startswith(("debian:gettext", "pypi:chatterbot"))):
            if count.get(label, 0) >= PER_LANG or per_doc >= PER_DOC:
                break
            if p in seen_texts:
                continue
            ok = script_ok(p, script) if script else stop_ok(p, label.split("-")[0])
            if ok:
                count[label] = count.get(label, 0) + 1
                per_doc += 1
                out.append({"lang": label, "text": p, "source": d["source"], "doc": d["id"], "licence": lic})
    out.sort(key=lambda r: (r["lang"], r["doc"], r["text"]))
    with open("tests/data/lid_labelled.jsonl", "w", encoding="utf-8") as f:
        for r in out:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    print({k: count[k] for k in sorted(count)}, len(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/dev_corpus/text")
