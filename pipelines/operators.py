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
    return ops


def operator_stages(cfg: Any) -> list[str]:
    stages: list[str] = []
    if cfg.stages.normalize:
        stages.append("normalize")
    return stages
