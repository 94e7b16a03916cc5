"""Token budgets: the Chinchilla-optimal token count for a model size or a compute
budget, and "smaller model, more tokens" alternatives when inference matters.

    python -m mixtures.budget --params 1.8e9
    python -m mixtures.budget --flops 1e21
    python -m mixtures.budget --params 7e9 --inference-budget 2e12 --mixture configs/mixtures/demo.yaml
    python -m mixtures.budget --params 1e9 --available-tokens 5e9 --max-epochs 4

Arithmetic:

* training compute ``C = 6 N D`` FLOPs (N parameters, D tokens; Kaplan et al.
  2020), inference ``2 N`` FLOPs per token;
* Chinchilla-optimal data ``D = 20 N`` (Hoffmann et al. 2022's rule of thumb), so
  for a compute budget ``N = sqrt(C / 120)``, ``D = 20 N``;
* alternatives use the parametric loss ``L(N, D) = E + A / N^alpha + B / D^beta``
  with Besiroglu et al. (2024, "Chinchilla Scaling: A replication attempt")
  refit of Hoffmann's approach 3 (E 1.8172, A 482.01, B 2085.43, alpha 0.3478,
  beta 0.3658): its compute-optimal ratio is ~20 tokens/parameter, consistent
  with the rule (Hoffmann's published fit is available as ``--fit hoffmann``).
  A smaller model ``N' < N`` reaches the same loss with
  ``D' = (B / (L - E - A / N'^alpha))^(1/beta)`` tokens (infinite below the
  size that cannot reach L at all).  With an inference budget of ``T`` tokens
  served over the model's life (Sardana & Frankle 2023, "Beyond
  Chinchilla-Optimal"), the total cost ``6 N' D' + 2 N' T`` is minimised over
  ``N'`` and the best size is reported.

With a mixture (or ``--available-tokens``), every row also says whether the
corpus supplies that many tokens within its repetition caps, and a warning says
which source runs out first.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import numpy as np

TOKENS_PER_PARAM = 20.0
TRAIN_FLOPS_PER_PARAM_TOKEN = 6.0
INFERENCE_FLOPS_PER_PARAM_TOKEN = 2.0
FRACTIONS = (1.0, 0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15)


@dataclass(frozen=True)
class LossFit:
    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n: float, d: float) -> float:
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    def tokens_for_loss(self, n: float, target: float) -> float:
        """Tokens a model of ``n`` parameters needs to reach ``target`` (inf if it cannot)."""
        room = target - self.E - self.A / n ** self.alpha
        if room <= 0:
            return math.inf
        return (self.B / room) ** (1.0 / self.beta)

    def compute_optimal(self, flops: float) -> tuple[float, float]:
        """(N, D) minimising the loss at ``C = 6 N D`` (closed form of the fit)."""
        a = self.beta / (self.alpha + self.beta)
        b = self.alpha / (self.alpha + self.beta)
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        c = flops / TRAIN_FLOPS_PER_PARAM_TOKEN
        return g * c ** a, c ** b / g


FITS = {
    "besiroglu": LossFit("Besiroglu et al. 2024 (Chinchilla replication)", 1.8172, 482.01, 2085.43, 0.3478, 0.3658),
    "hoffmann": LossFit("Hoffmann et al. 2022 (approach 3)", 1.69, 406.4, 410.7, 0.34, 0.28),
}


def train_flops(params: float, tokens: float) -> float:
    return TRAIN_FLOPS_PER_PARAM_TOKEN * params * tokens


def chinchilla_tokens(params: float) -> float:
    """Compute-optimal training tokens for ``params`` parameters (20 per parameter)."""
    if params <= 0:
        raise ValueError("params must be > 0")
    return TOKENS_PER_PARAM * params


def chinchilla_for_flops(flops: float) -> tuple[float, float]:
    """(params, tokens) with ``6 N D = flops`` and ``D = 20 N``."""
    if flops <= 0:
        raise ValueError("flops must be > 0")
    n = math.sqrt(flops / (TRAIN_FLOPS_PER_PARAM_TOKEN * TOKENS_PER_PARAM))
    return n, TOKENS_PER_PARAM * n


@dataclass
class Option:
    params: float
    tokens: float
    loss: float
    train_flops: float
    inference_flops: float

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.inference_flops

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params


def option(params: float, tokens: float, inference_tokens: float, fit: LossFit) -> Option:
    return Option(params, tokens, fit.loss(params, tokens) if math.isfinite(tokens) else math.inf,
                  train_flops(params, tokens), INFERENCE_FLOPS_PER_PARAM_TOKEN * params * inference_tokens)


def alternatives(params: float, tokens: float, inference_tokens: float = 0.0, fit: LossFit = FITS["besiroglu"],
                 fractions=FRACTIONS) -> list[Option]:
    """Models of ``f * params`` trained to the loss of (params, tokens)."""
    target = fit.loss(params, tokens)
    out = []
    for f in fractions:
        n = f * params
        d = tokens if f == 1.0 else fit.tokens_for_loss(n, target)
        out.append(option(n, d, inference_tokens, fit))
    return out


def best_size(params: float, tokens: float, inference_tokens: float, fit: LossFit = FITS["besiroglu"],
              lo: float = 0.02, hi: float = 4.0, points: int = 4001) -> Option:
    """The size (``lo..hi`` x params, log grid) minimising training + inference FLOPs
    at the loss of (params, tokens)."""
    target = fit.loss(params, tokens)
    ns = params * np.geomspace(lo, hi, points)
    room = target - fit.E - fit.A / ns ** fit.alpha
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(room > 0, (fit.B / np.where(room > 0, room, 1.0)) ** (1.0 / fit.beta), np.inf)
    total = TRAIN_FLOPS_PER_PARAM_TOKEN * ns * d + INFERENCE_FLOPS_PER_PARAM_TOKEN * ns * inference_tokens
    i = int(np.argmin(total))
    return option(float(ns[i]), float(d[i]), inference_tokens, fit)


# ----------------------------------------------------------------- corpus capacity
@dataclass
class Capacity:
    tokens: float            # the most tokens the corpus supplies within the caps
    limited_by: str          # the source that runs out first
    detail: str


def mixture_capacity(plan) -> Capacity:
    """Most training tokens the mixture's sources supply within their repetition caps,
    at the mixture's overall proportions (stage weights weighted by stage budgets)."""
    S = plan.seq_len
    total = plan.total_sequences
    best = None
    for n, sd in plan.data.sources.items():
        share = sum(st.counts[n] for st in plan.stages) / total
        if share <= 0:
            continue
        avail = sd.train_tokens(S)
        cap = sd.max_epochs * avail / share
        if best is None or cap < best.tokens:
            best = Capacity(cap, n, f"{n}: {avail:,} tokens x max_epochs {sd.max_epochs:g} / share {share:.3f}")
    return best


