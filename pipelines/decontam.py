"""Beam wiring of eval-set decontamination (the logic is in ``filters/decontam.py``).

    result = docs | Decontaminate(cfg.decontamination, out_dir, dry_run=False)
    result.kept / .dropped / .events            # the stage contract (pipelines/stages.py)

* The index is built once, on the driver, from local eval files
  (``prepare_index``: a missing eval set is a one-line error before any work
  starts), serialised, logged with its size, and shipped to every worker as a
  singleton side input; each worker deserialises it once.
* Dropped documents go to ``dropped/`` with stage ``decontamination`` and reason
  ``contaminated:<benchmark>[+<benchmark>...][:too_many_pieces|:too_short_after_excision]``;
  excised documents are counted as modified (``decontamination.modified`` and
  ``decontamination.excised:<benchmark>`` events in the ledger).
* ``DIR/contamination.json`` is a per-benchmark aggregation (CombinePerKey with
  bounded, sorted lists) written by one DoFn: never a collection of documents.
* Bloom mode (index too big for memory): workers decide on Bloom hits; which
  eval items were found is then attributed by a distributed join of the hit keys
  with the eval items' n-grams (CoGroupByKey), so no worker holds the exact index.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsList, AsSingleton, TaggedOutput
from pydantic import ValidationError

from filters.decontam import (
    STAGE,
    DecontamConfig,
    Decontaminator,
    EvalIndex,
    EvalSetConfig,
    GramMaker,
    build_index,
    item_summary,
    load_sets,
)
from filters.eval_sets import EvalItem, EvalSetError
from filters.schema import dropped_row
from pipelines.stages import StageResult, with_text

log = logging.getLogger(__name__)

CONTAMINATION_FILE = "contamination.json"
_INDEX_CACHE: dict[str, tuple[EvalIndex, list]] = {}


# ----------------------------------------------------------------------- driver side
def apply_eval_set_flags(dcfg: DecontamConfig, flags: Iterable[str]) -> DecontamConfig:
    """``--eval-set NAME=PATH`` (repeatable; ``PATH`` may be ``tfds:NAME[/CONFIG][:VERSION]``).
    A flag naming a configured set replaces its path and keeps its other settings."""
    flags = list(flags)
    if not flags:
        return dcfg
    sets = {e.name: e for e in dcfg.eval_sets}
    order = [e.name for e in dcfg.eval_sets]
    for item in flags:
        if "=" not in item or not item.split("=", 1)[0] or not item.split("=", 1)[1]:
            raise ValueError(f"--eval-set {item!r}: expected NAME=PATH")
        name, path = item.split("=", 1)
        src = {"tfds": path[5:], "path": None} if path.startswith("tfds:") else {"path": path, "tfds": None}
        try:
            if name in sets:
                sets[name] = EvalSetConfig.model_validate({**sets[name].model_dump(), **src})
            else:
                sets[name] = EvalSetConfig.model_validate({"name": name, **src})
                order.append(name)
        except ValidationError as e:
            msg = e.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"--eval-set {item!r}: {msg}") from None
    return dcfg.model_copy(update={"eval_sets": [sets[n] for n in order]})


def prepare_index(dcfg: DecontamConfig) -> tuple[EvalIndex, list]:
    """Load the eval sets and build the index once per config (cached); raises
    ``EvalSetError`` for a missing or unreadable set."""
    key = dcfg.model_dump_json() + json.dumps(_files_fingerprint(dcfg))
    if key not in _INDEX_CACHE:
        sets = load_sets(dcfg)
        index = build_index(sets, dcfg, mode=dcfg.index, progress=log.info)
        _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = (index, sets)
    return _INDEX_CACHE[key]


def _files_fingerprint(dcfg: DecontamConfig) -> list:
    """Paths, sizes and mtimes of the eval files (the cache must not outlive an edit)."""
    from filters.eval_sets import resolve_paths

    out = []
    for es in dcfg.eval_sets:
        for f in resolve_paths(es.path) if es.path else []:
            st = os.stat(f)
            out.append([f, st.st_size, st.st_mtime_ns])
    return out


def index_report(index: EvalIndex, blob_bytes: int) -> dict[str, Any]:
    return {**index.summary(), "side_input_bytes": blob_bytes}


# ----------------------------------------------------------------------- workers
class _DecontamFn(beam.DoFn):
    """Scans each document with the index (side input) and applies the policy."""

    def __init__(self, cfg_json: str, dry_run: bool):
        self._cfg_json = cfg_json
        self._dry_run = dry_run

    def setup(self):
        self._cfg = DecontamConfig.model_validate_json(self._cfg_json)
        self._op = None
        self._blob = None
        self._n_docs = Metrics.counter(STAGE, "documents")
        self._n_hit = Metrics.counter(STAGE, "contaminated")

    def process(self, doc, blob):
        if self._op is None or blob is not self._blob:
            index = pickle.loads(blob)
            Metrics.counter(STAGE, "index_loads").inc()
            self._op, self._blob = Decontaminator(index, self._cfg), blob
        self._n_docs.inc()
        dec = self._op.inspect(doc)
        if dec.action is None:
            yield doc
            return
        self._n_hit.inc()
        src, dry = doc["source"], self._dry_run
        action = ("would_" if dry else "") + dec.action
        base = {"doc": doc["id"], "source": src, "url": doc.get("url"), "action": action}
        for s in dec.sets:
            yield TaggedOutput("hits", (s, {"type": "doc", **base, "windows": dec.windows[s]}))
        for it in dec.items:
            yield TaggedOutput("hits", (it["set"], {"type": "item", **base, "item": it["item"], "kind": it["kind"],
                                                    "coverage": it["max_coverage"], "ngrams": it["ngrams"]}))
        for s, keys in dec.set_keys.items():  # bloom mode: items are attributed by a join
            for k in keys:
                yield TaggedOutput("keys", (k, (s, base)))
        if dec.action == "drop" and dry:  # dry run: keep it, count it (dropped/ would unbalance the ledger)
            yield TaggedOutput("events", ((src, STAGE, f"{STAGE}.would_drop"), 1))
            yield doc
            return
        if dec.action == "drop":
            detail = {"benchmarks": dec.sets, "windows": dec.windows,
                      "items": sorted({f"{it['set']}:{it['item']}" for it in dec.items})[:50]}
            if dec.excision:
                detail["excision"] = {k: v for k, v in dec.excision.items() if k != "cuts"}
            row = dropped_row(doc, STAGE, dec.reason, score=float(sum(dec.windows.values())), detail=detail)
            yield TaggedOutput("dropped", with_text(row, doc))
            return
        # excise
        if dry:
            yield TaggedOutput("events", ((src, STAGE, f"{STAGE}.would_excise"), 1))
            yield doc
            return
        yield TaggedOutput("events", ((src, STAGE, f"{STAGE}.modified"), 1))
        yield TaggedOutput("events", ((src, STAGE, f"{STAGE}.excised_chars"), int(dec.excision["cut_chars"])))
        for s in dec.sets:
            yield TaggedOutput("events", ((src, STAGE, f"{STAGE}.excised:{s}"), 1))
        yield dec.doc


class _ItemPostingsFn(beam.DoFn):
    """Bloom mode: the (key, item) postings of eval items, made on the workers."""

    def __init__(self, cfg_json: str):
        self._cfg_json = cfg_json

    def setup(self):
        self._cfg = DecontamConfig.model_validate_json(self._cfg_json)
        self._makers: dict[str, GramMaker] = {}

    def process(self, element, blob):
        spec_i, item_i, item = element
        index, ignored = _cached_index(blob)
        spec = index.sets[spec_i]
        maker = self._makers.get(spec.name)
        if maker is None:
            maker = self._makers[spec.name] = GramMaker(spec, self._cfg.boilerplate)
        skip = ignored(spec_i)
        masks: dict[int, int] = {}
        for sg in maker.grams(EvalItem(**item)):
            for k in sg.keys.tolist():
                masks[k] = masks.get(k, 0) | sg.bit
        for k, mk in sorted(masks.items()):
            if k not in skip:
                yield k, (spec.name, item_i, mk)


_BLOB_CACHE: dict[int, tuple[bytes, EvalIndex, dict[int, set[int]]]] = {}


def _cached_index(blob: bytes):
    """(index, ignored-keys-of-set function), deserialised once per worker process."""
    if id(blob) not in _BLOB_CACHE:
        _BLOB_CACHE.clear()
        _BLOB_CACHE[id(blob)] = (blob, pickle.loads(blob), {})
    _, index, sets = _BLOB_CACHE[id(blob)]

    def ignored(si: int) -> set[int]:
        if si not in sets:
            sets[si] = set(index.ignored_keys[si].tolist())
        return sets[si]

    return index, ignored


def _join_items(kv):
    """CoGroupByKey result for one key -> ((set, doc, item), (field bits, doc info))."""
    _, grouped = kv
    docs = list(grouped["doc"])
    if not docs:
        return
    for set_name, item_i, mk in grouped["item"]:
        for s, base in docs:
            if s == set_name:
                yield (s, base["doc"], item_i), (mk, base)


def _item_record(kv, blob, full_coverage: float):
    (s, _, item_i), vals = kv
    vals = list(vals)
    index, _ = _cached_index(blob)
    summ = item_summary(index.item_field_counts[item_i], [mk for mk, _ in vals], full_coverage)
    base = vals[0][1]
    return s, {"type": "item", **base, "item": index.item_ids[item_i], "kind": summ["kind"],
               "coverage": summ["max_coverage"], "ngrams": summ["ngrams"]}


# ----------------------------------------------------------------------- report aggregation
class BenchReportFn(beam.CombineFn):
    """Per-benchmark aggregate of hit records, with bounded sorted lists (so the
    result is small and identical on any runner / bundle split)."""

    def __init__(self, max_docs: int, max_urls: int):
        self._max_docs = max_docs
        self._max_urls = max_urls

    def create_accumulator(self):
        return {"docs": 0, "actions": {}, "sources": {}, "urls": [], "doc_ids": [], "kinds": {}, "items": {}}

    @staticmethod
    def _bounded(xs: list, cap: int) -> list:
        return sorted(set(xs))[:cap]

    def add_input(self, acc, rec):
        if rec["type"] == "doc":
            acc["docs"] += 1
            acc["actions"][rec["action"]] = acc["actions"].get(rec["action"], 0) + 1
            acc["sources"][rec["source"]] = acc["sources"].get(rec["source"], 0) + 1
            if rec.get("url"):
                acc["urls"] = self._bounded(acc["urls"] + [rec["url"]], self._max_urls)
            acc["doc_ids"] = self._bounded(acc["doc_ids"] + [rec["doc"]], self._max_docs)
        else:
            acc["kinds"][rec["kind"]] = acc["kinds"].get(rec["kind"], 0) + 1
            it = acc["items"].setdefault(rec["item"], {"documents": 0, "kinds": {}, "max_coverage": 0.0,
                                                      "doc_ids": [], "sources": {}})
            it["documents"] += 1
            it["kinds"][rec["kind"]] = it["kinds"].get(rec["kind"], 0) + 1
            it["max_coverage"] = max(it["max_coverage"], rec["coverage"])
            it["doc_ids"] = self._bounded(it["doc_ids"] + [rec["doc"]], self._max_docs)
            it["sources"][rec["source"]] = it["sources"].get(rec["source"], 0) + 1
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            out["docs"] += a["docs"]
            for k in ("actions", "sources", "kinds"):
                for x, n in a[k].items():
                    out[k][x] = out[k].get(x, 0) + n
            out["urls"] = self._bounded(out["urls"] + a["urls"], self._max_urls)
            out["doc_ids"] = self._bounded(out["doc_ids"] + a["doc_ids"], self._max_docs)
            for iid, it in a["items"].items():
                o = out["items"].setdefault(iid, {"documents": 0, "kinds": {}, "max_coverage": 0.0, "doc_ids": [],
                                                  "sources": {}})
                o["documents"] += it["documents"]
                for x, n in it["kinds"].items():
                    o["kinds"][x] = o["kinds"].get(x, 0) + n
                for x, n in it["sources"].items():
                    o["sources"][x] = o["sources"].get(x, 0) + n
                o["max_coverage"] = max(o["max_coverage"], it["max_coverage"])
                o["doc_ids"] = self._bounded(o["doc_ids"] + it["doc_ids"], self._max_docs)
        return out

    def extract_output(self, acc):
        return acc


def build_contamination(per_bench: list[tuple[str, dict]], scanned: list[tuple[str, int]], index_info: dict,
                        set_reports: list[dict], cfg: dict) -> dict[str, Any]:
    """The ``contamination.json`` object (sorted, no timestamps: byte-stable)."""
    got = dict(per_bench)
    benches = {}
    for rep in set_reports:
        name = rep["name"]
        acc = got.get(name) or BenchReportFn(0, 0).create_accumulator()
        items = {k: {**v, "kinds": dict(sorted(v["kinds"].items())), "sources": dict(sorted(v["sources"].items()))}
                 for k, v in sorted(acc["items"].items())}
        benches[name] = {
            "eval_set": {k: rep.get(k) for k in ("layout", "family", "fields", "n", "policy", "items", "files",
                                                 "n_files")},
            "contaminated_documents": acc["docs"],
            "actions": dict(sorted(acc["actions"].items())),
            "by_source": dict(sorted(acc["sources"].items())),
            "items_found": len(items),
            "match_kinds": dict(sorted(acc["kinds"].items())),
            "document_ids": acc["doc_ids"],
            "urls": acc["urls"],
            "items": items,
            "ignored_ngrams": {
                "too_common_count": rep["too_common_count"],
                "too_common": rep.get("too_common", []),
                "boilerplate_windows": rep["boilerplate_windows"],
                "boilerplate_phrases": rep["boilerplate_phrases"],
            },
            "items_without_ngrams": rep["items_without_ngrams"],
        }
    scanned_by = {}
    for s, n in scanned:
        scanned_by[s] = scanned_by.get(s, 0) + n
    return {
        "format": "contamination/1",
        "stage": STAGE,
        "documents_scanned": dict(sorted(scanned_by.items())),
        "index": index_info,
        "settings": cfg,
        "benchmarks": dict(sorted(benches.items())),
        "totals": {
            "contaminated_documents_by_benchmark": {k: v["contaminated_documents"] for k, v in sorted(benches.items())},
            "items_found": sum(v["items_found"] for v in benches.values()),
        },
    }


class _WriteContaminationFn(beam.DoFn):
    def __init__(self, out_dir: str, index_info: dict, set_reports: list[dict], cfg: dict):
        self._out = out_dir
        self._info = index_info
        self._reports = set_reports
        self._cfg = cfg

    def process(self, _, per_bench, scanned):
        from pipelines.outputs import join, write_json

        obj = build_contamination(per_bench, scanned, self._info, self._reports, self._cfg)
        write_json(join(self._out, CONTAMINATION_FILE), obj)
        yield obj["totals"]


# ----------------------------------------------------------------------- the stage
class Decontaminate(beam.PTransform):
    """The ``decontamination`` stage: StageResult(kept, dropped, events)."""

    def __init__(self, dcfg: DecontamConfig, out_dir: str, dry_run: bool = False):
        super().__init__("Decontaminate")
        self._cfg = dcfg
        self._out = out_dir
        self._dry_run = dry_run
        self.index, self._sets = prepare_index(dcfg)
        self._blob = pickle.dumps(self.index, protocol=5)
        self.info = index_report(self.index, len(self._blob))
        log.info("decontamination index: %s, %d eval sets, %s items, %s n-gram entries, %.1f MB in memory, "
                 "side input %.1f MB (window lengths %s)", self.index.mode, len(self.index.sets),
                 f"{len(self.index.item_ids):,}", f"{self.index.n_entries:,}", self.index.nbytes / 1e6,
                 len(self._blob) / 1e6, self.index.lengths)

    def expand(self, docs):
        p = docs.pipeline
        cfg_json = self._cfg.model_dump_json()
        blob = AsSingleton(p | "IndexBlob" >> beam.Create([self._blob]))
        res = docs | "Scan" >> beam.ParDo(_DecontamFn(cfg_json, self._dry_run), blob).with_outputs(
            "dropped", "events", "hits", "keys", main="kept")
        hits = res.hits
        if self.index.mode == "bloom":
            items = [(si, ii, vars(it)) for si, (spec, its) in enumerate(self._sets)
                     for ii, it in enumerate(its, start=sum(len(x[1]) for x in self._sets[:si]))]
            postings = (p | "EvalItems" >> beam.Create(items)
                        | "ItemPostings" >> beam.ParDo(_ItemPostingsFn(cfg_json), blob))
            cov = self._cfg.full_field_coverage
            attributed = (
                {"doc": res.keys, "item": postings}
                | "JoinKeys" >> beam.CoGroupByKey()
                | "DocItemPairs" >> beam.FlatMap(_join_items)
                | "GroupDocItem" >> beam.GroupByKey()
                | "ItemRecords" >> beam.Map(_item_record, blob, cov)
            )
            hits = (hits, attributed) | "AllHits" >> beam.Flatten()
        per_bench = hits | "PerBenchmark" >> beam.CombinePerKey(
            BenchReportFn(self._cfg.report_max_docs, self._cfg.report_max_urls))
        scanned = (docs | "ScannedBySource" >> beam.Map(lambda d: (d["source"], 1))
                   | "CountScanned" >> beam.CombinePerKey(sum))
        settings = self._cfg.model_dump(mode="json", exclude={"eval_sets"})
        (p | "ContaminationTrigger" >> beam.Create([None])
         | "WriteContamination" >> beam.ParDo(
             _WriteContaminationFn(self._out, self.info, self.index.report, settings),
             AsList(per_bench), AsList(scanned)))
        return StageResult(res.kept, res.dropped, res.events)


def stage_enabled(cfg) -> bool:
    d = getattr(cfg, "decontamination", None)
    return bool(d is not None and d.enabled and d.eval_sets)


__all__ = ["Decontaminate", "apply_eval_set_flags", "prepare_index", "stage_enabled", "EvalSetError",
           "build_contamination", "BenchReportFn", "CONTAMINATION_FILE"]
