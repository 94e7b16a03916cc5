"""The tokenizer report: how well the tokenizer compresses each language.

On the held-out documents (never in the training sample), per language and per
script: bytes per token (UTF-8 bytes / tokens; higher is better) and tokens per
word (lower is better) for

* ``balanced``     the tokenizer trained on the temperature-balanced sample;
* ``proportional`` the same training on a sample of the same size drawn in
                   proportion to the corpus (what "take the first N characters"
                   amounts to);
* ``bytes``        a byte-level baseline (one token per UTF-8 byte).

Also on a parallel text shipped with the package (the Universal Declaration of
Human Rights in 21 languages, ``tokenizer/data/udhr.jsonl``): the same content in
every language, so languages can be compared with each other — tokens for the
declaration relative to English ("parity", Petrov et al. 2023).

Words: whitespace-separated runs with a letter or digit; each Han, kana, Thai,
Lao, Khmer, Myanmar or Tibetan character counts as one word.  Written to
``eval.json``, ``report.html`` and ``report.md`` (plots in ``report/``).
"""
from __future__ import annotations

import logging
import os
from typing import Any

from pipelines.reportlib import Section, join, new_figure, read_parquet_dir, render_html, render_md
from tokenizer.corpus import char_script, count_words

log = logging.getLogger("tokenizer.report")

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-style:italic;padding:.2em 0}
pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap;max-height:16em;overflow:auto;font-size:.85em}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
"""

#: languages the issue asks about first in tables (then the rest by size)
FOCUS = ("en", "zh", "ja", "ko", "ru", "ar", "hi")
UDHR_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "udhr.jsonl")


def udhr_rows() -> list[dict[str, Any]]:
    import json

    from tokenizer.corpus import dominant_script

    rows = []
    with open(UDHR_PATH, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            rows.append({"id": f"udhr-{d['lang']}-{d['part']}", "lang": d["lang"], "text": d["text"],
                         "script": dominant_script(d["text"])})
    return rows


def evaluate(tokenizers: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``tokenizers``: name -> Tokenizer (``None`` = byte-level).  Returns per-language
    and per-script totals and ratios, and the round-trip failures per tokenizer."""
    by: dict[str, dict[str, dict[str, Any]]] = {"lang": {}, "script": {}}
    roundtrip = {n: {"docs": 0, "failures": []} for n, t in tokenizers.items() if t is not None}
    for r in rows:
        text = r["text"]
        nbytes = len(text.encode("utf-8"))
        words = count_words(text)
        counts = {}
        for name, tok in tokenizers.items():
            if tok is None:
                counts[name] = nbytes
                continue
            ids = tok.encode(text)
            counts[name] = len(ids)
            roundtrip[name]["docs"] += 1
            if tok.decode(ids) != text:
                roundtrip[name]["failures"].append(r["id"])
        for dim, key in (("lang", r["lang"]), ("script", r["script"])):
            e = by[dim].setdefault(key, {"docs": 0, "bytes": 0, "chars": 0, "words": 0, "tokens": {}})
            e["docs"] += 1
            e["bytes"] += nbytes
            e["chars"] += len(text)
            e["words"] += words
            for name, n in counts.items():
                e["tokens"][name] = e["tokens"].get(name, 0) + n
    for dim in by.values():
        for e in dim.values():
            e["bytes_per_token"] = {n: e["bytes"] / max(t, 1) for n, t in e["tokens"].items()}
            e["tokens_per_word"] = {n: t / max(e["words"], 1) for n, t in e["tokens"].items()}
    return {"by_lang": by["lang"], "by_script": by["script"], "roundtrip": roundtrip}


def vocab_scripts(tok) -> dict[str, int]:
    """Number of vocabulary pieces per script (of the piece's first letter)."""
    out: dict[str, int] = {}
    sp = tok.sp
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i):
            key = "special/byte"
        else:
            piece = sp.id_to_piece(i)
            letter = next((c for c in piece if c.isalpha()), None)
            key = (char_script(letter) or "other") if letter else ("digit" if any(c.isdigit() for c in piece) else "other")
        out[key] = out.get(key, 0) + 1
    return out


def _ordered(keys) -> list[str]:
    keys = list(keys)
    return [k for k in FOCUS if k in keys] + sorted(k for k in keys if k not in FOCUS)


def _ratio_table(sec: Section, dim: dict[str, Any], names: list[str], label: str, caption: str) -> None:
    headers = [label, "docs", "bytes"] + [f"bytes/token {n}" for n in names]
    has_cmp = "balanced" in names and "proportional" in names
    if has_cmp:
        headers.append("balanced vs proportional")
    headers += [f"tokens/word {n}" for n in names]
    rows = []
    for k in _ordered(dim):
        e = dim[k]
        row = [k, e["docs"], e["bytes"]] + [round(e["bytes_per_token"][n], 3) for n in names]
        if has_cmp:
            row.append(f"{100 * (e['bytes_per_token']['balanced'] / e['bytes_per_token']['proportional'] - 1):+.1f}%")
        row += [round(e["tokens_per_word"][n], 3) for n in names]
        rows.append(row)
    sec.table(headers, rows, caption)