def simple_capacity(available_tokens: float, max_epochs: float) -> Capacity:
    return Capacity(available_tokens * max_epochs, "corpus",
                    f"{available_tokens:,.0f} tokens x max_epochs {max_epochs:g}")


# ----------------------------------------------------------------- report
def _si(x: float) -> str:
    if not math.isfinite(x):
        return "inf"
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.3g}"


def report(params: float | None = None, flops: float | None = None, inference_tokens: float = 0.0,
           capacity: Capacity | None = None, fit: LossFit = FITS["besiroglu"]) -> tuple[str, list[str]]:
    """The printed table and the warnings."""
    if (params is None) == (flops is None):
        raise ValueError("give exactly one of params or flops")
    if params is not None:
        n, d = params, chinchilla_tokens(params)
        head = f"model of {_si(n)} parameters"
    else:
        n, d = chinchilla_for_flops(flops)
        head = f"compute budget of {flops:.3g} FLOPs"
    c = train_flops(n, d)
    fn, fd = fit.compute_optimal(c)
    lines = [
        f"Chinchilla budget for a {head}:",
        f"  {_si(n)} parameters x {TOKENS_PER_PARAM:g} tokens/parameter = {_si(d)} tokens "
        f"({d:,.0f}); training compute 6ND = {c:.3g} FLOPs",
        f"  loss fit: {fit.name}: loss {fit.loss(n, d):.4f}; its own optimum at this compute: "
        f"{_si(fn)} parameters x {_si(fd)} tokens ({fd / fn:.1f} tokens/parameter, loss {fit.loss(fn, fd):.4f})",
    ]
    if inference_tokens:
        lines.append(f"  inference budget: {_si(inference_tokens)} tokens served over the model's life "
                     f"(2N FLOPs per token)")
    if capacity is not None:
        lines.append(f"  corpus: at most {_si(capacity.tokens)} tokens within the repetition caps ({capacity.detail})")
    lines.append("")
    lines.append("Smaller model, more tokens: the same loss (per the fit) from fewer parameters")
    opts = alternatives(n, d, inference_tokens, fit)
    best = best_size(n, d, inference_tokens, fit) if inference_tokens else None
    headers = ["params", "x", "tokens", "tokens/param", "train FLOPs", "vs 20N"]
    if inference_tokens:
        headers += ["inference FLOPs", "total FLOPs", "vs 20N total"]
    if capacity is not None:
        headers += ["corpus"]
    rows = []
    base = opts[0]
    for o in opts + ([best] if best else []):
        if not math.isfinite(o.tokens):
            r = [_si(o.params), f"{o.params / n:.2f}", "unreachable", "", "", ""]
            r += ["", "", ""] if inference_tokens else []
            r += [""] if capacity is not None else []
            rows.append(r)
            continue
        r = [_si(o.params), f"{o.params / n:.2f}", _si(o.tokens), f"{o.tokens_per_param:.0f}", f"{o.train_flops:.3g}",
             f"{o.train_flops / base.train_flops:.2f}x"]
        if inference_tokens:
            r += [f"{o.inference_flops:.3g}", f"{o.total_flops:.3g}", f"{o.total_flops / base.total_flops:.2f}x"]
        if capacity is not None:
            r += ["ok" if o.tokens <= capacity.tokens else "EXCEEDS CAPS"]
        rows.append(r)
    if best is not None:
        rows[-1][0] = f"{rows[-1][0]} (min)"
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = lambda cells: "  ".join(str(x).rjust(w) for x, w in zip(cells, widths))  # noqa: E731
    lines += [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    warnings = []
    if capacity is not None:
        if d > capacity.tokens:
            warnings.append(f"WARNING: the corpus cannot supply the Chinchilla budget of {_si(d)} tokens without "
                            f"exceeding its repetition caps: at most {_si(capacity.tokens)} "
                            f"(limited by {capacity.detail})")
        bad = [o for o in opts if math.isfinite(o.tokens) and o.tokens > capacity.tokens]
        if bad and d <= capacity.tokens:
            warnings.append(f"WARNING: {len(bad)} of the smaller-model options need more tokens than the corpus "
                            f"supplies within its caps ({_si(capacity.tokens)}; limited by {capacity.detail})")
    if best is not None:
        lines.append(f"\ncheapest in training + inference FLOPs: {_si(best.params)} parameters x {_si(best.tokens)} "
                     f"tokens ({best.tokens_per_param:.0f} tokens/parameter), "
                     f"{best.total_flops / base.total_flops:.2f}x the 20N model's total")
    return "\n".join(lines), warnings


def _num(s: str) -> float:
    try:
        v = float(s.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {s!r}")
    return v


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m mixtures.budget",
                                description="Chinchilla token budget and smaller-model alternatives.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--params", type=_num, metavar="N", help="model parameters, e.g. 1.8e9")
    g.add_argument("--flops", type=_num, metavar="C", help="training compute in FLOPs, e.g. 1e21")
    p.add_argument("--inference-budget", type=_num, default=None, metavar="TOKENS",
                   help="tokens the model will serve over its life (adds 2N FLOPs per token; picks the cheapest size)")
    p.add_argument("--fit", choices=sorted(FITS), default="besiroglu", help="parametric loss fit for alternatives")
    p.add_argument("--mixture", default=None, metavar="YAML", help="check the budgets against this mixture's corpus")
    p.add_argument("--tokens-dir", default=None, metavar="DIR", help="with --mixture: packed tokens directory")
    p.add_argument("--corpus", default=None, metavar="DIR", help="with --mixture: corpus directory")
    p.add_argument("--available-tokens", type=_num, default=None, metavar="T",
                   help="without a mixture: unique tokens the corpus has")
    p.add_argument("--max-epochs", type=_num, default=4.0, metavar="E", help="with --available-tokens (default 4)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from mixtures.config import MixtureError, plan_mixture

    args = parse_args(sys.argv[1:] if argv is None else argv)
    capacity = None
    try:
        if args.mixture:
            capacity = mixture_capacity(plan_mixture(args.mixture, tokens_dir=args.tokens_dir, corpus=args.corpus,
                                                     check=False))
        elif args.available_tokens:
            capacity = simple_capacity(args.available_tokens, args.max_epochs)
    except (MixtureError, ValueError) as e:
        print(f"python -m mixtures.budget: error: {e}", file=sys.stderr)
        return 2
    text, warnings = report(args.params, args.flops, args.inference_budget or 0.0, capacity, FITS[args.fit])
    print(text)
    for w in warnings:
        print(w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
