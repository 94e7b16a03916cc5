"""Detection of the dev corpus's planted media near-duplicates by the real pipeline
(skips without ../shared/dev_corpus).  Thresholds are the shipped defaults, not tuned here."""
import importlib.util
import os

import pytest

pytestmark = [pytest.mark.devcorpus, pytest.mark.slow]


def _eval_module(repo_root):
    spec = importlib.util.spec_from_file_location("eval_media_dedup", os.path.join(repo_root, "bench", "eval_media_dedup.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_planted_near_duplicates_found(dev_corpus, repo_root, tmp_path):
    if not (dev_corpus / "media" / "labels.jsonl").exists():
        pytest.skip("dev corpus has no media")
    ev = _eval_module(str(repo_root))
    out = str(tmp_path / "out")
    ev.run_pipeline(out, str(dev_corpus))
    res = ev.score(out, str(dev_corpus))
    for modality in ("image", "video"):
        rows = [v for k, v in res["per_transform"].items() if k.startswith(modality + "/")]
        found = sum(v["detected"] for v in rows)
        total = sum(v["evaluable"] for v in rows)
        assert total > 0 and found / total >= 0.9, (modality, res["per_transform"])
        assert res["false_positives"][modality]["rate"] <= 0.01, res["false_positives"][modality]
    audio = [v for k, v in res["per_transform"].items() if k.startswith("audio/")]
    assert sum(v["detected"] for v in audio) / sum(v["evaluable"] for v in audio) >= 0.75
