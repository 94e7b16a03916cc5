"""HTML → main text: resiliparse vs trafilatura, speed and quality, side by side.

    python bench/bench_html_extract.py [--repeat 3]

Pages: the real HTML pages of ``data/sample/web/sample.warc.gz``.  Quality
reference: for the Python documentation pages the main content is the Sphinx
``div[role=main]`` element, so its text (lxml) is a gold main text; each
extractor's output is scored by word-level precision/recall against it (word
multisets).  Boilerplate (navigation, sidebars, footers) lowers precision,
missing content lowers recall.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def pages():
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    from pipelines.readers import open_decompressed

    out = []
    with open_decompressed(os.path.join(ROOT, "data/sample/web/sample.warc.gz")) as f:
        for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
            ctype = rec.http_headers.get("Content-Type") or ""
            if "html" in ctype:
                out.append((rec.headers.get("WARC-Target-URI"), rec.reader.read()))
    return out


def gold(html: bytes) -> str | None:
    import lxml.html

    tree = lxml.html.fromstring(html)
    main = tree.xpath('//div[@role="main"]')
    if not main:
        return None
    for bad in main[0].xpath(".//script|.//style|.//a[@class='headerlink']"):
        bad.drop_tree()
    return main[0].text_content()


def prf(pred: str, ref: str) -> tuple[float, float]:
    p, r = collections.Counter(pred.split()), collections.Counter(ref.split())
    inter = sum((p & r).values())
    return inter / max(sum(p.values()), 1), inter / max(sum(r.values()), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    from pipelines.readers import extract_html_text

    docs = pages()
    mb = sum(len(h) for _, h in docs) / 1e6
    print(f"{len(docs)} HTML pages, {mb:.1f} MB")
    rows = []
    for name in ("resiliparse", "trafilatura"):
        t = time.perf_counter()
        for _ in range(a.repeat):
            outs = [extract_html_text(h, "text/html; charset=utf-8", name) for _, h in docs]
        dt = (time.perf_counter() - t) / a.repeat
        ps, rs = [], []
        for (_, h), o in zip(docs, outs):
            g = gold(h)
            if g:
                p, r = prf(o, g)
                ps.append(p)
                rs.append(r)
        P, R = sum(ps) / len(ps), sum(rs) / len(rs)
        rows.append((name, len(docs) / dt, mb / dt, P, R, 2 * P * R / (P + R), len(ps)))
    print("\n| extractor | pages/s | MB/s | precision | recall | F1 | pages with gold |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.2f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | {r[6]} |")
    print(f"\nspeed ratio resiliparse / trafilatura: {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
    main()
