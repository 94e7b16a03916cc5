"""Report section for the language, quality and safety filters (and PII).

Reads ``filters.json`` (written by ``pipelines.filter_stats.FilterStats``), the
ledger's modification counts and, after ``--dry-run``, ``calibration/``:

* removals per filter x source x language;
* a histogram of every score with its thresholds marked (default and the
  per-script / per-language overrides in force);
* PII redactions per type and source;
* in dry-run: removal rates per filter and source and the documents just above
  and just below each threshold.
"""
from __future__ import annotations

import json
from collections import defaultdict

from pipelines.reportlib import Section, join, new_figure, read_json

MAX_PLOTS = 24


def _removals(sec: Section, stats: dict) -> None:
    rows = stats.get("removals") or []
    if not rows:
        sec.p("No document was removed by the language, quality or safety filters.")
        return
    scored = stats.get("documents_scored") or {}
    rows = sorted(rows, key=lambda r: (-r[4], r[0], r[1], r[2], r[3]))
    sec.table(["stage", "filter:rule", "source", "language", "documents", "share of source"],
              [[st, rule, src, lang, n, n / max(scored.get(src, 0), 1)] for st, rule, src, lang, n in rows[:80]],
              "Removals per filter x source x language" + (" (would-be, dry run)" if stats.get("dry_run") else "")
              + (f" — top 80 of {len(rows)}" if len(rows) > 80 else ""))
    agg: dict[tuple[str, str], int] = defaultdict(int)
    for st, rule, src, _, n in rows:
        agg[(rule, src)] += n
    by_lang: dict[str, int] = defaultdict(int)
    for _, _, _, lang, n in rows:
        by_lang[lang] += n
    sec.table(["language", "documents removed"], sorted(by_lang.items(), key=lambda kv: -kv[1])[:30],
              "Removals per language (all filters)")


def _histograms(sec: Section, stats: dict) -> None:
    hists = stats.get("histograms") or {}
    thr = stats.get("thresholds") or {}
    metrics = [m for m in sorted(hists) if m in thr] + [m for m in sorted(hists) if m not in thr]
    shown = 0
    for metric in metrics:
        if shown >= MAX_PLOTS:
            sec.p(f"({len(metrics) - shown} more score histograms are in filters.json)")
            break
        per_src = hists[metric]
        fig, ax = new_figure(6.5, 2.6)
        for src, bins in sorted(per_src.items()):
            xs = sorted(float(b) for b in bins)
            ax.bar(xs, [bins[repr(x)] for x in xs], width=_width(metric, xs), alpha=0.6, align="edge", label=src)
        for kind, val, scope in thr.get(metric, []):
            style = "-" if scope == "default" else ":"
            ax.axvline(val, color="#c0504d" if kind == "min" else "#7030a0", linestyle=style, linewidth=1.2)
        defaults = [f"{k} {v:g}" for k, v, s in thr.get(metric, []) if s == "default"]
        n_over = sum(1 for _, _, s in thr.get(metric, []) if s != "default")
        ax.set_title(metric + (f"  (keep: {', '.join(defaults)})" if defaults else ""), fontsize=9)
        ax.set_ylabel("documents")
        if len(per_src) > 1:
            ax.legend(fontsize=7)
        cap = f"{metric}: solid lines = default thresholds"
        if n_over:
            cap += f", dotted = {n_over} per-script/language overrides"
        sec.plot(fig, "hist_" + metric.replace(".", "_"), cap)
        shown += 1


def _width(metric: str, xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.02
    gaps = [b - a for a, b in zip(xs, xs[1:]) if b > a]
    return min(gaps) * 0.9 if gaps else 0.02


def _pii(sec: Section, ledger: dict | None) -> None:
    if not ledger:
        return
    rows = []
    for src, d in ledger.get("sources", {}).items():
        for name, n in sorted((d.get("modified") or {}).get("pii", {}).items()):
            if name != "pii.modified":
                rows.append([src, name.split(".", 1)[1], n])
        mod = (d.get("modified") or {}).get("pii", {}).get("pii.modified")
        if mod:
            rows.append([src, "documents changed", mod])
    if rows:
        sec.table(["source", "PII type", "redactions"], rows, "PII redactions (typed placeholders, counted per type)")


def _calibration(out_dir: str) -> Section | None:
    rates = read_json(out_dir, "calibration/removal_rates.json")
    if rates is None:
        return None
    sec = Section("Calibration (dry run)")
    sec.p("Each filter's removal rate if it alone applied, and the documents closest to each threshold "
          "on either side (calibration/near_threshold.jsonl has all of them).")
    rows = []
    for src, e in rates.get("sources", {}).items():
        for f, v in sorted(e["filters"].items(), key=lambda kv: -kv[1]["rate"]):
            rows.append([src, f, v["would_remove"], e["documents"], v["rate"]])
    sec.table(["source", "filter", "would remove", "documents", "rate"], rows)
    try:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(join(out_dir, "calibration", "near_threshold.jsonl")) as f:
            samples = [json.loads(x) for x in f.read().decode().splitlines() if x.strip()]
    except Exception:  # noqa: BLE001 - the table above is still useful
        samples = []
    seen: set[tuple[str, str, str]] = set()
    for s in samples:
        key = (s["source"], s["metric"], s["side"])
        if key in seen:
            continue
        seen.add(key)
        word = "kept" if s["side"] == "keep" else "dropped"
        sec.p(f"[{s['metric']} {s['kind']} {s['threshold']:g}] just {word}: {s['id']} ({s['source']}, "
              f"{s.get('lang')}) value {s['value']:.4g}")
        sec.pre((s.get("text") or "")[:300])
    return sec


def section(out_dir: str):
    stats = read_json(out_dir, "filters.json")
    if stats is None:
        return None
    sec = Section("Language, quality and safety filters")
    sec.p("Every filter stores its scores in each document (scores column); thresholds are config, so "
          "re-thresholding needs no re-scoring. Drops are in dropped/ with stage language, quality or safety "
          "and the rule as reason.")
    _removals(sec, stats)
    _pii(sec, read_json(out_dir, "ledger.json"))
    _histograms(sec, stats)
    cal = _calibration(out_dir)
    return [sec, cal] if cal is not None else sec
