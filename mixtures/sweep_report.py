"""The sweep's report: ``<out>/report.html`` (plots embedded) and ``report.md`` (plots in
``<out>/report/``), from the files the sweep wrote (sweep.json, fit.json, verify.json,
timings.json) — rerunnable at any time with ``--phase report``."""
from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.reportlib import Section, new_figure, render_html, render_md

if TYPE_CHECKING:
    from mixtures.sweep import Sweep

CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
       "table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;"
       "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
       "caption{caption-side:top;text-align:left;font-style:italic;padding:.2em 0}figure{margin:1em 0}")


def _load(path: str) -> Any | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _f(x: Any, nd: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{nd}f}"


def _mins(s: float | None) -> str:
    return "n/a" if s is None else f"{s / 60:.1f} min"


def sections(sw: "Sweep") -> list[Section]:
    import matplotlib.pyplot as plt

    info = _load(os.path.join(sw.out, "sweep.json")) or {}
    fit = _load(os.path.join(sw.out, "fit.json"))
    ver = _load(os.path.join(sw.out, "verify.json"))
    tim = _load(os.path.join(sw.out, "timings.json")) or {}
    cfg, names = sw.cfg, sw.names
    out: list[Section] = []

    s = Section("Sweep")
    pr = cfg.proxy
    s.p(f"Sweep {cfg.name} ({os.path.relpath(os.path.abspath(sw.config_path))}): {cfg.sampling.proxies} proxies "
        f"({cfg.sampling.heldout} held out from fitting), preset {pr.preset} with vocabulary {sw.vocab}, "
        f"{pr.steps} steps x {pr.batch_size} x {sw.L} tokens = {pr.steps * pr.batch_size * sw.L:,} tokens each, seed "
        f"{pr.seed}; mixtures drawn from a Dirichlet around the natural distribution (concentration scale "
        f"{cfg.sampling.scale[0]:g}-{cfg.sampling.scale[1]:g}) within the weight bounds and repetition caps.")
    s.p(f"Target loss: {cfg.target.name} = "
        + " + ".join(f"{w:.3g} x loss/{n}" for n, w in zip(names, sw.target_w) if w > 0)
        + f", per-domain validation losses on the same {cfg.validation_sequences} held-out packed sequences per "
          "source for every proxy.")
    if cfg.staged:
        s.p(f"Staged ablation: stage 1 ({cfg.staged.stage1_steps} steps) trained once on fixed weights; every proxy "
            f"warm-starts from its checkpoint and trains stage 2 ({pr.steps - cfg.staged.stage1_steps} steps) under "
            "the sampled weights (learning rate: warmup-stable-decay, the decay over stage 2).")
    s.table(["source", "natural weight", "training tokens", "min weight", "max weight"] +
            (["stage-1 weight"] if cfg.staged else []),
            [[n, round(float(p), 4), int(t) * sw.S, round(float(a), 4), round(float(b), 4)]
             + ([round(float(sw.w1[i]), 4)] if cfg.staged else [])
             for i, (n, p, t, a, b) in enumerate(zip(names, sw.natural, sw.train_seqs, sw.region.lo, sw.region.hi))],
            caption="sources (max weight: the bound or the repetition cap, whichever is lower)")
    rows = []
    for key, label in (("stage1", "stage 1 (once)"), ("sweep", "sweep proxies"), ("verify", "verification")):
        t = tim.get(key)
        if t:
            cpu = t.get("cpu_s")
            rows.append([label, t.get("ran"), _mins(t.get("wall_s")), _mins(t.get("median_proxy_s")),
                         _mins(cpu), _mins(t.get("median_proxy_cpu_s")),
                         _mins(cpu / t.get("jobs", cfg.jobs)) if cpu else "n/a",
                         round(t["load_avg_end"], 1) if t.get("load_avg_end") is not None else "n/a"])
    if rows:
        s.table(["phase", "proxies trained", "wall time", "median wall per proxy", "CPU time (user+sys)",
                 "median CPU per proxy", "CPU time / jobs", "load average at end"], rows,
                caption=f"timings, {cfg.jobs} proxies at a time. On a shared machine wall time depends on the "
                        "other load; CPU time / jobs is what the same work takes on that many idle cores")
    out.append(s)

    if not fit:
        out.append(Section("Regression").p("Not fitted yet: run --phase fit."))
        return out

    # ---- proxies
    s = Section("Proxies")
    s.table(["proxy", "role"] + [f"w {n}" for n in names] + [f"loss/{n}" for n in names]
            + ["target", "wall s", "CPU s"],
            [[r["id"], r["role"]] + [r["weights"][n] for n in names] + [round(r["losses"][n], 4) for n in names]
             + [round(r["target"], 4), r.get("wall_s"), r.get("cpu_s")] for r in fit["rows"]],
            caption="sampled mixtures and their validation losses")
    out.append(s)

    # ---- regression
    s = Section("Regression: observed vs predicted")
    comp = fit["comparison"]
    s.p("Every model predicts each domain's loss from the weights; the target is the weighted sum of the "
        "predictions. Leave-one-out (LOO) scores are over the fitted proxies (each prediction from a model fitted "
        "without that proxy); held-out scores are over proxies no model was fitted on. The chosen model ("
        f"{fit['chosen']}, {fit['selection']}) is then refitted on all proxies for the search.")
    s.table(["model", "LOO Spearman", "LOO MAE", "held-out Spearman", "held-out MAE", "held-out n"],
            [[n + (" (chosen)" if n == fit["chosen"] else ""), _f(r["loo"]["spearman"], 3), _f(r["loo"]["mae"]),
              _f(r.get("heldout", {}).get("spearman"), 3), _f(r.get("heldout", {}).get("mae")),
              r.get("heldout", {}).get("n", 0)] for n, r in comp.items()],
            caption="target-loss prediction quality (Spearman: rank correlation, what the search needs)")
    by_id = {r["id"]: r for r in fit["rows"]}
    fig, axes = plt.subplots(1, len(comp), figsize=(4.2 * len(comp), 3.8), squeeze=False)
    for ax, (n, r) in zip(axes[0], comp.items()):
        obs_fit = [by_id[i]["target"] for i in fit["fit_proxies"]]
        ax.scatter(obs_fit, r["loo_pred"], s=18, label="fitted (LOO)", color="tab:blue")
        if r.get("heldout_pred"):
            obs_h = [by_id[i]["target"] for i in fit["heldout_proxies"]]
            ax.scatter(obs_h, r["heldout_pred"], s=40, marker="D", label="held out", color="tab:red")
        allv = obs_fit + r["loo_pred"] + (r.get("heldout_pred") or [])
        lo, hi = min(allv), max(allv)
        ax.plot([lo, hi], [lo, hi], ":", color="gray", lw=1)
        ax.set(xlabel="observed target loss", ylabel="predicted",
               title=f"{n}: LOO rho {_f(r['loo']['spearman'], 2)}, held-out rho "
                     f"{_f(r.get('heldout', {}).get('spearman'), 2)}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    s.plot(fig, "observed_vs_predicted", "observed vs predicted target loss (LOO on fitted proxies; held-out proxies)")
    out.append(s)

    # ---- the proposed mixture
    s = Section("Proposed mixture")
    pred = fit["predicted"]
    ch = fit["chosen"]
    s.p(f"Search: {fit['search']['candidates']:,} candidate mixtures from the sweep's sampling distribution within "
        f"the bounds, scored by {ch}; the mean of the best {fit['search']['top_k']} is proposed. Written to "
        f"{os.path.join(sw.out, 'proposed_mixture.yaml')} (predicted losses in its provenance).")
    mixes = {"natural": sw.natural, "uniform": np.full(len(names), 1 / len(names)),
             "proposed": np.array([fit["proposed"][n] for n in names])}
    s.table(["source", "natural", "uniform", "proposed"],
            [[n] + [round(float(mixes[k][i]), 4) for k in mixes] for i, n in enumerate(names)], caption="weights")
    s.table(["mixture"] + [f"predicted loss/{n}" for n in names] + ["predicted target"],
            [[k] + [_f(pred[k][ch][n]) for n in names] + [_f(pred[k][ch]["target"])] for k in mixes],
            caption=f"predictions of {ch} (refitted on all proxies)")
    fig, ax = new_figure(7, 3.2)
    x = np.arange(len(names))
    for j, (k, w) in enumerate(mixes.items()):
        ax.bar(x + (j - 1) * 0.27, w, width=0.27, label=k)
    ax.set(xticks=x, xticklabels=names, ylabel="weight", title="natural, uniform and proposed mixtures")
    ax.legend(fontsize=8)
    s.plot(fig, "mixtures", "the mixtures compared")
    out.append(s)

    # ---- sensitivity
    s = Section("Weight sensitivity")
    sens = fit["sensitivity"]
    orc = fit["observed_weight_rank_correlation"]
    s.p(f"Predicted target ({ch}) when one source's weight moves and the others keep their proportions from the "
        "proposed mixture; 'per +0.05' is the change of the predicted target for 0.05 more weight at the proposal "
        "(negative: more of that source helps). 'Observed rho' is the rank correlation between a source's weight "
        "and the observed target over all proxies (no model involved).")
    s.table(["source", "proposed weight", "predicted change per +0.05", "observed rho(weight, target)"],
            [[n, round(sens[n]["at"], 4), _f(sens[n]["per_delta"]), _f(orc[n], 3)] for n in names])
    fig, ax = new_figure(7, 3.6)
    for n in names:
        xs, ys, ok = np.array(sens[n]["x"]), np.array(sens[n]["predicted"]), np.array(sens[n]["feasible"])
        line, = ax.plot(xs, ys, lw=1.2, label=n)
        ax.plot(xs[~ok], ys[~ok], "x", color=line.get_color(), ms=3)
        at = sens[n]["at"]
        ax.plot([at], [np.interp(at, xs, ys)], "o", color=line.get_color())
    ax.set(xlabel="weight of the source (others rescaled)", ylabel="predicted target loss",
           title="sensitivity around the proposed mixture (dots: proposal; x: outside the bounds)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    s.plot(fig, "sensitivity", "predicted target along each source's weight")
    out.append(s)

    # ---- verification
    s = Section("Verification: fresh proxies")
    if not ver:
        s.p("Not run (verify.enabled false, or run --phase verify).")
    else:
        mx = ver["mixtures"]
        s.p("Fresh proxies with the sweep's preset, budget and seeds " + ", ".join(map(str, ver["seeds"])) +
            " trained on each mixture (they played no part in the fit). Target loss, mean over seeds:")
        rows = []
        for k, t in sorted(mx.items(), key=lambda kv: kv[1]["target_mean"]):
            rows.append([k, round(t["target_mean"], 4)] + [round(t["losses_mean"][n], 4) for n in names]
                        + [_f(pred.get(k, {}).get(ch, {}).get("target")) if k in pred else "n/a",
                           "" if k == "proposed" else f"{100 * ver['relative'][k]:+.2f}%"])
        s.table(["mixture", "observed target"] + [f"loss/{n}" for n in names] +
                ["predicted target", "proposed is lower by"], rows)
        beats = ver.get("beats", {})
        if beats:
            s.p("Proposed mixture " + "; ".join(
                f"{'beats' if b else 'does NOT beat'} {k} ({100 * ver['relative'][k]:+.2f}% lower target loss)"
                for k, b in beats.items()) + ".")
        if len(ver["seeds"]) > 1:
            s.table(["mixture"] + [f"seed {x}" for x in ver["seeds"]],
                    [[k] + [round(r["target"], 4) for r in sorted(t["runs"], key=lambda r: r["seed"])]
                     for k, t in mx.items()], caption="per seed")
    out.append(s)
    return out


def write_report(sw: "Sweep") -> str:
    secs = sections(sw)
    os.makedirs(os.path.join(sw.out, "report"), exist_ok=True)
    title = f"Mixture sweep {sw.cfg.name}"
    html_doc = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style>"
                f"</head><body><h1>{title}</h1>"]
    md_doc = [f"# {title}", ""]
    for sec in secs:
        html_doc.append(render_html(sec, "report"))
        md_doc.append(render_md(sec, "report"))
        for kind, payload in sec.blocks:
            if kind == "plot":
                with open(os.path.join(sw.out, "report", f"{payload[0]}.png"), "wb") as f:
                    f.write(payload[1])
    html_doc.append("</body></html>")
    path = os.path.join(sw.out, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(html_doc))
    with open(os.path.join(sw.out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md_doc))
    return path
