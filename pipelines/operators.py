"""Which per-document operators run, in which order, from the config.

``build_operators(cfg)`` is called on each Beam worker (in ``setup``) so heavy
objects — fastText models, word lists — load once per worker.  ``operator_stages``
gives the same order statically, for the ledger and the report.
"""
from __future__ import annotations

from typing import Any

from filters.normalize import Normalizer


def build_operators(cfg: Any) -> list[Any]:
    ops: list[Any] = []
    if cfg.stages.normalize:
        ops.append(Normalizer(cfg.normalize))
    ops += _filter_operators(cfg)
    return ops


def operator_stages(cfg: Any) -> list[str]:
    stages: list[str] = []
    if cfg.stages.normalize:
        stages.append("normalize")
    stages += _filter_stages(cfg)
    return stages


# ---- issue 3: language ID, quality, safety, PII (operators live in filters/)
def _filter_operators(cfg: Any) -> list[Any]:
    from filters.language import LanguageFilter, LanguageID
    from filters.pii import PIIRedactor
    from filters.quality import build_quality
    from filters.safety import build_safety

    ops: list[Any] = []
    if cfg.stages.language:
        ops += [LanguageID(cfg.language), LanguageFilter(cfg.language)]
    if cfg.stages.quality:
        ops += build_quality(cfg.quality)
    if cfg.stages.safety:
        ops += build_safety(cfg.safety)
    if cfg.stages.pii and cfg.pii.types:
        ops.append(PIIRedactor(cfg.pii))
    return ops


def _filter_stages(cfg: Any) -> list[str]:
    return [s for s in ("language", "quality", "safety", "pii") if getattr(cfg.stages, s)]
