"""Build a clean, deduplicated corpus with Apache Beam.

    python pipelines/build_corpus.py --input web=data/sample/web/*.warc.gz \\
        --input books=data/sample/books/** --output out/corpus [--config FILE] \\
        [--set exact_dedup.enabled=false] [Beam flags: --runner, --direct_num_workers, ...]

Every input record ends in ``DIR/text`` (kept) or ``DIR/dropped`` (with stage and
reason; malformed input also in ``DIR/dead_letter``); ``ledger.json`` proves
``input = kept + dropped`` per source and the job fails if it does not balance.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo importable (also for workers)
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, _root)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH")) if p)

log = logging.getLogger("build_corpus")
# Beam's GCP module warns on import that the optional apitools client is absent;
# it is irrelevant off Google Cloud and would be the first line every user sees.
logging.getLogger().addFilter(lambda r: "apitools not found" not in r.getMessage())

OUTPUT_ENTRIES = ("text", "dropped", "dead_letter", "samples", "media", "report", "stats.json",
                  "manifest.json", "ledger.json", "report.html", "report.md", "contamination.json",
                  "filters.json", "calibration", "near_dup", "boilerplate")


class UsageError(ValueError):
    """A bad flag, a missing file or a bad config: printed as one line, exit 2."""


# ----------------------------------------------------------------------- arguments
def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="build_corpus.py",
        description="Build a clean, deduplicated corpus (Apache Beam). Unknown --flags go to Beam.",
    )
    p.add_argument("--input", action="append", default=[], metavar="[NAME=]GLOB",
                   help="input files (repeatable); NAME is the source name, default: derived from the path")
    p.add_argument("--output", required=True, metavar="DIR", help="output directory (local, gs://, s3://)")
    p.add_argument("--config", default=None, metavar="FILE", help="corpus config YAML (default configs/corpus.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value, e.g. --set output.shard_target_bytes=1000000")
    p.add_argument("--eval-set", action="append", default=[], metavar="NAME=PATH", dest="eval_sets",
                   help="eval set to decontaminate against (repeatable): a local JSONL/JSON/Parquet/CSV file, "
                        "directory or glob, or tfds:NAME for a locally prepared TFDS dataset")
    p.add_argument("--dry-run", action="store_true",
                   help="score and decide, but keep every document (calibration: see the report)")
    p.add_argument("--no-report", action="store_true", help="skip report.html / report.md")
    p.add_argument("--media-root", default=None, metavar="DIR",
                   help="base of relative paths in media manifests (default: the manifest's folder)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_known_args(argv)


def check_beam_flags(flags: list[str]) -> None:
    """Beam silently discards flags it does not know; we refuse them instead."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in PipelineOptions.__subclasses__():
        cls._add_argparse_args(parser)  # noqa: SLF001 - same discovery Beam itself uses
        for sub in cls.__subclasses__():
            sub._add_argparse_args(parser)  # noqa: SLF001
    _, unknown = parser.parse_known_args(flags)
    if unknown:
        raise UsageError(f"unknown flag(s): {' '.join(unknown)} (see --help; Beam flags like --runner pass through)")


def source_name_from_glob(glob: str) -> str:
    g = glob.rstrip("/")
    wild = re.search(r"[*?\[]", g)
    if wild:
        head = g[: wild.start()]
        name = os.path.basename(head.rstrip("/")) if head.endswith("/") else os.path.basename(os.path.dirname(head))
    else:
        name = os.path.basename(g)
        while True:
            stem, ext = os.path.splitext(name)
            if not ext or not stem:
                break
            name = stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "input"
    return name


def glob_base(glob: str) -> str:
    wild = re.search(r"[*?\[]", glob)
    head = glob[: wild.start()] if wild else glob
    return head if head.endswith("/") else os.path.dirname(head) + "/"


