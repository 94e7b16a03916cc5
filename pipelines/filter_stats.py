"""Beam wiring for the filter stages' outputs (issue 3): score histograms,
removals per filter x source x language, ``--dry-run`` calibration, and the
per-source top-percentile keep rule of the quality classifier.

* ``FilterStats``  -> ``DIR/filters.json``: removals (stage, reason, source,
  language), histograms of every score with the thresholds in force, per source.
* in ``--dry-run`` also ``DIR/calibration/``: ``removal_rates.json`` (per filter
  and source: documents that filter alone would remove, and the rate),
  ``near_threshold.jsonl`` (per source, metric and side the k documents closest
  to the threshold: just kept / just dropped, with a text excerpt) and
  ``would_drop/*.parquet`` (the would-be dropped rows).  No text shards.
* ``KeepTopPercent``: keeps the best ``keep_top_percent`` % of each source by
  ``quality_model.score``.  The cut-off comes from a per-source histogram of
  scores quantised to 1e-6 (integer counts summed by ``CombinePerKey``: exact,
  distributed and independent of worker count), not from a sort of the corpus.

All aggregates are small (bounded by sources x metrics x bins); no step holds
the corpus on one worker.
"""
from __future__ import annotations

import json
import math
from typing import Any

import apache_beam as beam

from filters.schema import DROPPED_SCHEMA, dropped_row, stable_hash
from pipelines.stages import StageResult, with_text

FILTER_STAGES = ("language", "quality", "safety")
LINEAR_UNIT = ("frac", "ratio", "score", "share")


# ----------------------------------------------------------------------------- thresholds
def threshold_providers(cfg: Any) -> list[Any]:
    """Light objects answering ``thresholds(doc)`` for every configured filter
    (no models loaded: classifier/term thresholds come straight from config)."""
    from filters.heuristics import build_rules
    from filters.language import LanguageFilter

    out: list[Any] = []
    if cfg.stages.language:
        out.append(LanguageFilter(cfg.language))
    if cfg.stages.quality:
        out += build_rules(cfg.quality)
        c = cfg.quality.classifier
        if c.model and c.min_score is not None:
            out.append(_Static("quality_model", {"score": ("min", c.min_score)}))
    if cfg.stages.safety:
        s = cfg.safety
        if s.url_blocklists:
            out.append(_Static("url_blocklist", {"blocked": ("max", 0.0)}))
        if s.term_lists:
            out.append(_Static("safety_terms", {"weight": ("max", s.min_weight - 1e-9)}))
        if s.toxicity.model:
            out.append(_Static("toxicity", {"score": ("max", s.toxicity.max_score)}))
    return out


class _Static:
    def __init__(self, name: str, lim: dict[str, tuple[str, float]]):
        self.name = name
        self._lim = lim

    def thresholds(self, doc=None):
        return self._lim


def _metric_key(name: str, metric: str) -> str:
    # two-sided Gopher limits are listed as "<metric>_max"
    m = metric[:-4] if metric.endswith("_max") else metric
    return f"{name}.{m}"


# ----------------------------------------------------------------------------- histograms
def bin_of(metric: str, v: float) -> float:
    """Lower edge of the histogram bin of ``v``: 0.02-wide for fractions/scores,
    0.25-wide for word lengths, quarter powers of two for counts."""
    if not math.isfinite(v):
        return float("nan")
    short = metric.rsplit(".", 1)[-1]
    if any(u in short for u in LINEAR_UNIT):
        return round(math.floor(min(max(v, 0.0), 1.0) * 50) / 50, 4)
    if "word_length" in short:
        return round(math.floor(min(max(v, 0.0), 40.0) * 4) / 4, 4)
    if v <= 0:
        return 0.0
    return round(2 ** (math.floor(math.log2(v + 1) * 4) / 4) - 1, 4)


def _hist_items(doc_scores: dict[str, float] | None, source: str):
    for k, v in (doc_scores or {}).items():
        if k.split(".", 1)[0] in ("normalize", "pii"):
            continue
        b = bin_of(k, v)
        if b == b:  # not NaN
            yield ((source, k, b), 1)


