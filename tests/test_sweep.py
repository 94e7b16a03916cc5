"""Mixture sweeps without training: regression, search, planning, fitting and the report
on synthetic loss functions (the real trainer runs in tests/test_sweep_e2e.py)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

from mixtures import regress, search
from mixtures.config import load_mixture, make_plan, load_data, plan_mixture
from mixtures.loader import LoaderError, MixtureSource
from mixtures.sweep import Proxy, Sweep, SweepError, load_sweep, main
from tests.mixtures_data import make_docs, write_mixture, write_pack

SEQ = 33


# ---------------------------------------------------------------- synthetic losses
def law(W, c, k, T):
    """Per-domain losses of the data-mixing-law family: c_d + k_d exp(T_d . w)."""
    W = np.atleast_2d(W)
    return c[None, :] + k[None, :] * np.exp(W @ T.T)


C = np.array([2.0, 3.0, 2.5])
K = np.array([1.5, 1.0, 2.0])
T = np.array([[-2.0, 0.3, 0.1],      # domain 0 wants source 0
              [0.2, -1.5, 0.4],      # domain 1 wants source 1
              [0.1, 0.5, -2.5]])     # domain 2 wants source 2


def test_spearman_and_scores():
    assert regress.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert regress.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(regress.spearman([1, 1, 1], [1, 2, 3]))         # constant side
    assert np.isnan(regress.spearman([1, 2], [1, 2]))               # too few points
    s = regress.scores(np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 2.5]))
    assert s["mae"] == pytest.approx(1 / 3) and s["n"] == 3


def test_loglinear_recovers_the_mixing_law_and_beats_linear_on_held_out():
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), size=40)
    Y = law(X, C, K, T) + rng.normal(0, 0.002, (40, 3))
    Xh = rng.dirichlet(np.ones(3), size=30)
    Yh = law(Xh, C, K, T)
    m = regress.LogLinearLaw().fit(X, Y)
    pred = m.predict(Xh)
    assert np.abs(pred - Yh).max() < 0.05
    for d in range(3):
        assert regress.spearman(pred[:, d], Yh[:, d]) > 0.99
    lin = regress.LinearMix().fit(X, Y).predict(Xh)
    assert np.abs(pred - Yh).mean() < np.abs(lin - Yh).mean()


def test_linear_and_lightgbm_fit_what_they_can():
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(3), size=80)
    coef = np.array([[3.0, 1.0], [2.0, 4.0], [1.0, 2.0]])         # weights -> 2 domains, linear
    Y = X @ coef
    lin = regress.LinearMix().fit(X, Y)
    assert np.allclose(lin.predict(X), Y, atol=1e-9)
    Yn = law(X, C, K, T)
    gb = regress.GBTrees().fit(X[:60], Yn[:60])
    t = np.full(3, 1 / 3)
    assert regress.spearman(gb.predict(X[60:]) @ t, Yn[60:] @ t) > 0.6
    # deterministic
    assert np.array_equal(gb.predict(X[60:]), regress.GBTrees().fit(X[:60], Yn[:60]).predict(X[60:]))


def test_leave_one_out_never_sees_the_row_it_predicts():
    rng = np.random.default_rng(2)
    X = rng.dirichlet(np.ones(3), size=12)
    Y = law(X, C, K, T)
    a = regress.loo_predict(lambda: regress.LinearMix(), X, Y)
    Y2 = Y.copy()
    Y2[5] += 100.0                                     # only row 5's own label changes
    b = regress.loo_predict(lambda: regress.LinearMix(), X, Y2)
    assert np.allclose(a[5], b[5])
    assert not np.allclose(a[np.arange(12) != 5], b[np.arange(12) != 5])


def test_compare_and_choose_by_leave_one_out_rank():
    rng = np.random.default_rng(3)
    X = rng.dirichlet(np.ones(3), size=20)
    Y = law(X, C, K, T)
    Xh = rng.dirichlet(np.ones(3), size=6)
    Yh = law(Xh, C, K, T)
    res = regress.compare(["linear", "loglinear"], X, Y, Xh, Yh, np.full(3, 1 / 3))
    assert set(res) == {"linear", "loglinear"}
    for r in res.values():
        assert len(r["loo_pred"]) == 20 and r["heldout"]["n"] == 6
    assert res["loglinear"]["loo"]["spearman"] > 0.95
    assert regress.choose(res) == max(res, key=lambda n: res[n]["loo"]["spearman"])
    fake = {"a": {"loo": {"spearman": float("nan"), "mae": 0.1}}, "b": {"loo": {"spearman": 0.2, "mae": 9.0}}}
    assert regress.choose(fake) == "b"
    with pytest.raises(ValueError, match="unknown regression model"):
        regress.make("xgboost")


# ---------------------------------------------------------------- search
def test_region_rejects_impossible_bounds():
    with pytest.raises(search.SearchError, match="empty"):
        search.Region(["a", "b"], [0.5, 0.5], [0.6, 0.0], [0.5, 1.0])
    with pytest.raises(search.SearchError, match="sum"):
        search.Region(["a", "b", "c"], [0.3, 0.3, 0.4], [0, 0, 0], [0.3, 0.3, 0.3])
    r = search.Region(["a", "b"], [0.5, 0.5], [0.1, 0.0], [0.8, 1.0])
    assert r.feasible(np.array([[0.2, 0.8], [0.9, 0.1], [0.05, 0.95], [0.3, 0.6]])).tolist() == [True, False, False,
                                                                                                   False]


def test_sampling_respects_bounds_is_seeded_and_flat_covers_balanced_mixtures():
    region = search.Region(["big", "s1", "s2"], [0.9, 0.05, 0.05], [0.0, 0.02, 0.0], [1.0, 0.5, 0.3])
    W = search.sample(np.random.default_rng(0), region, 500, flat=0.5)
    assert region.feasible(W).all() and np.allclose(W.sum(1), 1)
    assert np.array_equal(W, search.sample(np.random.default_rng(0), region, 500, flat=0.5))
    around = search.sample(np.random.default_rng(1), region, 500, flat=0.0)
    # draws around a 90% source rarely give it < 40%; flat draws often do
    assert (W[:, 0] < 0.4).mean() > 3 * (around[:, 0] < 0.4).mean()
    tight = search.Region(["a", "b"], [0.5, 0.5], [0.0, 0.0], [0.001, 1.0])
    tiny = search.Region(["a", "b"], [0.99, 0.01], [0.0, 0.999], [1.0, 1.0])
    assert search.sample(np.random.default_rng(0), tight, 10).shape == (10, 2)
    with pytest.raises(search.SearchError, match="fit the weight bounds"):
        search.sample(np.random.default_rng(0), tiny, 5, scale=(5.0, 5.0), max_tries=3)


def test_search_finds_the_optimum_of_a_known_function_and_stays_feasible():
    opt = np.array([0.2, 0.5, 0.3])

    def f(W):
        return ((np.atleast_2d(W) - opt) ** 2).sum(1)

    region = search.Region(["a", "b", "c"], [0.6, 0.2, 0.2], np.zeros(3), np.ones(3))
    res = search.search(f, region, np.random.default_rng(0), candidates=20_000, top_k=50, flat=0.5)
    assert np.abs(res["weights"] - opt).max() < 0.05
    assert res["predicted_target"] == pytest.approx(float(f(res["weights"])[0]))
    # a cap that cuts off the optimum: the answer sits at the cap
    capped = search.Region(["a", "b", "c"], [0.6, 0.2, 0.2], np.zeros(3), np.array([1.0, 0.3, 1.0]))
    res = search.search(f, capped, np.random.default_rng(0), candidates=20_000, top_k=20, flat=0.5)
    assert capped.feasible(res["weights"][None])[0]
    assert 0.25 < res["weights"][1] <= 0.3 + 1e-9


def test_sensitivity_signs():
    region = search.Region(["a", "b"], [0.5, 0.5], np.zeros(2), np.ones(2))

    def f(W):                       # more of "a" is better
        return 3.0 - np.atleast_2d(W)[:, 0]

    s = search.sensitivity(f, np.array([0.5, 0.5]), region)
    assert s["a"]["per_delta"] == pytest.approx(-0.05) and s["b"]["per_delta"] == pytest.approx(0.05)
    assert len(s["a"]["x"]) == len(s["a"]["predicted"]) and all(s["a"]["feasible"])
    W = search.along_source(np.array([0.2, 0.3, 0.5]), 0, np.array([0.0, 0.6]))
    assert np.allclose(W, [[0, 0.375, 0.625], [0.6, 0.15, 0.25]])


# ---------------------------------------------------------------- warm start in the loader
@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep_pack")
    sources = {"big": make_docs("big", 120, 20, 90), "mid": make_docs("mid", 40, 20, 90),
               "small": make_docs("small", 12, 20, 60)}
    write_pack(root / "tokens", sources, SEQ)
    return root


def _two_stage(tmp, packed, w2, w1=None, tokens1=40 * SEQ, name="m"):
    w1 = w1 or {"big": 0.6, "mid": 0.3, "small": 0.1}
    return write_mixture(tmp / f"{name}.yaml", {
        "name": name, "tokens_dir": str(packed / "tokens"), "validation_sequences": 2,
        "sources": {"big": {}, "mid": {}, "small": {}},
        "stages": [{"name": "s1", "tokens": tokens1, "weights": w1},
                   {"name": "s2", "tokens": 24 * SEQ, "weights": w2}]})


def test_warm_start_continues_a_checkpointed_position_under_a_new_late_stage(tmp_path, packed):
    a = MixtureSource.from_config(_two_stage(tmp_path, packed, {"big": 1.0}, name="a"), 8, seq_len=SEQ - 1)
    for _ in range(5):                                  # 40 examples = the whole first stage
        a.next_batch()
    state = json.loads(json.dumps(a.get_state()))
    b_path = _two_stage(tmp_path, packed, {"mid": 0.5, "small": 0.5}, name="b")
    b = MixtureSource.from_config(b_path, 8, seq_len=SEQ - 1)
    with pytest.raises(LoaderError, match="fingerprint"):
        b.set_state(state)                              # a plain resume refuses another mixture
    b.warm_start(state)
    fresh = MixtureSource.from_config(b_path, 8, seq_len=SEQ - 1)
    for _ in range(5):
        fresh.next_batch()
    for _ in range(3):
        x, y = b.next_batch(), fresh.next_batch()
        assert all(np.array_equal(x[k], y[k]) for k in x)
    assert set(b.consumed()) == {"s1", "s2"}
    # stage 1 planned differently: refused, whatever changed
    for w1, tokens1 in (({"big": 0.5, "mid": 0.4, "small": 0.1}, 40 * SEQ), (None, 48 * SEQ)):
        c = MixtureSource.from_config(_two_stage(tmp_path, packed, {"big": 1.0}, w1=w1, tokens1=tokens1, name="c"),
                                      8, seq_len=SEQ - 1)
        with pytest.raises(LoaderError, match="plans that stage differently"):
            c.warm_start(state)
    other_len = MixtureSource.from_config(b_path, 8, seq_len=SEQ)
    with pytest.raises(LoaderError, match="seq_len"):
        other_len.warm_start(state)


# ---------------------------------------------------------------- the sweep, planned and fitted
def _config(tmp_path, packed, **extra) -> str:
    cfg = {"name": "t", "tokens_dir": str(packed / "tokens"), "validation_sequences": 2, "out": str(tmp_path / "out"),
           "proxy": {"steps": 10, "batch_size": 4, "overrides": {"optim.warmup_steps": 2}},
           "sampling": {"proxies": 12, "heldout": 3},
           "search": {"candidates": 5000, "top_k": 20},
           "regression": {"models": ["loglinear", "linear"]},     # lightgbm: see test_linear_and_lightgbm...
           "verify": {"enabled": False}}
    for k, v in extra.items():
        cur = cfg
        keys = k.split(".")
        for kk in keys[:-1]:
            cur = cur.setdefault(kk, {})
        cur[keys[-1]] = v
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_config_errors_are_one_line(tmp_path, packed):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntokens_dir: y\nproxy: {stepz: 3}\n")
    with pytest.raises(SweepError, match=r"proxy.stepz: unknown key"):
        load_sweep(str(bad))
    with pytest.raises(SweepError, match="stage1_steps 10 must be < proxy.steps"):
        load_sweep(_config(tmp_path, packed, **{"staged.stage1_steps": 10}))
    with pytest.raises(SweepError, match="at least 3 proxies must be fitted"):
        load_sweep(_config(tmp_path, packed, **{"sampling.heldout": 10}))
    cfg = load_sweep(_config(tmp_path, packed, **{"target.weights": {"nope": 1.0}}))
    with pytest.raises(SweepError, match="target.weights: unknown source"):
        Sweep(cfg, "x.yaml")
    cfg = load_sweep(_config(tmp_path, packed, tokens_dir=str(tmp_path / "missing")))
    with pytest.raises(SweepError, match="run tokenizer.pack first"):
        Sweep(cfg, "x.yaml")
    cfg = load_sweep(_config(tmp_path, packed, **{"staged.stage1_steps": 5, "proxy.overrides": {}}))
    with pytest.raises(SweepError, match="warmup"):                 # tiny preset: 5 warmup steps, stage 1 has 5
        Sweep(cfg, "x.yaml")
    assert main([str(bad)]) == 2


def test_plan_writes_runnable_proxies_and_respects_caps(tmp_path, packed):
    # "small" has 12 short docs: at 4 epochs it cannot take much of 40 sequences
    path = _config(tmp_path, packed, max_epochs={"small": 1.0})
    sw = Sweep(load_sweep(path), path)
    proxies = sw.plan()
    assert [p.id for p in proxies] == [f"p{i:03d}" for i in range(12)]
    assert sum(p.role == "heldout" for p in proxies) == 3
    small = sw.names.index("small")
    cap = (sw.train_seqs[small] - 1) / sw.M2
    assert sw.region.hi[small] == pytest.approx(cap) and cap < 0.5
    for p in proxies:
        assert sw.region.feasible(p.weights[None])[0]
        plan = plan_mixture(os.path.join(p.dir, "mixture.yaml"))        # validated, within caps
        assert plan.total_sequences == 10 * 4
        spec = json.load(open(os.path.join(p.dir, "proxy.json")))
        assert spec["spec_hash"] and "--init-from" not in spec["train_args"]
        sh = open(os.path.join(p.dir, "command.sh")).read()
        assert "-m train" in sh and "--mixture" in sh and "seq_len=32" in sh and "XLA_FLAGS" in sh
    # deterministic, and extending the sweep keeps the first proxies
    more = Sweep(load_sweep(path, ["sampling.proxies=15"]), path).sweep_proxies()
    assert all(np.array_equal(a.weights, b.weights) for a, b in zip(proxies, more[:12]))
    # a changed config never silently reuses (or overwrites) a proxy dir
    with pytest.raises(SweepError, match="another spec"):
        Sweep(load_sweep(path, ["proxy.seed=3"]), path).plan()
    with pytest.raises(SweepError, match="another spec"):
        Sweep(load_sweep(path, ["proxy.steps=11"]), path).plan()


def test_staged_plan_shares_stage_one(tmp_path, packed):
    path = _config(tmp_path, packed, **{"staged.stage1_steps": 6, "sampling.proxies": 4, "sampling.heldout": 0})
    sw = Sweep(load_sweep(path), path)
    proxies = sw.plan()
    s1 = sw.stage1_proxies([0])[0]
    stage1 = load_mixture(os.path.join(s1.dir, "mixture.yaml")).stages
    assert len(stage1) == 1 and stage1[0].tokens == 6 * 4 * SEQ
    for p in proxies:
        st = load_mixture(os.path.join(p.dir, "mixture.yaml")).stages
        assert [s.name for s in st] == ["stage1", "stage2"]
        assert st[0] == stage1[0] and st[1].tokens == 4 * 4 * SEQ
        args = json.load(open(os.path.join(p.dir, "proxy.json")))["train_args"]
        assert args[args.index("--init-from") + 1] == "<out>/stage1-s0"
        assert "optim.schedule=wsd" in args and "optim.decay_frac=0.4" in args
    assert "optim.schedule=constant" in sw.train_args(s1)


def _fake_results(sw: Sweep, proxies: list[Proxy], noise: float = 0.0, seed: int = 0) -> None:
    """summary.json files as the trainer writes them, from a known mixing law."""
    rng = np.random.default_rng(seed)
    for p in proxies:
        losses = law(p.weights, C, K, T)[0] + rng.normal(0, noise, 3)
        with open(p.summary_path, "w") as f:
            json.dump({"final_step": sw.steps_of(p), "eval": {f"loss/{n}": float(x) for n, x in zip(sw.names, losses)}},
                      f)


def test_fit_search_proposed_mixture_and_report_on_a_known_law(tmp_path, packed):
    path = _config(tmp_path, packed, **{"sampling.proxies": 24, "sampling.heldout": 6})
    sw = Sweep(load_sweep(path), path)
    proxies = sw.plan()
    with pytest.raises(SweepError, match="run the sweep first"):
        sw.fit(proxies)
    _fake_results(sw, proxies, noise=0.001)
    fit = sw.fit(proxies)
    assert fit["chosen"] == "loglinear"
    assert fit["comparison"]["loglinear"]["heldout"]["spearman"] > 0.8
    w = np.array([fit["proposed"][n] for n in sw.names])
    assert sw.search_region.feasible(w[None])[0]
    # the true target at the proposal is within 1% of the best mixture the region allows
    grid = search.sample(np.random.default_rng(9), sw.search_region, 50_000, flat=1.0)
    true = lambda W: law(W, C, K, T) @ sw.target_w
    assert true(w[None])[0] <= true(grid).min() * 1.01
    assert true(w[None])[0] < true(sw.natural[None])[0]
    # the mixture file: validated, with the predictions in provenance
    prop = load_mixture(os.path.join(sw.out, "proposed_mixture.yaml"))
    assert prop.stages[0].weights == pytest.approx(fit["proposed"])
    pred = prop.provenance["predicted_validation_loss"]
    assert set(pred) == {"loss/big", "loss/mid", "loss/small", "target"}
    assert prop.provenance["model"] == "loglinear"
    # report
    from mixtures.sweep_report import write_report
    html = open(write_report(sw)).read()
    md = open(os.path.join(sw.out, "report.md")).read()
    assert "Spearman" in html and "data:image/png;base64" in html and "Weight sensitivity" in md
    assert os.path.exists(os.path.join(sw.out, "report", "observed_vs_predicted.png"))
    # a proxy whose summary is from an unfinished run is not a result
    p = proxies[0]
    json.dump({"final_step": 3, "eval": {}}, open(p.summary_path, "w"))
    assert sw.result(p) is None


def test_verify_table_and_cli_phases(tmp_path, packed, capsys):
    """Verification reads fresh proxies' results like the sweep's; --phase fit/report work
    from files (here the trainer's outputs are faked: the real runs are in the e2e test)."""
    path = _config(tmp_path, packed, **{"sampling.proxies": 10, "sampling.heldout": 3, "verify.enabled": True,
                                        "verify.seeds": [0, 1]})
    sw = Sweep(load_sweep(path), path)
    proxies = sw.plan()
    _fake_results(sw, proxies)
    assert main([path, "--phase", "fit"]) == 0
    fit = json.load(open(os.path.join(sw.out, "fit.json")))
    vp = sw.verify_proxies(fit)
    assert sorted(p.id for p in vp) == sorted(f"{m}-s{s}" for m in ("proposed", "natural", "uniform") for s in (0, 1))
    for p in vp:
        sw.write_proxy(p)
    _fake_results(sw, vp)
    res = sw.verify(fit)                 # everything finished: nothing is trained
    assert res["timing"]["ran"] == 0
    true = lambda w: float(law(w, C, K, T)[0] @ sw.target_w)
    assert res["mixtures"]["natural"]["target_mean"] == pytest.approx(true(sw.natural))
    assert res["beats"]["natural"] == (true(np.array(list(fit["proposed"].values()))) < true(sw.natural))
    assert main([path, "--phase", "report"]) == 0
    assert "Verification" in open(os.path.join(sw.out, "report.md")).read()
    out = capsys.readouterr().out
    assert "regression (target: mean per-domain validation loss)" in out