def resolve_sources(cfg, inputs: list[str]):
    """``--input`` flags (when given) replace the config's sources; a config source
    with the same name lends its reader settings."""
    from pipelines.config import SourceConfig

    if not inputs:
        if not cfg.sources:
            raise UsageError("no inputs: give --input [NAME=]GLOB or list sources in the config")
        return list(cfg.sources)
    by_name = {s.name: s for s in cfg.sources}
    merged: dict[str, SourceConfig] = {}
    for item in inputs:
        if "=" in item and not re.match(r"^[a-z][a-z0-9+.-]*://", item.split("=", 1)[0]):
            name, glob = item.split("=", 1)
        else:
            name, glob = source_name_from_glob(item), item
        if not glob:
            raise UsageError(f"--input {item!r}: empty path")
        if name in merged:
            merged[name].input.append(glob)
            continue
        base = by_name.get(name)
        try:
            merged[name] = (base.model_copy(update={"input": [glob]}) if base else SourceConfig(name=name, input=[glob]))
        except Exception as e:  # pydantic validation of the name
            raise UsageError(f"--input {item!r}: {str(e).splitlines()[-2].strip() if len(str(e).splitlines()) > 1 else e}") from None
    return list(merged.values())


def plan_files(sources, read_cfg) -> list[tuple[str, str, str, str]]:
    """Match every glob now (fail fast on missing inputs): (path, reader, source, origin)."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines.readers import detect_reader

    files = []
    for s in sources:
        for g in s.input:
            pattern = g
            if "://" not in g and os.path.isdir(g):
                pattern = g.rstrip("/") + "/**"
            try:
                matched = FileSystems.match([pattern])[0].metadata_list
            except Exception as e:  # noqa: BLE001
                raise UsageError(f"--input {s.name}={g}: cannot list files ({type(e).__name__}: {e})") from None
            paths = sorted(m.path for m in matched if not m.path.endswith("/"))
            paths = [p for p in paths if "://" in p or os.path.isfile(p)]
            if not paths:
                raise UsageError(f"--input {s.name}={g}: no files match")
            base = glob_base(pattern)
            for path in paths:
                reader = s.reader if s.reader != "auto" else (detect_reader(path, read_cfg.code_extensions, read_cfg.text_extensions) or "unknown")
                from pipelines.readers import relative_origin

                files.append((path, reader, s.name, relative_origin(path, base)))
    return files


def clear_outputs(out: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    from pipelines.outputs import join

    for entry in OUTPUT_ENTRIES:
        path = join(out, entry)
        try:
            if FileSystems.exists(path):
                FileSystems.delete([path])
        except Exception as e:  # noqa: BLE001
            raise UsageError(f"--output {out}: cannot clear old output {path} ({e})") from None


# ----------------------------------------------------------------------- pipeline
def build_pipeline(p, cfg, sources, files, out: str, *, dry_run: bool = False) -> list[str]:
    """Adds the corpus job to pipeline ``p``; returns the stage order."""
    import apache_beam as beam

    from pipelines import operators as ops_mod
    from pipelines import stages
    from pipelines.outputs import (
        DEAD_LETTER_SCHEMA,
        DROPPED_SAMPLE_SCHEMA,
        DROPPED_SCHEMA,
        TEXT_SCHEMA,
        CorpusStats,
        WriteShards,
        _WriteSummaryFn,
        ledger_key_counts,
        strip_private,
    )
    from filters.schema import stable_hash

    out_cfg = cfg.output
    src_map = {s.name: s for s in sources}
    source_rank = {s.name: i for i, s in enumerate(sources)}

    from pipelines import media as media_mod

    text_files, media_files = media_mod.split_files(files)
    source_kinds: dict[str, list[str]] = {}       # the ledger's per-source stage chains
    for kind, fs in (("text", text_files), ("media", media_files)):
        for f in fs:
            if kind not in source_kinds.setdefault(f[2], []):
                source_kinds[f[2]].append(kind)
    docs, dead, read_dropped = p | "Read" >> stages.ReadSources(text_files, src_map, cfg.read)
    inputs = (
        (docs | "InDocs" >> beam.Map(lambda d: d["source"]),
         read_dropped | "InDropped" >> beam.Map(lambda r: r["source"]))
        | "InAll" >> beam.Flatten()
    )
    dropped_parts = [read_dropped]
    event_parts = []
    stage_order = ["read"]

    op_stages = ops_mod.operator_stages(cfg)
    if op_stages:
        res = docs | stages.ApplyOperators(functools.partial(ops_mod.build_operators, cfg), dry_run=dry_run)
        docs = res.kept
        op_dropped = res.dropped
        event_parts.append(res.events)
        stage_order += [s for s in op_stages if s not in stage_order]
        # issue 3: per-source top-percent quality keep, filter stats, dry-run calibration
        from pipelines import filter_stats

        if cfg.stages.quality and cfg.quality.classifier.keep_top_percent:
            top = docs | filter_stats.KeepTopPercent(cfg.quality.classifier.keep_top_percent, dry_run=dry_run)
            docs = top.kept
            op_dropped = (op_dropped, top.dropped) | "OpAndTopDropped" >> beam.Flatten()
        (docs, op_dropped) | filter_stats.FilterStats(cfg, out, dry_run)
        if not dry_run:  # dry-run: would-be drops go to DIR/calibration/, not to the ledger
            dropped_parts.append(op_dropped)

    from pipelines import decontam

    if decontam.stage_enabled(cfg):
        res = docs | decontam.Decontaminate(cfg.decontamination, out, dry_run=dry_run)
        docs = res.kept
        dropped_parts.append(res.dropped)
        event_parts.append(res.events)
        stage_order.append("decontamination")

    if cfg.stages.exact_dedup and cfg.exact_dedup.enabled:
        res = docs | stages.ExactDedup(cfg.exact_dedup.survivor, source_rank)
        docs = res.kept
        dropped_parts.append(res.dropped)
        event_parts.append(res.events)
        stage_order.append("exact_dedup")

    media = None
    if media_files:  # images, audio, video, interleaved documents: pipelines/media.py
        media = media_mod.add_media(p, cfg, sources, media_files, out, dry_run=dry_run,
                                    ops_factory=functools.partial(ops_mod.build_operators, cfg))
        inputs = (inputs, media.inputs) | "InWithMedia" >> beam.Flatten()
        dropped_parts.append(media.dropped)
        event_parts.append(media.events)
        dead = (dead, media.dead) | "DeadWithMedia" >> beam.Flatten()
        stage_order += media.stage_order
    if cfg.stages.near_dup and cfg.near_dup.enabled:
        from pipelines.neardup import NearDup

        res = docs | NearDup(cfg.near_dup, source_rank, report_dir=out, compression=out_cfg.compression)
        docs = res.kept
        dropped_parts.append(res.dropped)
        event_parts.append(res.events)
        stage_order.append("near_dup")

    if cfg.stages.boilerplate and cfg.boilerplate.enabled:
        from pipelines.neardup import BoilerplateLines

        res = docs | BoilerplateLines(cfg.boilerplate, report_dir=out)
        docs = res.kept
        dropped_parts.append(res.dropped)
        event_parts.append(res.events)
        stage_order.append("boilerplate")

    dropped = tuple(dropped_parts) | "AllDropped" >> beam.Flatten()
    events = tuple(event_parts) | "AllEvents" >> beam.Flatten() if event_parts else (
        p | "NoEvents" >> beam.Create([]))

    # ---- outputs
    from apache_beam.metrics import Metrics

    def count_kept(d):
        Metrics.counter("ledger", f"{d['source']}|kept").inc()
        return d

    def count_dropped(r):
        Metrics.counter("ledger", f"{r['source']}|dropped").inc()
        return r

    kept = docs | "CountKept" >> beam.Map(count_kept)
    dropped = dropped | "CountDropped" >> beam.Map(count_dropped)

    text_bytes = lambda d: len(d["text"].encode("utf-8", "surrogatepass")) + 200  # noqa: E731
    if dry_run:
        shards = p | "NoShards" >> beam.Create([])
    else:
        shards = kept | "WriteText" >> WriteShards(
            out, "text", TEXT_SCHEMA, prefix_fn=lambda d: d["source"], size_fn=text_bytes,
            target=out_cfg.shard_target_bytes, compression=out_cfg.compression, label="WriteText")
    dropped_rows = dropped | "StripPrivate" >> beam.Map(strip_private)
    dropped_shards = dropped_rows | "WriteDropped" >> WriteShards(
        out, "dropped", DROPPED_SCHEMA, prefix_fn=lambda r: "dropped", size_fn=lambda r: 1,
        target=1_000_000, compression=out_cfg.compression, label="WriteDropped")
    dead_shards = dead | "WriteDead" >> WriteShards(
        out, "dead_letter", DEAD_LETTER_SCHEMA, prefix_fn=lambda r: "dead_letter",
        size_fn=lambda r: len(r["raw"] or b"") + 200, target=out_cfg.shard_target_bytes,
        compression=out_cfg.compression, label="WriteDeadLetters")

    # ---- samples of dropped documents, per (stage, reason): the k smallest id hashes
    k, nchar = out_cfg.samples_per_reason, out_cfg.sample_chars
    samples = (
        dropped
        | "SampleKey" >> beam.Map(lambda r: ((r["stage"], r["reason"]), (stable_hash(r["id"], size=8), r)))
        | "SampleTop" >> beam.combiners.Top.PerKey(k, key=lambda x: x[0], reverse=True)
        | "SampleRows" >> beam.FlatMap(lambda kv: [
            {"id": r["id"], "source": r["source"], "stage": r["stage"], "reason": r["reason"],
             "survivor_id": r.get("survivor_id"), "score": r.get("score"),
             "text": (r.get("_text") or "")[:nchar]} for _, r in kv[1]])
    )
    samples | "WriteSamples" >> WriteShards(
        out, "samples", DROPPED_SAMPLE_SCHEMA, prefix_fn=lambda r: "dropped_samples", size_fn=lambda r: 1,
        target=1_000_000, compression=out_cfg.compression, label="WriteSamples")

    # ---- small aggregates -> ledger.json, manifest.json, stats.json
    by_lang, hist = kept | "Stats" >> CorpusStats()
    kept_all = (kept, media.kept) | "KeptWithMedia" >> beam.Flatten() if media else kept
    ledger_counts = ledger_key_counts(dropped, inputs, kept_all, events)
    manifest_base = {
        "format": "corpus-manifest/1",
        "config_hash": cfg.fingerprint(),
        "sources_order": [s.name for s in sources],
        "stage_order": stage_order,
        "dry_run": dry_run,
        "inputs": {s.name: {"globs": s.input, "files": sum(1 for f in files if f[2] == s.name)} for s in sources},
    }
    from apache_beam.pvalue import AsList

    (
        p
        | "SummaryTrigger" >> beam.Create([None])
        | "WriteSummary" >> beam.ParDo(
            _WriteSummaryFn(out, stage_order, manifest_base, media.stage_order if media else [], source_kinds),
            AsList(ledger_counts), AsList(by_lang), AsList(hist), AsList(shards), AsList(dropped_shards),
            AsList(dead_shards), *([AsList(media.summary)] if media else []))
    )
    return stage_order


# ----------------------------------------------------------------------- driver
def _metrics_ledger(result) -> dict[str, dict[str, int]] | None:
    try:
        from apache_beam.metrics.metric import MetricsFilter

        res = result.metrics().query(MetricsFilter().with_namespace("ledger"))
    except Exception:  # noqa: BLE001 - some runners do not expose metrics
        return None
    out: dict[str, dict[str, int]] = {}
    for c in res.get("counters", []):
        src, kind = c.key.metric.name.rsplit("|", 1)
        val = c.committed if c.committed is not None else c.attempted
        out.setdefault(src, {}).setdefault(kind, 0)
        out[src][kind] += int(val or 0)
    return out or None


def check_against_metrics(ledger: dict[str, Any], metrics: dict[str, dict[str, int]] | None) -> list[str]:
    if not metrics:
        return []
    problems = []
    for src, d in ledger["sources"].items():
        m = metrics.get(src, {})
        for kind, want in (("input", d["input"]), ("kept", d["kept"]), ("dropped", d["dropped_total"])):
            if kind in m and m[kind] != want:
                problems.append(f"{src}: Beam metric {kind}={m[kind]} but ledger {kind}={want}")
    return problems


def run(argv: list[str] | None = None) -> dict[str, Any]:
    import json

    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.config import ConfigError, load_config
    from pipelines.outputs import join

    args, beam_flags = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("apache_beam", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not args.verbose else logging.INFO)
    try:
        check_beam_flags(beam_flags)
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if args.media_root:
        if "://" not in args.media_root and not os.path.isdir(args.media_root):
            raise UsageError(f"--media-root {args.media_root}: not a directory")
        cfg.media.media_root = args.media_root
    sources = resolve_sources(cfg, args.input)
    files = plan_files(sources, cfg.read)
    from pipelines import decontam

    try:  # eval sets: merge the flags, then load and index them now (fail fast)
        cfg = cfg.model_copy(update={"decontamination": decontam.apply_eval_set_flags(cfg.decontamination, args.eval_sets)})
        if decontam.stage_enabled(cfg):
            decontam.prepare_index(cfg.decontamination)
    except (ValueError, decontam.EvalSetError) as e:
        raise UsageError(str(e)) from None
    out = args.output.rstrip("/")
    log.info("plan: %d sources, %d files -> %s (config %s)", len(sources), len(files), out, cfg.fingerprint())
    for s in sources:
        log.info("  source %-16s %4d files  %s", s.name, sum(1 for f in files if f[2] == s.name), ", ".join(s.input))
    clear_outputs(out)
    if "://" not in out:
        os.makedirs(out, exist_ok=True)

    t0 = time.time()
    options = PipelineOptions(beam_flags)
    with beam.Pipeline(options=options) as p:
        stage_order = build_pipeline(p, cfg, sources, files, out, dry_run=args.dry_run)
    result = p.result
    elapsed = time.time() - t0

    with FileSystems.open(join(out, "ledger.json")) as f:
        ledger = json.loads(f.read())
    problems = list(ledger["problems"]) + check_against_metrics(ledger, _metrics_ledger(result))
    if problems:
        raise RuntimeError("ledger does not balance: " + "; ".join(problems))

    log.info("done in %.1fs — per stage (documents left after each):", elapsed)
    for src, d in ledger["sources"].items():
        chain = " → ".join(f"{st} {n}" for st, n in d["after_stage"])
        log.info("  %-16s input %d → %s → kept %d", src, d["input"], chain, d["kept"])
    report_path = None
    if not args.no_report:
        from pipelines import report

        report_path = report.write_report(out)
    summary = {"output": out, "seconds": round(elapsed, 2), "stage_order": stage_order, "totals": ledger["totals"],
               "report": report_path}
    print(f"\ncorpus: {join(out, 'text')}/*.parquet  ({ledger['totals']['kept']} kept of {ledger['totals']['input']} input)")
    print(f"manifest: {join(out, 'manifest.json')}")
    print(f"ledger: {join(out, 'ledger.json')}  (balanced)")
    print(f"dropped: {join(out, 'dropped')}/  dead letters: {join(out, 'dead_letter')}/")
    if report_path:
        print(f"report: {report_path}")
    return summary


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except UsageError as e:
        print(f"build_corpus.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from pipelines.build_corpus import main as _main  # pickle functions by module, not __main__

    sys.exit(_main())
