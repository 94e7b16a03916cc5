"""Decontamination stage in the real Beam corpus pipeline (build_corpus.py)."""
from __future__ import annotations

import collections
import glob
import json
import pathlib

import pyarrow.parquet as pq
import pytest

from pipelines import build_corpus
from tests.conftest import ALL_FILTERS_OFF, CONTENT_FILTERS_OFF

DATA = pathlib.Path(__file__).parent / "data" / "decontam"
HUMANEVAL = DATA / "humaneval_sample.jsonl"

FILLER = ("The committee met on a rainy Tuesday to review the budget for the coming year, and after a long "
          "discussion about roads, parks and the library, the members agreed to postpone the vote. ")
QA = [
    {"id": "q1", "question": "A farmer plants seventeen rows of corn with twelve plants in each row and then "
                             "loses a quarter of them to a storm. How many plants are left standing?",
     "answer": "Seventeen times twelve is 204 plants; a quarter of 204 is 51, so 153 plants are left."},
    {"id": "q2", "question": "Which gas do green plants absorb from the air to build sugars during photosynthesis?",
     "answer": "carbon dioxide"},
    {"id": "q3", "question": "Name the longest river that flows through the city of Cairo in northern Africa today.",
     "answer": "The Nile"},
]


def _write_jsonl(path: pathlib.Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("decontam")
    prompt = json.loads(HUMANEVAL.read_text().splitlines()[1])["prompt"]  # HumanEval/2
    docs = [{"id": f"clean{i}", "text": FILLER * (3 + i) + f"Note {i}.", "url": f"https://ok.example/{i}"}
            for i in range(6)]
    docs += [
        {"id": "leak-qa", "text": FILLER * 3 + QA[0]["question"] + "\n" + QA[0]["answer"] + "\n" + FILLER * 3,
         "url": "https://forum.example/t/1"},
        {"id": "leak-q2", "text": FILLER * 4 + QA[1]["question"] + " " + FILLER * 4, "url": "https://blog.example/p"},
        {"id": "leak-code", "text": "# notes\n" + FILLER * 3 + "\n" + prompt.replace("    ", "  ") + "\n" + FILLER * 3,
         "url": "https://gist.example/abc"},
        {"id": "leak-short", "text": "Quiz: " + QA[0]["question"], "url": "https://quiz.example/1"},
    ]
    corpus = _write_jsonl(d / "web.jsonl", docs)
    qa = _write_jsonl(d / "qa.jsonl", QA)
    return {"dir": d, "corpus": corpus, "qa": qa}


def _run(corpus, name, *extra):
    out = str(corpus["dir"] / name)
    build_corpus.run(["--input", f"web={corpus['corpus']}", "--output", out, "--eval-set", f"qa={corpus['qa']}",
                      "--eval-set", f"humaneval={HUMANEVAL}", *ALL_FILTERS_OFF, *extra])
    return pathlib.Path(out)


def _dropped(out: pathlib.Path) -> dict[str, dict]:
    rows = [r for f in sorted(glob.glob(str(out / "dropped" / "*.parquet"))) for r in pq.read_table(f).to_pylist()]
    return {r["id"]: r for r in rows if r["stage"] == "decontamination"}


def _texts(out: pathlib.Path) -> dict[str, str]:
    return {r["id"]: r["text"] for f in sorted(glob.glob(str(out / "text" / "*.parquet")))
            for r in pq.read_table(f, columns=["id", "text"]).to_pylist()}


@pytest.mark.slow
def test_drop_policy_end_to_end(corpus):
    out = _run(corpus, "drop")
    dropped = _dropped(out)
    assert {k: v["reason"] for k, v in dropped.items()} == {
        "leak-qa": "contaminated:qa", "leak-q2": "contaminated:qa", "leak-short": "contaminated:qa",
        "leak-code": "contaminated:humaneval"}
    assert set(_texts(out)) == {f"clean{i}" for i in range(6)}
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["balanced"] and ledger["stage_order"].index("decontamination") == ledger["stage_order"].index("exact_dedup") - 1
    assert ledger["sources"]["web"]["dropped"]["decontamination"]["contaminated:qa"] == 3
    c = json.loads((out / "contamination.json").read_text())
    assert c["documents_scanned"] == {"web": 10}
    qa, he = c["benchmarks"]["qa"], c["benchmarks"]["humaneval"]
    assert (qa["contaminated_documents"], qa["items_found"], sorted(qa["items"])) == (3, 2, ["q1", "q2"])
    assert qa["items"]["q1"]["doc_ids"] == ["leak-qa", "leak-short"]
    assert qa["items"]["q1"]["kinds"] == {"question": 1, "question+answer": 1}
    assert qa["urls"] == ["https://blog.example/p", "https://forum.example/t/1", "https://quiz.example/1"]
    assert he["items"]["HumanEval/2"]["kinds"] == {"question": 1} and he["by_source"] == {"web": 1}
    assert c["index"]["entries"] > 0 and c["index"]["side_input_bytes"] > 0
    assert he["eval_set"]["layout"] == "humaneval" and he["eval_set"]["family"] == "code"
    html = (out / "report.html").read_text()
    assert "Eval-set contamination" in html and "HumanEval/2" in html


@pytest.mark.slow
def test_excise_policy_counts_modified_and_output_is_runner_independent(corpus):
    out = _run(corpus, "excise", "--set", "decontamination.policy=excise", "--set", "decontamination.min_piece_chars=50",
               "--no-report")
    texts = _texts(out)
    assert {"leak-qa", "leak-q2", "leak-code"} <= set(texts)
    assert all("seventeen rows" not in t and "photosynthesis" not in t for t in texts.values())
    assert "Return length of given string" not in texts["leak-code"] and "committee" in texts["leak-code"]
    assert _dropped(out)["leak-short"]["reason"] == "contaminated:qa:too_short_after_excision"
    mod = json.loads((out / "ledger.json").read_text())["sources"]["web"]["modified"]["decontamination"]
    assert mod["decontamination.modified"] == 3 and mod["decontamination.excised:qa"] == 2
    c1 = (out / "contamination.json").read_bytes()
    out2 = _run(corpus, "excise_mp", "--set", "decontamination.policy=excise", "--set",
                "decontamination.min_piece_chars=50", "--no-report", "--direct_num_workers=2",
                "--direct_running_mode=multi_processing")
    assert (out2 / "contamination.json").read_bytes() == c1
    assert _texts(out2) == texts


@pytest.mark.slow
def test_bloom_index_gives_the_same_report_and_dry_run_keeps_all(corpus):
    exact = json.loads((_run(corpus, "exact", "--no-report") / "contamination.json").read_text())
    bloom = json.loads((_run(corpus, "bloom", "--no-report", "--set", "decontamination.index=bloom")
                        / "contamination.json").read_text())
    assert bloom["index"]["mode"] == "bloom" and bloom["index"]["bytes"] < exact["index"]["bytes"]
    assert bloom["benchmarks"] == exact["benchmarks"]
    dry = _run(corpus, "dry", "--no-report", "--dry-run")  # decide, keep everything, ledger still balances
    ledger = json.loads((dry / "ledger.json").read_text())
    assert ledger["balanced"] and ledger["totals"]["kept"] == 10
    assert ledger["sources"]["web"]["modified"]["decontamination"] == {"decontamination.would_drop": 4}
    assert json.loads((dry / "contamination.json").read_text())["benchmarks"]["qa"]["actions"] == {"would_drop": 3}


def test_eval_set_flags_merge_with_the_config_registry(tmp_path):
    from pipelines.config import load_config
    from pipelines.decontam import apply_eval_set_flags

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("decontamination:\n  policy: excise\n  eval_sets:\n"
                        "    - {name: gsm8k, path: old.jsonl, policy: drop, fields: [question]}\n")
    d = load_config(str(cfg_file)).decontamination
    d2 = apply_eval_set_flags(d, ["gsm8k=new.jsonl", "arc=tfds:ai2_arc/ARC-Challenge", "mine=x/*.parquet"])
    assert [(e.name, e.path, e.tfds) for e in d2.eval_sets] == [
        ("gsm8k", "new.jsonl", None), ("arc", None, "ai2_arc/ARC-Challenge"), ("mine", "x/*.parquet", None)]
    assert d2.eval_sets[0].policy == "drop" and d2.eval_sets[0].fields == ["question"] and d2.policy == "excise"
    with pytest.raises(ValueError, match="must match"):
        apply_eval_set_flags(d, ["bad name=x.jsonl"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("decontamination:\n  eval_sets:\n    - {name: a, path: p, polcy: drop}\n")
    with pytest.raises(Exception, match=r"decontamination.eval_sets.0.polcy: unknown key"):
        load_config(str(bad))


def test_missing_eval_set_and_bad_flag_are_one_line_errors(corpus, capsys):
    args = ["--input", f"web={corpus['corpus']}", "--output", str(corpus["dir"] / "err")]
    assert build_corpus.main(args + ["--eval-set", "mmlu=/nonexistent/mmlu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "eval set 'mmlu'" in err and "nothing is downloaded" in err
    assert build_corpus.main(args + ["--eval-set", "justaname"]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err
    assert not (corpus["dir"] / "err").exists()


@pytest.mark.slow
@pytest.mark.devcorpus
def test_dev_corpus_recall_and_false_positives(dev_corpus, tmp_path):
    """Planted contamination in ../shared/dev_corpus: recall per mode, FP rate on clean docs."""
    sets = sorted(glob.glob(str(dev_corpus / "eval" / "*.jsonl")))
    flags = [a for f in sets for a in ("--eval-set", f"{pathlib.Path(f).stem}={f}")]
    out = tmp_path / "dev"
    build_corpus.run(["--input", f"dev={dev_corpus / 'text' / 'corpus.jsonl'}", "--output", str(out), "--no-report",
                      *CONTENT_FILTERS_OFF, *flags])
    flagged = _dropped(out)
    report = json.loads((out / "contamination.json").read_text())
    found = {(d, item) for b in report["benchmarks"].values() for item, v in b["items"].items() for d in v["doc_ids"]}
    labels = [json.loads(x) for x in (dev_corpus / "text" / "labels.jsonl").read_text().splitlines()]
    planted = [x for x in labels if x["type"] == "contamination"]
    hits = collections.Counter()
    total = collections.Counter()
    for lab in planted:
        total[lab["mode"]] += 1
        hits[lab["mode"]] += (lab["doc_id"], lab["item_id"]) in found
        assert lab["doc_id"] not in flagged or lab["eval_set"] in flagged[lab["doc_id"]]["reason"]
    recall = {m: hits[m] / total[m] for m in total}
    print("dev corpus recall by mode:", {m: f"{hits[m]}/{total[m]}" for m in sorted(total)})
    assert recall["verbatim_qa"] >= 0.99 and recall["reformatted"] >= 0.99 and recall["question_only"] >= 0.95
    contaminated = {x["doc_id"] for x in planted}
    docs = [json.loads(x)["id"] for x in (dev_corpus / "text" / "corpus.jsonl").read_text().splitlines()]
    clean = [d for d in docs if d not in contaminated]
    fp = [d for d in clean if d in flagged]
    print(f"false positives: {len(fp)}/{len(clean)} clean documents")
    assert len(fp) <= 0.001 * len(clean)
    partial = report["totals"]["items_found"] and sum(b["match_kinds"].get("partial", 0)
                                                      for b in report["benchmarks"].values())
    assert partial >= 1  # partial matches are reported as such
