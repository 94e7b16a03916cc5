"""Deterministic outputs: Parquet shards, dropped rows, dead letters, samples,
manifest, ledger.

Determinism: a record's shard is ``hash(id) mod n`` with ``n`` derived from the
total size (a combined global count, not a worker-local one), rows inside a
shard are sorted, and JSON is written with sorted keys and no timestamps — so
the bytes do not depend on the runner or the number of workers.
"""
from __future__ import annotations

import hashlib
import json
import math
import posixpath
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from filters.schema import (
    DEAD_LETTER_SCHEMA,
    DROPPED_SAMPLE_SCHEMA,
    DROPPED_SCHEMA,
    TEXT_SCHEMA,
    stable_hash,
    to_table,
)
from filters.stats import LENGTH_BINS, estimate_tokens, length_bin


def join(*parts: str) -> str:
    return FileSystems.join(*parts) if "://" in parts[0] else posixpath.join(*parts)


def shard_of(key: str, n: int) -> int:
    return int(stable_hash(key, size=8), 16) % max(n, 1)


def write_bytes(path: str, data: bytes) -> None:
    f = FileSystems.create(path)
    try:
        f.write(data)
    finally:
        f.close()


def write_json(path: str, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema, compression: str) -> bytes:
    table = to_table(rows, schema)
    buf = pa.BufferOutputStream()
    pq.write_table(
        table,
        buf,
        compression=None if compression == "none" else compression,
        row_group_size=8192,
        write_statistics=True,
    )
    return buf.getvalue().to_pybytes()


class _WriteShardFn(beam.DoFn):
    def __init__(self, out_dir: str, subdir: str, schema: pa.Schema, compression: str, sort_key: str):
        self._out = out_dir
        self._subdir = subdir
        self._schema = schema
        self._compression = compression
        self._sort_key = sort_key

    def process(self, kv):
        (prefix, idx, n), rows = kv
        rows = sorted(rows, key=lambda r: (r[self._sort_key], r.get("stage") or "", r.get("source") or ""))
        data = parquet_bytes(rows, self._schema, self._compression)
        rel = posixpath.join(self._subdir, f"{prefix}-{idx:05d}-of-{n:05d}.parquet")
        write_bytes(join(self._out, rel), data)
        Metrics.counter("write", f"{self._subdir}_files").inc()
        yield {"path": rel, "prefix": prefix, "rows": len(rows), "bytes": len(data),
               "sha256": hashlib.sha256(data).hexdigest()}


class WriteShards(beam.PTransform):
    """Rows -> ``subdir/<prefix>-<i>-of-<n>.parquet``; ``n`` per prefix from a global
    size so each shard holds about ``target`` (bytes, or rows when ``size_fn`` is None)."""

    def __init__(self, out_dir: str, subdir: str, schema: pa.Schema, *, prefix_fn, size_fn, target: int,
                 compression: str, sort_key: str = "id", label: str | None = None):
        super().__init__(label or f"Write[{subdir}]")
        self._out, self._subdir, self._schema = out_dir, subdir, schema
        self._prefix_fn, self._size_fn, self._target = prefix_fn, size_fn, target
        self._compression, self._sort_key = compression, sort_key

    def expand(self, rows):
        prefix_fn, size_fn, target = self._prefix_fn, self._size_fn, self._target
        sizes = (
            rows
            | "Size" >> beam.Map(lambda r: (prefix_fn(r), size_fn(r)))
            | "SumSize" >> beam.CombinePerKey(sum)
        )
        n_shards = beam.pvalue.AsDict(sizes | "NShards" >> beam.MapTuple(lambda k, s: (k, max(1, math.ceil(s / target)))))

        def assign(r, ns):
            p = prefix_fn(r)
            n = ns[p]
            return (p, shard_of(r[self._sort_key], n), n), r

        return (
            rows
            | "Assign" >> beam.Map(assign, n_shards)
            | "GroupShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShardFn(self._out, self._subdir, self._schema, self._compression, self._sort_key))
        )


