"""Mixture files (``configs/mixtures/*.yaml``): sources, stages, repetition caps,
validated against the packed corpus before any training.

A mixture names its **sources** (packed text from ``tokenizer.pack``'s
``token_manifest.json``, or media shards counted in tokens from the corpus
``manifest.json["media"]``), a list of **stages** — each with a token budget and
per-source weights — and a **repetition cap** per source (``max_epochs``).

    python -m mixtures.config configs/mixtures/demo.yaml [--tokens-dir DIR] [--corpus DIR] [--set key=value]

prints the plan: per stage and source the weight, the planned sequences and
tokens, the tokens available and the implied epochs, and per source the epochs
over all stages against its cap.  A cap exceeded is an error (exit 2) whose
message carries the same table.

Units.  The loader's unit is one packed sequence of ``S`` tokens (``S`` =
the token manifest's ``seq_len``); a stage budget of ``T`` tokens is ``T / S``
sequences.  When ``T`` is not a multiple of ``S`` it is rounded to the nearest
whole sequence and the plan says so (``budget_rounding: error`` refuses instead),
so the boundary the loader uses is always exact and printed.  Within a stage the
sequences are apportioned to sources by the largest-remainder method: each
source gets ``floor(w * M)`` or one more, and the counts sum to ``M`` exactly —
planned and realised counts per stage are the same numbers.

Repetition.  Each text source's training sequences (all but the last
``validation_sequences``, held out for per-source validation loss) are read as
one stream across stages; epochs = sequences planned / sequences available.
``default_max_epochs`` is 4: Muennighoff et al. (2023, "Scaling Data-Constrained
Language Models") find up to ~4 epochs nearly as good as fresh data.  Media
sources are planned in tokens (their token costs from the corpus manifest) so
the plan accounts for them; the loader packs their samples into sequences
(``mixtures/multimodal.py``) and enforces the cap again on the real count of
packed sequences.

Paths (``tokens_dir``, ``corpus``) are relative to the working directory (run
from the repository root) unless absolute; the CLIs and
``MixtureSource.from_config`` can override them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDIA_MODALITIES = ("image", "audio", "video", "interleaved")
#: grain's index_shuffle works on 32-bit indices (stage slots, per-source records)
MAX_INDEX = 2 ** 32 - 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class MixtureError(ValueError):
    """A mixture problem (config, data, plan), formatted for the user: the first
    line says what is wrong; a plan error adds the table below it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _int_tokens(v: Any) -> Any:
    """Token counts may be written 1_000_000, 1e6, "1e6" or 1.5e9 (whole numbers only)."""
    if isinstance(v, str):
        try:
            v = float(v.replace("_", ""))
        except ValueError:
            raise ValueError(f"expected a token count, got {v!r}") from None
    if isinstance(v, float):
        if not math.isfinite(v) or v != int(v):
            raise ValueError(f"expected a whole number of tokens, got {v!r}")
        v = int(v)
    return v


class SourceSpec(_Strict):
    #: ``text``: packed sequences (tokenizer.pack); ``media``: WebDataset shards of the
    #: corpus, counted in tokens from manifest.json["media"] and packed by the loader
    #: (mixtures/multimodal.py).
    kind: Literal["text", "media"] = "text"
    #: text: the source's name in the token manifest (default: this key)
    packed: str | None = None
    #: text: packed directory of this source (default: the mixture's tokens_dir)
    tokens_dir: str | None = None
    #: media: the modality and the corpus source inside it (default: this key)
    modality: Literal["image", "audio", "video", "interleaved"] | None = None
    media_source: str | None = None
    #: repetition cap over all stages (default: the mixture's default_max_epochs)
    max_epochs: float | None = Field(None, gt=0)
    #: text: packed sequences held out at the end of the source for validation
    #: (default: the mixture's validation_sequences)
    validation_sequences: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _kind_fields(self):
        if self.kind == "media":
            if self.modality is None:
                raise ValueError("a media source needs modality (image | audio | video | interleaved)")
            if self.packed is not None or self.tokens_dir is not None or self.validation_sequences is not None:
                raise ValueError("packed / tokens_dir / validation_sequences are for text sources")
        elif self.modality is not None or self.media_source is not None:
            raise ValueError("modality / media_source are for media sources (kind: media)")
        return self


