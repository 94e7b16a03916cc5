"""Regression from mixture weights to validation losses (the model half of a mixture sweep).

A sweep trains proxies on mixtures ``w`` (points of the probability simplex over the
sources) and measures per-domain validation losses ``L_d(w)``.  Three regressors map
``w -> L_d`` (one model per domain; the target loss is a fixed weighted sum of the
per-domain predictions, so every model also predicts every domain):

* ``lightgbm`` — gradient-boosted trees (RegMix, Liu et al. 2024, used LightGBM on
  hundreds of proxies).  With a dozen proxies the trees are coarse; the settings below
  (tiny leaves, shrinkage, many rounds) are what lets them split at all.
* ``loglinear`` — the data-mixing law of Ye et al. 2024, ``L_d(w) = c_d + k_d exp(t_d . w)``,
  fitted per domain by bounded least squares (``scipy.optimize.least_squares``) from a
  few deterministic starts.  ``t_d`` is only defined up to a constant on the simplex
  (sum w = 1), so a small ridge on it makes the fit unique.
* ``linear`` — least squares on the weights (RegMix's linear baseline; no intercept,
  since the weights sum to 1).

``compare`` scores them the way a user should trust them: Spearman rank correlation and
mean absolute error of the *target* prediction, leave-one-out over the proxies the models
are fitted on, and on held-out proxies no model has seen.  Rank correlation is what
matters for choosing a mixture (the search only needs the ordering right).
"""
from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence

import numpy as np

MODELS = ("lightgbm", "loglinear", "linear")


class Regressor(Protocol):
    name: str

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "Regressor": ...   # X [n, K] weights, Y [n, D] losses
    def predict(self, X: np.ndarray) -> np.ndarray: ...               # [m, D]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (ties averaged); nan when either side is constant or n < 3."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic)


class LinearMix:
    name = "linear"

    def fit(self, X, Y):
        self.coef_, *_ = np.linalg.lstsq(np.asarray(X, float), np.asarray(Y, float), rcond=None)
        return self

    def predict(self, X):
        return np.asarray(X, float) @ self.coef_