def strip_private(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


# ----------------------------------------------------------------- statistics
def doc_stats(doc: dict[str, Any]) -> tuple[tuple[str, str], tuple[int, int, int, int]]:
    text = doc["text"]
    nbytes = len(text.encode("utf-8", "surrogatepass"))
    return (doc["source"], doc.get("lang") or "und"), (1, nbytes, len(text), estimate_tokens(text))


def sum_tuples(values):
    acc = None
    for v in values:
        acc = list(v) if acc is None else [a + b for a, b in zip(acc, v)]
    return tuple(acc) if acc is not None else (0, 0, 0, 0)


class CorpusStats(beam.PTransform):
    """Per (source, lang) counts and per-source length histograms of kept docs."""

    def expand(self, docs):
        by_lang = docs | "StatsByLang" >> beam.Map(doc_stats) | "SumByLang" >> beam.CombinePerKey(sum_tuples)
        hist = (
            docs
            | "LenBin" >> beam.Map(lambda d: ((d["source"], length_bin(len(d["text"]))), 1))
            | "SumBins" >> beam.CombinePerKey(sum)
        )
        return by_lang, hist


# ----------------------------------------------------------------- ledger
def ledger_key_counts(dropped, docs_in, kept, events):
    """Flatten everything the ledger needs into ((kind, source, stage, name), n)."""
    a = dropped | "LedgerDropped" >> beam.Map(lambda r: (("dropped", r["source"], r["stage"], r["reason"]), 1))
    b = kept | "LedgerKept" >> beam.Map(lambda d: (("kept", d["source"], "", ""), 1))
    c = docs_in | "LedgerInput" >> beam.Map(lambda s: (("input", s, "", ""), 1))
    e = events | "LedgerEvents" >> beam.MapTuple(lambda k, n: (("event", k[0], k[1], k[2]), n))
    return (a, b, c, e) | "LedgerAll" >> beam.Flatten() | "LedgerSum" >> beam.CombinePerKey(sum)


def build_ledger(counts: list[tuple[tuple[str, str, str, str], int]], stage_order: list[str],
                 media_stages: tuple[str, ...] | list[str] = (),
                 source_kinds: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Per-source ledger.  ``after_stage`` walks the stages a source goes through: media
    stages only for sources with media files (``source_kinds[s]`` holds "text" and/or
    "media"), text stages only for sources with text files; a stage that dropped
    something from the source is always listed; sources not in ``source_kinds``: all."""
    sources: dict[str, dict[str, Any]] = {}
    media_stages = set(media_stages)
    source_kinds = source_kinds or {}

    def src(s):
        return sources.setdefault(s, {"input": 0, "kept": 0, "dropped": {}, "dropped_total": 0, "modified": {}})

    for (kind, s, stage, name), n in counts:
        if kind == "input":
            src(s)["input"] += n
        elif kind == "kept":
            src(s)["kept"] += n
        elif kind == "dropped":
            d = src(s)
            d["dropped"].setdefault(stage, {})
            d["dropped"][stage][name] = d["dropped"][stage].get(name, 0) + n
            d["dropped_total"] += n
        elif kind == "event":
            src(s)["modified"].setdefault(stage, {})[name] = src(s)["modified"].get(stage, {}).get(name, 0) + n
    problems = []
    for s, d in sorted(sources.items()):
        d["balanced"] = d["input"] == d["kept"] + d["dropped_total"]
        if not d["balanced"]:
            problems.append(f"{s}: input {d['input']} != kept {d['kept']} + dropped {d['dropped_total']}")
        # survivors after each stage, in pipeline order, for the report
        left = d["input"]
        after = []
        kinds = set(source_kinds.get(s, ("text", "media")))
        for st in stage_order:
            if not (st == "read" or st in d["dropped"] or ("media" if st in media_stages else "text") in kinds):
                continue
            left -= sum(d["dropped"].get(st, {}).values())
            after.append([st, left])
        d["after_stage"] = after
    totals = {
        "input": sum(d["input"] for d in sources.values()),
        "kept": sum(d["kept"] for d in sources.values()),
        "dropped": sum(d["dropped_total"] for d in sources.values()),
    }
    return {"sources": dict(sorted(sources.items())), "totals": totals, "stage_order": stage_order,
            "balanced": not problems, "problems": problems}


class LedgerUnbalanced(RuntimeError):
    pass


class _WriteSummaryFn(beam.DoFn):
    """Writes ledger.json, manifest.json and stats.json from the small aggregates."""

    def __init__(self, out_dir: str, stage_order: list[str], manifest_base: dict[str, Any],
                 media_stages: list[str] | None = None, source_kinds: dict[str, list[str]] | None = None):
        self._out = out_dir
        self._stage_order = stage_order
        self._media_stages = media_stages or []
        self._source_kinds = source_kinds or {}
        self._base = manifest_base

    def process(self, _, ledger_counts, by_lang, hist, shards, dropped_shards, dead_shards, media=()):
        ledger = build_ledger(ledger_counts, self._stage_order, self._media_stages, self._source_kinds)
        write_json(join(self._out, "ledger.json"), ledger)
        srcs: dict[str, Any] = {}
        for (s, lang), (docs, nbytes, chars, toks) in sorted(by_lang):
            e = srcs.setdefault(s, {"documents": 0, "bytes": 0, "chars": 0, "est_tokens": 0, "languages": {}, "shards": []})
            e["documents"] += docs
            e["bytes"] += nbytes
            e["chars"] += chars
            e["est_tokens"] += toks
            e["languages"][lang] = {"documents": docs, "bytes": nbytes, "chars": chars, "est_tokens": toks}
        for sh in sorted(shards, key=lambda x: x["path"]):
            srcs.setdefault(sh["prefix"], {"documents": 0, "bytes": 0, "chars": 0, "est_tokens": 0, "languages": {}, "shards": []})
            srcs[sh["prefix"]]["shards"].append({k: sh[k] for k in ("path", "rows", "bytes", "sha256")})
        totals = {k: sum(v[k] for v in srcs.values()) for k in ("documents", "bytes", "chars", "est_tokens")}
        manifest = {
            **self._base,
            "sources": srcs,
            "totals": totals,
            "dropped_files": sorted(x["path"] for x in dropped_shards),
            "dead_letter_files": sorted(x["path"] for x in dead_shards),
            "ledger_balanced": ledger["balanced"],
            # per source: modifications, e.g. PII redactions per type ("pii.email")
            "modified": {s: d["modified"] for s, d in ledger["sources"].items() if d["modified"]},
        }
        for m in media:  # pipelines/media.py: per-modality samples, token costs, shards
            manifest.update(m)
        manifest["manifest_hash"] = stable_hash(json.dumps(manifest, sort_keys=True), size=16)
        write_json(join(self._out, "manifest.json"), manifest)
        stats = {
            "length_histogram": {
                "bin_upper_chars": list(LENGTH_BINS),
                "by_source": {},
            }
        }
        for (s, b), n in sorted(hist):
            stats["length_histogram"]["by_source"].setdefault(s, {})[str(b)] = n
        write_json(join(self._out, "stats.json"), stats)
        if not ledger["balanced"]:
            raise LedgerUnbalanced("ledger does not balance: " + "; ".join(ledger["problems"]))
        yield ledger["totals"]
