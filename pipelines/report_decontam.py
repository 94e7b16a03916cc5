"""Report section: eval-set contamination per benchmark (from ``contamination.json``)."""
from __future__ import annotations

from pipelines.reportlib import Section, new_figure, read_json

KIND_ORDER = ("question+answer", "question", "answer", "passage", "choices", "partial")


def section(out_dir: str) -> Section | None:
    data = read_json(out_dir, "contamination.json")
    if data is None:
        return None
    sec = Section("Eval-set contamination")
    idx = data["index"]
    scanned = sum(data["documents_scanned"].values())
    sec.p(f"{scanned:,} documents scanned against {len(data['benchmarks'])} benchmark(s) "
          f"({idx['items']:,} eval items): {idx['mode']} index of {idx['entries']:,} n-gram entries, "
          f"{idx['bytes'] / 1e6:.1f} MB in memory, {idx['side_input_bytes'] / 1e6:.1f} MB side input; "
          f"window lengths {idx['lengths']}.")
    rows = []
    for name, b in data["benchmarks"].items():
        es = b["eval_set"]
        acts = b["actions"]
        rows.append([name, es.get("layout"), es.get("policy"), es.get("items"), b["items_found"],
                     (b["items_found"] / es["items"]) if es.get("items") else None,
                     b["contaminated_documents"], acts.get("drop", 0) + acts.get("would_drop", 0),
                     acts.get("excise", 0) + acts.get("would_excise", 0),
                     ", ".join(f"{k} {v}" for k, v in b["match_kinds"].items())])
    sec.table(["benchmark", "layout", "policy", "eval items", "items found", "share found", "documents",
               "dropped", "excised", "what was found (item occurrences)"], rows,
              "Per benchmark: eval items found in the corpus and the documents holding them "
              "(kinds: question+answer, question only, answer only, passage, partial)")
    if any(r[6] for r in rows):
        fig, ax = new_figure(7.5, 0.4 * len(rows) + 1.2)
        names = [r[0] for r in rows][::-1]
        left = [0] * len(names)
        kinds = {k for b in data["benchmarks"].values() for k in b["match_kinds"]}
        for kind in [k for k in KIND_ORDER if k in kinds]:
            vals = [data["benchmarks"][n]["match_kinds"].get(kind, 0) for n in names]
            ax.barh(names, vals, left=left, label=kind)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_xlabel("eval-item occurrences found")
        ax.legend(fontsize=8)
        sec.plot(fig, "contamination", "Eval-item occurrences found per benchmark, by what was found")
    src_rows = [[name, src, n] for name, b in data["benchmarks"].items() for src, n in b["by_source"].items()]
    if src_rows:
        sec.table(["benchmark", "source", "contaminated documents"], src_rows, "Where the leaks are, per source")
    for name, b in data["benchmarks"].items():
        if not b["items"]:
            continue
        top = sorted(b["items"].items(), key=lambda kv: (-kv[1]["documents"], kv[0]))[:15]
        sec.table(["eval item", "documents", "kinds", "max coverage", "documents (first)"],
                  [[iid, it["documents"], ", ".join(f"{k} {v}" for k, v in it["kinds"].items()),
                    it["max_coverage"], ", ".join(it["doc_ids"][:3])] for iid, it in top],
                  f"{name}: items found (most widespread first; all {len(b['items'])} in contamination.json)")
        if b["urls"]:
            sec.p(f"{name}: URLs of contaminated documents (first {min(10, len(b['urls']))}): "
                  + ", ".join(b["urls"][:10]))
    ign = []
    for name, b in data["benchmarks"].items():
        g = b["ignored_ngrams"]
        ign.append([name, g["too_common_count"], g["boilerplate_windows"], b["items_without_ngrams"],
                    "; ".join(f"{t} ({n})" for t, n in g["too_common"][:3])])
    sec.table(["benchmark", "too-common n-grams ignored", "boilerplate windows ignored", "items too short to index",
               "most common ignored n-grams (distinct eval texts)"], ign,
              "n-grams not indexed (full lists in contamination.json)")
    return sec
