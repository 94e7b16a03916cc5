"""Budget helper arithmetic: Chinchilla 20 tokens/parameter, C = 6ND, iso-loss
smaller models, inference-aware optimum, corpus capacity warnings."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mixtures.budget import (
    FITS,
    alternatives,
    best_size,
    chinchilla_for_flops,
    chinchilla_tokens,
    main,
    report,
    simple_capacity,
    train_flops,
)


def test_chinchilla_rule_and_compute():
    assert chinchilla_tokens(1.8e9) == pytest.approx(3.6e10)
    assert train_flops(1e9, 2e10) == pytest.approx(1.2e20)
    n, d = chinchilla_for_flops(1.2e20)
    assert (n, d) == (pytest.approx(1e9), pytest.approx(2e10))
    n, d = chinchilla_for_flops(1e21)
    assert 6 * n * d == pytest.approx(1e21) and d / n == pytest.approx(20)
    # Chinchilla itself: 70B parameters, 1.4T tokens, ~5.9e23 FLOPs
    assert train_flops(70e9, chinchilla_tokens(70e9)) == pytest.approx(5.88e23)
    with pytest.raises(ValueError):
        chinchilla_tokens(0)


def test_fit_optimum_is_the_numeric_minimum_and_near_20_tokens_per_param():
    fit = FITS["besiroglu"]
    for c in (1e19, 1e21, 1e23):
        n, d = fit.compute_optimal(c)
        assert 6 * n * d == pytest.approx(c)
        ns = n * np.geomspace(0.5, 2, 2001)
        losses = [fit.loss(x, c / (6 * x)) for x in ns]
        assert ns[int(np.argmin(losses))] == pytest.approx(n, rel=2e-3)
        assert 15 < d / n < 30                                  # the refit agrees with the rule of thumb


def test_smaller_models_reach_the_same_loss_with_more_tokens():
    fit = FITS["besiroglu"]
    n, d = 1e9, 2e10
    target = fit.loss(n, d)
    opts = alternatives(n, d, 0.0, fit)
    assert opts[0].params == n and opts[0].tokens == d
    finite = [o for o in opts if math.isfinite(o.tokens)]
    for o in finite:
        assert fit.loss(o.params, o.tokens) == pytest.approx(target, abs=1e-9)
    tokens = [o.tokens for o in finite]
    assert tokens == sorted(tokens) and len(finite) >= 6          # smaller -> more tokens
    # a model too small to reach the loss at any data size
    assert fit.tokens_for_loss(1e6, target) == math.inf


def test_inference_budget_moves_the_optimum_to_smaller_models():
    fit = FITS["besiroglu"]
    n, d = fit.compute_optimal(1e21)
    assert best_size(n, d, 0.0, fit).params == pytest.approx(n, rel=0.01)   # no inference: compute-optimal
    small = best_size(n, d, 1e12, fit)
    smaller = best_size(n, d, 1e13, fit)
    assert smaller.params < small.params < n and smaller.tokens > small.tokens > d
    assert fit.loss(smaller.params, smaller.tokens) == pytest.approx(fit.loss(n, d), abs=1e-9)
    base = alternatives(n, d, 1e13, fit)[0]
    assert smaller.total_flops < base.total_flops


def test_report_warns_when_the_corpus_cannot_supply_the_budget():
    text, warns = report(params=1e9, capacity=simple_capacity(4e9, 4.0))   # 16B < 20B
    assert "20B tokens" in text and "EXCEEDS CAPS" in text
    assert warns and "cannot supply the Chinchilla budget of 20B tokens" in warns[0]
    text, warns = report(params=1e9, capacity=simple_capacity(1e10, 4.0))  # 40B: the 20N row fits
    assert not any("cannot supply the Chinchilla" in w for w in warns)
    assert any("smaller-model options need more tokens" in w for w in warns)
    _, warns = report(params=1e9)
    assert warns == []


def test_cli(capsys, tmp_path):
    assert main(["--params", "1.8e9"]) == 0
    out = capsys.readouterr().out
    assert "36B tokens (36,000,000,000)" in out and "3.89e+20" in out
    assert main(["--flops", "1e21", "--inference-budget", "2e12", "--available-tokens", "3e10"]) == 0
    out = capsys.readouterr().out
    assert "cheapest in training + inference FLOPs" in out and "WARNING" in out
    with pytest.raises(SystemExit):
        main(["--params", "-3"])
    assert main(["--params", "1e9", "--mixture", str(tmp_path / "missing.yaml")]) == 2
    assert "mixture file not found" in capsys.readouterr().err
