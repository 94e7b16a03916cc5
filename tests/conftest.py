"""Shared fixtures.  Tests that use ../shared/dev_corpus skip cleanly without it."""
from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEV_CORPUS = ROOT.parent / "shared" / "dev_corpus"


@pytest.fixture(scope="session")
def dev_corpus() -> pathlib.Path:
    if not (DEV_CORPUS / "text" / "corpus.jsonl").exists():
        pytest.skip("../shared/dev_corpus is absent (extra checks only)")
    return DEV_CORPUS


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return ROOT


os.environ.setdefault("PYTHONHASHSEED", "0")

#: build_corpus flags that switch off the per-document content filters (language,
#: quality, safety, PII), for tests of other stages on small synthetic documents.
CONTENT_FILTERS_OFF = [f"--set=stages.{s}=false" for s in ("language", "quality", "safety", "pii")]

#: ... and the near-duplicate and boilerplate stages too: the corpus comes out as the
#: test wrote it (normalised, exact copies removed), for tests of later steps.
ALL_FILTERS_OFF = CONTENT_FILTERS_OFF + ["--set=stages.near_dup=false", "--set=stages.boilerplate=false"]
