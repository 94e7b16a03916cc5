"""The ``quality:`` stage: heuristic rules (``filters.heuristics``) and a
model-based quality classifier (fastText, ``filters.classifier``).

Train a classifier from positive (reference-quality) and negative (e.g. random
web) examples, JSONL or Parquet::

    python -m filters.quality train --positive refs.jsonl --negative web.parquet --output quality.bin

It prints validation precision/recall/F1/AUC and writes ``quality.bin.json``.
Then set ``quality.classifier.model`` in configs/corpus.yaml: the pipeline stores
``quality_model.score`` (P(positive)) for every prose document and keeps by
``min_score`` and/or ``keep_top_percent`` per source (a distributed Beam stage,
see ``pipelines/quality_stages.py``).  With no model configured the classifier
stage is absent.
"""
from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from filters.heuristics import (
    C4Config,
    CodeQualityConfig,
    FineWebConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    build_rules,
)


class ClassifierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: fastText model from ``python -m filters.quality train``; null: no classifier stage
    model: str | None = None
    #: drop prose documents whose P(positive) is below this (DCLM keeps >= ~0.018)
    min_score: float | None = Field(None, ge=0, le=1)
    #: keep only the best-scoring X% of each source (computed over the whole run)
    keep_top_percent: float | None = Field(None, gt=0, le=100)
    max_chars: int = Field(20000, gt=0)
    #: score code documents too (a prose classifier usually does not fit code)
    include_code: bool = False

    @model_validator(mode="after")
    def _needs_model(self):
        if (self.min_score is not None or self.keep_top_percent is not None) and not self.model:
            raise ValueError("min_score / keep_top_percent need a model")
        return self


class QualityConfig(BaseModel):
    """``quality:`` section of configs/corpus.yaml."""

    model_config = ConfigDict(extra="forbid")
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    c4: C4Config = C4Config()
    fineweb: FineWebConfig = FineWebConfig()
    code: CodeQualityConfig = CodeQualityConfig()
    classifier: ClassifierConfig = ClassifierConfig()


class QualityClassifier:
    """``DocFilter`` storing ``quality_model.score``; drops below ``min_score``."""

    name = "quality_model"
    stage = "quality"

    def __init__(self, config: ClassifierConfig, scorer: Any = None):
        from filters.classifier import FastTextScorer

        self.config = config
        self.scorer = scorer or FastTextScorer(config.model, max_chars=config.max_chars)

    def score(self, doc: dict[str, Any]) -> dict[str, float]:
        if not self.config.include_code and (doc.get("lang") or "").startswith("code:"):
            return {}
        return {"score": round(self.scorer.prob(doc["text"]), 6)}

    def decide(self, scores: dict[str, float]) -> str | None:
        s = scores.get("score")
        if s is not None and self.config.min_score is not None and s < self.config.min_score:
            return "quality_model:score"
        return None

    def thresholds(self, doc=None):
        return {} if self.config.min_score is None else {"score": ("min", self.config.min_score)}


def build_quality(cfg: QualityConfig) -> list[Any]:
    ops = build_rules(cfg)  # type: ignore[arg-type]
    if cfg.classifier.model:
        ops.append(QualityClassifier(cfg.classifier))
    return ops


def main(argv: list[str] | None = None) -> int:
    from filters.classifier import cli

    return cli(argv, "python -m filters.quality", "quality",
               "reference-quality examples", "low-quality examples (e.g. random web pages)")


if __name__ == "__main__":
    sys.exit(main())
