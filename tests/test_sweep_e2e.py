"""A real staged sweep end to end: stage 1 trained once with the project's trainer, three
proxies warm-started from its checkpoint (``python -m train --init-from``) under sampled
late-stage mixtures, regression, search, fresh verification proxies, report — on a tiny
synthetic packed corpus.  Then: a warm-started proxy equals the same two-stage mixture
trained from scratch, finished proxies are skipped on rerun, and a warm start that would
change the stage already trained on is refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mixtures.config import load_mixture
from mixtures.sweep import ONE_THREAD_XLA, main
from train.metrics import read_jsonl
from tests.mixtures_data import make_docs, write_pack

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 33
O0 = "--xla_backend_optimization_level=0"        # compile-dominated runs (as in tests/test_train.py)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep_e2e")
    write_pack(root / "tokens", {"a": make_docs("a", 60, 20, 80), "b": make_docs("b", 40, 20, 80),
                                 "c": make_docs("c", 30, 20, 80)}, SEQ)
    cfg = {"name": "e2e", "tokens_dir": str(root / "tokens"), "validation_sequences": 2, "out": str(root / "out"),
           "proxy": {"preset": "tiny", "steps": 12, "batch_size": 4, "checkpoint_every": 4,
                     "overrides": {"optim.warmup_steps": 2, "log.peak_flops": 1e11}},
           "staged": {"stage1_steps": 8},
           "sampling": {"proxies": 3, "heldout": 0},
           "regression": {"models": ["loglinear", "linear"]},
           "search": {"candidates": 2000, "top_k": 10},
           "verify": {"seeds": [0], "baselines": ["natural"]}}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    mp = pytest.MonkeyPatch()
    mp.setenv("XLA_FLAGS", O0)
    try:
        assert main([str(path)]) == 0
    finally:
        mp.undo()
    return root, str(path), root / "out"


def _evals(run_dir):
    return {r["step"]: r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if r.get("kind") == "eval"}


def test_sweep_outputs(swept):
    root, _, out = swept
    fit = json.load(open(out / "fit.json"))
    assert [r["id"] for r in fit["rows"]] == ["p000", "p001", "p002"]
    for r in fit["rows"]:
        # random-token documents: nothing below ~ln(3000) to learn beyond unigram counts; not diverged
        assert set(r["losses"]) == {"a", "b", "c"} and all(np.isfinite(v) and v < 9.0 for v in r["losses"].values())
    prop = load_mixture(str(out / "proposed_mixture.yaml"))
    assert [s.name for s in prop.stages] == ["stage1", "stage2"]
    assert prop.stages[1].weights == pytest.approx(fit["proposed"])
    ver = json.load(open(out / "verify.json"))
    assert set(ver["mixtures"]) == {"proposed", "natural"} and "natural" in ver["beats"]
    html = open(out / "report.html").read()
    assert "Verification: fresh proxies" in html and "data:image/png;base64" in html
    # finished proxies keep no checkpoints; stage 1 keeps its own (the proxies start from it)
    assert not os.path.exists(out / "proxies" / "p000" / "checkpoints")
    assert os.listdir(out / "stage1-s0" / "checkpoints")


def test_every_proxy_starts_from_the_stage1_checkpoint(swept):
    _, _, out = swept
    stage1 = _evals(out / "stage1-s0")
    assert set(stage1) == {0, 8}
    finals = []
    for pid in ("p000", "p001", "p002"):
        recs = read_jsonl(os.path.join(out / "proxies" / pid, "metrics.jsonl"))
        start = [r for r in recs if r.get("kind") == "run"][0]
        assert start["event"] == "warm_start" and start["step"] == 8
        assert [r["step"] for r in recs if r.get("kind") == "train"] == list(range(9, 13))
        ev = _evals(out / "proxies" / pid)
        # the restored parameters are stage 1's: identical validation losses at step 8
        assert {k: v for k, v in ev[8].items() if k.startswith("loss")} == \
               {k: v for k, v in stage1[8].items() if k.startswith("loss")}
        finals.append(ev[12]["loss"])
    assert len(set(finals)) == 3                           # different late-stage mixtures, different models


def test_warm_start_equals_the_two_stage_mixture_from_scratch(swept, tmp_path):
    _, _, out = swept
    spec = json.load(open(out / "proxies" / "p001" / "proxy.json"))
    args = [a.replace("<out>", str(out)) for a in spec["train_args"]]
    i = args.index("--init-from")
    del args[i:i + 2]
    args[args.index("--run-dir") + 1] = str(tmp_path / "scratch")
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": f"{O0} {ONE_THREAD_XLA}",
           "PYTHONHASHSEED": "0"}
    p = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    warm = _evals(out / "proxies" / "p001")[12]
    scratch = _evals(tmp_path / "scratch")[12]
    for k in warm:
        if k.startswith("loss"):
            assert scratch[k] == pytest.approx(warm[k], abs=1e-5), k


def test_rerun_skips_finished_proxies(swept, capsys):
    _, path, out = swept
    before = {pid: os.path.getsize(out / "proxies" / pid / "train.log") for pid in ("p000", "p001", "p002")}
    assert main([path, "--phase", "run"]) == 0
    assert "3 of 3 already finished (skipped)" in capsys.readouterr().out
    assert before == {pid: os.path.getsize(out / "proxies" / pid / "train.log") for pid in before}


def test_trainer_refuses_warm_starts_that_change_trained_stages(swept, tmp_path):
    _, _, out = swept
    mix = yaml.safe_load(open(out / "proxies" / "p000" / "mixture.yaml"))
    mix["stages"][0]["weights"] = {"a": 0.2, "b": 0.2, "c": 0.6}         # stage 1 is not what was trained
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mix))
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": O0}
    base = [sys.executable, "-m", "train", "--preset", "tiny", "--steps", "12", "--run-dir", str(tmp_path / "r"),
            "--set", "model.vocab_size=3000", "--set", "seq_len=32", "--set", "batch_size=4"]
    p = subprocess.run(base + ["--mixture", str(tmp_path / "m.yaml"), "--init-from", str(out / "stage1-s0")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "plans that stage differently" in p.stderr, p.stderr[-2000:]
    assert len(p.stderr.strip().splitlines()) == 1 or "Traceback" not in p.stderr
    p = subprocess.run(base + ["--mixture", str(out / "proxies" / "p000" / "mixture.yaml"),
                               "--init-from", str(tmp_path / "nowhere")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "no such run or checkpoint directory" in p.stderr and "Traceback" not in p.stderr
