"""Beam wiring for the corpus stages.  No document logic lives here: the
operators come from ``filters/``; this module only turns them into transforms.

Stage contract (every stage, including those added by later issues)::

    result = docs | SomeStage(...)        # a PTransform over text-record dicts
    result.kept      PCollection[dict]    # records that go on
    result.dropped   PCollection[dict]    # DROPPED_SCHEMA rows (+ "_text" for samples)
    result.events    PCollection[((source, stage, name), int)] | None
                                          # counts for the ledger: modifications,
                                          # redactions, clusters ...

``build_corpus`` chains stages, flattens every ``dropped`` and ``events`` and
writes the ledger from them, so a new stage only has to honour this contract to
be accounted for.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from filters.base import DocFilter, DocTransform, run_filter, run_transform
from filters.schema import dropped_row

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    kept: Any
    dropped: Any
    events: Any = None


def reason_code(reason: str) -> str:
    """Categorical part of a reason for the ledger: ``"invalid_utf8 at byte 5"`` ->
    ``"invalid_utf8"``; ``"gopher_quality:mean_word_length"`` stays whole."""
    return reason.split(None, 1)[0].rstrip(":") if reason else "unknown"


def with_text(row: dict[str, Any], doc: dict[str, Any] | None) -> dict[str, Any]:
    """Attach the text for the dropped-sample report (never written to dropped/)."""
    if doc is not None:
        row["_text"] = doc.get("text")
        row["_lang"] = doc.get("lang")       # removals per language (report_filters)
        row["_scores"] = doc.get("scores")   # score histograms include dropped docs
    return row


# ------------------------------------------------------------------ read
class ReadFilesFn(beam.DoFn):
    """(path, reader, source_name, origin) -> docs; tagged 'dead' and 'drop'."""

    def __init__(self, sources: dict[str, Any], read_cfg: Any):
        self._sources = sources
        self._read_cfg = read_cfg

    def setup(self):
        from pipelines import readers

        self._readers = readers
        self._n_files = Metrics.counter("read", "files")

    def process(self, item):
        path, reader, source, origin = item
        src_cfg = self._sources[source]
        self._n_files.inc()
        n = 0
        for kind, payload in self._readers.read_file(path, reader, source, src_cfg, self._read_cfg, origin):
            n += 1
            Metrics.counter("ledger", f"{source}|input").inc()
            if kind == "doc":
                yield payload
            elif kind == "dead":
                yield TaggedOutput("dead", payload)
            else:
                yield TaggedOutput("drop", payload)
        log.info("read %s (%s): %d records", origin, source, n)


class ReadSources(beam.PTransform):
    """Reads the matched files of all sources; returns docs, dead letters and drops."""

    def __init__(self, files: list[tuple[str, str, str, str]], sources: dict[str, Any], read_cfg: Any):
        super().__init__()
        self._files = files
        self._sources = sources
        self._read_cfg = read_cfg

    def expand(self, pbegin):
        res = (
            pbegin
            | "Files" >> beam.Create(self._files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(ReadFilesFn(self._sources, self._read_cfg)).with_outputs("dead", "drop", main="doc")
        )
        dead_as_dropped = res.dead | "DeadToDropped" >> beam.Map(
            lambda d: {
                **dropped_row(
                    {"id": d["id"], "source": d["source"], "content_hash": None},
                    d["stage"],
                    reason_code(d["reason"]),
                    detail={"origin": d["origin"], "reason": d["reason"]},
                ),
            }
        )
        dropped = (dead_as_dropped, res.drop) | "ReadDropped" >> beam.Flatten()
        # Spread documents over workers: one big file must not pin a stage to one worker.
        docs = res.doc | "SpreadDocs" >> beam.Reshuffle()
        return docs, res.dead, dropped


# ------------------------------------------------------------------ per-document operators
class ApplyOperatorsFn(beam.DoFn):
    """Runs a list of ``DocFilter``/``DocTransform`` operators over each document.

    The operators are built by ``factory`` on the worker (``setup``), so models
    (fastText, word lists) load once per worker, not once per element.
    ``dry_run``: score everything and record would-be drops, but keep the doc.
    """

    def __init__(self, factory: Callable[[], list[Any]], dry_run: bool = False):
        self._factory = factory
        self._dry_run = dry_run

    def setup(self):
        self._ops = self._factory()

    def process(self, doc):
        for op in self._ops:
            if isinstance(op, DocTransform) and not isinstance(op, DocFilter):
                res = run_transform(op, doc)
                for name, n in res.counts.items():
                    if n:
                        yield TaggedOutput("events", ((doc["source"], op.stage, f"{op.name}.{name}"), int(n)))
                if res.doc is None:
                    row = dropped_row(doc, op.stage, res.reason or f"{op.name}")
                    yield TaggedOutput("dropped", with_text(row, doc))
                    if not self._dry_run:
                        return
                    continue
                if res.modified:
                    yield TaggedOutput("events", ((doc["source"], op.stage, f"{op.name}.modified"), 1))
                doc = res.doc
            else:
                out = run_filter(op, doc)
                doc = out.doc
                if out.reason is not None:
                    row = dropped_row(doc, op.stage, out.reason, score=out.score)
                    yield TaggedOutput("dropped", with_text(row, doc))
                    if not self._dry_run:
                        return
        yield doc


class ApplyOperators(beam.PTransform):
    def __init__(self, factory: Callable[[], list[Any]], dry_run: bool = False, label: str = "Operators"):
        super().__init__(label)
        self._factory = factory
        self._dry_run = dry_run

    def expand(self, docs):
        res = docs | beam.ParDo(ApplyOperatorsFn(self._factory, self._dry_run)).with_outputs("dropped", "events", main="kept")
        return StageResult(res.kept, res.dropped, res.events)


# ------------------------------------------------------------------ exact dedup
def survivor_key(doc: dict[str, Any], policy: Iterable[str], source_rank: dict[str, int]) -> tuple:
    """Sort key of a copy; the smallest key survives (see ``ExactDedupConfig``)."""
    key: list[Any] = []
    for p in policy:
        if p == "source_priority":
            key.append(source_rank.get(doc["source"], len(source_rank)))
        elif p == "first_seen":
            md = json.loads(doc.get("metadata") or "{}")
            key.extend((source_rank.get(doc["source"], len(source_rank)), md.get("file", ""), md.get("pos", 0)))
        elif p == "longest":
            key.append(-len(doc["text"]))
        elif p == "smallest_id":
            key.append(doc["id"])
    return tuple(key)


class _PickSurvivorFn(beam.DoFn):
    def __init__(self, policy: list[str], source_rank: dict[str, int]):
        self._policy = list(policy)
        self._rank = dict(source_rank)

    def process(self, kv):
        h, group = kv
        best_key, best_id, n = None, None, 0
        for d in group:  # pass 1: find the survivor, holding only its key
            n += 1
            k = survivor_key(d, self._policy, self._rank)
            if best_key is None or k < best_key:
                best_key, best_id = k, d["id"]
        for d in group:  # pass 2 (Beam group values are re-iterable)
            if d["id"] == best_id and best_key is not None:
                best_key = None  # the survivor is emitted once even if ids repeat
                if n > 1:
                    yield TaggedOutput("events", ((d["source"], "exact_dedup", "clusters"), 1))
                yield d
            else:
                row = dropped_row(d, "exact_dedup", "duplicate", survivor_id=best_id, cluster_id=h, detail={"copies": n})
                yield TaggedOutput("dropped", with_text(row, d))


class ExactDedup(beam.PTransform):
    """Distributed exact dedup on the normalised-text hash (a GroupByKey: no
    worker ever holds more than one hash's copies)."""

    def __init__(self, policy: list[str], source_rank: dict[str, int]):
        super().__init__("ExactDedup")
        self._policy = policy
        self._rank = source_rank

    def expand(self, docs):
        res = (
            docs
            | "ByHash" >> beam.Map(lambda d: (d["content_hash"], d))
            | "GroupByHash" >> beam.GroupByKey()
            | "Pick" >> beam.ParDo(_PickSurvivorFn(self._policy, self._rank)).with_outputs("dropped", "events", main="kept")
        )
        return StageResult(res.kept, res.dropped, res.events)