class StageSpec(_Strict):
    name: str
    #: token budget of the stage (sequences x seq_len of the packed data)
    tokens: int = Field(gt=0)
    #: relative weights (normalised to sum 1); a source left out has weight 0
    weights: dict[str, float]

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> Any:
        return _int_tokens(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"stage name {v!r}: use letters, digits, '_', '-', '.'")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("a stage needs at least one weight")
        bad = {k: w for k, w in v.items() if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        if sum(v.values()) <= 0:
            raise ValueError("weights are all 0")
        return v


class MixtureConfig(_Strict):
    name: str
    description: str = ""
    #: seeds the per-source record order and the order inside each stage
    seed: int = Field(0, ge=0, le=MAX_INDEX)
    tokens_dir: str | None = None
    #: corpus directory (manifest.json): required for media sources; when given, the
    #: packed data must have been made from this corpus (manifest hash)
    corpus: str | None = None
    #: tokenizer directory (python -m tokenizer.train --output): required to train on
    #: media sources (their captions / transcripts are tokenized by the loader); must be
    #: the tokenizer the text was packed with
    tokenizer: str | None = None
    default_max_epochs: float = Field(4.0, gt=0)
    validation_sequences: int = Field(8, ge=0)
    #: examples of a stage are shuffled inside windows of at most this many (sources
    #: interleave evenly across windows, at random inside one; see mixtures/loader.py).
    #: A stage's window is shrunk so that it reads at most one epoch of any source.
    mixing_window: int = Field(4096, ge=1, le=65536)
    #: a stage budget that is not a whole number of sequences: ``nearest`` rounds (and
    #: the plan shows it), ``error`` refuses
    budget_rounding: Literal["nearest", "error"] = "nearest"
    sources: dict[str, SourceSpec]
    stages: list[StageSpec]
    #: informational, ignored by the planner and loader: what produced the mixture and what
    #: it is predicted to achieve (``python -m mixtures.sweep`` writes predicted losses here)
    provenance: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"mixture name {v!r}: use letters, digits, '_', '-', '.'")
        return v

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: dict[str, SourceSpec]) -> dict[str, SourceSpec]:
        if not v:
            raise ValueError("a mixture needs at least one source")
        for k in v:
            if not _NAME.match(k):
                raise ValueError(f"source name {k!r}: use letters, digits, '_', '-', '.'")
        return v

    @model_validator(mode="after")
    def _refs(self):
        if not self.stages:
            raise ValueError("stages: a mixture needs at least one stage")
        seen = set()
        for i, st in enumerate(self.stages):
            if st.name in seen:
                raise ValueError(f"stages.{i}.name: stage {st.name!r} appears twice")
            seen.add(st.name)
            unknown = sorted(set(st.weights) - set(self.sources))
            if unknown:
                raise ValueError(f"stages.{i}.weights: unknown source(s) {unknown} (sources: {sorted(self.sources)})")
        for k, s in self.sources.items():
            if s.kind == "text" and not (s.tokens_dir or self.tokens_dir):
                raise ValueError(f"sources.{k}: no tokens_dir (set tokens_dir at the top or on the source)")
        if any(s.kind == "media" for s in self.sources.values()) and not self.corpus:
            raise ValueError("corpus: media sources take their token counts from the corpus manifest; set corpus")
        return self

    def max_epochs(self, source: str) -> float:
        s = self.sources[source].max_epochs
        return self.default_max_epochs if s is None else s

    def validation_of(self, source: str) -> int:
        s = self.sources[source].validation_sequences
        return self.validation_sequences if s is None else s


