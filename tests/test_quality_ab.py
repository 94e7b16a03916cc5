"""Curation A/B (mixtures/quality_ab.py): the arms' mixtures (natural and matched weights),
held-out chunking, config errors and the report, without training (the proxies are the
trainer's, tested elsewhere; `make quality-ab` runs the whole thing)."""
from __future__ import annotations

import os

import pytest

from mixtures.quality_ab import ABConfig, arm_mixture, chunk_text, load_ab, write_report
from mixtures.sweep import SweepError
from tests.mixtures_data import make_docs, write_pack

SEQ = 33


@pytest.fixture()
def packs(tmp_path):
    raw = write_pack(tmp_path / "raw", {"books": make_docs("books", 20, 40, 90), "web": make_docs("web", 30, 20, 60),
                                        "wiki": make_docs("wiki", 60, 20, 80)}, SEQ)
    cur = write_pack(tmp_path / "cur", {"web": make_docs("web", 8, 20, 60, seed=1),
                                        "wiki": make_docs("wiki", 50, 20, 80, seed=1)}, SEQ)
    held = write_pack(tmp_path / "held", {"python_tutorial": make_docs("tut", 20, 30, 60, seed=2)}, SEQ)
    assert raw and cur and held
    cfg = ABConfig.model_validate({"inputs": {"web": "x"}, "heldout": {"name": "python_tutorial", "paths": ["t.rst"]},
                                   "seq_len_packed": SEQ, "validation_sequences": 2,
                                   "proxy": {"steps": 4, "batch_size": 2}})
    return cfg, tmp_path


def test_natural_weights_follow_each_corpus_and_matched_weights_follow_the_raw_input(packs):
    cfg, d = packs
    raw = arm_mixture(cfg, "raw", str(d / "raw"), str(d / "held"), str(d / "raw.yaml"))
    cur = arm_mixture(cfg, "curated", str(d / "cur"), str(d / "held"), str(d / "cur.yaml"))
    assert raw["weights"]["python_tutorial"] == 0 and cur["weights"]["python_tutorial"] == 0
    assert set(raw["weights"]) == {"books", "web", "wiki", "python_tutorial"}
    assert "books" not in cur["weights"]
    # natural: the curated arm's web share is far below the raw arm's (8 vs 30 documents)
    share = lambda w, s: w[s] / (w["web"] + w["wiki"])  # noqa: E731
    assert share(cur["weights"], "web") < 0.7 * share(raw["weights"], "web")
    common = {s: raw["weights"][s] for s in ("web", "wiki")}
    tot = sum(common.values())
    over = {s: w / tot for s, w in common.items()}
    m_raw = arm_mixture(cfg, "raw", str(d / "raw"), str(d / "held"), str(d / "rm.yaml"), weights_over=over)
    m_cur = arm_mixture(cfg, "curated", str(d / "cur"), str(d / "held"), str(d / "cm.yaml"), weights_over=over)
    for m in (m_raw, m_cur):
        assert set(m["weights"]) == {"web", "wiki", "python_tutorial"}
        assert m["weights"]["web"] == pytest.approx(over["web"]) and m["weights"]["wiki"] == pytest.approx(over["wiki"])
    assert "matched" in open(d / "cm.yaml").read()
    with pytest.raises(SweepError, match=r"no trainable packed data for \['books'\]"):
        arm_mixture(cfg, "curated", str(d / "cur"), str(d / "held"), str(d / "x.yaml"),
                    weights_over={"books": 0.5, "wiki": 0.5})


def test_chunks_cut_at_paragraphs_and_chapters():
    text = ".. _a:\n\n*****\nOne\n*****\n\n" + "\n\n".join(["para " * 40] * 6) + "\n\n.. _b:\n\n*****\nTwo\n*****\n\nend\n"
    chunks = chunk_text(text, 500, rst=True)
    assert len(chunks) > 2 and all(len(c) <= 700 for c in chunks)
    assert "".join(chunks).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")


def test_config_errors_are_one_line(tmp_path):
    p = tmp_path / "ab.yaml"
    p.write_text("inputs: {web: x}\nheldout: {paths: [a]}\nweighting: [natural, other]\n")
    with pytest.raises(SweepError, match=r"weighting\.1"):
        load_ab(str(p), [])
    with pytest.raises(SweepError, match="config not found"):
        load_ab(str(tmp_path / "nope.yaml"), [])


def test_report_states_both_comparisons(tmp_path):
    arms = {}
    for key, w, loss in (("raw", "natural", [5.0, 5.2]), ("curated", "natural", [5.3, 5.5]),
                         ("raw-matched", "matched", [5.0, 5.1]), ("curated-matched", "matched", [4.6, 4.7])):
        arms[key] = {"weighting": w, "corpus": key.split("-")[0], "weights": {"web": 0.5, "wiki": 0.5},
                     "packed": {"web": {"tokens": 10}}, "ledger": {"web": {"input": 3, "kept": 2,
                                                                          "dropped": {"quality": 1}}},
                     "heldout_loss": loss, "heldout_loss_mean": sum(loss) / 2,
                     "own_validation": {0: {"loss/web": 5.0}, 1: {"loss/web": 5.1}}}
    comp = {"natural": {"raw": "raw", "curated": "curated", "raw_mean": 5.1, "curated_mean": 5.4,
                        "relative_reduction": (5.1 - 5.4) / 5.1, "curated_lower_every_seed": False},
            "matched": {"raw": "raw-matched", "curated": "curated-matched", "raw_mean": 5.05, "curated_mean": 4.65,
                        "relative_reduction": (5.05 - 4.65) / 5.05, "curated_lower_every_seed": True}}
    cfg = ABConfig.model_validate({"inputs": {"web": "x"}, "heldout": {"name": "tut", "paths": ["t"]}})
    res = {"config": cfg.model_dump(mode="json"), "heldout": {"files": ["t"], "chars": 10, "chunks": 1},
           "vocab_size": 256, "seeds": [0, 1], "arms": arms, "comparisons": comp, "matched_left_out": ["books"]}
    html = write_report(res, str(tmp_path))
    md = open(os.path.join(tmp_path, "report.md")).read()
    assert os.path.exists(html) and os.path.exists(tmp_path / "report" / "heldout_loss.png")
    assert "5.88% HIGHER" in md and "7.92% lower" in md and "books left out" in md
    assert "| curated-matched | matched | 4.6 | 4.7 | 4.65 |" in md