def build_sections(meta: dict[str, Any], sample_stats: dict[str, Any], ev: dict[str, Any], names: list[str],
                   vocab_by_script: dict[str, dict[str, int]]) -> list[Section]:
    secs = []
    s = Section("Tokenizer")
    t = meta["config"]["train"]
    s.p(f"SentencePiece {t['model_type']}, vocabulary {meta['vocab_size']:,} (requested {meta['requested_vocab_size']:,}), "
        f"byte fallback {'on' if t['byte_fallback'] else 'off'}, split digits {'on' if t['split_digits'] else 'off'}, "
        f"normalisation {t['normalization_rule_name']}, character coverage {t['character_coverage']}, "
        f"lossless {'yes' if meta['lossless'] else 'no'}. Model sha256 {meta['model_sha256'][:16]}, config hash "
        f"{meta['config_hash']}, corpus manifest {meta['corpus_manifest_hash']}.")
    if meta.get("note"):
        s.p("Note: " + meta["note"])
    s.table(["piece", "id"], [[repr(k) if k.strip() != k or not k else k, v] for k, v in meta["special_ids"].items()],
            "Special and control pieces")
    secs.append(s)

    s = Section("Training sample")
    plan = sample_stats["plan"]
    sel = sample_stats["selected"]
    sc = sample_stats["config"]
    s.p(f"Unit: {sc['unit']}. Budget {plan['budget_chars']:,} characters of {plan['corpus_chars']:,} "
        f"(max_chars {sc['max_chars']:,}); temperature {sc['script_temperature']} over scripts (of each line), "
        f"{sc['language_temperature']} over languages inside a script, {sc['source_temperature']} over sources inside "
        f"a language; small groups repeated at most {sc['max_repeat']}×. "
        f"Balanced sample: {sel['balanced']['chars']:,} characters in {sel['balanced']['units']:,} units; "
        f"proportional: {sel['proportional']['chars']:,} in {sel['proportional']['units']:,}. "
        f"Held out for this report: {sum(sample_stats['heldout_docs'].values())} documents.")
    def shares(field: str) -> list[list[Any]]:
        acc: dict[str, list[float]] = {}
        for key, g in plan["groups"].items():
            e = acc.setdefault(g[field], [0, 0, 0])
            e[0] += g["chars"]
            e[1] += sel["balanced"]["groups"].get(key, {}).get("chars", 0)
            e[2] += sel["proportional"]["groups"].get(key, {}).get("chars", 0)
        tot = [max(sum(v[i] for v in acc.values()), 1) for i in range(3)]
        return sorted(([k, v[0], round(100 * v[0] / tot[0], 2), round(100 * v[1] / tot[1], 2),
                        round(100 * v[2] / tot[2], 2)] for k, v in acc.items()), key=lambda r: -r[1])

    s.table(["script", "corpus chars", "corpus %", "balanced sample %", "proportional sample %"], shares("script"),
            "Share of characters per script of each line (the sample excludes held-out documents)")
    rows = shares("lang")
    s.table(["language", "corpus chars", "corpus %", "balanced sample %", "proportional sample %"], rows,
            "Share of characters per document language")
    top = rows[:30]
    if top:
        fig, ax = new_figure(8, 3.4)
        xs = list(range(len(top)))
        ax.bar([x - 0.2 for x in xs], [r[4] for r in top], width=0.4, label="proportional", color="#bbbbbb")
        ax.bar([x + 0.2 for x in xs], [r[3] for r in top], width=0.4, label="balanced", color="#4f81bd")
        ax.set_xticks(xs, [r[0] for r in top], rotation=60, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("% of sample characters")
        ax.legend(fontsize=8)
        ax.set_title("Sample composition by language")
        s.plot(fig, "sample_languages", "Share of the training sample per language (log scale)")
    secs.append(s)

    s = Section("Compression on held-out text")
    _ratio_table(s, ev["by_lang"], names, "language",
                 "Per language: bytes per token (higher is better) and tokens per word (lower is better)")
    _ratio_table(s, ev["by_script"], names, "script", "Per script")
    keys = _ordered(ev["by_lang"])
    if keys:
        fig, ax = new_figure(max(6.0, 0.45 * len(keys) + 2), 3.6)
        colors = {"balanced": "#4f81bd", "proportional": "#bbbbbb", "bytes": "#e0a040"}
        width = 0.8 / len(names)
        for j, n in enumerate(names):
            ax.bar([i + (j - (len(names) - 1) / 2) * width for i in range(len(keys))],
                   [ev["by_lang"][k]["bytes_per_token"][n] for k in keys], width=width, label=n,
                   color=colors.get(n))
        ax.set_xticks(range(len(keys)), keys, rotation=60, fontsize=8)
        ax.set_ylabel("UTF-8 bytes per token")
        ax.legend(fontsize=8)
        ax.set_title("Bytes per token on held-out documents (higher is better)")
        s.plot(fig, "bytes_per_token", "Bytes per token per language: balanced vs proportional vs byte-level")
    rt = ev["roundtrip"]
    s.p("Round trip decode(encode(text)) == text on held-out documents: " + "; ".join(
        f"{n}: {v['docs'] - len(v['failures'])}/{v['docs']}" for n, v in rt.items()) + ".")
    secs.append(s)

    if ev.get("udhr"):
        u = ev["udhr"]["by_lang"]
        s = Section("Parallel text: the Universal Declaration of Human Rights")
        s.p("The same declaration in 21 languages (shipped in tokenizer/data/udhr.jsonl). It is held-out text unless "
            "your corpus contains the declaration. 'tokens vs en' is the number of tokens for the whole declaration "
            "relative to English with the same tokenizer (1.0 = parity).")
        _ratio_table(s, u, names, "language", "UDHR: bytes per token and tokens per word")
        if "en" in u:
            toks = [n for n in names if n != "bytes"]
            rows = [[k] + [round(u[k]["tokens"][n] / u["en"]["tokens"][n], 2) for n in names] for k in _ordered(u)]
            s.table(["language"] + [f"tokens vs en {n}" for n in names], rows,
                    "Tokens for the same text relative to English")
            fig, ax = new_figure(max(6.0, 0.45 * len(rows) + 2), 3.4)
            width = 0.8 / max(len(toks), 1)
            for j, n in enumerate(toks):
                ax.bar([i + (j - (len(toks) - 1) / 2) * width for i in range(len(rows))],
                       [u[r[0]]["tokens"][n] / u["en"]["tokens"][n] for r in rows], width=width, label=n,
                       color={"balanced": "#4f81bd", "proportional": "#bbbbbb"}.get(n))
            ax.axhline(1.0, color="#333", lw=0.8)
            ax.set_xticks(range(len(rows)), [r[0] for r in rows], rotation=60, fontsize=8)
            ax.set_ylabel("tokens relative to English")
            ax.legend(fontsize=8)
            ax.set_title("Token cost of the same declaration (lower is better)")
            s.plot(fig, "udhr_parity", "Tokens for the UDHR per language relative to English")
        secs.append(s)

    s = Section("Vocabulary by script")
    scripts = sorted({k for v in vocab_by_script.values() for k in v}, key=lambda k: -max(v.get(k, 0) for v in vocab_by_script.values()))
    s.table(["script"] + list(vocab_by_script), [[k] + [v.get(k, 0) for v in vocab_by_script.values()] for k in scripts],
            "Vocabulary pieces per script of their first letter")
    secs.append(s)
    return secs


def write_report(out_dir: str, sample_dir: str, meta: dict[str, Any], sample_stats: dict[str, Any],
                 tokenizers: dict[str, Any]) -> dict[str, Any]:
    """Evaluates ``tokenizers`` on the held-out documents and writes eval.json and the report."""
    from pipelines.outputs import write_bytes, write_json

    table = read_parquet_dir(sample_dir, "heldout")
    rows = sorted(table.to_pylist(), key=lambda r: r["id"]) if table is not None else []
    names = list(tokenizers)
    ev = evaluate(tokenizers, rows)
    ev["udhr"] = evaluate(tokenizers, udhr_rows())
    write_json(join(out_dir, "eval.json"), {"tokenizers": names, **ev})
    vocab = {n: vocab_scripts(t) for n, t in tokenizers.items() if t is not None}
    sections = build_sections(meta, sample_stats, ev, names, vocab)
    title = "Tokenizer report"
    html_doc = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head>"
                f"<body><h1>{title}</h1>"]
    md_doc = [f"# {title}", ""]
    for sec in sections:
        html_doc.append(render_html(sec, "report"))
        md_doc.append(render_md(sec, "report"))
        for kind, payload in sec.blocks:
            if kind == "plot":
                write_bytes(join(out_dir, "report", f"{payload[0]}.png"), payload[1])
    html_doc.append("</body></html>")
    write_bytes(join(out_dir, "report.html"), "\n".join(html_doc).encode())
    write_bytes(join(out_dir, "report.md"), "\n".join(md_doc).encode())
    return ev


def comparison_rows(ev: dict[str, Any], langs=FOCUS, key: str = "by_lang") -> list[tuple[str, float, float, float]]:
    """(lang, balanced B/T, proportional B/T, change %) for the closing table."""
    out = []
    table = ev[key] if key == "by_lang" else ev[key]["by_lang"]
    for k in langs:
        e = table.get(k)
        if e and "balanced" in e["bytes_per_token"] and "proportional" in e["bytes_per_token"]:
            b, p = e["bytes_per_token"]["balanced"], e["bytes_per_token"]["proportional"]
            out.append((k, b, p, 100 * (b / p - 1)))
    return out
