"""Mixture ablation sweeps: one command from tiny proxies to a proposed mixture.

    python -m mixtures.sweep configs/sweeps/demo.yaml            # plan, run, fit, verify, report
    python -m mixtures.sweep configs/sweeps/demo.yaml --phase plan   # write the proxies' run dirs only
    python -m mixtures.sweep CONFIG --phase run --proxy p003     # one proxy (a job elsewhere)
    python -m mixtures.sweep CONFIG --set sampling.proxies=32    # extend a sweep; finished proxies are kept

What it does (RegMix, Liu et al. 2024, inside this project's own trainer):

1. **plan** — reads the packed corpus (``tokenizer.pack``'s token manifest), takes the
   natural token distribution of the sources, and samples K mixtures from a Dirichlet
   around it, inside the weight bounds and every source's repetition cap
   (``mixtures/search.py``).  Each proxy gets a run directory with its mixture YAML,
   ``proxy.json`` (the spec and its hash) and ``command.sh`` (the exact trainer command,
   so proxies can be launched as separate jobs anywhere that sees the same paths).
2. **run** — trains one tiny proxy per mixture for the same token budget with the
   project's trainer, as ``python -m train`` processes (``jobs`` in parallel, one XLA
   thread each, a shared persistent compilation cache).  A proxy is finished when its
   run dir holds ``summary.json`` at the planned step; finished proxies are skipped on
   rerun, interrupted ones resume from their checkpoints (the trainer's exact resume).
3. **fit** — per-domain validation losses of every proxy (the same held-out sequences
   for all) -> regressions from weights to losses (``mixtures/regress.py``: LightGBM,
   the log-linear mixing law, linear), compared by rank correlation leave-one-out and on
   held-out proxies; the chosen one searches the simplex under the same constraints and
   writes ``proposed_mixture.yaml`` (a mixture file with the predicted losses in
   ``provenance``).
4. **verify** — fresh proxies (same seed and budget) on the natural, the uniform and the
   proposed mixture: does the proposal actually win on the target loss?
5. **report** — ``report.html`` / ``report.md``: observed vs predicted losses, rank
   correlations, weight sensitivities, the chosen mixture, plots.

**Target loss.**  ``target.weights`` weigh the per-domain validation losses (default:
all sources equally — the mean per-domain loss); one domain with weight 1 makes a
single-domain target.  It is printed, stored in every output, and is what the search
minimises and verification compares.

**Staged ablation** (``staged:``).  Gemini-style schedules change the mixture late in
training; no published mixture method optimises those late-stage weights.  Here stage 1
is trained once (``stage1-s<seed>/``) on fixed weights, and each proxy warm-starts from
its checkpoint (``python -m train --init-from``) and trains stage 2 under a sampled
mixture.  Every proxy's mixture file holds both stages with stage 1 identical, so a
proxy is exactly a two-stage run from scratch (the loader verifies the shared prefix).
The learning rate is warmup-stable-decay with the decay spanning stage 2 (the MiniCPM
recipe); the stage-1 run uses the identical constant prefix.

The sweep never imports the trainer: proxies are processes, their results files.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mixtures import regress, search
from mixtures.config import (MixtureConfig, MixtureError, ROOT, apportion, load_data, load_yaml_config,
                              plan_mixture)

#: XLA:CPU settings for one-core proxies (measured fastest on a 2-core box: two single-
#: threaded processes beat one process using both cores; see bench/bench_sweep.py)
ONE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def proxy_train_args(pr: "ProxySpec", *, steps: int, run_dir: str, mixture: str, vocab: int, seq_len: int, seed: int,
                     eval_sequences: int, extra: list[str] = (), init_from: str | None = None) -> list[str]:
    """``python -m train`` arguments of a proxy: the user's overrides, then what the sweep
    fixes (shape of the data, seeds, one evaluation over all validation sequences at the
    end, checkpoints for resume, no probes/plots)."""
    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in pr.overrides.items()]
    sets += [f"model.vocab_size={vocab}", f"seq_len={seq_len}", f"batch_size={pr.batch_size}", f"seed={seed}",
             f"data.seed={seed}", f"eval.every={steps}", f"eval.batches={-(-eval_sequences // pr.batch_size)}",
             f"checkpoint.every={min(pr.checkpoint_every, steps)}", "checkpoint.keep=1", "probes.enabled=false",
             "log.plots=false", "log.tensorboard=false", f"log.every={max(steps // 6, 1)}", *extra]
    args = ["-m", "train", "--preset", pr.preset, "--steps", str(steps), "--run-dir", run_dir, "--mixture", mixture]
    for s in sets:
        args += ["--set", s]
    if init_from:
        args += ["--init-from", init_from]
    return args


def proxy_env(pr: "ProxySpec", out: str) -> dict[str, str]:
    env = dict(os.environ)
    paths = [ROOT] + [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x and os.path.abspath(x) != ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONHASHSEED"] = "0"
    if pr.threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + ONE_THREAD_XLA).strip()
    # every proxy compiles the same train step: compile once, load it from the cache after
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(out, "xla_cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    return env


class SweepError(ValueError):
    """A sweep problem, formatted as one line for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------- config
class ProxySpec(_Strict):
    """One tiny proxy: the trainer preset and budget every proxy shares."""
    preset: str = "tiny"
    steps: int = Field(300, gt=0)
    batch_size: int = Field(8, gt=0)
    #: trainer sequence length; default: the packed length - 1 (inputs/targets inside a record)
    seq_len: int | None = Field(None, gt=0)
    seed: int = Field(0, ge=0)
    #: XLA threads per proxy process: 1 = single-threaded (with jobs = cores), 0 = XLA's default
    threads: int = Field(1, ge=0)
    checkpoint_every: int = Field(100, gt=0)
    #: keep a finished proxy's checkpoints (off: deleted once summary.json is written)
    keep_checkpoints: bool = False
    #: any training config value, ``python -m train --set KEY=VALUE`` (e.g. optim.lr: 3.0e-3)
    overrides: dict[str, Any] = {}


