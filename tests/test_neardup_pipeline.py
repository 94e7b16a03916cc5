"""Integration tests: the near_dup and boilerplate stages on Beam (DirectRunner)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest

from tests.conftest import CONTENT_FILTERS_OFF

from filters.boilerplate import BoilerplateConfig
from filters.minhash import NearDupConfig
from filters.schema import DROPPED_FIELDS, new_text_record
from pipelines.neardup import BoilerplateLines, ConnectedComponents, NearDup, contract, pack

WORDS = [f"w{i}" for i in range(20000)]


def run_stage(stage, docs, tmp_path, name="run"):
    """Run ``stage`` over ``docs``; return (kept, dropped, events) read back from files."""
    d = tmp_path / name
    d.mkdir()

    def sink(pcoll, fname):
        def write(items):
            with open(d / fname, "w") as f:
                json.dump(items, f, default=str)
        return pcoll | f"{fname}List" >> beam.combiners.ToList() | f"{fname}Write" >> beam.Map(write)

    with beam.Pipeline() as p:
        res = p | beam.Create(docs) | stage
        sink(res.kept, "kept")
        sink(res.dropped, "dropped")
        sink(res.events, "events")
    return [json.load(open(d / f)) for f in ("kept", "dropped", "events")]


def edit(words, rng, n):
    w = list(words)
    for i in rng.sample(range(len(w)), n):
        w[i] = rng.choice(WORDS)
    return w


# ------------------------------------------------------------------ near_dup
def test_near_dup_finds_planted_copies_and_accounts(tmp_path):
    rng = random.Random(11)
    docs, truth = [], {}
    for i in range(80):
        words = [rng.choice(WORDS) for _ in range(300)]
        docs.append(new_text_record(" ".join(words), "web", id=f"d{i:03d}"))
        if i % 8 == 0:  # 2 copies, 1 word changed each (Jaccard ≈ 0.94)
            for c in range(2):
                docs.append(new_text_record(" ".join(edit(words, rng, 1)), "web", id=f"d{i:03d}c{c}"))
            truth[f"d{i:03d}"] = {f"d{i:03d}", f"d{i:03d}c0", f"d{i:03d}c1"}
        if i % 8 == 4:  # a heavily edited copy (Jaccard ≈ 0.3): not a near-duplicate
            docs.append(new_text_record(" ".join(edit(words, rng, 45)), "web", id=f"d{i:03d}far"))
    # a quality score decides the survivor of one cluster
    for d in docs:
        if d["id"] == "d008c1":
            d["scores"] = {"quality.score": 0.99}
    cfg = NearDupConfig(survivor=["max:quality.score", "longest", "smallest_id"], cc_max_rounds=6)
    kept, dropped, events = run_stage(NearDup(cfg, {"web": 0}, report_dir=str(tmp_path / "out")), docs, tmp_path)

    assert len(kept) + len(dropped) == len(docs)
    assert {d["id"] for d in kept} | {r["id"] for r in dropped} == {d["id"] for d in docs}
    clusters: dict[str, set] = {}
    for r in dropped:
        assert set(DROPPED_FIELDS) <= set(r)
        assert r["stage"] == "near_dup" and r["reason"] == "near_duplicate"
        assert r["cluster_id"].startswith("nd-") and r["survivor_id"] and "_text" in r
        assert 0.8 <= r["score"] <= 1.0
        detail = json.loads(r["detail"])
        assert detail["cluster_size"] == 3 and detail["nearest_similarity"] >= 0.8
        clusters.setdefault(r["cluster_id"], set()).update({r["id"], r["survivor_id"]})
    assert sorted(map(sorted, clusters.values())) == sorted(map(sorted, truth.values()))
    survivors = {r["survivor_id"] for r in dropped}
    assert "d008c1" in survivors                       # best quality score wins
    by_id = {d["id"]: d for d in docs}
    for members in truth.values():                     # no scores: longest, then smallest id
        if "d008c1" not in members:
            assert min(members, key=lambda i: (-len(by_id[i]["text"]), i)) in survivors
    assert not any(r["id"].endswith("far") for r in dropped)
    assert Counter(e[0][2] for e in events)["clusters"] == len(truth)
    stats = json.load(open(tmp_path / "out" / "near_dup" / "stats.json"))
    assert stats["clusters"] == len(truth) and stats["cluster_size_histogram"] == {"3": len(truth)}
    assert stats["metrics"]["pairs_accepted"] >= 2 * len(truth)
    import pyarrow.parquet as pq

    pairs = pq.read_table(next((tmp_path / "out" / "near_dup").glob("pairs-*.parquet"))).to_pylist()
    assert pairs and all(p["text_a"] and p["text_b"] for p in pairs)
    assert any(p["accepted"] for p in pairs)


def test_near_dup_without_verification_and_with_signature(tmp_path):
    rng = random.Random(2)
    base = [rng.choice(WORDS) for _ in range(400)]
    docs = [new_text_record(" ".join(base), "s", id="a"),
            new_text_record(" ".join(edit(base, rng, 2)), "s", id="b"),
            new_text_record(" ".join(rng.choice(WORDS) for _ in range(400)), "s", id="c"),
            new_text_record("", "s", id="empty1"), new_text_record("  ", "s", id="empty2")]
    for verify in ("none", "signature"):
        kept, dropped, _ = run_stage(NearDup(NearDupConfig(verify=verify, cc_max_rounds=3)), docs, tmp_path, verify)
        assert sorted(d["id"] for d in kept) == ["a", "c", "empty1", "empty2"], verify
        assert [(r["id"], r["survivor_id"]) for r in dropped] == [("b", "a")]


def test_repeated_ids_are_never_merged(tmp_path):
    rng = random.Random(6)
    base = [rng.choice(WORDS) for _ in range(200)]
    docs = [new_text_record(" ".join(base), "s", id="same"), new_text_record(" ".join(edit(base, rng, 1)), "s", id="same"),
            new_text_record(" ".join(edit(base, rng, 1)), "s", id="other")]
    kept, dropped, events = run_stage(NearDup(NearDupConfig(cc_max_rounds=3)), docs, tmp_path)
    assert sorted(d["id"] for d in kept) == ["other", "same", "same"] and dropped == []
    assert [e for e in events if e[0][2] == "key_collisions"] == [[["s", "near_dup", "key_collisions"], 1]] * 2


def test_ten_thousand_identical_documents_one_cluster(tmp_path):
    text = " ".join(WORDS[:30])
    docs = [new_text_record(text, "s", id=f"i{i:05d}") for i in range(10_000)]
    kept, dropped, events = run_stage(NearDup(NearDupConfig(cc_max_rounds=3)), docs, tmp_path)
    assert [d["id"] for d in kept] == ["i00000"]
    assert len(dropped) == 9_999
    assert len({r["cluster_id"] for r in dropped}) == 1 and {r["survivor_id"] for r in dropped} == {"i00000"}
    assert json.loads(dropped[0]["detail"])["cluster_size"] == 10_000


def test_long_chain_is_one_cluster(tmp_path):
    # doc i = words [6i, 6i+100): Jaccard 0.88 to its neighbours, 0.78 two apart, below after
    rng = random.Random(1)
    stream = [rng.choice(WORDS) for _ in range(600 * 6 + 100)]
    docs = [new_text_record(" ".join(stream[i * 6:i * 6 + 100]), "s", id=f"c{i:04d}") for i in range(600)]
    cfg = NearDupConfig(bands=20, rows=5, partitions=8, cc_max_rounds=12)
    kept, dropped, _ = run_stage(NearDup(cfg, report_dir=str(tmp_path / "out")), docs, tmp_path)
    assert len(kept) == 1 and len(dropped) == 599
    assert len({r["cluster_id"] for r in dropped}) == 1
    stats = json.load(open(tmp_path / "out" / "near_dup" / "stats.json"))
    assert stats["metrics"]["pairs_accepted"] == 599          # only neighbours verify
    assert stats["metrics"]["pairs_rejected"] > 0             # two-apart candidates were rejected
    assert stats["cc_rounds_run"] > 2 and stats["cc_changes_per_round"][-1] == 0


# ------------------------------------------------------- connected components
def _union_find_components(edges):
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def test_contract_step_preserves_components_and_reaches_star():
    rng = np.random.default_rng(0)
    ids = rng.choice(1 << 40, 300, replace=False)
    edges = ids[rng.integers(0, 300, (250, 2))]
    edges = edges[edges[:, 0] != edges[:, 1]]
    out, changes = contract(np.concatenate([edges, edges[:, ::-1]]))
    assert changes > 0
    truth = _union_find_components(edges.tolist())
    for m, v in out.tolist():
        assert m < v and truth[v] == m  # one partition = the whole graph: stars around component minima
    again, changes2 = contract(np.concatenate([out, out[:, ::-1]]))
    assert changes2 == 0 and np.array_equal(again, out)


def test_connected_components_transform_matches_union_find(tmp_path):
    rng = np.random.default_rng(7)
    ids = rng.choice(1 << 40, 400, replace=False)
    edges = ids[rng.integers(0, 400, (330, 2))]
    edges = edges[edges[:, 0] != edges[:, 1]]
    k = 8
    items = [(int(a) % k, (k, pack(np.array([[a, b]])))) for a, b in edges] + \
            [(int(b) % k, (k, pack(np.array([[b, a]])))) for a, b in edges]
    out = tmp_path / "cc.json"

    def write(rows):
        with open(out, "w") as f:
            json.dump(rows, f)

    with beam.Pipeline() as p:
        comps = p | beam.Create(items) | ConnectedComponents(10)
        (comps | beam.FlatMap(lambda kv: np.frombuffer(kv[1][1], np.int64).reshape(-1, 2).tolist())
         | beam.combiners.ToList() | beam.Map(write))
    got = {v: m for m, v in json.load(open(out))}
    truth = _union_find_components(edges.tolist())
    assert {v: m for v, m in truth.items() if v != m} == got


def test_connected_components_fails_clearly_when_not_converged(tmp_path):
    rng = random.Random(4)
    stream = [rng.choice(WORDS) for _ in range(120 * 6 + 100)]
    docs = [new_text_record(" ".join(stream[i * 6:i * 6 + 100]), "s", id=f"c{i:04d}") for i in range(120)]
    cfg = NearDupConfig(bands=20, rows=5, partitions=16, cc_max_rounds=1)
    with pytest.raises(Exception, match="did not converge in 1 rounds"):
        run_stage(NearDup(cfg), docs, tmp_path)


# ---------------------------------------------------------------- boilerplate
def test_boilerplate_lines_removed_and_counted(tmp_path):
    rng = random.Random(3)
    footer = "Copyright Example Corp. All rights reserved worldwide."
    nav = "Home | Products | About us | Contact | Careers | Blog"
    docs = []
    for i in range(30):
        body = "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(3))
        docs.append(new_text_record(f"{nav}\n{body}\n{footer}", "web", id=f"p{i:02d}"))
    docs.append(new_text_record(f"{nav}\n{footer}", "web", id="only-boilerplate"))
    code = new_text_record(f"{footer}\nprint('hi')", "code", id="code1")
    code["lang"] = "code:python"
    docs.append(code)
    cfg = BoilerplateConfig(min_docs=10, min_chars=20)
    kept, dropped, events = run_stage(BoilerplateLines(cfg, report_dir=str(tmp_path / "out")), docs, tmp_path)
    assert [r["id"] for r in dropped] == ["only-boilerplate"]
    assert dropped[0]["stage"] == "boilerplate" and dropped[0]["reason"] == "empty_after_boilerplate"
    by_id = {d["id"]: d for d in kept}
    assert footer not in by_id["p00"]["text"] and nav not in by_id["p00"]["text"]
    assert len(by_id["p00"]["text"].splitlines()) == 3
    assert by_id["p00"]["scores"]["boilerplate.lines_removed"] == 2
    assert by_id["code1"]["text"].startswith(footer)         # code is left alone
    ev = Counter()
    for (src, stage, name), n in events:
        ev[(stage, name)] += n
    assert ev[("boilerplate", "docs_modified")] == 31 and ev[("boilerplate", "lines_removed")] == 62
    stats = json.load(open(tmp_path / "out" / "boilerplate" / "stats.json"))
    assert stats["boilerplate_keys"] == 2 and {t["text"] for t in stats["top_removed"]} == {footer.lower(), nav.lower()}


# --------------------------------------------------------- whole corpus build
def _write_corpus(path):
    rng = random.Random(9)
    with open(path, "w") as f:
        for i in range(90):
            words = [rng.choice(WORDS) for _ in range(150)]
            f.write(json.dumps({"id": f"s{i:03d}", "text": " ".join(words)}) + "\n")
            if i % 6 == 0:
                f.write(json.dumps({"id": f"s{i:03d}b", "text": " ".join(edit(words, rng, 1))}) + "\n")
            if i % 15 == 0:
                f.write(json.dumps({"id": f"s{i:03d}x", "text": " ".join(words)}) + "\n")


def _build(repo_root, inp, out, extra=()):
    cmd = [sys.executable, str(repo_root / "pipelines" / "build_corpus.py"), "--input", f"t={inp}", "--output", str(out),
           "--set", "near_dup.cc_max_rounds=4", *CONTENT_FILTERS_OFF, *extra]
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return json.load(open(out / "manifest.json")), json.load(open(out / "ledger.json"))


@pytest.mark.slow
def test_build_corpus_same_output_with_one_and_two_workers(tmp_path, repo_root):
    inp = tmp_path / "in.jsonl"
    _write_corpus(inp)
    m1, ledger = _build(repo_root, inp, tmp_path / "one")
    m2, _ = _build(repo_root, inp, tmp_path / "two", ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    assert m1["manifest_hash"] == m2["manifest_hash"]
    for sub in ("dropped", "near_dup"):
        for f in sorted(os.listdir(tmp_path / "one" / sub)):
            assert (tmp_path / "one" / sub / f).read_bytes() == (tmp_path / "two" / sub / f).read_bytes(), f
    src = ledger["sources"]["t"]
    assert ledger["balanced"] and src["dropped"]["near_dup"] == {"near_duplicate": 15}
    assert src["dropped"]["exact_dedup"] == {"duplicate": 6}
    assert [st for st, _ in src["after_stage"]][-2:] == ["near_dup", "boilerplate"]
    report = (tmp_path / "one" / "report.md").read_text()
    assert "Near-duplicates" in report and "Cluster-size histogram" in report and "Boilerplate lines" in report


# ------------------------------------------------------------ dev corpus truth
@pytest.mark.slow
@pytest.mark.devcorpus
def test_dev_corpus_precision_recall(dev_corpus, tmp_path, repo_root):
    sys.path.insert(0, str(repo_root))
    from bench.neardup_eval import build, evaluate, format_report

    out = str(tmp_path / "dev")
    build(out, ["--set", "stages.boilerplate=false"])
    res = evaluate(out, dev_corpus)
    print(format_report(res))
    assert res["f1_at_threshold"] >= 0.95
    assert res["precision_overall"] >= 0.99
    assert res["labelled_below_grey_found"] == []      # heavily edited copies are not clustered
    assert res["dropped_near_dup"] >= 20
