"""The tokenizer's training sample: a Beam job over a built corpus.

    python -m tokenizer.sample --corpus out/demo_corpus --output artifacts/tokenizer/sample

Steps (all distributed; only per-group counts and the held-out ids — at most
``docs_per_language`` per language — are ever gathered):

1. Hold out, per language and script, the documents with the smallest
   ``hash(seed, id)`` (never more than ``holdout.max_fraction`` of them) for the report.
2. Cut the other documents into units (non-blank lines or sentences, at most
   ``max_unit_bytes``) and count units and characters per group (source,
   document language, the unit's own script).
3. Plan: weights per group, hierarchically — a script ∝ chars^(1/script_temperature),
   a language inside its script ∝ chars^(1/language_temperature), a source inside
   a language ∝ chars^(1/source_temperature); the budget min(max_chars, corpus
   chars) is water-filled over the groups with each group capped at
   ``max_repeat`` times its size.  The ``proportional`` variant (weights ∝ chars,
   same budget) is the baseline the report compares against.
4. Select: a unit of a group with rate r is written floor(r) times plus once more
   when its uniform number ``hash(seed, doc id, unit index)`` is below frac(r) —
   a per-unit coin, so memory stays bounded and the result does not depend on
   workers or input order.
5. Write ``<variant>-i-of-n.txt`` shards (one unit per line, sorted by hash),
   ``heldout/*.parquet`` and ``sample_stats.json`` (plan and realised counts).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from typing import Any

from tokenizer.cli import check_beam_flags, ensure_importable, main_wrapper, setup_logging
from tokenizer.config import SampleConfig, TokenizerConfig, load_config
from tokenizer.corpus import (
    TEXT_COLUMNS,
    doc_rank,
    dominant_script,
    join,
    language_key,
    load_corpus_manifest,
    split_units,
    text_shards,
    unit_script,
    unit_uniform,
)

log = logging.getLogger("tokenizer.sample")

VARIANTS = ("balanced", "proportional")


# ----------------------------------------------------------------- the plan (pure)
def group_weights(chars: dict[tuple[str, str, str], int], script_temperature: float, language_temperature: float,
                  source_temperature: float) -> dict[tuple[str, str, str], float]:
    """Weight per (source, lang, script) group, hierarchically: a script gets
    p ∝ C_script^(1/T_script); a language inside its script ∝ C^(1/T_lang); a
    source inside a (script, language) ∝ c^(1/T_source).  All temperatures 1 =
    proportional to size."""
    def tempered(sizes: dict, t: float) -> dict:
        w = {k: c ** (1.0 / t) for k, c in sizes.items() if c > 0}
        z = sum(w.values())
        return {k: v / z for k, v in w.items()}

    by_script: dict[str, int] = {}
    by_lang: dict[tuple[str, str], int] = {}
    for (src, lang, script), c in chars.items():
        by_script[script] = by_script.get(script, 0) + c
        by_lang[(script, lang)] = by_lang.get((script, lang), 0) + c
    p_script = tempered(by_script, script_temperature)
    out = {}
    for (src, lang, script), c in chars.items():
        if c <= 0:
            out[(src, lang, script)] = 0.0
            continue
        langs = tempered({ll: cc for (ss, ll), cc in by_lang.items() if ss == script}, language_temperature)
        srcs = tempered({s: cc for (s, ll, ss), cc in chars.items() if ll == lang and ss == script},
                        source_temperature)
        out[(src, lang, script)] = p_script[script] * langs[lang] * srcs[src]
    return out


def water_fill(weights: dict[Any, float], caps: dict[Any, float], budget: float) -> dict[Any, float]:
    """Targets t_g = min(cap_g, λ·w_g) with Σ t_g = budget (or every group at its cap).

    What a capped group cannot take goes to the others in proportion to their
    weights, so their ratios are kept."""
    targets = {g: 0.0 for g in weights}
    active = sorted(g for g, w in weights.items() if w > 0 and caps[g] > 0)
    remaining = float(budget)
    while active and remaining > 0:
        wsum = sum(weights[g] for g in active)
        lam = remaining / wsum
        full = [g for g in active if lam * weights[g] >= caps[g]]
        if not full:
            for g in active:
                targets[g] = lam * weights[g]
            break
        for g in full:
            targets[g] = float(caps[g])
            remaining -= caps[g]
        active = [g for g in active if g not in full]
    return targets


def group_key(group: tuple[str, str, str]) -> str:
    return "\t".join(group)


def plan_sample(stats: list[tuple[tuple[str, str, str], tuple[int, int]]], cfg: SampleConfig) -> dict[str, Any]:
    """From ((source, lang, script), (units, chars)) pairs to rates per variant and group."""
    chars = {tuple(g): c for g, (_, c) in stats}
    units = {tuple(g): u for g, (u, _) in stats}
    total = sum(chars.values())
    budget = min(cfg.max_chars, total)
    variants = {}
    for variant, (ts, tl, tsrc, rep) in {
        "balanced": (cfg.script_temperature, cfg.language_temperature, cfg.source_temperature, cfg.max_repeat),
        "proportional": (1.0, 1.0, 1.0, 1.0),
    }.items():
        w = group_weights(chars, ts, tl, tsrc)
        targets = water_fill(w, {g: chars[g] * rep for g in chars}, budget)
        variants[variant] = {
            "script_temperature": ts, "language_temperature": tl, "source_temperature": tsrc, "max_repeat": rep,
            "groups": {group_key(g): {"weight": w[g], "target_chars": targets[g],
                                      "rate": (targets[g] / chars[g]) if chars[g] else 0.0} for g in sorted(chars)},
        }
    return {
        "budget_chars": budget,
        "corpus_chars": total,
        "groups": {group_key(g): {"source": g[0], "lang": g[1], "script": g[2], "units": units[g], "chars": chars[g]}
                   for g in sorted(chars)},
        "variants": variants,
    }


def copies(rate: float, u: float) -> int:
    """How often a unit with uniform number ``u`` is written at ``rate``."""
    whole = math.floor(rate)
    return whole + (1 if u < rate - whole else 0)


def holdout_count(n_docs: int, cfg) -> int:
    return min(cfg.docs_per_language, math.floor(cfg.max_fraction * n_docs))


# ----------------------------------------------------------------- Beam job
def _heldout_schema():
    import pyarrow as pa

    return pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("source", pa.string(), nullable=False),
                      pa.field("lang", pa.string(), nullable=False), pa.field("script", pa.string(), nullable=False),
                      pa.field("text", pa.large_string(), nullable=False)])


def _light(doc: dict[str, Any], cfg: SampleConfig) -> dict[str, Any]:
    return {"id": doc["id"], "text": doc["text"], "source": doc["source"],
            "script": doc.get("script") or dominant_script(doc["text"]),
            "lang": language_key(doc, cfg.lang_metadata_keys, cfg.base_language)}


def holdout_key(doc: dict[str, Any]) -> str:
    """Documents are held out per language and script (``ja/Kana``, ``und/Latin``)."""
    return f"{doc['lang']}/{doc['script']}"


def _pick_holdout(kv, counts, cfg):
    lang, ranked = kv
    k = holdout_count(counts[lang], cfg)
    for _, doc_id in sorted(ranked)[:k]:
        yield doc_id, lang


def sum_pairs(values) -> tuple[int, int]:
    a = b = 0
    for x, y in values:
        a += x
        b += y
    return a, b


class _UnitsFn:
    """Units with their group: (source, document language, the unit's own script) —
    the Latin option lines of a Chinese man page count as Latin; lines without
    letters (digits, braces, rules) go with their document's script."""

    def __init__(self, cfg: SampleConfig):
        self._cfg = cfg
        self._progress = None

    def __call__(self, doc: dict[str, Any]):
        from tokenizer.cli import Progress

        if self._progress is None:
            self._progress = Progress("sample units (this worker)")
        cfg = self._cfg
        n = 0
        for i, unit in enumerate(split_units(doc["text"], cfg.unit, cfg.max_unit_bytes, cfg.min_unit_chars)):
            script = unit_script(unit)
            if script == "Zyyy":
                script = doc["script"]
            n += 1
            yield (doc["source"], doc["lang"], script), doc["id"], i, unit
        self._progress.add(documents=1, units=n)


def _select(unit, plan, seed: int):
    group, doc_id, i, text = unit
    u = unit_uniform(seed, doc_id, i)
    key = group_key(group)
    for variant in VARIANTS:
        n = copies(plan["variants"][variant]["groups"][key]["rate"], u)
        for c in range(n):
            yield variant, group, f"{doc_id}\0{i}\0{c}", text


class _WriteTextShardFn:
    """((variant, shard, n), [(sort_key, text)]) -> ``<variant>-i-of-n.txt``."""

    def __init__(self, out_dir: str):
        self._out = out_dir

    def __call__(self, kv):
        from pipelines.outputs import write_bytes

        (variant, idx, n), rows = kv
        rows = sorted(rows)
        data = "".join(text + "\n" for _, text in rows).encode("utf-8")
        rel = f"{variant}-{idx:05d}-of-{n:05d}.txt"
        write_bytes(join(self._out, rel), data)
        return {"variant": variant, "path": rel, "lines": len(rows), "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}


def build_sample_pipeline(p, corpus_dir: str, manifest: dict[str, Any], cfg: SampleConfig, out_dir: str) -> None:
    """Adds the sampling job to pipeline ``p`` (outputs under ``out_dir``)."""
    import apache_beam as beam
    from apache_beam.pvalue import AsDict, AsList, AsSingleton

    from filters.schema import stable_hash
    from pipelines.outputs import WriteShards, shard_of, write_json

    files = [join(corpus_dir, rel) for rel in text_shards(manifest)]
    seed = cfg.seed
    docs = (
        p
        | "Files" >> beam.Create(files)
        | "ReadText" >> beam.io.ReadAllFromParquet(columns=TEXT_COLUMNS)
        | "Light" >> beam.Map(_light, cfg)
    )

    # 1. hold-out documents per language
    lang_docs = docs | "LangOf" >> beam.Map(lambda d: (holdout_key(d), 1)) | "CountLang" >> beam.CombinePerKey(sum)
    held_ids = (
        docs
        | "RankDocs" >> beam.Map(lambda d: (holdout_key(d), (doc_rank(seed, d["id"]), d["id"])))
        | "SmallestRanks" >> beam.combiners.Top.SmallestPerKey(max(cfg.holdout.docs_per_language, 1))
        | "PickHoldout" >> beam.FlatMap(_pick_holdout, AsDict(lang_docs), cfg.holdout)
    )

    def split_held(doc, held):
        if doc["id"] in held:
            yield beam.pvalue.TaggedOutput("held", doc)
        else:
            yield doc

    parts = docs | "SplitHeld" >> beam.FlatMap(split_held, AsDict(held_ids)).with_outputs("held", main="train")
    train_docs, held = parts.train, parts.held
    cap = cfg.holdout.max_chars_per_doc
    held_rows = held | "HeldRows" >> beam.Map(lambda d: {
        "id": d["id"], "source": d["source"], "lang": d["lang"], "text": d["text"][:cap],
        "script": d["script"]})
    held_rows | "WriteHeldout" >> WriteShards(
        out_dir, "heldout", _heldout_schema(), prefix_fn=lambda r: "heldout",
        size_fn=lambda r: len(r["text"]) + 100, target=cfg.shard_target_bytes, compression="zstd",
        label="WriteHeldout")

    # 2. units and per-group sizes
    units = train_docs | "Units" >> beam.FlatMap(_UnitsFn(cfg))
    stats = (
        units
        | "UnitSize" >> beam.Map(lambda u: (u[0], (1, len(u[3]))))
        | "GroupSize" >> beam.CombinePerKey(sum_pairs)
    )
    # 3. the plan (a few numbers per group, computed once)
    plan = (
        stats
        | "StatsList" >> beam.combiners.ToList()
        | "Plan" >> beam.Map(lambda s: plan_sample(sorted(s), cfg))
    )
    # 4. selection
    selected = units | "Select" >> beam.FlatMap(_select, AsSingleton(plan), seed)
    realised = (
        selected
        | "SelSize" >> beam.Map(lambda e: ((e[0], e[1]), (1, len(e[3]))))
        | "SumSel" >> beam.CombinePerKey(sum_pairs)
    )
    # 5. text shards: n per variant from its realised size
    target = cfg.shard_target_bytes
    var_bytes = (
        selected
        | "SelBytes" >> beam.Map(lambda e: (e[0], len(e[3].encode("utf-8")) + 1))
        | "SumVarBytes" >> beam.CombinePerKey(sum)
        | "NShards" >> beam.MapTuple(lambda v, b: (v, max(1, math.ceil(b / target))))
    )

    def assign(e, ns):
        variant, _, key, text = e
        n = ns[variant]
        return (variant, shard_of(key, n), n), (stable_hash(key, size=8), text)

    shards = (
        selected
        | "AssignShard" >> beam.Map(assign, AsDict(var_bytes))
        | "GroupShard" >> beam.GroupByKey()
        | "WriteShard" >> beam.Map(_WriteTextShardFn(out_dir))
    )

    def summary(_, plan_v, realised_v, shards_v, held_v):
        sel: dict[str, dict[str, Any]] = {v: {} for v in VARIANTS}
        for (variant, group), (n, c) in sorted(realised_v):
            sel[variant][group_key(group)] = {"units": n, "chars": c}
        held_by_lang: dict[str, int] = {}
        for _, lang in held_v:
            held_by_lang[lang] = held_by_lang.get(lang, 0) + 1
        out = {
            "format": "corpusforge-tokenizer-sample/1",
            "corpus_manifest_hash": manifest["manifest_hash"],
            "config": cfg.model_dump(mode="json"),
            "plan": plan_v,
            "selected": {v: {"groups": sel[v], "units": sum(g["units"] for g in sel[v].values()),
                             "chars": sum(g["chars"] for g in sel[v].values())} for v in VARIANTS},
            "shards": {v: sorted((s for s in shards_v if s["variant"] == v), key=lambda s: s["path"]) for v in VARIANTS},
            "heldout_docs": dict(sorted(held_by_lang.items())),
        }
        write_json(join(out_dir, "sample_stats.json"), out)
        yield out["selected"]["balanced"]["chars"]

    (
        p
        | "SummaryTrigger" >> beam.Create([None])
        | "WriteSummary" >> beam.FlatMap(summary, AsSingleton(plan), AsList(realised), AsList(shards), AsList(held_ids))
    )


def clear_sample(out_dir: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    res = FileSystems.match([join(out_dir, "*.txt"), join(out_dir, "heldout"), join(out_dir, "sample_stats.json")])
    paths = [m.path for r in res for m in r.metadata_list]
    if paths:
        FileSystems.delete(paths)


def run_sample(corpus_dir: str, out_dir: str, cfg: TokenizerConfig, beam_flags: list[str] | None = None) -> dict[str, Any]:
    """Runs the sampling job; returns ``sample_stats.json``."""
    import os

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from tokenizer.corpus import read_json

    ensure_importable()
    manifest = load_corpus_manifest(corpus_dir)
    if "://" not in out_dir:
        os.makedirs(out_dir, exist_ok=True)
    clear_sample(out_dir)
    t0 = time.time()
    sc = cfg.sample
    log.info("sampling %s (manifest %s): unit=%s temperatures script %g / language %g / source %g, budget <= %s chars",
             corpus_dir, manifest["manifest_hash"], sc.unit, sc.script_temperature, sc.language_temperature,
             sc.source_temperature, f"{sc.max_chars:,}")
    with beam.Pipeline(options=PipelineOptions(beam_flags or [])) as p:
        build_sample_pipeline(p, corpus_dir, manifest, cfg.sample, out_dir)
    stats = read_json(join(out_dir, "sample_stats.json"))
    log.info("sample done in %.1fs: balanced %s chars in %s units, proportional %s chars; %d documents held out",
             time.time() - t0, f"{stats['selected']['balanced']['chars']:,}", f"{stats['selected']['balanced']['units']:,}",
             f"{stats['selected']['proportional']['chars']:,}", sum(stats["heldout_docs"].values()))
    return stats


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tokenizer.sample",
                                description="Balanced training sample for the tokenizer (Apache Beam). "
                                            "Unknown --flags go to Beam.")
    p.add_argument("--corpus", required=True, metavar="DIR", help="corpus directory (text/*.parquet + manifest.json)")
    p.add_argument("--output", required=True, metavar="DIR", help="sample directory")
    p.add_argument("--config", default=None, metavar="FILE", help="tokenizer config (default configs/tokenizer.yaml)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set sample.script_temperature=3")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_known_args(argv)


def run(argv=None):
    args, beam_flags = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)
    check_beam_flags(beam_flags)
    cfg = load_config(args.config, args.overrides)
    stats = run_sample(args.corpus, args.output.rstrip("/"), cfg, beam_flags)
    print(json.dumps({v: stats["selected"][v] | {"groups": len(stats["selected"][v]["groups"])} for v in VARIANTS}))
    return stats


def main(argv=None) -> int:
    return main_wrapper(run, "tokenizer.sample", argv)


if __name__ == "__main__":
    from tokenizer.sample import main as _main  # pickle functions by module, not __main__

    sys.exit(_main())
