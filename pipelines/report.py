"""``report.html`` and ``report.md`` after a corpus build.

Reads only the small outputs (ledger, manifest, stats, dropped samples); the
corpus itself is never loaded.  Sections from later stages live in
``pipelines/report_<topic>.py`` and are listed in ``SECTIONS``.
"""
from __future__ import annotations

import importlib
import logging
import posixpath

from pipelines.reportlib import Section, join, new_figure, read_json, read_parquet_dir, render_html, render_md

log = logging.getLogger(__name__)

#: Section modules after the core ones, in report order (each has ``section(out_dir)``).
SECTIONS: list[str] = ["pipelines.report_filters", "pipelines.report_decontam", "pipelines.report_neardup", "pipelines.report_media"]

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-style:italic;padding:.2em 0}
pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap;max-height:16em;overflow:auto;font-size:.85em}
figure{margin:.5em 0 1.5em} figcaption{font-size:.85em;color:#555}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
"""


def _overview(out_dir: str, ledger: dict, manifest: dict) -> Section:
    sec = Section("Overview")
    t = ledger["totals"]
    sec.p(f"{t['input']:,} input records → {t['kept']:,} kept, {t['dropped']:,} dropped "
          f"(ledger {'balances' if ledger['balanced'] else 'DOES NOT balance'}). "
          f"Config hash {manifest.get('config_hash')}, manifest hash {manifest.get('manifest_hash')}.")
    rows = []
    for s, m in manifest["sources"].items():
        rows.append([s, m["documents"], m["bytes"], m["est_tokens"], len(m["shards"])])
    sec.table(["source", "documents", "bytes", "est. tokens", "shards"], rows, "Kept corpus per source")
    return sec


def _stages(ledger: dict) -> Section:
    sec = Section("Documents per stage")
    order = ledger["stage_order"]
    rows = []
    for s, d in ledger["sources"].items():
        after = dict(d["after_stage"])
        rows.append([s, d["input"]] + [after.get(st, "–") for st in order] + [d["kept"]])   # –: not this source's stage
    sec.table(["source", "input"] + [f"after {st}" for st in order] + ["kept"], rows,
              "Documents left after each stage (input = kept + dropped per source)")
    fig, ax = new_figure(7.5, 3.4)
    for s, d in ledger["sources"].items():
        xs = [0] + [1 + order.index(st) for st, _ in d["after_stage"]]    # stages a source skips: no point
        ys = [100.0] + [100.0 * n / max(d["input"], 1) for _, n in d["after_stage"]]
        ax.plot(xs, ys, marker="o", label=f"{s} ({d['input']:,})")
    ax.set_xticks(range(len(order) + 1), ["input"] + list(order))
    ax.set_ylabel("% of input remaining")
    ax.set_title("Documents remaining after each stage")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    sec.plot(fig, "stages", "Share of each source's input remaining after each stage (input count in the legend)")
    mods = [[s, st, name, n] for s, d in ledger["sources"].items() for st, kv in d["modified"].items() for name, n in kv.items()]
    if mods:
        sec.table(["source", "stage", "event", "count"], mods, "Modifications and other events (documents kept)")
    return sec


def _drops(out_dir: str, ledger: dict) -> Section:
    sec = Section("Top drop reasons")
    rows = []
    for s, d in ledger["sources"].items():
        for st, reasons in d["dropped"].items():
            for r, n in reasons.items():
                rows.append([st, r, s, n, n / max(d["input"], 1)])
    rows.sort(key=lambda r: -r[3])
    sec.table(["stage", "reason", "source", "dropped", "share of source"], rows[:40])
    if rows:
        agg: dict[tuple[str, str], int] = {}
        for st, r, _, n, _ in rows:
            agg[(st, r)] = agg.get((st, r), 0) + n
        top = sorted(agg.items(), key=lambda kv: -kv[1])[:15]
        fig, ax = new_figure(7.5, 0.35 * len(top) + 1)
        ax.barh([f"{st}: {r}" for (st, r), _ in top][::-1], [n for _, n in top][::-1], color="#c0504d")
        ax.set_xlabel("documents dropped")
        sec.plot(fig, "drop_reasons", "Most frequent drop reasons (all sources)")
    samples = read_parquet_dir(out_dir, "samples")
    if samples is not None and samples.num_rows:
        sec.p("Sampled dropped documents (deterministic sample per stage and reason):")
        seen: dict[tuple[str, str], int] = {}
        for r in sorted(samples.to_pylist(), key=lambda r: (r["stage"], r["reason"], r["id"])):
            key = (r["stage"], r["reason"])
            if seen.get(key, 0) >= 2:
                continue
            seen[key] = seen.get(key, 0) + 1
            surv = f" (survivor {r['survivor_id']})" if r.get("survivor_id") else ""
            sec.p(f"[{r['stage']} / {r['reason']}] {r['id']} from {r['source']}{surv}")
            sec.pre((r["text"] or "(no text)")[:600])
    return sec


def _languages(manifest: dict) -> Section:
    sec = Section("Languages")
    langs: dict[str, list[int]] = {}
    for m in manifest["sources"].values():
        for lang, v in m["languages"].items():
            e = langs.setdefault(lang, [0, 0, 0])
            e[0] += v["documents"]
            e[1] += v["bytes"]
            e[2] += v["est_tokens"]
    rows = sorted(([k, *v] for k, v in langs.items()), key=lambda r: -r[2])
    sec.table(["language", "documents", "bytes", "est. tokens"], rows, "Kept documents by language (und: not identified)")
    if rows:
        top = rows[:25]
        fig, ax = new_figure(7.5, 3.2)
        ax.bar([r[0] for r in top], [r[3] for r in top], color="#4f81bd")
        ax.set_ylabel("est. tokens")
        ax.tick_params(axis="x", rotation=60, labelsize=8)
        ax.set_title("Token estimate by language (top 25)")
        sec.plot(fig, "languages", "Estimated tokens per language")
    return sec


def _lengths(stats: dict) -> Section:
    sec = Section("Document lengths")
    h = stats["length_histogram"]
    edges = h["bin_upper_chars"]
    fig, ax = new_figure(7.5, 3.2)
    for s, bins in h["by_source"].items():
        xs = [edges[int(b)] if int(b) < len(edges) else edges[-1] * 3 for b in bins]
        ax.step(xs, list(bins.values()), where="mid", label=s)
    ax.set_xscale("log")
    ax.set_xlabel("characters (upper bin edge)")
    ax.set_ylabel("documents")
    ax.legend(fontsize=8)
    sec.plot(fig, "lengths", "Length histogram of kept documents per source")
    return sec


def write_report(out_dir: str) -> str:
    """Write report.html / report.md (+ report/*.png); returns the HTML path."""
    from pipelines.outputs import write_bytes

    ledger = read_json(out_dir, "ledger.json")
    manifest = read_json(out_dir, "manifest.json")
    stats = read_json(out_dir, "stats.json")
    sections = [_overview(out_dir, ledger, manifest), _stages(ledger), _drops(out_dir, ledger),
                _languages(manifest), _lengths(stats)]
    for name in SECTIONS:
        try:
            sec = importlib.import_module(name).section(out_dir)
        except Exception as e:  # noqa: BLE001 - a broken section must not hide the rest
            log.exception("report section %s failed", name)
            sec = Section(name).p(f"This section failed to render: {type(e).__name__}: {e}")
        if sec is not None:
            sections.extend(sec if isinstance(sec, list) else [sec])
    title = f"Corpus report — {posixpath.basename(out_dir.rstrip('/'))}"
    html_doc = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head><body>",
                f"<h1>{title}</h1>"]
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
    return join(out_dir, "report.html")