class LogLinearLaw:
    """``L_d(w) = c_d + exp(b_d + t_d . w)`` per domain (k_d = exp(b_d) > 0), with
    0 <= c_d <= min observed loss of the domain."""
    name = "loglinear"

    def __init__(self, ridge: float = 1e-2, starts: int = 4, seed: int = 0):
        self.ridge, self.starts, self.seed = ridge, starts, seed

    def _fit_one(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        from scipy.optimize import least_squares

        n, K = X.shape
        scale = max(float(np.std(y)), 1e-3)
        ymin = float(y.min())
        rng = np.random.default_rng(self.seed)
        lo = np.r_[0.0, -30.0, np.full(K, -50.0)]
        hi = np.r_[max(ymin - 1e-6, 1e-9), 30.0, np.full(K, 50.0)]

        r = math.sqrt(self.ridge)
        ridge_jac = np.c_[np.zeros((K, 2)), r * (np.eye(K) - 1.0 / K)]

        def resid(p):
            pred = p[0] + np.exp(np.clip(p[1] + X @ p[2:], -50, 50))
            return np.r_[(pred - y) / scale, r * (p[2:] - p[2:].mean())]

        def jac(p):
            e = np.exp(np.clip(p[1] + X @ p[2:], -50, 50))[:, None] / scale
            return np.r_[np.c_[np.full((n, 1), 1.0 / scale), e, e * X], ridge_jac]

        best, best_cost = None, math.inf
        for s in range(self.starts):
            c0 = ymin * (0.5 if s % 2 == 0 else 0.9)
            t0 = np.zeros(K) if s == 0 else rng.normal(0, 1.0, K)
            b0 = math.log(max(float(np.mean(y)) - c0, 1e-6)) - float(np.mean(X @ t0))
            p0 = np.clip(np.r_[c0, b0, t0], lo + 1e-9, hi - 1e-9)
            fit = least_squares(resid, p0, jac=jac, bounds=(lo, hi), method="trf", max_nfev=500)
            if fit.cost < best_cost:
                best, best_cost = fit.x, fit.cost
        return best

    def fit(self, X, Y):
        X, Y = np.asarray(X, float), np.asarray(Y, float)
        self.params_ = [self._fit_one(X, Y[:, d]) for d in range(Y.shape[1])]
        return self

    def predict(self, X):
        X = np.asarray(X, float)
        return np.stack([p[0] + np.exp(np.clip(p[1] + X @ p[2:], -50, 50)) for p in self.params_], axis=1)


class GBTrees:
    """LightGBM, one booster per domain; settings for sweeps of 10-100 proxies."""
    name = "lightgbm"

    def __init__(self, seed: int = 0, rounds: int = 120):
        self.seed, self.rounds = seed, rounds

    def fit(self, X, Y):
        import lightgbm as lgb

        X, Y = np.asarray(X, float), np.asarray(Y, float)
        n = len(X)
        self.models_ = []
        for d in range(Y.shape[1]):
            m = lgb.LGBMRegressor(n_estimators=self.rounds, learning_rate=0.1, num_leaves=4, max_depth=3,
                                  min_child_samples=max(2, n // 8), min_child_weight=0.0, min_split_gain=0.0,
                                  reg_lambda=1e-3, subsample=1.0, colsample_bytree=1.0, min_data_in_bin=1,
                                  random_state=self.seed, deterministic=True, force_row_wise=True, n_jobs=1,
                                  verbose=-1)
            m.fit(X, Y[:, d])
            self.models_.append(m)
        return self

    def predict(self, X):
        X = np.asarray(X, float)
        return np.stack([m.predict(X) for m in self.models_], axis=1)


def make(name: str, seed: int = 0) -> Regressor:
    if name == "lightgbm":
        return GBTrees(seed=seed)
    if name == "loglinear":
        return LogLinearLaw(seed=seed)
    if name == "linear":
        return LinearMix()
    raise ValueError(f"unknown regression model {name!r} (choose from {', '.join(MODELS)})")


def loo_predict(factory: Callable[[], Regressor], X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions: row i from a model fitted without row i."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    out = np.empty_like(Y)
    for i in range(len(X)):
        keep = np.arange(len(X)) != i
        out[i] = factory().fit(X[keep], Y[keep]).predict(X[i:i + 1])[0]
    return out


def scores(pred_t: np.ndarray, obs_t: np.ndarray) -> dict[str, float]:
    pred_t, obs_t = np.asarray(pred_t, float), np.asarray(obs_t, float)
    return {"spearman": spearman(pred_t, obs_t), "mae": float(np.mean(np.abs(pred_t - obs_t))) if len(obs_t) else
            float("nan"), "n": int(len(obs_t))}


def compare(names: Sequence[str], X_fit: np.ndarray, Y_fit: np.ndarray, X_hold: np.ndarray, Y_hold: np.ndarray,
            target: np.ndarray, seed: int = 0) -> dict[str, dict]:
    """Per model: leave-one-out scores on the fit set, scores on the held-out set (model
    fitted on the whole fit set), and the predictions behind both (target loss)."""
    target = np.asarray(target, float)
    out = {}
    for name in names:
        loo = loo_predict(lambda: make(name, seed), X_fit, Y_fit)
        res = {"loo": scores(loo @ target, Y_fit @ target), "loo_pred": (loo @ target).tolist()}
        if len(X_hold):
            hold = make(name, seed).fit(X_fit, Y_fit).predict(X_hold)
            res["heldout"] = scores(hold @ target, Y_hold @ target)
            res["heldout_pred"] = (hold @ target).tolist()
            res["heldout_pred_domains"] = hold.tolist()
        out[name] = res
    return out


def choose(results: dict[str, dict]) -> str:
    """The model with the best leave-one-out rank correlation on the fit set (ties: lower
    MAE).  Held-out proxies play no part in the choice, so their scores stay a clean test."""
    def key(name):
        s = results[name]["loo"]
        rho = s["spearman"]
        return (-(rho if math.isfinite(rho) else -2.0), s["mae"])
    return min(results, key=key)