# ----------------------------------------------------------------- loading
def _format_error(path: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
    msg = msg.removeprefix("Value error, ")
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {loc}: {msg}{extra}"


def _set_path(d: Any, dotted: str, value: Any) -> None:
    """``a.b.0.c=v`` (list items by index)."""
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        if isinstance(cur, list):
            cur = cur[int(k)]
            continue
        nxt = cur.get(k)
        if not isinstance(nxt, (dict, list)):
            nxt = {}
            cur[k] = nxt
        cur = nxt
    if isinstance(cur, list):
        cur[int(keys[-1])] = value
    else:
        cur[keys[-1]] = value


def load_yaml_config(path: str, overrides: list[str] | None, model: type[BaseModel], err: type[Exception],
                     what: str = "config") -> Any:
    """Read ``path``, apply ``key.path=value`` overrides (YAML values), validate with
    ``model``; every problem is one ``err`` line.  Shared by the mixture, sweep and A/B configs."""
    if not os.path.exists(path):
        raise err(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise err(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise err(f"{path}: top level must be a mapping")
    for item in overrides or []:
        if "=" not in item:
            raise err(f"--set {item!r}: expected key.path=value")
        k, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise err(f"--set {item!r}: the value is not valid YAML") from None
        try:
            _set_path(data, k.strip(), value)
        except (ValueError, IndexError, TypeError, AttributeError):
            raise err(f"--set {item!r}: no such place in {path}") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise err(_format_error(path, e)) from None


def load_mixture(path: str, overrides: list[str] | None = None) -> MixtureConfig:
    """Read and validate a mixture YAML; ``overrides`` are ``key.path=value`` (YAML values)."""
    return load_yaml_config(path, overrides, MixtureConfig, MixtureError, "mixture file")


# ----------------------------------------------------------------- the data
@dataclass
class SourceData:
    """What the manifests say about one mixture source."""
    name: str
    kind: str
    max_epochs: float
    # text
    packed: str | None = None
    tokens_dir: str | None = None
    manifest_fingerprint: str | None = None
    sequences: int = 0            # all packed sequences
    validation: int = 0           # held out at the end
    pad_tokens: int = 0           # in the last sequence
    tokens: int = 0               # all tokens (no padding)
    # media
    modality: str | None = None
    media_source: str | None = None
    samples: int = 0

    @property
    def train_sequences(self) -> int:
        return self.sequences - self.validation

    def train_tokens(self, seq_len: int) -> int:
        """Tokens available for training (media: all of its tokens)."""
        if self.kind == "media":
            return self.tokens
        pad = self.pad_tokens if self.validation == 0 else 0
        return self.train_sequences * seq_len - pad


@dataclass
class MixtureData:
    seq_len: int
    vocab_size: int
    special_ids: dict[str, int]
    tokenizer_sha256: str
    sources: dict[str, SourceData]
    manifests: dict[str, dict[str, Any]]          # tokens_dir -> token manifest
    corpus_manifest_hash: str | None = None
    corpus_dir: str | None = None                 # resolved corpus directory (media shards)
    media_manifest: dict[str, Any] | None = None  # corpus manifest.json["media"]


def _resolve(path: str | None) -> str | None:
    if path is None or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def load_data(cfg: MixtureConfig, *, tokens_dir: str | None = None, corpus: str | None = None) -> MixtureData:
    """Read the token manifest(s) (and the corpus manifest) the mixture refers to and
    check they fit together.  ``tokens_dir`` / ``corpus`` override the config's."""
    from tokenizer.corpus import exists, join, read_json
    from tokenizer.format import FormatError, load_token_manifest

    top = _resolve(tokens_dir or cfg.tokens_dir)
    corpus_dir = _resolve(corpus or cfg.corpus)
    manifests: dict[str, dict[str, Any]] = {}
    sources: dict[str, SourceData] = {}
    ref: tuple[str, dict[str, Any]] | None = None
    for name, spec in cfg.sources.items():
        if spec.kind != "text":
            continue
        d = _resolve(spec.tokens_dir) if spec.tokens_dir and not tokens_dir else top
        if d not in manifests:
            try:
                manifests[d] = load_token_manifest(d)
            except FormatError as e:
                raise MixtureError(f"source {name}: {e}") from None
            m = manifests[d]
            if ref is None:
                ref = (d, m)
            else:
                r = ref[1]
                if m["seq_len"] != r["seq_len"]:
                    raise MixtureError(f"{d} has seq_len {m['seq_len']} but {ref[0]} has {r['seq_len']}: "
                                       "all packed sources of a mixture need one sequence length")
                if m["tokenizer"]["model_sha256"] != r["tokenizer"]["model_sha256"]:
                    raise MixtureError(f"{d} and {ref[0]} were packed with different tokenizers "
                                       f"({m['tokenizer']['model_sha256'][:12]} vs {r['tokenizer']['model_sha256'][:12]})")
        m = manifests[d]
        packed = spec.packed or name
        if packed not in m["sources"]:
            raise MixtureError(f"source {name}: {d} has no packed source {packed!r} "
                               f"(it has: {', '.join(sorted(m['sources'])) or 'none'})")
        info = m["sources"][packed]
        v = cfg.validation_of(name)
        if v >= info["sequences"]:
            raise MixtureError(f"source {name}: validation_sequences {v} leaves none of its {info['sequences']} "
                               f"packed sequences for training; lower it")
        if info["sequences"] - v > MAX_INDEX + 1:
            raise MixtureError(f"source {name}: {info['sequences']:,} sequences exceed the loader's 2^32 index range")
        sources[name] = SourceData(name=name, kind="text", max_epochs=cfg.max_epochs(name), packed=packed,
                                   tokens_dir=d, manifest_fingerprint=m["fingerprint"],
                                   sequences=int(info["sequences"]), validation=v,
                                   pad_tokens=int(info["pad_tokens"]), tokens=int(info["tokens"]))
    corpus_hash = None
    media = None
    if corpus_dir:
        path = join(corpus_dir, "manifest.json")
        if not exists(path):
            raise MixtureError(f"corpus {corpus_dir}: no manifest.json")
        cm = read_json(path)
        corpus_hash = cm.get("manifest_hash")
        media = cm.get("media")
        for d, m in manifests.items():
            if m["corpus"]["manifest_hash"] != corpus_hash:
                raise MixtureError(f"{d} was packed from corpus manifest {m['corpus']['manifest_hash']}, but "
                                   f"{corpus_dir} has {corpus_hash}: the corpus changed since packing (re-pack)")
    for name, spec in cfg.sources.items():
        if spec.kind != "media":
            continue
        mods = (media or {}).get("modalities", {})
        if spec.modality not in mods:
            raise MixtureError(f"source {name}: corpus {corpus_dir} has no {spec.modality} media "
                               f"(modalities: {', '.join(sorted(mods)) or 'none'})")
        ms = spec.media_source or name
        if ms not in mods[spec.modality]["sources"]:
            raise MixtureError(f"source {name}: corpus {corpus_dir} has no {spec.modality} source {ms!r} "
                               f"(it has: {', '.join(sorted(mods[spec.modality]['sources']))})")
        e = mods[spec.modality]["sources"][ms]
        sources[name] = SourceData(name=name, kind="media", max_epochs=cfg.max_epochs(name), modality=spec.modality,
                                   media_source=ms, tokens=int(e["tokens"]), samples=int(e["samples"]))
    if ref is None:
        raise MixtureError(f"mixture {cfg.name}: no text source; the loader's sequence length comes from packed text")
    m = ref[1]
    sources = {k: sources[k] for k in cfg.sources}  # config order
    return MixtureData(seq_len=int(m["seq_len"]), vocab_size=int(m["tokenizer"]["vocab_size"]),
                       special_ids=dict(m["special_ids"]), tokenizer_sha256=m["tokenizer"]["model_sha256"],
                       sources=sources, manifests=manifests, corpus_manifest_hash=corpus_hash,
                       corpus_dir=corpus_dir, media_manifest=media)


# ----------------------------------------------------------------- the plan
def apportion(total: int, weights: list[float]) -> list[int]:
    """Largest-remainder (Hamilton) apportionment: ``total`` items to weights; each
    gets floor(w * total) or one more (ties to the earlier), and they sum to ``total``."""
    s = float(sum(weights))
    quotas = [total * w / s for w in weights]
    counts = [int(math.floor(q)) for q in quotas]
    left = total - sum(counts)
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


@dataclass
class StagePlan:
    index: int
    name: str
    tokens_configured: int
    sequences: int                 # M: examples in the stage
    start: int                     # first example (global)
    weights: dict[str, float]      # normalised
    counts: dict[str, int]         # sequences per source (sum = M)
    offsets: dict[str, int]        # per source: stream position where the stage starts
    window: int = 1                # mixing window (examples) used in this stage

    @property
    def end(self) -> int:
        return self.start + self.sequences


@dataclass
class Plan:
    cfg: MixtureConfig
    data: MixtureData
    stages: list[StagePlan]
    notes: list[str] = field(default_factory=list)

    @property
    def seq_len(self) -> int:
        return self.data.seq_len

    @property
    def total_sequences(self) -> int:
        return self.stages[-1].end

    @property
    def total_tokens(self) -> int:
        return self.total_sequences * self.seq_len

    def planned_tokens(self, stage: StagePlan, source: str) -> int:
        return stage.counts[source] * self.seq_len

    def epochs(self, stage: StagePlan | None, source: str) -> float:
        """Implied epochs of ``source`` in ``stage`` (None: all stages)."""
        sd = self.data.sources[source]
        n = sum(st.counts[source] for st in self.stages) if stage is None else stage.counts[source]
        if n == 0:
            return 0.0
        if sd.kind == "media":
            return n * self.seq_len / sd.tokens if sd.tokens else math.inf
        return n / sd.train_sequences

    def violations(self) -> list[str]:
        out = []
        for name, sd in self.data.sources.items():
            ep = self.epochs(None, name)
            if ep > sd.max_epochs * (1 + 1e-9):
                out.append(f"{name} {ep:.2f} epochs > max_epochs {sd.max_epochs:g}")
        return out

    def table(self) -> str:
        return format_plan(self)

    def check(self) -> "Plan":
        """Raise MixtureError with the plan table when a repetition cap is exceeded."""
        bad = self.violations()
        if bad:
            raise MixtureError(f"mixture {self.cfg.name}: repetition cap exceeded: {'; '.join(bad)} — lower the "
                               f"weights or budgets, or raise max_epochs\n{self.table()}")
        return self

    def fingerprint_parts(self) -> dict[str, str]:
        """``mixture``: the plan (stages, counts, caps, seed, validation split);
        ``data``: the packed data behind it (token manifest fingerprints)."""
        mix = {
            "name": self.cfg.name, "seed": self.cfg.seed, "seq_len": self.seq_len,
            "sources": {k: {"kind": s.kind, "packed": s.packed, "modality": s.modality, "media_source": s.media_source,
                            "max_epochs": s.max_epochs, "validation": s.validation}
                        for k, s in self.data.sources.items()},
            "stages": [{"name": st.name, "sequences": st.sequences, "counts": st.counts, "window": st.window}
                       for st in self.stages],
        }
        data = {"tokenizer": self.data.tokenizer_sha256,
                "sources": {k: {"manifest": s.manifest_fingerprint, "sequences": s.sequences, "tokens": s.tokens}
                            for k, s in self.data.sources.items()}}
        return {"mixture": _hash(mix), "data": _hash(data)}

    def fingerprint(self) -> str:
        return _hash(self.fingerprint_parts())

    def stage_of(self, example: int) -> StagePlan:
        for st in self.stages:
            if example < st.end:
                return st
        raise IndexError(example)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def make_plan(cfg: MixtureConfig, data: MixtureData) -> Plan:
    """Stage budgets in sequences, per-source counts and stream offsets.  Does not
    check the caps (``Plan.check`` does), so a plan can always be printed."""
    S = data.seq_len
    names = list(cfg.sources)
    stages, notes = [], []
    start = 0
    offsets = {n: 0 for n in names}
    for i, st in enumerate(cfg.stages):
        m, rem = divmod(st.tokens, S)
        if rem:
            if cfg.budget_rounding == "error":
                lo, hi = m * S, (m + 1) * S
                raise MixtureError(f"stage {st.name}: {st.tokens:,} tokens is not a whole number of {S:,}-token "
                                   f"sequences; use {lo:,} or {hi:,} (or budget_rounding: nearest)")
            m = m + (1 if 2 * rem >= S else 0)
            notes.append(f"stage {st.name}: {st.tokens:,} tokens rounded to {m:,} sequences of {S:,} "
                         f"= {m * S:,} tokens")
        if m < 1:
            raise MixtureError(f"stage {st.name}: {st.tokens:,} tokens is less than one {S:,}-token sequence")
        if m > MAX_INDEX + 1:
            raise MixtureError(f"stage {st.name}: {m:,} sequences exceed the loader's 2^32 index range; split the stage")
        w = [float(st.weights.get(n, 0.0)) for n in names]
        tot = sum(w)
        counts = dict(zip(names, apportion(m, w)))
        for n in names:
            if counts[n] and data.sources[n].kind == "text" and data.sources[n].train_sequences <= 0:
                raise MixtureError(f"stage {st.name}: source {n} has weight but no training sequences")
        # the window spans at most one epoch of every text source it reads: N_s examples
        # of source s take N_s * m / count_s examples of the stage
        window = cfg.mixing_window
        for n in names:
            sd = data.sources[n]
            if counts[n] and sd.kind == "text":
                window = min(window, max(1, sd.train_sequences * m // counts[n]))
        stages.append(StagePlan(index=i, name=st.name, tokens_configured=st.tokens, sequences=m, start=start,
                                weights={n: x / tot for n, x in zip(names, w)}, counts=counts, offsets=dict(offsets),
                                window=window))
        for n in names:
            offsets[n] += counts[n]
        start += m
    return Plan(cfg=cfg, data=data, stages=stages, notes=notes)


def plan_mixture(path: str, *, overrides: list[str] | None = None, tokens_dir: str | None = None,
                 corpus: str | None = None, check: bool = True) -> Plan:
    """Load, resolve against the manifests, plan, and (``check``) enforce the caps."""
    cfg = load_mixture(path, overrides)
    plan = make_plan(cfg, load_data(cfg, tokens_dir=tokens_dir, corpus=corpus))
    return plan.check() if check else plan


# ----------------------------------------------------------------- the table
def _fmt_table(headers: list[str], rows: list[list[str] | str], right: set[int]) -> str:
    """Aligned text table; a row given as a plain string is a section line."""
    cells = [r for r in rows if not isinstance(r, str)]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *cells)]

    def line(cs):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cs, widths))).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [r if isinstance(r, str) else line(r) for r in rows]
    return "\n".join(out)