class SamplingSpec(_Strict):
    proxies: int = Field(16, ge=3)
    #: proxies held out from fitting: the regressions are scored on them
    heldout: int = Field(4, ge=0)
    #: Dirichlet concentration scale range around the natural distribution (log-uniform)
    scale: tuple[float, float] = (0.3, 5.0)
    #: share of the mixtures drawn uniformly on the simplex instead (coverage of balanced
    #: mixtures when one source dominates the corpus); the search samples the same way
    flat_fraction: float = Field(0.5, ge=0, le=1)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be 0 < low <= high, got {list(self.scale)}")
        if self.proxies - self.heldout < 3:
            raise ValueError(f"proxies - heldout = {self.proxies - self.heldout}: at least 3 proxies must be fitted")
        return self


class TargetSpec(_Strict):
    name: str = "mean per-domain validation loss"
    #: weights of the per-domain validation losses (normalised); empty = all sources equally
    weights: dict[str, float] = {}

    @field_validator("weights")
    @classmethod
    def _w(cls, v):
        if any((not math.isfinite(x)) or x < 0 for x in v.values()) or (v and sum(v.values()) <= 0):
            raise ValueError("target weights must be finite, >= 0 and not all 0")
        return v


class RegressionSpec(_Strict):
    models: list[Literal["lightgbm", "loglinear", "linear"]] = list(regress.MODELS)
    #: auto: the best leave-one-out rank correlation on the fitted proxies
    use: Literal["auto", "lightgbm", "loglinear", "linear"] = "auto"
    seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        if not self.models:
            raise ValueError("models: name at least one regression model")
        if self.use != "auto" and self.use not in self.models:
            raise ValueError(f"use: {self.use} is not in models {self.models}")
        return self


class SearchSpec(_Strict):
    candidates: int = Field(100_000, ge=100)
    top_k: int = Field(100, ge=1)
    min_weight: dict[str, float] = {}
    max_weight: dict[str, float] = {}
    #: token budget of the proposed mixture (repetition caps are checked at it);
    #: default: the proxies' budget.  Not for staged sweeps (their stages are the proxies').
    budget_tokens: int | None = Field(None, gt=0)
    seed: int = 0


class StagedSpec(_Strict):
    #: steps of stage 1 (trained once); stage 2 = proxy.steps - stage1_steps
    stage1_steps: int = Field(gt=0)
    #: ``natural`` or per-source weights
    stage1_weights: Literal["natural"] | dict[str, float] = "natural"
    stage1_name: str = "stage1"
    stage2_name: str = "stage2"


class VerifySpec(_Strict):
    enabled: bool = True
    #: model and data seeds of the fresh verification proxies (each trains every mixture)
    seeds: list[int] = [0]
    baselines: list[Literal["natural", "uniform"]] = ["natural", "uniform"]


class SweepConfig(_Strict):
    name: str
    description: str = ""
    tokens_dir: str
    corpus: str | None = None
    #: sources to mix; default every packed source of the token manifest
    sources: list[str] = []
    #: packed sequences per source held out for validation (identical for every proxy)
    validation_sequences: int = Field(16, gt=0)
    default_max_epochs: float = Field(4.0, gt=0)
    max_epochs: dict[str, float] = {}
    #: output directory ({name} is replaced)
    out: str = "runs/ablate/{name}"
    #: proxies trained at the same time (processes)
    jobs: int = Field(2, ge=1)
    proxy: ProxySpec = ProxySpec()
    sampling: SamplingSpec = SamplingSpec()
    target: TargetSpec = TargetSpec()
    regression: RegressionSpec = RegressionSpec()
    search: SearchSpec = SearchSpec()
    staged: StagedSpec | None = None
    verify: VerifySpec = VerifySpec()

    @model_validator(mode="after")
    def _check(self):
        if self.staged is not None:
            if self.staged.stage1_steps >= self.proxy.steps:
                raise ValueError(f"staged.stage1_steps {self.staged.stage1_steps} must be < proxy.steps "
                                 f"{self.proxy.steps} (stage 2 needs steps)")
            if self.search.budget_tokens is not None:
                raise ValueError("search.budget_tokens is for single-stage sweeps (a staged sweep proposes the "
                                 "proxies' stages)")
        return self


def load_sweep(path: str, overrides: list[str] | None = None) -> SweepConfig:
    return load_yaml_config(path, overrides, SweepConfig, SweepError, "sweep config")


# ----------------------------------------------------------------- proxies
@dataclass
class Proxy:
    id: str
    role: str                     # sweep | heldout | verify | stage1
    seed: int
    weights: np.ndarray           # the swept stage's weights (stage 1's for a stage1 run)
    dir: str
    label: str = ""               # verify: natural | uniform | proposed
    spec: dict = field(default_factory=dict)

    @property
    def summary_path(self) -> str:
        return os.path.join(self.dir, "summary.json")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def say(msg: str) -> None:
    print(msg, flush=True)