class FilterStats(beam.PTransform):
    """Writes ``filters.json`` (+ ``calibration/`` when ``dry_run``)."""

    def __init__(self, cfg: Any, out: str, dry_run: bool):
        super().__init__("FilterStats")
        self._cfg = cfg
        self._out = out
        self._dry = dry_run

    def expand(self, pcolls):
        scored, dropped = pcolls
        p = scored.pipeline
        cfg, out, dry = self._cfg, self._out, self._dry
        filt_dropped = dropped | "OnlyFilterDrops" >> beam.Filter(lambda r: r["stage"] in FILTER_STAGES)
        removals = (
            filt_dropped
            | "RemovalKey" >> beam.Map(lambda r: ((r["stage"], r["reason"], r["source"], r.get("_lang") or "und"), 1))
            | "RemovalSum" >> beam.CombinePerKey(sum)
        )
        # every scored document once: kept ones, plus dropped ones (their scores
        # up to the stage that dropped them); in dry-run nothing is dropped.
        hist_src = [scored | "HistKept" >> beam.FlatMap(lambda d: _hist_items(d.get("scores"), d["source"]))]
        if not dry:
            hist_src.append(filt_dropped | "HistDropped" >> beam.FlatMap(lambda r: _hist_items(r.get("_scores"), r["source"])))
        hist = tuple(hist_src) | "HistAll" >> beam.Flatten() | "HistSum" >> beam.CombinePerKey(sum)
        if dry:
            n_src = scored | "NScored" >> beam.Map(lambda d: d["source"])
        else:
            n_src = (scored | "NScored" >> beam.Map(lambda d: d["source"]),
                     filt_dropped | "NDropped" >> beam.Map(lambda r: r["source"])) | "NAll" >> beam.Flatten()
        n_docs = n_src | "NCount" >> beam.combiners.Count.PerElement()
        thr = thresholds_table(cfg)
        from apache_beam.pvalue import AsList

        (p | "FilterStatsTrigger" >> beam.Create([None])
           | "WriteFilterStats" >> beam.ParDo(_WriteFilterStatsFn(out, thr, dry), AsList(removals), AsList(hist),
                                              AsList(n_docs)))
        if dry:
            k = max(cfg.output.samples_per_reason, 1)
            nchar = cfg.output.sample_chars
            near = (
                scored
                | "NearItems" >> beam.ParDo(_NearThresholdFn(cfg, nchar))
                | "NearTop" >> beam.combiners.Top.PerKey(k, key=lambda x: (-x[0], x[1]))
            )
            (p | "CalibTrigger" >> beam.Create([None])
               | "WriteCalibration" >> beam.ParDo(_WriteCalibrationFn(out), AsList(near), AsList(removals), AsList(n_docs)))
            from pipelines.outputs import WriteShards, strip_private

            (filt_dropped
             | "StripWouldDrop" >> beam.Map(strip_private)
             | "WriteWouldDrop" >> WriteShards(out, "calibration/would_drop", DROPPED_SCHEMA,
                                               prefix_fn=lambda r: "would_drop", size_fn=lambda r: 1,
                                               target=1_000_000, compression=cfg.output.compression,
                                               label="WriteWouldDrop"))
        return None


def thresholds_table(cfg: Any) -> dict[str, list[list[Any]]]:
    """metric -> [[kind, value, scope], ...]: defaults and per-script/language overrides."""
    table: dict[str, list[list[Any]]] = {}
    for prov in threshold_providers(cfg):
        for metric, (kind, val) in prov.thresholds(None).items():
            table.setdefault(_metric_key(prov.name, metric), []).append([kind, float(val), "default"])
        ov = getattr(getattr(prov, "config", None), "overrides", None) or {}
        for key in sorted(ov):
            for metric, (kind, val) in prov.thresholds({"lang": key, "script": key}).items():
                mk = _metric_key(prov.name, metric)
                if [kind, float(val), "default"] not in table.get(mk, []):
                    table.setdefault(mk, []).append([kind, float(val), key])
        lang_thr = getattr(getattr(prov, "config", None), "min_score_by_lang", None) or {}
        for lang, v in sorted(lang_thr.items()):
            table.setdefault(f"{prov.name}.score", []).append(["min", float(v), lang])
    return table


class _WriteFilterStatsFn(beam.DoFn):
    def __init__(self, out: str, thresholds: dict, dry: bool):
        self._out, self._thr, self._dry = out, thresholds, dry

    def process(self, _, removals, hist, n_docs):
        from pipelines.outputs import join, write_json

        hists: dict[str, dict[str, dict[str, int]]] = {}
        for (src, metric, b), n in sorted(hist):
            hists.setdefault(metric, {}).setdefault(src, {})[repr(float(b))] = n
        doc = {
            "format": "filter-stats/1",
            "dry_run": self._dry,
            "documents_scored": dict(sorted(n_docs)),
            "removals": [[st, r, s, lang, n] for (st, r, s, lang), n in sorted(removals)],
            "thresholds": self._thr,
            "histograms": hists,
        }
        write_json(join(self._out, "filters.json"), doc)
        yield len(removals)


