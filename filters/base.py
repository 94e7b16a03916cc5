"""The tiny operator API every document operator in ``filters/`` follows.

Two kinds of operator, both plain Python objects over plain record dicts
(see ``filters.schema``), with no engine underneath:

``DocFilter``
    ``score(doc) -> {metric: float}`` computes numbers only (pure, no thresholds);
    ``decide(scores) -> reason | None`` compares them with the configured
    thresholds.  The pipeline stores every score in ``doc["scores"]`` under
    ``"<name>.<metric>"`` and drops the document with ``(stage, reason)`` when
    ``decide`` returns a reason.  Because thresholds only live in ``decide``,
    users re-threshold stored scores without re-scoring.

``DocTransform``
    ``apply(doc) -> (doc, counts)`` returns a modified copy (normalisation,
    PII redaction, boilerplate removal, excision) and counts of what it changed;
    it may also drop by returning ``None`` plus a ``reason`` count.

``run_filter``/``run_transform`` are the only glue the Beam stages use, so a
filter behaves identically in a unit test, a notebook and on Dataflow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class DocFilter(Protocol):
    name: str   # key prefix for scores, e.g. "gopher_quality"
    stage: str  # ledger stage, e.g. "quality"

    def score(self, doc: dict[str, Any]) -> dict[str, float]: ...

    def decide(self, scores: dict[str, float]) -> str | None: ...


@runtime_checkable
class DocTransform(Protocol):
    name: str
    stage: str

    def apply(self, doc: dict[str, Any]) -> "TransformResult": ...


@dataclass
class TransformResult:
    doc: dict[str, Any] | None              # None: drop (then ``reason`` is set)
    counts: dict[str, int] = field(default_factory=dict)  # e.g. {"email": 2}
    reason: str | None = None
    modified: bool = False


@dataclass
class FilterOutcome:
    doc: dict[str, Any]
    reason: str | None        # None: keep
    score: float | None = None  # the score that decided, if any


def run_filter(op: DocFilter, doc: dict[str, Any]) -> FilterOutcome:
    """Score ``doc`` with ``op``, record the scores in it, and apply the thresholds."""
    scores = op.score(doc)
    new_scores = dict(doc.get("scores") or {})
    for k, v in scores.items():
        new_scores[f"{op.name}.{k}"] = float(v)
    doc = {**doc, "scores": new_scores}
    # An operator whose thresholds depend on the document (its language, script or
    # kind) sets ``decide_with_doc = True`` and gets the scored document too.
    reason = op.decide(scores, doc) if getattr(op, "decide_with_doc", False) else op.decide(scores)
    deciding = None
    if reason is not None:
        # A reason may name the metric as "<metric>", "<metric>:<detail>" or
        # "<operator name>:<metric>[:<detail>]".
        head, _, rest = reason.partition(":")
        deciding = scores.get(head)
        if deciding is None and head == op.name and rest:
            deciding = scores.get(rest.split(":", 1)[0])
    return FilterOutcome(doc=doc, reason=reason, score=deciding)


def run_transform(op: DocTransform, doc: dict[str, Any]) -> TransformResult:
    res = op.apply(doc)
    if res.doc is not None and res.counts:
        new_scores = dict(res.doc.get("scores") or {})
        for k, v in res.counts.items():
            new_scores[f"{op.name}.{k}"] = float(v)
        res.doc = {**res.doc, "scores": new_scores}
    return res
