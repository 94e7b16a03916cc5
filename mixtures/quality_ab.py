"""Curation A/B: does the pipeline's filtering pay off?  (``make quality-ab``)

    python -m mixtures.quality_ab [configs/sweeps/quality_ab.yaml] [--set proxy.steps=200] [--fresh]

Two identical proxies are trained for the same number of tokens — one on the **raw**
input (the corpus pipeline with its filters and deduplication switched off), one on the
**curated** corpus (the default pipeline) — and both are evaluated on the same held-out
high-quality text that neither saw.  Lower held-out loss for the curated arm is the
measure of the pipeline's worth.

Fair by construction:

* **held-out text** (``heldout.paths``, e.g. the Python tutorial) is cut into chunks and
  (1) given to both corpus builds as a decontamination eval set (``--eval-set``), so any
  training document sharing 13-grams with it is removed from *both* arms (the sample's
  web pages include the tutorial's HTML version), and (2) built into its own corpus
  (filters off) whose packed sequences are the evaluation set;
* one tokenizer, trained on the curated corpus, packs raw, curated and held-out text, so
  held-out losses are per token of the same tokenization;
* both arms: the same proxy (preset, steps, batch, sequence length, learning rate, seeds);
  each arm's sources are mixed in their natural token proportions (the corpus as it
  comes out of the pipeline), with the held-out text as a weight-0 validation source;
* every seed in ``seeds`` trains both arms; the report gives each seed and the mean.

Steps run as processes (``pipelines/build_corpus.py``, ``tokenizer.train``,
``tokenizer.pack``, ``python -m train``), each skipped on rerun when its output exists
for the same command.  Output: ``<out>/report.md`` / ``report.html`` / ``result.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from mixtures.config import ROOT, MixtureError, load_yaml_config, plan_mixture
from mixtures.sweep import (Job, ProxySpec, SweepError, _fmt_time, _tail, proxy_env, proxy_train_args, run_jobs,
                            say)

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "sweeps", "quality_ab.yaml")
#: build_corpus overrides that turn every filter and deduplication stage off (normalisation
#: and decontamination stay: the first is not a filter, the second keeps the test fair)
RAW_OVERRIDES = [f"stages.{s}=false" for s in ("language", "quality", "safety", "pii", "exact_dedup", "near_dup",
                                                "boilerplate")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeldoutSpec(_Strict):
    name: str = "heldout"
    paths: list[str]
    #: chunks of about this many characters (reStructuredText: one per chapter, split further if longer)
    chunk_chars: int = Field(8000, ge=500)
    #: packed sequences of held-out text scored (at most all but one of them)
    eval_sequences: int = Field(64, gt=0)


class TokenizerSpec(_Strict):
    vocab_size: int = Field(4096, ge=256)
    overrides: list[str] = []


class ABConfig(_Strict):
    name: str = "quality_ab"
    out: str = "runs/ablate/{name}"
    #: the raw input: source name -> file, directory or glob (build_corpus --input NAME=GLOB)
    inputs: dict[str, str]
    heldout: HeldoutSpec
    raw_overrides: list[str] = RAW_OVERRIDES
    curated_overrides: list[str] = []
    tokenizer: TokenizerSpec = TokenizerSpec()
    seq_len_packed: int = Field(129, ge=8)
    #: per training source, packed sequences held out (its own validation loss, reported only)
    validation_sequences: int = Field(8, ge=1)
    proxy: ProxySpec = ProxySpec()
    seeds: list[int] = [0]
    jobs: int = Field(2, ge=1)
    #: how each arm's sources are weighted: ``natural`` = each corpus's own token proportions
    #: (what you would train on; filtering changes the mix as well as the quality),
    #: ``matched`` = both arms use the raw input's proportions over the sources both still
    #: have (isolates what the filters do *within* each source)
    weighting: list[Literal["natural", "matched"]] = Field(["natural", "matched"], min_length=1)


def load_ab(path: str, overrides: list[str]) -> ABConfig:
    return load_yaml_config(path, overrides, ABConfig, SweepError)


# ----------------------------------------------------------------- held-out text
_RST_CHAPTER = re.compile(r"(?m)^(?=\.\. _[^:\n]+:\n\n\*+\n)")


def chunk_text(text: str, chunk_chars: int, rst: bool = False) -> list[str]:
    """Chapters (reStructuredText labels over ``***`` titles) or the whole text, each cut
    at paragraph boundaries into pieces of at most ~``chunk_chars`` characters."""
    parts = [p for p in (_RST_CHAPTER.split(text) if rst else [text]) if p.strip()]
    out = []
    for part in parts:
        cur = ""
        for para in re.split(r"\n\s*\n", part):
            if cur and len(cur) + len(para) + 2 > chunk_chars:
                out.append(cur)
                cur = ""
            cur = f"{cur}\n\n{para}" if cur else para
        if cur.strip():
            out.append(cur)
    return out


def write_heldout(spec: HeldoutSpec, out_dir: str) -> dict[str, Any]:
    """``docs.jsonl`` (a corpus input) and ``eval_set.jsonl`` (a decontamination eval set,
    ``passage`` field) of the held-out chunks."""
    import glob as globlib

    os.makedirs(out_dir, exist_ok=True)
    files = []
    for pat in spec.paths:
        hits = sorted(globlib.glob(pat if os.path.isabs(pat) else os.path.join(ROOT, pat)))
        if not hits:
            raise SweepError(f"heldout.paths: {pat} matches no file")
        files += hits
    chunks = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for i, c in enumerate(chunk_text(text, spec.chunk_chars, rst=path.endswith(".rst"))):
            chunks.append({"id": f"{spec.name}-{os.path.basename(path)}-{i:03d}", "text": c})
    with open(os.path.join(out_dir, "docs.jsonl"), "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps({"id": c["id"], "text": c["text"], "lang_hint": "en"}, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "eval_set.jsonl"), "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps({"id": c["id"], "passage": c["text"]}, ensure_ascii=False) + "\n")
    return {"files": [os.path.relpath(p, ROOT) for p in files], "chunks": len(chunks),
            "chars": sum(len(c["text"]) for c in chunks)}


# ----------------------------------------------------------------- steps
class Steps:
    """Processes run once: a step is redone only when its command changed or its output
    is missing (``<out>/steps.json`` keeps the commands' hashes)."""

    def __init__(self, out: str):
        self.out = out
        self.path = os.path.join(out, "steps.json")
        self.done = json.load(open(self.path)) if os.path.exists(self.path) else {}

    def run(self, name: str, args: list[str], output: str, marker: str) -> None:
        h = hashlib.sha256(json.dumps(args).encode()).hexdigest()[:16]
        if self.done.get(name) == h and os.path.exists(os.path.join(output, marker)):
            say(f"{name}: done earlier ({os.path.relpath(output, ROOT)})")
            return
        if os.path.isdir(output):
            shutil.rmtree(output)
        log = os.path.join(self.out, "logs", f"{name}.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        say(f"{name}: {' '.join(args[:3])} ... (log {os.path.relpath(log, ROOT)})")
        t0 = time.time()
        env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONHASHSEED": "0"}
        with open(log, "w", encoding="utf-8") as f:
            rc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc != 0 or not os.path.exists(os.path.join(output, marker)):
            raise SweepError(f"{name} failed (exit {rc}): {_tail(log)}")
        self.done[name] = h
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(self.done, f, indent=1)
        say(f"{name}: done in {_fmt_time(time.time() - t0)}")


def _ledger(corpus: str) -> dict[str, Any]:
    with open(os.path.join(corpus, "ledger.json"), encoding="utf-8") as f:
        led = json.load(f)
    out = {}
    for src, e in led["sources"].items():
        out[src] = {"input": e["input"], "kept": e["kept"],
                    "dropped": {st: sum(r.values()) for st, r in (e.get("dropped") or {}).items()}}
    return out


def _packed(tokens_dir: str) -> dict[str, dict]:
    with open(os.path.join(tokens_dir, "token_manifest.json"), encoding="utf-8") as f:
        m = json.load(f)
    return {s: {"sequences": int(v["sequences"]), "tokens": int(v["tokens"]), "documents": int(v["documents"])}
            for s, v in m["sources"].items()}


def arm_mixture(cfg: ABConfig, arm: str, tokens_dir: str, heldout_dir: str, path: str,
                weights_over: dict[str, float] | None = None) -> dict[str, Any]:
    """The arm's mixture: its sources in natural proportions (or ``weights_over``, over those
    sources only) + the held-out text at weight 0."""
    packed = _packed(tokens_dir)
    h = _packed(heldout_dir)
    if len(h) != 1:
        raise SweepError(f"held-out corpus packed into {len(h)} sources, expected 1")
    h_src, h_info = next(iter(h.items()))
    sources: dict[str, dict] = {}
    weights: dict[str, float] = {}
    for s, info in packed.items():
        v = min(cfg.validation_sequences, max(1, info["sequences"] // 10))
        if info["sequences"] - v < 1:
            continue                            # too small to train on or hold out from
        if weights_over is not None and weights_over.get(s, 0.0) <= 0:
            continue
        sources[s] = {"tokens_dir": tokens_dir, "validation_sequences": v}
        weights[s] = float(info["sequences"] - v) if weights_over is None else float(weights_over[s])
    if weights_over is not None and set(weights_over) - set(weights):
        raise SweepError(f"{arm} arm: no trainable packed data for {sorted(set(weights_over) - set(weights))}")
    h_val = min(cfg.heldout.eval_sequences, h_info["sequences"] - 1)
    if h_val < 1:
        raise SweepError(f"held-out text packs into {h_info['sequences']} sequence(s); give more text")
    name = cfg.heldout.name
    sources[name] = {"tokens_dir": heldout_dir, "packed": h_src, "validation_sequences": h_val}
    weights[name] = 0.0
    pr = cfg.proxy
    how = "natural proportions" if weights_over is None else "the raw input's proportions (matched)"
    mix = {"name": f"{cfg.name}-{arm}", "description": f"curation A/B, {arm} arm ({how})",
           "seed": 0, "default_max_epochs": 4.0, "validation_sequences": cfg.validation_sequences,
           "sources": sources,
           "stages": [{"name": "main", "tokens": pr.steps * pr.batch_size * cfg.seq_len_packed, "weights": weights}]}
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(mix, f, sort_keys=False)
    try:
        plan_mixture(path)
    except MixtureError as e:
        raise SweepError(f"{arm} arm: {str(e).splitlines()[0]}") from None
    total = sum(weights.values())
    return {"path": path, "weights": {k: w / total for k, w in weights.items()}, "heldout_sequences": h_val,
            "eval_sequences": max(v["validation_sequences"] for v in sources.values()) * len(sources),
            "packed": packed}


def run(cfg: ABConfig, config_path: str, out: str) -> dict[str, Any]:
    os.makedirs(out, exist_ok=True)
    steps = Steps(out)
    t0 = time.time()
    held = write_heldout(cfg.heldout, os.path.join(out, "heldout"))
    say(f"held-out text: {held['chunks']} chunks, {held['chars']:,} characters from {', '.join(held['files'])}")
    inputs = []
    for src, pat in cfg.inputs.items():
        if src == cfg.heldout.name:
            raise SweepError(f"inputs: {src} is also the held-out name")
        inputs += ["--input", f"{src}={pat}"]
    eval_set = ["--eval-set", f"{cfg.heldout.name}={os.path.join(out, 'heldout', 'eval_set.jsonl')}"]
    corpora = {arm: os.path.join(out, f"{arm}_corpus") for arm in ("raw", "curated", "heldout")}
    for arm, ov in (("raw", cfg.raw_overrides), ("curated", cfg.curated_overrides)):
        steps.run(f"build_{arm}", ["pipelines/build_corpus.py", *inputs, *eval_set, "--output", corpora[arm],
                                   *[f"--set={o}" for o in ov]], corpora[arm], "manifest.json")
    steps.run("build_heldout", ["pipelines/build_corpus.py", "--input",
                                f"{cfg.heldout.name}={os.path.join(out, 'heldout', 'docs.jsonl')}",
                                "--output", corpora["heldout"], "--no-report", *[f"--set={o}" for o in RAW_OVERRIDES]],
              corpora["heldout"], "manifest.json")
    tok = os.path.join(out, "tokenizer")
    steps.run("tokenizer", ["-m", "tokenizer.train", "--corpus", corpora["curated"], "--output", tok, "--no-compare",
                            "--set", f"train.vocab_size={cfg.tokenizer.vocab_size}",
                            *[x for o in cfg.tokenizer.overrides for x in ("--set", o)]], tok, "tokenizer.json")
    tokens = {arm: os.path.join(out, "tokens", arm) for arm in corpora}
    for arm in corpora:
        steps.run(f"pack_{arm}", ["-m", "tokenizer.pack", "--corpus", corpora[arm], "--tokenizer", tok, "--output",
                                  tokens[arm], "--seq-len", str(cfg.seq_len_packed)]
                  + ([] if arm == "curated" else ["--allow-corpus-mismatch"]), tokens[arm], "token_manifest.json")
    with open(os.path.join(tokens["curated"], "token_manifest.json"), encoding="utf-8") as f:
        vocab = int(json.load(f)["tokenizer"]["vocab_size"])
    pr = cfg.proxy
    arms = {}
    os.makedirs(os.path.join(out, "mixtures"), exist_ok=True)
    for arm in ("raw", "curated"):
        arms[arm] = arm_mixture(cfg, arm, tokens[arm], tokens["heldout"], os.path.join(out, "mixtures", f"{arm}.yaml"))
    hname = cfg.heldout.name
    # matched: the raw input's proportions over the sources both arms can train on
    common = {s: w for s, w in arms["raw"]["weights"].items()
              if s != hname and w > 0 and arms["curated"]["weights"].get(s, 0) > 0}
    matched_left_out = sorted(s for s, w in arms["raw"]["weights"].items() if s != hname and w > 0 and s not in common)
    variants = {}                                  # run-id prefix -> (weighting, arm)
    for weighting in cfg.weighting:
        for arm in ("raw", "curated"):
            key = arm if weighting == "natural" else f"{arm}-matched"
            if weighting == "matched":
                total = sum(common.values())
                arms[key] = arm_mixture(cfg, arm, tokens[arm], tokens["heldout"],
                                        os.path.join(out, "mixtures", f"{key}.yaml"),
                                        weights_over={s: w / total for s, w in common.items()})
            variants[key] = (weighting, arm)
            say(f"{key}: " + ", ".join(f"{s} {w:.3f}" for s, w in arms[key]["weights"].items() if w > 0)
                + f" ({weighting}); {pr.steps * pr.batch_size * (cfg.seq_len_packed - 1):,} training tokens")
    if "matched" in cfg.weighting and matched_left_out:
        say(f"matched: {', '.join(matched_left_out)} left out of both arms (nothing of it survives curation)")

    def result(run_dir: str, steps_: int):
        p = os.path.join(run_dir, "summary.json")
        if not os.path.exists(p):
            return None
        with open(p, encoding="utf-8") as f:
            s = json.load(f)
        if s.get("final_step") != steps_ or f"loss/{hname}" not in s.get("eval", {}):
            return None
        return s["eval"]

    jobs = []
    for seed in cfg.seeds:
        for key in variants:
            d = os.path.join(out, "runs", f"{key}-s{seed}")
            args = proxy_train_args(pr, steps=pr.steps, run_dir=d, mixture=arms[key]["path"], vocab=vocab,
                                    seq_len=cfg.seq_len_packed - 1, seed=seed, eval_sequences=arms[key]["eval_sequences"])
            jobs.append(Job(f"{key}-s{seed}", d, args, pr.steps, lambda d=d: result(d, pr.steps),
                            lambda r: f"held-out loss {r[f'loss/{hname}']:.4f}", drop_checkpoints=not pr.keep_checkpoints))
    timing = run_jobs(jobs, proxy_env(pr, out), cfg.jobs, "proxies")
    runs = {j.id: j.result() for j in jobs}
    by_key = {key: [runs[f"{key}-s{s}"][f"loss/{hname}"] for s in cfg.seeds] for key in variants}
    comparisons = {}
    for weighting in cfg.weighting:
        raw_k, cur_k = ("raw", "curated") if weighting == "natural" else ("raw-matched", "curated-matched")
        raw_m, cur_m = float(np.mean(by_key[raw_k])), float(np.mean(by_key[cur_k]))
        comparisons[weighting] = {"raw": raw_k, "curated": cur_k, "raw_mean": raw_m, "curated_mean": cur_m,
                                  "relative_reduction": (raw_m - cur_m) / raw_m,
                                  "curated_lower_every_seed": all(c < r for c, r in zip(by_key[cur_k], by_key[raw_k]))}
    res = {"config": cfg.model_dump(mode="json"), "config_path": os.path.relpath(os.path.abspath(config_path), ROOT),
           "heldout": held, "vocab_size": vocab, "seeds": cfg.seeds,
           "arms": {key: {"weighting": variants[key][0], "corpus": variants[key][1], "weights": arms[key]["weights"],
                          "packed": arms[key]["packed"], "ledger": _ledger(corpora[variants[key][1]]),
                          "heldout_loss": by_key[key], "heldout_loss_mean": float(np.mean(by_key[key])),
                          "own_validation": {s: {k: v for k, v in runs[f"{key}-s{s}"].items()} for s in cfg.seeds}}
                    for key in variants},
           "comparisons": comparisons, "matched_left_out": matched_left_out,
           "heldout_packed": _packed(tokens["heldout"]),
           "timing": {**timing, "total_s": time.time() - t0}}
    with open(os.path.join(out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
    write_report(res, out)
    return res


# ----------------------------------------------------------------- report
def write_report(res: dict[str, Any], out: str) -> str:
    from pipelines.reportlib import Section, new_figure, render_html, render_md
    from mixtures.sweep_report import CSS

    cfg = res["config"]
    h = cfg["heldout"]["name"]
    arms = res["arms"]
    secs = []
    s = Section("Result")
    s.p(f"Held-out text: {', '.join(res['heldout']['files'])} ({res['heldout']['chars']:,} characters, "
        f"{res['heldout']['chunks']} chunks); scored on {cfg['heldout']['eval_sequences']} packed sequences. "
        f"Proxy: preset {cfg['proxy']['preset']}, {cfg['proxy']['steps']} steps x {cfg['proxy']['batch_size']} x "
        f"{cfg['seq_len_packed'] - 1} tokens, vocabulary {res['vocab_size']} (trained on the curated corpus), "
        f"seeds {', '.join(map(str, res['seeds']))}.")
    keys = list(arms)
    rows = [[k, arms[k]["weighting"]] + [round(x, 4) for x in arms[k]["heldout_loss"]]
            + [round(arms[k]["heldout_loss_mean"], 4)] for k in keys]
    s.table(["arm", "weights"] + [f"seed {x}" for x in res["seeds"]] + ["mean"], rows,
            caption=f"validation loss (nats/token) on the held-out text ({h})")
    why = {"natural": "each corpus in its own token proportions (what you would train on: what the filters remove "
                      "changes the mix as well as the quality)",
           "matched": "both arms in the raw input's proportions over the sources both have"
                      + (f" ({', '.join(res['matched_left_out'])} left out: nothing of it survives curation)"
                         if res["matched_left_out"] else "") + " (what the filters do within each source)"}
    for weighting, c in res["comparisons"].items():
        red = c["relative_reduction"]
        verdict = f"{100 * red:.2f}% lower" if red > 0 else f"{-100 * red:.2f}% HIGHER"
        s.p(f"**{weighting} weights** — {why[weighting]}: the curated arm's held-out loss is {verdict} than the raw "
            f"arm's (mean over seeds; goal: >= 5% lower); "
            + ("lower for every seed." if c["curated_lower_every_seed"] else "not lower for every seed."))
    fig, ax = new_figure(7, 3)
    x = np.arange(len(res["seeds"]))
    wdt = 0.8 / len(keys)
    for j, k in enumerate(keys):
        ax.bar(x + (j - (len(keys) - 1) / 2) * wdt, arms[k]["heldout_loss"], width=wdt, label=k)
    lo = min(min(arms[a]["heldout_loss"]) for a in arms)
    ax.set(xticks=x, xticklabels=[f"seed {v}" for v in res["seeds"]], ylabel=f"loss on {h}",
           ylim=(lo * 0.9, None), title="held-out loss, raw vs curated")
    ax.legend(fontsize=8)
    s.plot(fig, "heldout_loss", "held-out loss per seed")
    secs.append(s)
    s = Section("The two corpora")
    s.p("Raw: build_corpus with " + ", ".join(cfg["raw_overrides"]) + " (normalisation and decontamination on). "
        "Curated: the default pipeline" + (" with " + ", ".join(cfg["curated_overrides"]) if cfg["curated_overrides"]
                                          else "") + ". Both are decontaminated against the held-out text.")
    rows = []
    for arm in ("raw", "curated"):
        led, packed = arms[arm]["ledger"], arms[arm]["packed"]
        for src in sorted(set(led) | set(packed)):
            e = led.get(src, {})
            dropped = ", ".join(f"{k} {v}" for k, v in sorted(e.get("dropped", {}).items()))
            rows.append([arm, src, e.get("input"), e.get("kept"), dropped, packed.get(src, {}).get("tokens", 0)]
                        + [round(arms[k]["weights"].get(src, 0.0), 4) for k in keys if arms[k]["corpus"] == arm])
    s.table(["arm", "source", "documents in", "kept", "dropped by stage", "tokens"]
            + [f"weight ({w})" for w in res["comparisons"]], rows)
    secs.append(s)
    s = Section("Each arm's own validation loss")
    s.p("Per-source validation losses on each arm's own held-out sequences: not comparable between arms (different "
        "text), shown for completeness.")
    rows = []
    for arm in keys:
        for seed, ev in arms[arm]["own_validation"].items():
            rows.append([arm, seed, ", ".join(f"{k[5:]} {v:.3f}" for k, v in sorted(ev.items()) if k.startswith("loss/"))])
    s.table(["arm", "seed", "losses"], rows)
    secs.append(s)
    title = "Curation A/B"
    os.makedirs(os.path.join(out, "report"), exist_ok=True)
    html_doc = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style>"
                f"</head><body><h1>{title}</h1>"]
    md_doc = [f"# {title}", ""]
    for sec in secs:
        html_doc.append(render_html(sec, "report"))
        md_doc.append(render_md(sec, "report"))
        for kind, payload in sec.blocks:
            if kind == "plot":
                with open(os.path.join(out, "report", f"{payload[0]}.png"), "wb") as f:
                    f.write(payload[1])
    with open(os.path.join(out, "report.html"), "w", encoding="utf-8") as f:
        f.write("\n".join(html_doc + ["</body></html>"]))
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md_doc))
    return os.path.join(out, "report.html")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mixtures.quality_ab", description=(
        "Curation A/B: train the same proxy on the raw input and on the curated corpus; compare their loss on "
        "held-out high-quality text."))
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="A/B config (default configs/sweeps/quality_ab.yaml)")
    p.add_argument("--out", default=None, metavar="DIR")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    p.add_argument("--fresh", action="store_true", help="delete the output directory first")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from mixtures.sweep import _interrupt
    import signal
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cfg = load_ab(args.config, args.overrides)
        out = os.path.abspath(args.out or cfg.out.format(name=cfg.name))
        if args.fresh and os.path.isdir(out):
            if not os.path.exists(os.path.join(out, "steps.json")) and os.listdir(out):
                raise SweepError(f"--fresh: {out} does not look like an A/B directory (no steps.json); not deleting")
            shutil.rmtree(out)
        res = run(cfg, args.config, out)
    except (SweepError, MixtureError) as e:
        print(f"python -m mixtures.quality_ab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue", file=sys.stderr)
        return 130
    for weighting, c in res["comparisons"].items():
        red = c["relative_reduction"]
        say(f"held-out loss ({res['config']['heldout']['name']}), {weighting} weights: raw {c['raw_mean']:.4f}, "
            f"curated {c['curated_mean']:.4f} -> curated is "
            f"{f'{100 * red:.2f}% lower' if red > 0 else f'{-100 * red:.2f}% higher'} "
            f"(seeds {', '.join(map(str, res['seeds']))})")
    say(f"report {os.path.join(out, 'report.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