class _NearThresholdFn(beam.DoFn):
    """(source, metric, side) -> (distance, id hash, sample) for each threshold."""

    def __init__(self, cfg: Any, nchar: int):
        self._cfg = cfg
        self._nchar = nchar

    def setup(self):
        self._provs = threshold_providers(self._cfg)

    def process(self, doc):
        scores = doc.get("scores") or {}
        for prov in self._provs:
            for metric, (kind, limit) in prov.thresholds(doc).items():
                mk = _metric_key(prov.name, metric)
                v = scores.get(mk)
                if v is None:
                    continue
                drop = v < limit if kind == "min" else v > limit
                side = "drop" if drop else "keep"
                sample = {"id": doc["id"], "source": doc["source"], "lang": doc.get("lang"), "metric": mk,
                          "kind": kind, "threshold": limit, "value": v, "side": side,
                          "text": doc["text"][: self._nchar]}
                yield ((doc["source"], mk, side), (abs(v - limit), stable_hash(doc["id"], size=8), sample))


class _WriteCalibrationFn(beam.DoFn):
    def __init__(self, out: str):
        self._out = out

    def process(self, _, near, removals, n_docs):
        from pipelines.outputs import join, write_bytes, write_json

        n = dict(n_docs)
        rates: dict[str, dict[str, Any]] = {}
        for (st, reason, src, _lang), c in removals:
            e = rates.setdefault(src, {"documents": n.get(src, 0), "filters": {}})
            f = e["filters"].setdefault(f"{st}/{reason}", {"would_remove": 0})
            f["would_remove"] += c
        for e in rates.values():
            for f in e["filters"].values():
                f["rate"] = f["would_remove"] / e["documents"] if e["documents"] else 0.0
        write_json(join(self._out, "calibration", "removal_rates.json"),
                   {"note": "documents each filter alone would remove (a document may count for several)",
                    "sources": dict(sorted(rates.items()))})
        lines = []
        for (src, mk, side), items in sorted(near, key=lambda kv: kv[0]):
            for dist, _, sample in sorted(items, key=lambda x: (x[0], x[1])):
                lines.append(json.dumps({**sample, "distance": dist}, sort_keys=True, ensure_ascii=False))
        write_bytes(join(self._out, "calibration", "near_threshold.jsonl"), ("\n".join(lines) + "\n").encode())
        yield len(lines)


# ----------------------------------------------------------------------------- top percent
QUANT = 1_000_000


def _cutoffs(hist: list[tuple[tuple[str, int], int]], percent: float) -> dict[str, int]:
    """Per source: the smallest quantised score whose upper tail holds >= percent%."""
    by: dict[str, list[tuple[int, int]]] = {}
    for (src, q), n in hist:
        by.setdefault(src, []).append((q, n))
    out = {}
    for src, items in by.items():
        total = sum(n for _, n in items)
        want = math.ceil(total * percent / 100.0)
        acc = 0
        cut = 0
        for q, n in sorted(items, reverse=True):
            acc += n
            cut = q
            if acc >= want:
                break
        out[src] = cut
    return out


class KeepTopPercent(beam.PTransform):
    """Keeps the best ``percent`` % of each source by ``quality_model.score``
    (documents without the score — code — pass).  ``dry_run``: mark only."""

    def __init__(self, percent: float, dry_run: bool = False):
        super().__init__("KeepTopPercent")
        self._pct = percent
        self._dry = dry_run

    def expand(self, docs):
        key = "quality_model.score"
        hist = (
            docs
            | "ScoreQ" >> beam.FlatMap(
                lambda d: [((d["source"], int(round(d["scores"][key] * QUANT))), 1)] if key in (d.get("scores") or {}) else [])
            | "ScoreHist" >> beam.CombinePerKey(sum)
        )
        cut = hist | "Cutoffs" >> beam.combiners.ToList() | "CutMap" >> beam.Map(_cutoffs, self._pct)
        pct, dry = self._pct, self._dry

        def split(d, cuts):
            s = (d.get("scores") or {}).get(key)
            if s is not None and int(round(s * QUANT)) < cuts.get(d["source"], 0):
                row = dropped_row(d, "quality", f"quality_model:top_{pct:g}_percent", score=s,
                                  detail={"cutoff": cuts[d["source"]] / QUANT})
                yield beam.pvalue.TaggedOutput("dropped", with_text(row, d))
                if not dry:
                    return
            yield d

        res = docs | "TopSplit" >> beam.FlatMap(split, beam.pvalue.AsSingleton(cut)).with_outputs("dropped", main="kept")
        return StageResult(res.kept, res.dropped, None)
