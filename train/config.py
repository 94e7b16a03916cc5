"""Training config: ``configs/train/*.yaml`` + the preset's ``run`` defaults + flags.

Precedence (later wins): field defaults below < the preset's ``run:`` section < the
training YAML < ``--set key.path=value`` and the dedicated flags (--preset, --steps, ...).
The result is validated (unknown keys and bad values fail with one line) before anything
starts.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.config import ConfigError, ModelConfig, Preset, load_preset
from train.resilience_config import ResilienceConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "train", "default.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimConfig(_Strict):
    """AdamW with linear warmup, then ``cosine`` decay to lr·min_lr_ratio, ``wsd``
    (warmup-stable-decay: constant, then a linear decay over the last decay_frac of the
    steps) or ``constant``; global-norm gradient clipping before the update."""
    lr: float = Field(3e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    decay_frac: float = Field(0.2, gt=0, le=1)
    b1: float = Field(0.9, ge=0, lt=1)
    b2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    clip_norm: float = Field(1.0, gt=0)


class PrecisionConfig(_Strict):
    #: dtype the master weights and optimizer moments are kept in
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    #: dtype of the matmuls (params are cast per step; logits and the loss stay float32)
    compute_dtype: Literal["float32", "bfloat16"] = "float32"


class MeshConfig(_Strict):
    """Device mesh: data x fsdp x tensor.  -1 on one axis takes the remaining devices."""
    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    #: logical axis -> mesh axes; replaces the defaults in train/sharding.py key by key
    rules: dict[str, list[str] | str | None] = {}

    @model_validator(mode="after")
    def _check(self) -> "MeshConfig":
        sizes = [self.data, self.fsdp, self.tensor]
        if sizes.count(-1) > 1:
            raise ValueError("at most one mesh axis may be -1")
        if any(s == 0 or s < -1 for s in sizes):
            raise ValueError("mesh axis sizes must be >= 1 or -1")
        return self


class DataConfig(_Strict):
    #: synthetic | tokens (a flat .npy token array) | mixture (issue 8's staged mixtures)
    kind: Literal["synthetic", "tokens", "mixture"] = "synthetic"
    #: passed to the source: synthetic {weights, min_doc, max_doc}; tokens {path, eos_id,
    #: val_path (else the last `holdout` fraction of the windows, default 0.05), shuffle,
    #: source_name}; mixture {config}
    options: dict[str, Any] = {}
    seed: int = 0
    #: grow model.vocab_size (to a multiple of 128) when the data's vocabulary is larger,
    #: e.g. a small preset on a real tokenizer's ids (make train-pro sets it); off: an error
    fit_vocab: bool = False


class CheckpointConfig(_Strict):
    every: int = Field(100, gt=0)
    keep: int = Field(3, gt=0)
    #: also keep every checkpoint whose step is a multiple of this (states for `train.replay`)
    keep_period: int | None = Field(None, gt=0)
    async_save: bool = True


class EvalConfig(_Strict):
    every: int = Field(100, gt=0)
    batches: int = Field(4, ge=0)


class ProbeConfig(_Strict):
    """Long-context probes at the end of the run (and in ``python -m train.probes``)."""
    enabled: bool = True
    nll_docs: int = Field(8, ge=0)            # held-out documents for NLL by position
    kv_lengths: list[int] = []                # context lengths; [] = powers of two up to 2x seq_len
    kv_pairs: int = Field(4, gt=0)
    kv_trials: int = Field(32, gt=0)


class LogConfig(_Strict):
    every: int = Field(10, gt=0)              # console progress line every N steps
    tensorboard: bool = True
    plots: bool = True
    #: per-device peak FLOP/s for MFU; 0 = look up the accelerator / measure the CPU
    peak_flops: float = Field(0.0, ge=0)


class DistillConfig(_Strict):
    """Knowledge distillation from a frozen teacher (train/distill.py): the loss is
    ``alpha * CE(targets) + (1 - alpha) * temperature^2 * KL(teacher_T || student_T)``
    per token, both distributions softened by ``temperature``; teacher logits are
    computed on the fly from the same batch."""
    #: the teacher's run dir (or its checkpoints/ dir); its model config comes from the checkpoint
    teacher: str
    #: teacher checkpoint step; null = the latest (pinned in <run_dir>/distill.json at the start)
    teacher_step: int | None = Field(None, ge=0)
    alpha: float = Field(0.5, ge=0, le=1)
    temperature: float = Field(1.0, gt=0)


class TrainConfig(_Strict):
    preset: str = "auto"
    #: overrides of the preset's ModelConfig fields (e.g. remat: full)
    model: dict[str, Any] = {}
    steps: int = Field(1000, gt=0)
    batch_size: int = Field(8, gt=0)          # global, in sequences
    seq_len: int = Field(512, gt=0)
    grad_accum: int = Field(1, gt=0)          # micro-batches per step (batch_size % grad_accum == 0)
    seed: int = 0
    run_dir: str = "runs/{preset}"
    optim: OptimConfig = OptimConfig()
    precision: PrecisionConfig = PrecisionConfig()
    mesh: MeshConfig = MeshConfig()
    data: DataConfig = DataConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
    probes: ProbeConfig = ProbeConfig()
    log: LogConfig = LogConfig()
    distill: DistillConfig | None = None      # knowledge distillation (off when absent)
    resilience: ResilienceConfig = ResilienceConfig()   # replicas, goodput, replay, guard, faults

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of grad_accum {self.grad_accum}")
        return self

    def fingerprint(self) -> str:
        """Hash of everything that changes the training math (not steps, logging,
        checkpoint cadence, eval or probes), stored in checkpoints and checked at resume."""
        d = self.model_dump(mode="json")
        for k in ("steps", "run_dir", "checkpoint", "eval", "probes", "log", "resilience"):
            d.pop(k, None)
        if d.get("distill") is None:
            d.pop("distill", None)            # fingerprints of runs without distillation unchanged
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _format_error(where: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{where}: {loc}: {msg}{extra}"


def _set_path(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        if not isinstance(cur.get(k), dict):
            cur[k] = {}
        cur = cur[k]
    cur[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``key.path=value`` with the value parsed as YAML (``false``, ``3``, ``[a,b]`` work)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({e.__class__.__name__})") from None


def deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_yaml(path: str) -> dict:
    if not os.path.exists(path):
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def resolve(path: str | None = None, overrides: list[str] | None = None, flags: dict[str, Any] | None = None,
            pick_auto=None) -> tuple[TrainConfig, ModelConfig, Preset, str]:
    """Load, merge and validate.  Returns (train config, model config, preset, why) where
    ``why`` says how the preset was chosen.  ``pick_auto()`` -> (name, reason) chooses
    the preset for ``auto`` (it looks at the hardware; see train/hardware.py)."""
    path = path or DEFAULT_CONFIG
    user = read_yaml(path)
    for item in overrides or []:
        k, v = parse_override(item)
        _set_path(user, k, v)
    for k, v in (flags or {}).items():
        if v is not None:
            _set_path(user, k, v)
    name = str(user.get("preset", "auto"))
    why = "requested"
    if name == "auto":
        if pick_auto is None:
            raise ConfigError("preset 'auto' needs hardware detection; pass a preset name")
        name, why = pick_auto()
    user["preset"] = name
    model_over = user.get("model") or {}
    if not isinstance(model_over, dict):
        raise ConfigError(f"{path}: model: must be a mapping of ModelConfig overrides")
    preset = load_preset(name, model_over)
    merged = deep_merge(preset.run, user)
    try:
        cfg = TrainConfig.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_format_error(path, e)) from None
    cfg = cfg.model_copy(update={"run_dir": cfg.run_dir.format(preset=name.replace(":", "-"))})
    if cfg.seq_len > preset.model.max_seq_len:
        raise ConfigError(f"{path}: seq_len {cfg.seq_len} exceeds the preset's max_seq_len {preset.model.max_seq_len}")
    return cfg, preset.model, preset, why
