"""Mixtures on the simplex: the region a sweep may use, sampling in it, and the search.

``Region`` is the feasible set: per-source lower and upper weight bounds — the user's
``min_weight`` / ``max_weight`` and the **repetition caps**, which for a stage of ``M``
sequences after earlier stages that used ``u_s`` of source ``s``'s ``N_s`` training
sequences are ``w_s <= (cap_s * N_s - u_s) / M`` — intersected with the simplex.  Every
constraint is a half-space, so the region is convex and an average of feasible mixtures
is feasible (the search relies on it).

``sample`` draws mixtures the way RegMix does: Dirichlet around the corpus's natural
token distribution ``p`` with concentration ``alpha = scale * K * p``, the scale drawn
log-uniformly (small scales give sparse, extreme mixtures; large ones stay near ``p``),
rejecting infeasible draws.  A fraction ``flat`` of the draws is uniform on the simplex
(Dirichlet(1, ..., 1)) instead: when one source dominates the corpus, draws around ``p``
alone never visit balanced mixtures, and the surrogate could not tell whether they win.

``search`` scores many sampled candidates with a fitted regressor, keeps the best
``top_k`` and returns their mean (RegMix: averaging the top mixtures is more robust than
the single argmin of a noisy surrogate).  Candidates come from the same distribution
the proxies were drawn from, so the surrogate is never asked about mixtures far from
anything it saw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

ZERO = 1e-4          # weights below this are set to 0 (a proxy would see < 1 sequence in 10^4)


class SearchError(ValueError):
    """The region is empty, or sampling cannot find feasible mixtures (one line)."""


@dataclass
class Region:
    names: list[str]
    natural: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self):
        self.natural = np.asarray(self.natural, float)
        self.lo = np.clip(np.asarray(self.lo, float), 0.0, 1.0)
        self.hi = np.clip(np.asarray(self.hi, float), 0.0, 1.0)
        bad = [n for n, a, b in zip(self.names, self.lo, self.hi) if a > b + 1e-12]
        if bad:
            raise SearchError(f"weight bounds are empty for {', '.join(bad)} (min_weight above max_weight or "
                              "the repetition cap)")
        if self.lo.sum() > 1 + 1e-9 or self.hi.sum() < 1 - 1e-9:
            raise SearchError(f"no mixture fits the bounds: min weights sum to {self.lo.sum():.3f}, max weights "
                              f"(incl. repetition caps) to {self.hi.sum():.3f}; the weights must sum to 1")

    def feasible(self, W: np.ndarray, tol: float = 1e-9) -> np.ndarray:
        W = np.atleast_2d(W)
        return ((W >= self.lo - tol) & (W <= self.hi + tol)).all(1) & (np.abs(W.sum(1) - 1) < 1e-6)

    def describe(self) -> list[tuple[str, float, float, float]]:
        return [(n, float(p), float(a), float(b)) for n, p, a, b in zip(self.names, self.natural, self.lo, self.hi)]


def clean(W: np.ndarray) -> np.ndarray:
    """Zero out negligible weights and renormalise (rows of a 2-D array)."""
    W = np.where(np.asarray(W, float) < ZERO, 0.0, W)
    return W / W.sum(1, keepdims=True)


def dirichlet_around(rng: np.random.Generator, natural: np.ndarray, n: int,
                     scale: tuple[float, float] = (0.3, 5.0), flat: float = 0.0) -> np.ndarray:
    k = len(natural)
    p = np.maximum(np.asarray(natural, float), 1e-3)
    p = p / p.sum()
    s = np.exp(rng.uniform(math.log(scale[0]), math.log(scale[1]), size=n))
    alpha = s[:, None] * k * p[None, :]
    alpha[rng.random(n) < flat] = 1.0
    g = rng.gamma(alpha)
    g[g.sum(1) == 0] = p                      # all-underflow draws (tiny alphas): fall back to p
    return clean(g / g.sum(1, keepdims=True))


def sample(rng: np.random.Generator, region: Region, n: int, scale: tuple[float, float] = (0.3, 5.0),
           flat: float = 0.0, max_tries: int = 200) -> np.ndarray:
    """``n`` feasible mixtures (rows), Dirichlet around ``region.natural``, in draw order."""
    out: list[np.ndarray] = []
    drawn = 0
    for _ in range(max_tries):
        need = n - sum(len(o) for o in out)
        if need <= 0:
            break
        batch = dirichlet_around(rng, region.natural, max(4 * need, 64), scale, flat)
        drawn += len(batch)
        out.append(batch[region.feasible(batch)][:need])
    W = np.concatenate(out) if out else np.zeros((0, len(region.names)))
    if len(W) < n:
        raise SearchError(f"only {len(W)} of {drawn} sampled mixtures fit the weight bounds and repetition caps; "
                          "widen the bounds, raise max_epochs or lower the budget")
    return W[:n]


def search(predict_target: Callable[[np.ndarray], np.ndarray], region: Region, rng: np.random.Generator,
           candidates: int = 100_000, top_k: int = 100, scale: tuple[float, float] = (0.3, 5.0),
           flat: float = 0.0) -> dict:
    """The mean of the ``top_k`` candidates with the lowest predicted target loss."""
    W = sample(rng, region, candidates, scale, flat)
    pred = np.asarray(predict_target(W), float)
    order = np.argsort(pred, kind="stable")
    top = W[order[:top_k]]
    best = top.mean(0)
    best = best / best.sum()
    if not region.feasible(best[None])[0]:          # cannot happen (convex region); guard against bugs
        raise SearchError("the averaged mixture left the feasible region")
    return {"weights": best, "predicted_target": float(predict_target(best[None])[0]),
            "top_predicted": [float(pred[order[0]]), float(pred[order[min(top_k, len(order)) - 1]])],
            "best_single": W[order[0]], "candidates": int(len(W)), "top_k": int(min(top_k, len(W)))}


def along_source(w: np.ndarray, i: int, x: np.ndarray) -> np.ndarray:
    """Mixtures with source ``i`` at weight ``x`` and the others in their proportions in ``w``."""
    w = np.asarray(w, float)
    rest = w.copy()
    rest[i] = 0.0
    if rest.sum() <= 0:
        rest = np.ones_like(w)
        rest[i] = 0.0
    rest = rest / rest.sum()
    W = (1 - x)[:, None] * rest[None, :]
    W[:, i] = x
    return W


def sensitivity(predict_target: Callable[[np.ndarray], np.ndarray], w: np.ndarray, region: Region,
                points: int = 41, delta: float = 0.05) -> dict[str, dict]:
    """Per source: the predicted target along that source's weight (others rescaled),
    over its feasible range, and the change per +``delta`` weight at ``w`` (central
    difference, clipped to the feasible range)."""
    out = {}
    for i, name in enumerate(region.names):
        lo, hi = float(region.lo[i]), float(min(region.hi[i], 1.0))
        xs = np.linspace(lo, hi, points)
        W = along_source(w, i, xs)
        ok = region.feasible(W)
        pred = np.asarray(predict_target(W), float)
        a, b = max(lo, w[i] - delta / 2), min(hi, w[i] + delta / 2)
        if b - a > 1e-9:
            pa, pb = np.asarray(predict_target(along_source(w, i, np.array([a, b]))), float)
            slope = float((pb - pa) / (b - a) * delta)
        else:
            slope = float("nan")
        out[name] = {"x": xs.tolist(), "predicted": pred.tolist(), "feasible": ok.tolist(), "at": float(w[i]),
                     "per_delta": slope, "delta": delta}
    return out