class Sweep:
    def __init__(self, cfg: SweepConfig, config_path: str, out: str | None = None):
        self.cfg, self.config_path = cfg, config_path
        self.out = os.path.abspath(out or cfg.out.format(name=cfg.name))
        self.tokens_dir = os.path.abspath(cfg.tokens_dir)
        self._load_data()

    # -- the corpus ---------------------------------------------------------------------
    def _load_data(self) -> None:
        from tokenizer.format import FormatError, load_token_manifest

        cfg = self.cfg
        try:
            manifest = load_token_manifest(self.tokens_dir)
        except (FormatError, OSError) as e:
            raise SweepError(f"tokens_dir {cfg.tokens_dir}: {str(e).splitlines()[0]} (run tokenizer.pack first)") from None
        packed = list(manifest["sources"])
        names = list(cfg.sources) or packed
        unknown = [n for n in names if n not in packed]
        if unknown:
            raise SweepError(f"sources {unknown} are not in {cfg.tokens_dir} (it has: {', '.join(packed)})")
        if len(names) < 2:
            raise SweepError(f"a mixture sweep needs at least 2 sources, {cfg.tokens_dir} gives {names}")
        for key in ("max_epochs",):
            bad = [n for n in getattr(cfg, key) if n not in names]
            if bad:
                raise SweepError(f"{key}: unknown source(s) {bad} (sources: {', '.join(names)})")
        for key in ("min_weight", "max_weight"):
            bad = [n for n in getattr(cfg.search, key) if n not in names]
            if bad:
                raise SweepError(f"search.{key}: unknown source(s) {bad} (sources: {', '.join(names)})")
        bad = [n for n in cfg.target.weights if n not in names]
        if bad:
            raise SweepError(f"target.weights: unknown source(s) {bad} (sources: {', '.join(names)})")
        self.names = names
        self.S = int(manifest["seq_len"])
        self.L = cfg.proxy.seq_len or self.S - 1
        if self.L not in (self.S, self.S - 1):
            raise SweepError(f"proxy.seq_len {self.L}: the packed sequences are {self.S} tokens, so use {self.S - 1} "
                             f"or {self.S} (or re-pack with --seq-len {self.L + 1})")
        self.vocab = int(manifest["tokenizer"]["vocab_size"])
        base = self.mixture_config("base", [("all", 1, {n: 1.0 for n in names})])
        try:
            self.data = load_data(MixtureConfig.model_validate(base))
        except MixtureError as e:
            raise SweepError(str(e).splitlines()[0]) from None
        self.train_seqs = np.array([self.data.sources[n].train_sequences for n in names], float)
        self.natural = self.train_seqs / self.train_seqs.sum()
        self.caps = np.array([self.cfg.max_epochs.get(n, self.cfg.default_max_epochs) for n in names], float)
        tw = np.array([cfg.target.weights.get(n, 0.0) if cfg.target.weights else 1.0 for n in names], float)
        self.target_w = tw / tw.sum()
        B, steps = cfg.proxy.batch_size, cfg.proxy.steps
        if cfg.staged:
            self.M1 = cfg.staged.stage1_steps * B
            self.M2 = (steps - cfg.staged.stage1_steps) * B
            w1 = cfg.staged.stage1_weights
            if w1 == "natural":
                self.w1 = self.natural.copy()
            else:
                bad = [n for n in w1 if n not in names]
                if bad:
                    raise SweepError(f"staged.stage1_weights: unknown source(s) {bad}")
                v = np.array([float(w1.get(n, 0.0)) for n in names])
                if v.sum() <= 0 or (v < 0).any():
                    raise SweepError("staged.stage1_weights must be >= 0 and not all 0")
                self.w1 = v / v.sum()
            self.used1 = np.array(apportion(self.M1, list(self.w1)), float)
        else:
            self.M1, self.M2, self.w1, self.used1 = 0, steps * B, None, np.zeros(len(names))
        if cfg.staged:
            warm = self._warmup_steps()
            if warm >= cfg.staged.stage1_steps:
                raise SweepError(f"staged: the learning-rate warmup ({warm} steps) must end inside stage 1 "
                                 f"({cfg.staged.stage1_steps} steps); set proxy.overrides optim.warmup_steps lower")
        self.region = self._region(self.M2)
        if cfg.staged or cfg.search.budget_tokens is None:
            self.search_M = self.M2
        else:
            self.search_M = max(1, round(cfg.search.budget_tokens / self.S))
        self.search_region = self._region(self.search_M)

    def _warmup_steps(self) -> int:
        """The proxies' warmup: the override, else the preset file's ``run.optim``, else the
        trainer's default (read as data: the sweep does not import the trainer)."""
        ov = self.cfg.proxy.overrides
        if "optim.warmup_steps" in ov:
            return int(ov["optim.warmup_steps"])
        preset = self.cfg.proxy.preset
        path = preset if preset.endswith((".yaml", ".yml")) else os.path.join(ROOT, "configs", "presets", f"{preset}.yaml")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                run = (yaml.safe_load(f) or {}).get("run") or {}
            if "warmup_steps" in (run.get("optim") or {}):
                return int(run["optim"]["warmup_steps"])
        return 100                       # train/config.py OptimConfig.warmup_steps

    def _region(self, M: int) -> search.Region:
        """Weight bounds of the swept stage of ``M`` sequences: user bounds and caps (one
        sequence of slack for the apportionment's rounding up)."""
        cap_w = (self.caps * self.train_seqs - self.used1 - 1.0) / M
        lo = np.array([self.cfg.search.min_weight.get(n, 0.0) for n in self.names])
        hi = np.minimum([self.cfg.search.max_weight.get(n, 1.0) for n in self.names], cap_w)
        try:
            return search.Region(self.names, self.natural, lo, hi)
        except search.SearchError as e:
            raise SweepError(str(e)) from None

    # -- files --------------------------------------------------------------------------
    def mixture_config(self, name: str, stages: list[tuple[str, int, dict[str, float]]], seed: int = 0,
                       tokens_dir: str | None = None, provenance: dict | None = None) -> dict:
        cfg = self.cfg
        d = {"name": name, "description": f"mixture sweep {cfg.name}", "seed": seed,
             "tokens_dir": tokens_dir or self.tokens_dir, "default_max_epochs": cfg.default_max_epochs,
             "validation_sequences": cfg.validation_sequences,
             "sources": {n: ({"max_epochs": cfg.max_epochs[n]} if n in cfg.max_epochs else {}) for n in self.names},
             "stages": [{"name": s, "tokens": int(m) * self.S, "weights": {n: float(w[n]) for n in self.names}}
                        for s, m, w in stages]}
        if cfg.corpus:
            d["corpus"] = os.path.abspath(cfg.corpus) if tokens_dir is None else cfg.corpus
        if provenance:
            d["provenance"] = provenance
        return d

    def wdict(self, w: np.ndarray) -> dict[str, float]:
        return {n: round(float(x), 6) for n, x in zip(self.names, w)}

    def stages_for(self, w: np.ndarray, role: str) -> list[tuple[str, int, dict[str, float]]]:
        st = self.cfg.staged
        if st is None:
            return [("main", self.M2, self.wdict(w))]
        if role == "stage1":
            return [(st.stage1_name, self.M1, self.wdict(self.w1))]
        return [(st.stage1_name, self.M1, self.wdict(self.w1)), (st.stage2_name, self.M2, self.wdict(w))]

    def stage1_dir(self, seed: int) -> str:
        return os.path.join(self.out, f"stage1-s{seed}")

    def train_args(self, p: Proxy) -> list[str]:
        cfg, pr = self.cfg, self.cfg.proxy
        steps = self.steps_of(p)
        sets = []
        if cfg.staged:
            if p.role == "stage1":
                sets += ["optim.schedule=constant"]
            else:
                frac = (pr.steps - cfg.staged.stage1_steps) / pr.steps
                sets += ["optim.schedule=wsd", f"optim.decay_frac={frac!r}"]
        return proxy_train_args(pr, steps=steps, run_dir=p.dir, mixture=os.path.join(p.dir, "mixture.yaml"),
                                vocab=self.vocab, seq_len=self.L, seed=p.seed,
                                eval_sequences=len(self.names) * cfg.validation_sequences, extra=sets,
                                init_from=self.stage1_dir(p.seed) if cfg.staged and p.role != "stage1" else None)

    def env(self) -> dict[str, str]:
        return proxy_env(self.cfg.proxy, self.out)

    def steps_of(self, p: Proxy) -> int:
        return self.cfg.staged.stage1_steps if p.role == "stage1" else self.cfg.proxy.steps

    def write_proxy(self, p: Proxy) -> None:
        """The proxy's run dir: mixture.yaml, proxy.json (spec + hash), command.sh.  A dir
        holding another spec (the config changed) is an error, never overwritten."""
        mix = self.mixture_config(f"{self.cfg.name}-{p.id}", self.stages_for(p.weights, p.role), seed=p.seed)
        args = self.train_args(p)
        portable = [a.replace(self.out, "<out>") for a in args]
        spec = {"id": p.id, "role": p.role, "label": p.label, "seed": p.seed, "weights": self.wdict(p.weights),
                "mixture": mix, "train_args": portable}
        spec_hash = _hash({k: spec[k] for k in ("mixture", "train_args")})
        path = os.path.join(p.dir, "proxy.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
            if old.get("spec_hash") != spec_hash:
                raise SweepError(f"{p.dir} holds a proxy with another spec (the sweep config or data changed); "
                                 "use --fresh or another --out")
            p.spec = old
            return
        os.makedirs(p.dir, exist_ok=True)
        with open(os.path.join(p.dir, "mixture.yaml"), "w", encoding="utf-8") as f:
            f.write(f"# proxy {p.id} of sweep {self.cfg.name} ({p.role}{' ' + p.label if p.label else ''}); "
                    "written by python -m mixtures.sweep\n")
            yaml.safe_dump(mix, f, sort_keys=False)
        try:
            plan_mixture(os.path.join(p.dir, "mixture.yaml"))        # caps, budgets, data: fail before training
        except MixtureError as e:
            raise SweepError(f"proxy {p.id}: {str(e).splitlines()[0]}") from None
        env = self.env()
        keep = ["PYTHONPATH", "PYTHONHASHSEED", "XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR",
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]
        with open(os.path.join(p.dir, "command.sh"), "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\n# one proxy of a mixture sweep; rerun to resume\nset -e\n"
                    f"cd {shlex.quote(ROOT)}\n")
            f.write(" ".join(f"{k}={shlex.quote(env[k])}" for k in keep if k in env) + " \\\n  "
                    + shlex.join([sys.executable] + args) + f" > {shlex.quote(os.path.join(p.dir, 'train.log'))} 2>&1\n")
        os.chmod(os.path.join(p.dir, "command.sh"), 0o755)
        spec["spec_hash"] = spec_hash
        with open(path, "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=1)
        p.spec = spec

    # -- planning -----------------------------------------------------------------------
    def sweep_proxies(self) -> list[Proxy]:
        s = self.cfg.sampling
        W = np.zeros((s.proxies, len(self.names)))
        for i in range(s.proxies):           # proxy i depends on (seed, i) only: extending a sweep keeps it
            W[i] = search.sample(np.random.default_rng([s.seed, i]), self.region, 1, s.scale, s.flat_fraction)[0]
        held = set(np.random.default_rng([s.seed, 1 << 20]).permutation(s.proxies)[:s.heldout].tolist())
        return [Proxy(f"p{i:03d}", "heldout" if i in held else "sweep", self.cfg.proxy.seed, W[i],
                      os.path.join(self.out, "proxies", f"p{i:03d}")) for i in range(s.proxies)]

    def stage1_proxies(self, seeds: list[int]) -> list[Proxy]:
        if not self.cfg.staged:
            return []
        return [Proxy(f"stage1-s{s}", "stage1", s, self.w1, self.stage1_dir(s)) for s in sorted(set(seeds))]

    def plan(self) -> list[Proxy]:
        os.makedirs(self.out, exist_ok=True)
        proxies = self.sweep_proxies()
        for p in self.stage1_proxies([self.cfg.proxy.seed]) + proxies:
            self.write_proxy(p)
        info = {"config": self.cfg.model_dump(mode="json"), "config_path": os.path.abspath(self.config_path),
                "sources": self.names, "natural": self.natural.tolist(), "target_weights": self.target_w.tolist(),
                "train_sequences": self.train_seqs.tolist(), "seq_len_packed": self.S, "seq_len": self.L,
                "vocab_size": self.vocab, "stage_sequences": [self.M1, self.M2],
                "region": {"lo": self.region.lo.tolist(), "hi": self.region.hi.tolist()},
                "proxies": [{"id": p.id, "role": p.role, "weights": self.wdict(p.weights)} for p in proxies]}
        with open(os.path.join(self.out, "sweep.json"), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
        return proxies

    def print_plan(self, proxies: list[Proxy]) -> None:
        cfg, pr = self.cfg, self.cfg.proxy
        tok = pr.steps * pr.batch_size * self.L
        say(f"sweep {cfg.name}: {len(proxies)} proxies ({cfg.sampling.heldout} held out) x {pr.steps} steps of "
            f"{pr.batch_size} x {self.L} tokens = {tok:,} tokens each, preset {pr.preset}, vocab {self.vocab}; "
            f"{cfg.jobs} at a time")
        if cfg.staged:
            say(f"staged: stage 1 ({cfg.staged.stage1_steps} steps, weights "
                + ", ".join(f"{n} {w:.3f}" for n, w in zip(self.names, self.w1))
                + f") trained once; proxies sweep stage 2 ({pr.steps - cfg.staged.stage1_steps} steps)")
        say(f"target: {cfg.target.name} = " + " + ".join(f"{w:.3g}·loss/{n}" for n, w in zip(self.names, self.target_w)
                                                       if w > 0))
        say(f"{'source':<12} {'natural':>8} {'train tokens':>13} {'min w':>6} {'max w':>6}  (max: bounds, repetition cap)")
        for n, p, a, b, t in zip(self.names, self.natural, self.region.lo, self.region.hi, self.train_seqs):
            say(f"{n:<12} {p:8.3f} {int(t) * self.S:13,d} {a:6.3f} {b:6.3f}")
        say(f"{'proxy':<8} {'role':<8} " + " ".join(f"{n[:8]:>8}" for n in self.names))
        for p in proxies:
            say(f"{p.id:<8} {p.role:<8} " + " ".join(f"{w:8.3f}" for w in p.weights))
        say(f"run dirs: {os.path.join(self.out, 'proxies')}/<id> (proxy.json, mixture.yaml, command.sh)")

    # -- running ------------------------------------------------------------------------
    def result(self, p: Proxy) -> dict | None:
        """The proxy's per-domain validation losses, or None if it has not finished."""
        if not os.path.exists(p.summary_path):
            return None
        try:
            with open(p.summary_path, encoding="utf-8") as f:
                s = json.load(f)
        except (OSError, json.JSONDecodeError):
            return None
        if s.get("final_step") != self.steps_of(p):
            return None
        ev = s.get("eval") or {}
        if p.role == "stage1":
            return {"eval": ev}
        missing = [n for n in self.names if f"loss/{n}" not in ev]
        if missing:
            raise SweepError(f"{p.dir}: summary.json has no validation loss for {missing}")
        losses = np.array([ev[f"loss/{n}"] for n in self.names], float)
        spec = {}
        if os.path.exists(os.path.join(p.dir, "proxy.json")):
            with open(os.path.join(p.dir, "proxy.json"), encoding="utf-8") as f:
                spec = json.load(f)
        return {"losses": losses, "target": float(losses @ self.target_w), "wall_s": spec.get("wall_s"),
                "cpu_s": spec.get("cpu_s"), "tokens_per_s": s.get("median_tokens_per_s")}

    def run(self, proxies: list[Proxy], what: str) -> dict:
        """Train the unfinished ``proxies`` (``jobs`` at a time); returns timing info."""
        def describe(res):
            if "target" not in res:
                return "done"
            return f"target {res['target']:.4f} (" + ", ".join(
                f"{n} {x:.3f}" for n, x in zip(self.names, res["losses"])) + ")"

        jobs = [Job(p.id, p.dir, self.train_args(p), self.steps_of(p), lambda p=p: self.result(p),
                    describe, drop_checkpoints=not self.cfg.proxy.keep_checkpoints and p.role != "stage1")
                for p in proxies]
        return run_jobs(jobs, self.env(), self.cfg.jobs, what)

    def collect(self, proxies: list[Proxy]) -> list[tuple[Proxy, dict]]:
        out = []
        for p in proxies:
            r = self.result(p)
            if r is not None:
                out.append((p, r))
        return out

    # -- fitting and search -------------------------------------------------------------
    def fit(self, proxies: list[Proxy]) -> dict:
        rows = self.collect(proxies)
        fit_rows = [(p, r) for p, r in rows if p.role == "sweep"]
        hold_rows = [(p, r) for p, r in rows if p.role == "heldout"]
        missing = [p.id for p in proxies if p.id not in {q.id for q, _ in rows}]
        if len(fit_rows) < 3:
            raise SweepError(f"only {len(fit_rows)} fitted proxies have finished; run the sweep first "
                             f"(missing: {', '.join(missing[:8])}{'...' if len(missing) > 8 else ''})")
        X = lambda rs: np.array([p.weights for p, _ in rs]).reshape(len(rs), len(self.names))
        Y = lambda rs: np.array([r["losses"] for _, r in rs]).reshape(len(rs), len(self.names))
        rc = self.cfg.regression
        comparison = regress.compare(rc.models, X(fit_rows), Y(fit_rows), X(hold_rows), Y(hold_rows), self.target_w,
                                     seed=rc.seed)
        chosen = regress.choose(comparison) if rc.use == "auto" else rc.use
        all_rows = fit_rows + hold_rows
        model = regress.make(chosen, rc.seed).fit(X(all_rows), Y(all_rows))
        models = {n: (model if n == chosen else regress.make(n, rc.seed).fit(X(all_rows), Y(all_rows)))
                  for n in rc.models}

        def predict_target(W):
            return model.predict(W) @ self.target_w

        sc = self.cfg.search
        found = search.search(predict_target, self.search_region, np.random.default_rng([sc.seed, 7]),
                              candidates=sc.candidates, top_k=sc.top_k, scale=self.cfg.sampling.scale,
                              flat=self.cfg.sampling.flat_fraction)
        w = np.array([round(x, 4) for x in found["weights"]])
        w = w / w.sum()
        if not self.search_region.feasible(w[None])[0]:     # rounding at a bound: use the unrounded mean
            w = found["weights"]
        uniform = np.full(len(self.names), 1.0 / len(self.names))
        points = {"proposed": w, "natural": self.natural, "uniform": uniform}
        predicted = {k: {n: dict(zip(self.names, m.predict(v[None])[0].tolist())) | {
            "target": float(m.predict(v[None])[0] @ self.target_w)} for n, m in models.items()}
            for k, v in points.items()}
        sens = search.sensitivity(predict_target, w, self.search_region)
        Xa, ta = X(all_rows), np.array([r["target"] for _, r in all_rows])
        observed_rank = {n: regress.spearman(Xa[:, i], ta) for i, n in enumerate(self.names)}
        fit = {"sources": self.names, "target_weights": self.target_w.tolist(), "target_name": self.cfg.target.name,
               "chosen": chosen, "selection": "auto (best leave-one-out Spearman on the fitted proxies)"
               if rc.use == "auto" else "configured",
               "comparison": comparison, "proposed": self.wdict(w), "predicted": predicted,
               "uniform_feasible": bool(self.search_region.feasible(uniform[None])[0]),
               "search": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in found.items()},
               "sensitivity": sens, "observed_weight_rank_correlation": observed_rank,
               "fit_proxies": [p.id for p, _ in fit_rows], "heldout_proxies": [p.id for p, _ in hold_rows],
               "missing": missing,
               "rows": [{"id": p.id, "role": p.role, "weights": self.wdict(p.weights),
                         "losses": dict(zip(self.names, r["losses"].tolist())), "target": r["target"],
                         "wall_s": r["wall_s"], "cpu_s": r["cpu_s"]} for p, r in all_rows]}
        with open(os.path.join(self.out, "fit.json"), "w", encoding="utf-8") as f:
            json.dump(fit, f, indent=1, default=float)
        self.write_proposed(fit)
        return fit

    def write_proposed(self, fit: dict) -> str:
        cfg = self.cfg
        w = np.array([fit["proposed"][n] for n in self.names])
        pred = fit["predicted"]["proposed"][fit["chosen"]]
        hs = fit["comparison"][fit["chosen"]].get("heldout", {})
        prov = {"sweep": cfg.name, "config": os.path.relpath(os.path.abspath(self.config_path), ROOT),
                "target": {"name": cfg.target.name, "weights": dict(zip(self.names, self.target_w.tolist()))},
                "model": fit["chosen"], "heldout_spearman": hs.get("spearman"),
                "proxies": len(fit["rows"]),
                "proxy": f"preset {cfg.proxy.preset}, {cfg.proxy.steps} steps x {cfg.proxy.batch_size} x {self.L} tokens",
                "predicted_validation_loss": {**{f"loss/{n}": round(pred[n], 4) for n in self.names},
                                              "target": round(pred["target"], 4)}}
        if cfg.staged:
            stages = self.stages_for(w, "proposed")
        else:
            stages = [("main", self.search_M, self.wdict(w))]
        mix = self.mixture_config(f"{cfg.name}-proposed", stages, seed=cfg.proxy.seed, tokens_dir=cfg.tokens_dir,
                                  provenance=prov)
        mix["description"] = (f"proposed by mixture sweep {cfg.name}: minimises {cfg.target.name} "
                              f"(predicted {pred['target']:.4f} at proxy scale)")
        path = os.path.join(self.out, "proposed_mixture.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"# Proposed by `python -m mixtures.sweep {os.path.relpath(os.path.abspath(self.config_path), ROOT)}`"
                    f" from {len(fit['rows'])} proxies; regression {fit['chosen']}.\n"
                    "# Predicted validation losses (proxy scale) are in provenance; verify with the report.\n")
            yaml.safe_dump(mix, f, sort_keys=False, allow_unicode=True)
        cwd = os.getcwd()
        try:                                        # relative tokens_dir: resolve from the repository root
            os.chdir(ROOT)
            plan_mixture(path)
        except MixtureError as e:
            raise SweepError(f"the proposed mixture does not validate: {str(e).splitlines()[0]}") from None
        finally:
            os.chdir(cwd)
        return path

    # -- verification -------------------------------------------------------------------
    def verify_proxies(self, fit: dict) -> list[Proxy]:
        v = self.cfg.verify
        points = {"proposed": np.array([fit["proposed"][n] for n in self.names])}
        for b in v.baselines:
            if b == "uniform":
                u = np.full(len(self.names), 1.0 / len(self.names))
                if not self.region.feasible(u[None])[0]:
                    say("verify: the uniform mixture breaks a repetition cap or weight bound; skipped")
                    continue
                points["uniform"] = u
            else:
                points["natural"] = self.natural
        out = []
        for seed in v.seeds:
            for label, w in points.items():
                pid = f"{label}-s{seed}"
                out.append(Proxy(pid, "verify", seed, w, os.path.join(self.out, "verify", pid), label=label))
        return out

    def verify(self, fit: dict) -> dict:
        proxies = self.verify_proxies(fit)
        seeds = sorted({p.seed for p in proxies})
        s1 = self.stage1_proxies(seeds)
        for p in s1 + proxies:
            self.write_proxy(p)
        if s1:
            self.run(s1, "stage 1")
        timing = self.run(proxies, "verify")
        rows = self.collect(proxies)
        table: dict[str, dict] = {}
        for p, r in rows:
            t = table.setdefault(p.label, {"weights": self.wdict(p.weights), "runs": []})
            t["runs"].append({"seed": p.seed, "target": r["target"], "losses": dict(zip(self.names, r["losses"].tolist()))})
        for t in table.values():
            t["target_mean"] = float(np.mean([x["target"] for x in t["runs"]]))
            t["losses_mean"] = {n: float(np.mean([x["losses"][n] for x in t["runs"]])) for n in self.names}
        res = {"mixtures": table, "seeds": seeds, "timing": timing}
        if "proposed" in table:
            best = table["proposed"]["target_mean"]
            res["beats"] = {k: best < t["target_mean"] for k, t in table.items() if k != "proposed"}
            res["relative"] = {k: (t["target_mean"] - best) / t["target_mean"] for k, t in table.items()
                               if k != "proposed"}
        with open(os.path.join(self.out, "verify.json"), "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
        return res


@dataclass
class Job:
    """One trainer process: ``python <args>`` logging to ``<dir>/train.log``; finished
    when ``result()`` returns something (read from the run dir, so a run finished by a
    job elsewhere counts too)."""
    id: str
    dir: str
    args: list[str]
    steps: int
    result: Any                              # () -> dict | None
    describe: Any = None                     # (result) -> str
    drop_checkpoints: bool = False           # delete <dir>/checkpoints once finished


def run_jobs(jobs: list[Job], env: dict[str, str], n_parallel: int, what: str) -> dict:
    """Run the unfinished ``jobs``, ``n_parallel`` processes at a time, with progress lines;
    finished ones are skipped.  Records wall and CPU seconds in ``<dir>/proxy.json`` when
    that file exists.  Ctrl-C / SIGTERM stop the running processes (they resume on rerun).
    Returns timing info; raises SweepError if any failed (the others still finish)."""
    todo = [j for j in jobs if j.result() is None]
    done0 = len(jobs) - len(todo)
    if done0:
        say(f"{what}: {done0} of {len(jobs)} already finished (skipped)")
    if not todo:
        return {"ran": 0, "wall_s": 0.0}
    queue = list(todo)
    running: dict[str, tuple[Job, subprocess.Popen, float, Any]] = {}
    failed: list[str] = []
    walls: list[float] = []
    cpus: list[float] = []
    t0 = last_beat = time.time()
    say(f"{what}: training {len(todo)} proxies, {min(n_parallel, len(todo))} at a time (logs: <run dir>/train.log)")
    try:
        while queue or running:
            while queue and len(running) < n_parallel:
                j = queue.pop(0)
                os.makedirs(j.dir, exist_ok=True)
                log = open(os.path.join(j.dir, "train.log"), "a", encoding="utf-8")
                proc = subprocess.Popen([sys.executable] + j.args, cwd=ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT)
                running[j.id] = (j, proc, time.time(), log)
            time.sleep(0.5)
            for jid in list(running):
                j, proc, start, log = running[jid]
                rc, cpu = _reap(proc)
                if rc is None:
                    continue
                log.close()
                del running[jid]
                wall = time.time() - start
                res = j.result() if rc == 0 else None
                if res is None:
                    failed.append(jid)
                    say(f"  {jid} FAILED (exit {rc}) after {_fmt_time(wall)}: {_tail(os.path.join(j.dir, 'train.log'))}")
                    continue
                walls.append(wall)
                cpus.append(cpu)
                _record_time(j.dir, wall, cpu)
                n_done = len(walls) + len(failed)
                eta = float(np.median(walls)) * math.ceil((len(queue) + len(running)) / n_parallel)
                detail = j.describe(res) if j.describe else "done"
                say(f"  [{n_done:>3}/{len(todo)}] {jid} finished in {_fmt_time(wall)} (CPU {_fmt_time(cpu)}): {detail}"
                    + (f" | {len(running)} running, {len(queue)} queued, ETA ~{_fmt_time(eta)}" if queue or running
                       else ""))
                if j.drop_checkpoints:
                    shutil.rmtree(os.path.join(j.dir, "checkpoints"), ignore_errors=True)
            if running and time.time() - last_beat > 60:
                last_beat = time.time()
                say("  ... " + ", ".join(f"{jid} step {_last_step(j.dir)}/{j.steps}"
                                         for jid, (j, *_r) in running.items()))
    except KeyboardInterrupt:
        for j, proc, _, log in running.values():
            proc.terminate()
        for j, proc, _, log in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        raise
    wall = time.time() - t0
    if failed:
        raise SweepError(f"{what}: {len(failed)} of {len(todo)} runs failed ({', '.join(failed)}); see their "
                         "train.log, fix, and rerun (finished runs are kept)")
    say(f"{what}: {len(todo)} proxies in {_fmt_time(wall)} (median {_fmt_time(float(np.median(walls)))} each; "
        f"CPU time {_fmt_time(sum(cpus))} in all, i.e. ~{_fmt_time(sum(cpus) / n_parallel)} on {n_parallel} idle "
        "cores)")
    return {"ran": len(todo), "wall_s": wall, "median_proxy_s": float(np.median(walls)), "cpu_s": float(sum(cpus)),
            "median_proxy_cpu_s": float(np.median(cpus)), "jobs": n_parallel, "load_avg_end": os.getloadavg()[0]}


def _record_time(run_dir: str, wall: float, cpu: float) -> None:
    path = os.path.join(run_dir, "proxy.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    spec["wall_s"] = round(wall, 2)
    spec["cpu_s"] = round(cpu, 2)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)


def _reap(proc: subprocess.Popen) -> tuple[int | None, float]:
    """(exit code or None if still running, CPU seconds user+sys of the process and its
    children): ``os.wait4`` reports a finished child's resource usage, which tells the
    cost of a proxy apart from the load of a shared machine."""
    try:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:
        return proc.poll(), 0.0
    if pid == 0:
        return None, 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, ru.ru_utime + ru.ru_stime


def _tail(path: str, n: int = 1) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:])[:400] or "(empty log)"


def _last_step(run_dir: str) -> int:
    path = os.path.join(run_dir, "metrics.jsonl")
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return 0
    for ln in reversed(lines):
        try:
            r = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if r.get("kind") == "train":
            return int(r["step"])
    return 0


def _update_timings(out: str, key: str, value: dict) -> None:
    path = os.path.join(out, "timings.json")
    t = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            t = json.load(f)
    if value.get("ran", 1):              # a phase that found everything finished keeps the old timing
        t[key] = value
    with open(path, "w", encoding="utf-8") as f:
        json.dump(t, f, indent=1)


def print_fit(sw: Sweep, fit: dict) -> None:
    say(f"regression (target: {fit['target_name']}):")
    say(f"  {'model':<10} {'LOO rho':>8} {'LOO MAE':>8} {'held-out rho':>13} {'held-out MAE':>13}")
    for n, r in fit["comparison"].items():
        h = r.get("heldout", {})
        say(f"  {n:<10} {r['loo']['spearman']:8.3f} {r['loo']['mae']:8.4f} {h.get('spearman', float('nan')):13.3f} "
            f"{h.get('mae', float('nan')):13.4f}" + ("   <- chosen" if n == fit["chosen"] else ""))
    pred = fit["predicted"]
    say("proposed mixture: " + ", ".join(f"{n} {w:.3f}" for n, w in fit["proposed"].items())
        + f" (predicted target {pred['proposed'][fit['chosen']]['target']:.4f}; natural "
          f"{pred['natural'][fit['chosen']]['target']:.4f}, uniform {pred['uniform'][fit['chosen']]['target']:.4f})")
    say(f"wrote {os.path.join(sw.out, 'proposed_mixture.yaml')}")


def print_verify(res: dict) -> None:
    say("verification (fresh proxies, seeds " + ", ".join(map(str, res["seeds"])) + "): target loss")
    for k, t in sorted(res["mixtures"].items(), key=lambda kv: kv[1]["target_mean"]):
        say(f"  {k:<9} {t['target_mean']:.4f}  (" + ", ".join(f"{n} {x:.3f}" for n, x in t["losses_mean"].items()) + ")")
    for k, b in res.get("beats", {}).items():
        say(f"  proposed vs {k}: {'better' if b else 'NOT better'} by {100 * res['relative'][k]:+.2f}%")


# ----------------------------------------------------------------- CLI
PHASES = ("all", "plan", "run", "fit", "verify", "report")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m mixtures.sweep", description=(
        "Mixture ablation sweep: sample mixtures, train a tiny proxy on each with the project's trainer, fit a "
        "regression from weights to validation loss, search the simplex, verify, report."))
    p.add_argument("config", help="sweep config YAML (configs/sweeps/*.yaml)")
    p.add_argument("--phase", choices=PHASES, default="all",
                   help="all (default) | plan (write run dirs) | run | fit | verify | report")
    p.add_argument("--proxy", action="append", default=[], metavar="ID",
                   help="with --phase run: train only these proxies (e.g. one job of an array)")
    p.add_argument("--jobs", type=int, default=None, help="proxies trained at the same time (default: config jobs)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default: the config's out)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set sampling.proxies=32")
    p.add_argument("--fresh", action="store_true", help="delete the sweep's output directory first")
    return p.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt                 # SIGTERM (a job scheduler): stop the proxies cleanly too


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        cfg = load_sweep(args.config, args.overrides + ([f"jobs={args.jobs}"] if args.jobs else []))
        out = os.path.abspath(args.out or cfg.out.format(name=cfg.name))
        if args.fresh and os.path.isdir(out):
            if not os.path.exists(os.path.join(out, "sweep.json")) and os.listdir(out):
                raise SweepError(f"--fresh: {out} does not look like a sweep directory (no sweep.json); not deleting")
            shutil.rmtree(out)
        sw = Sweep(cfg, args.config, out)
        t0 = time.time()
        proxies = sw.plan()
        if args.phase in ("all", "plan"):
            sw.print_plan(proxies)
        if args.phase == "plan":
            return 0
        if args.phase in ("all", "run"):
            chosen = proxies
            if args.proxy:
                known = {p.id: p for p in proxies}
                bad = [i for i in args.proxy if i not in known]
                if bad:
                    raise SweepError(f"--proxy {bad[0]}: no such proxy (p000..p{len(proxies) - 1:03d})")
                chosen = [known[i] for i in args.proxy]
            s1 = sw.stage1_proxies([cfg.proxy.seed])
            if s1:
                _update_timings(sw.out, "stage1", sw.run(s1, "stage 1"))
            t2 = sw.run(chosen, "sweep")
            if not args.proxy:
                _update_timings(sw.out, "sweep", {**t2, "proxies": len(chosen)})
        if args.phase == "run":
            return 0
        fit = None
        if args.phase in ("all", "fit"):
            fit = sw.fit(proxies)
            print_fit(sw, fit)
        if args.phase in ("all", "verify") and cfg.verify.enabled:
            if fit is None:
                fit = _read_json(os.path.join(sw.out, "fit.json"), "run --phase fit first")
            res = sw.verify(fit)
            _update_timings(sw.out, "verify", res["timing"])
            print_verify(res)
        if args.phase in ("all", "report"):
            from mixtures.sweep_report import write_report
            path = write_report(sw)
            say(f"report: {path} (+ report.md)")
        if args.phase == "all":
            say(f"done in {_fmt_time(time.time() - t0)}: {os.path.join(sw.out, 'proposed_mixture.yaml')}")
    except (SweepError, MixtureError) as e:
        print(f"python -m mixtures.sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue (finished proxies are kept, running ones resume)",
              file=sys.stderr)
        return 130
    return 0


def _read_json(path: str, hint: str) -> dict:
    if not os.path.exists(path):
        raise SweepError(f"{path} not found: {hint}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


if __name__ == "__main__":
    sys.exit(main())