def format_plan(plan: Plan) -> str:
    """The plan as a text table: per stage and source, planned vs available tokens
    and epochs; then per source all stages against the cap."""
    S = plan.seq_len
    d = plan.data
    head = (f"mixture {plan.cfg.name}: {len(d.sources)} sources, {len(plan.stages)} stages, "
            f"{plan.total_tokens:,} tokens = {plan.total_sequences:,} sequences of {S:,} tokens")
    rows: list[list[str] | str] = []
    for st in plan.stages:
        rows.append(f"stage {st.index + 1} {st.name}: {st.sequences:,} sequences = {st.sequences * S:,} tokens; "
                    f"examples [{st.start:,}, {st.end:,}), tokens [{st.start * S:,}, {st.end * S:,}); "
                    f"mixing window {min(st.window, st.sequences):,}")
        for n, sd in d.sources.items():
            rows.append(["", n, sd.kind, f"{st.weights[n]:.3f}", f"{st.counts[n]:,}", f"{plan.planned_tokens(st, n):,}",
                         f"{sd.train_tokens(S):,}", f"{plan.epochs(st, n):.2f}", "", ""])
    rows.append("all stages:")
    for n, sd in d.sources.items():
        ep = plan.epochs(None, n)
        total = sum(st.counts[n] for st in plan.stages)
        status = "EXCEEDS CAP" if ep > sd.max_epochs * (1 + 1e-9) else "ok"
        rows.append(["", n, sd.kind, "", f"{total:,}", f"{total * S:,}", f"{sd.train_tokens(S):,}", f"{ep:.2f}",
                     f"{sd.max_epochs:g}", status])
    table = _fmt_table(["", "source", "kind", "weight", "sequences", "planned tokens", "available tokens",
                        "epochs", "max", "cap"], rows, right={3, 4, 5, 6, 7, 8})
    foot = []
    for n, sd in d.sources.items():
        if sd.kind == "text":
            foot.append(f"{n}: {sd.sequences:,} packed sequences, the last {sd.validation:,} held out for validation")
        else:
            foot.append(f"{n}: {sd.modality} media {sd.media_source!r}, {sd.samples:,} samples, {sd.tokens:,} tokens "
                        "(token costs from the corpus manifest; packed by the loader: mixtures/multimodal.py)")
    return "\n".join([head, table, ""] + foot + [f"note: {x}" for x in plan.notes])


# ----------------------------------------------------------------- CLI
def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m mixtures.config",
                                description="Validate a mixture against the packed corpus and print its plan "
                                            "(tokens planned vs available per source and stage, implied epochs).")
    p.add_argument("mixture", help="mixture YAML (configs/mixtures/*.yaml)")
    p.add_argument("--tokens-dir", default=None, metavar="DIR", help="packed tokens directory (overrides tokens_dir)")
    p.add_argument("--corpus", default=None, metavar="DIR", help="corpus directory (overrides corpus)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a value, e.g. --set stages.1.tokens=2e6")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from tokenizer.format import FingerprintMismatch, FormatError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        plan = plan_mixture(args.mixture, overrides=args.overrides, tokens_dir=args.tokens_dir, corpus=args.corpus)
    except (MixtureError, FormatError, FingerprintMismatch) as e:
        print(f"python -m mixtures.config: error: {e}", file=sys.stderr)
        return 2
    print(plan.table())
    print(f"\nok: every source within its repetition cap (fingerprint {plan.fingerprint()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
