"""Report sections for ``near_dup`` and ``boilerplate``.

Reads only the stages' small outputs: ``near_dup/stats.json`` (counts, LSH
parameters, connected-component rounds, cluster-size histogram),
``near_dup/pairs-*.parquet`` (sampled candidate pairs with text, per similarity
bucket, accepted or rejected by verification) and ``boilerplate/stats.json``.
"""
from __future__ import annotations

import difflib

from filters.minhash import candidate_probability
from pipelines.reportlib import Section, new_figure, read_json, read_parquet_dir

CURVE_POINTS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def _diff_summary(a: str, b: str, limit: int = 12) -> str:
    """Word-level differences of two texts, as '-removed +added' snippets."""
    wa, wb = a.split(), b.split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        old, new = " ".join(wa[i1:i2])[:60], " ".join(wb[j1:j2])[:60]
        out.append(f"[-{old}-]{{+{new}+}}" if old and new else (f"[-{old}-]" if old else f"{{+{new}+}}"))
        if len(out) >= limit:
            out.append("…")
            break
    return " ".join(out) or "(no word-level difference in the sampled prefix)"


def _near_dup(out_dir: str) -> Section | None:
    st = read_json(out_dir, "near_dup/stats.json")
    if st is None:
        return None
    cfg, m = st["config"], st["metrics"]
    b, r = st["bands"], st["rows"]
    sec = Section("Near-duplicates (MinHash + LSH + connected components)")
    dropped = sum((s - 1) * n for s, n in ((int(k), v) for k, v in st["cluster_size_histogram"].items()))
    sec.p(f"{st['documents']:,} documents after exact dedup; {st['clusters']:,} clusters of near-duplicates "
          f"(Jaccard ≥ {cfg['threshold']} of {cfg['shingle']['word_ngram']}-word / {cfg['shingle']['char_ngram']}-character "
          f"shingles, verification: {cfg['verify']}); {dropped:,} documents dropped, one survivor per cluster "
          f"by policy {cfg['survivor']}.")
    sec.table(["parameter", "value"], [
        ["num_perm", cfg["num_perm"]], ["bands × rows", f"{b} × {r}"], ["partitions", st["partitions"]],
        ["band entries", m.get("band_entries", 0)], ["buckets shared by ≥ 2 docs", m.get("buckets_shared", 0)],
        ["largest bucket", m.get("bucket_size_max", 0)], ["candidate pairs", m.get("candidate_pairs", 0)],
        ["pairs accepted by verification", m.get("pairs_accepted", 0)],
        ["pairs rejected (LSH false positives)", m.get("pairs_rejected", 0)],
        ["documents without shingles", m.get("docs_without_shingles", 0)],
        ["connected-component rounds run", f"{st['cc_rounds_run']} of at most {st['cc_max_rounds']}"],
        ["edges changed per round", ", ".join(str(x) for x in st["cc_changes_per_round"]) or "—"],
    ], "Stage parameters and counts")
    sec.table(["true Jaccard"] + [f"{s:.2f}" for s in CURVE_POINTS],
              [["P(candidate)"] + [f"{candidate_probability(s, b, r):.3f}" for s in CURVE_POINTS]],
              f"LSH S-curve for {b} bands × {r} rows: probability that a pair becomes a candidate")
    hist = sorted((int(k), v) for k, v in st["cluster_size_histogram"].items())
    if hist:
        sec.table(["cluster size", "clusters", "documents dropped"], [[s, n, (s - 1) * n] for s, n in hist],
                  "Cluster-size histogram")
        fig, ax = new_figure(7.0, 3.0)
        ax.bar([str(s) for s, _ in hist], [n for _, n in hist], color="#4f81bd")
        ax.set_yscale("log")
        ax.set_xlabel("cluster size (documents)")
        ax.set_ylabel("clusters")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        sec.plot(fig, "near_dup_cluster_sizes", "Near-duplicate cluster sizes")
    pairs = read_parquet_dir(out_dir, "near_dup")
    if pairs is not None and pairs.num_rows:
        rows = sorted(pairs.to_pylist(), key=lambda x: (-x["similarity"], x["id"]))
        sec.p("Sample candidate pairs per similarity level (deterministic sample; 'accepted' pairs are "
              "clustered, rejected ones were LSH candidates below the threshold):")
        by_bucket: dict[str, list] = {}
        for x in rows:
            by_bucket.setdefault(x["bucket"], []).append(x)
        for bucket in sorted(by_bucket, reverse=True):
            for x in by_bucket[bucket][:2]:
                verdict = "accepted" if x["accepted"] else "rejected"
                sec.p(f"[{bucket}] similarity {x['similarity']:.3f} ({verdict}): {x['id_a']} ~ {x['id_b']}")
                ta, tb = x["text_a"] or "", x["text_b"] or ""
                sec.pre(f"A: {ta[:400]}\n\nB: {tb[:400]}\n\nword diff (A→B): {_diff_summary(ta, tb)}")
    return sec


def _boilerplate(out_dir: str) -> Section | None:
    st = read_json(out_dir, "boilerplate/stats.json")
    if st is None:
        return None
    cfg = st["config"]
    ledger = read_json(out_dir, "ledger.json") or {"sources": {}}
    sec = Section("Boilerplate lines")
    sec.p(f"A {cfg['unit']} counts as boilerplate when it occurs in at least {cfg['min_docs']} documents"
          + (f" and {cfg['min_doc_fraction']:.2%} of them" if cfg["min_doc_fraction"] else "")
          + f" (normalised, ≥ {cfg['min_chars']} characters; documents with lang {cfg['skip_lang_prefixes']} untouched). "
          f"{st['boilerplate_keys']:,} such {cfg['unit']}s found in {st['documents']:,} documents.")
    rows = []
    for src, d in ledger["sources"].items():
        ev = d.get("modified", {}).get("boilerplate", {})
        drops = sum(d.get("dropped", {}).get("boilerplate", {}).values())
        rows.append([src, ev.get("docs_modified", 0), ev.get("lines_removed", 0), drops])
    sec.table(["source", "documents modified", f"{cfg['unit']}s removed", "documents emptied (dropped)"], rows)
    if st["top_removed"]:
        sec.table(["documents", cfg["unit"]], [[t["docs"], t["text"][:160]] for t in st["top_removed"]],
                  f"Most frequent removed {cfg['unit']}s")
    return sec


def section(out_dir: str):
    secs = [s for s in (_near_dup(out_dir), _boilerplate(out_dir)) if s is not None]
    return secs or None
