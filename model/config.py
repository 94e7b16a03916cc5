"""Model shape as data: ``ModelConfig``, the preset files, and parameter / FLOP counts.

A preset is a YAML file under ``configs/presets/<name>.yaml``::

    description: one line shown when the preset is picked
    model:            # a ModelConfig (unknown keys fail)
      d_model: 2048
      ...
    run:              # defaults for the trainer (batch, sequence length, ...);
      batch_size: 8   # validated by train/config.py when merged
      ...

``depth:N`` is the single scaling dial for custom sizes (nanochat's idea): width,
heads and MLP size all follow from the number of layers (see ``from_depth``).

FLOP formula used for MFU (documented once, here):
  model FLOPs per token (forward + backward) =
      6 * N_matmul                                  # every weight matrix: 2 fwd + 4 bwd
    + 6 * n_layers * n_heads * head_dim * S         # attention scores + values, causal half
  where N_matmul counts the parameters that take part in matmuls (attention and MLP
  projections and the output head; the embedding *lookup* is free, but a tied
  embedding used as the output head counts once) and S is the sequence length.
  The attention term is PaLM's 12·L·H·Q·T halved for the causal mask (MaxText's
  convention).  Rematerialisation is *not* counted: this is MFU, not HFU.
"""
from __future__ import annotations

import math
import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PRESET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "presets")


class ConfigError(ValueError):
    """A config problem, already formatted as one line for the user."""


class MultimodalConfig(BaseModel):
    """Media encoders (``model/encoders.py``): images and video frames as patches,
    audio as stacked log-mel frames, embedded into the token sequence.

    The data side fixes ``patch_size``, ``n_mels`` and ``frames_per_token`` (they must
    be those the corpus costed its media with; the trainer takes them from the data
    when ``model.multimodal`` is not set)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    patch_size: int = Field(16, gt=0)
    channels: int = Field(3, gt=0)
    #: position tables: patch rows / columns per image, frames per video
    max_grid: int = Field(64, gt=0)
    max_frames: int = Field(64, gt=0)
    #: ``linear``: patch projection + 2-D (and temporal) position embeddings;
    #: ``vit``: plus ``vit_layers`` bidirectional Transformer layers inside each image
    image_encoder: Literal["linear", "vit"] = "linear"
    vit_layers: int = Field(0, ge=0)
    vit_heads: int = Field(4, gt=0)
    n_mels: int = Field(80, gt=0)
    #: log-mel frames (10 ms hop) stacked into one audio token: 4 = 40 ms = 25 tokens/s
    frames_per_token: int = Field(4, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "MultimodalConfig":
        if self.image_encoder == "vit" and self.vit_layers < 1:
            raise ValueError("image_encoder vit needs vit_layers >= 1")
        if self.image_encoder == "linear" and self.vit_layers:
            raise ValueError("vit_layers is for image_encoder: vit")
        return self

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.channels

    @property
    def audio_dim(self) -> int:
        return self.n_mels * self.frames_per_token

    @property
    def feature_dim(self) -> int:
        """Width of ``media_patches``: image patches and audio tokens share one array."""
        return max(self.patch_dim, self.audio_dim)

    def count_params(self, d_model: int) -> int:
        d = d_model
        image = self.patch_dim * d + d + 2 * self.max_grid * d + self.max_frames * d
        vit = self.vit_layers * (2 * d + 4 * d * d + 2 * d * 4 * d)      # norms, q k v o, 4x MLP
        audio = self.audio_dim * d + d + 3 * d + d * d + d
        return image + vit + audio + 4 * d + d                           # type embeddings, output norm


class ModelConfig(BaseModel):
    """Shape and numerics of the decoder-only Transformer."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    vocab_size: int = Field(gt=0)
    d_model: int = Field(gt=0)
    n_layers: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    #: 1 = multi-query attention (the report's choice), n_heads = multi-head, between = grouped-query
    n_kv_heads: int = Field(1, gt=0)
    head_dim: int = Field(gt=0)
    #: hidden size of the gated MLP (two input projections of this width, one output)
    d_ff: int = Field(gt=0)
    max_seq_len: int = Field(2048, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    norm_eps: float = Field(1e-6, gt=0)
    tie_embeddings: bool = True
    activation: Literal["silu", "gelu"] = "silu"      # SwiGLU / GeGLU
    init_std: float = Field(0.02, gt=0)
    #: auto: cuDNN flash on GPU, the chunked memory-efficient path for long sequences, else XLA
    attention: Literal["auto", "xla", "cudnn", "chunked"] = "auto"
    attention_chunk: int = Field(512, gt=0)            # block size of the chunked path
    #: mask attention at document boundaries (segment_ids).  false = plain causal attention,
    #: correct only when every row holds a single document (unpacked long documents,
    #: benchmarks); it lets cuDNN run its causal flash kernel without a mask tensor
    document_mask: bool = True
    #: rematerialisation of each layer in the backward pass
    remat: Literal["none", "full", "dots"] = "none"
    scan_layers: bool = True                            # lax.scan over the stacked layers
    #: >0: compute the output head and loss in chunks of this many positions (big vocabularies)
    loss_chunk: int = Field(0, ge=0)
    #: media encoders (images, audio, video) feeding the token sequence; None = text only
    multimodal: MultimodalConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for RoPE")
        return self

    # ---- derived --------------------------------------------------------------------
    @property
    def attention_kind(self) -> str:
        if self.n_kv_heads == 1:
            return "MQA"
        return "MHA" if self.n_kv_heads == self.n_heads else f"GQA({self.n_heads // self.n_kv_heads} q/kv)"

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int = 32768, max_seq_len: int = 2048, **kw: Any) -> "ModelConfig":
        """The one scaling dial: ``depth`` layers, width 64·depth rounded up to a multiple
        of 128, 128-wide heads (64 below width 512), multi-query attention, MLP 8/3·width
        rounded to 128 (the SwiGLU parameter-matched size)."""
        if depth < 1:
            raise ConfigError(f"depth:{depth}: depth must be >= 1")
        d = _round_up(64 * depth, 128)
        head_dim = 128 if d >= 512 else 64
        return cls(name=f"depth:{depth}", vocab_size=vocab_size, d_model=d, n_layers=depth,
                   n_heads=d // head_dim, n_kv_heads=1, head_dim=head_dim,
                   d_ff=_round_up(8 * d // 3, 128), max_seq_len=max_seq_len, **kw)


def _round_up(x: int, m: int) -> int:
    return int(math.ceil(x / m) * m)


# ---- counts ---------------------------------------------------------------------------

def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts by part (must equal the initialised tree; tests check)."""
    d, h = cfg.d_model, cfg.head_dim
    attn = d * cfg.n_heads * h * 2 + d * cfg.n_kv_heads * h * 2          # wq, wo, wk, wv
    mlp = d * cfg.d_ff * 3                                               # gate, up, down
    norms = 2 * d
    per_layer = attn + mlp + norms
    embed = cfg.vocab_size * d
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    total = embed + head + cfg.n_layers * per_layer + d
    out = {"embedding": embed, "lm_head": head, "attention": cfg.n_layers * attn, "mlp": cfg.n_layers * mlp,
           "norms": cfg.n_layers * norms + d, "per_layer": per_layer, "non_embedding": total - embed - head,
           "total": total}
    if cfg.multimodal is not None:
        media = cfg.multimodal.count_params(d)
        out.update(media=media, non_embedding=out["non_embedding"] + media, total=total + media)
    return out


def matmul_params(cfg: ModelConfig) -> int:
    """N_matmul of the FLOP formula: weights used in matmuls (output head counted once)."""
    c = count_params(cfg)
    return c["attention"] + c["mlp"] + cfg.vocab_size * cfg.d_model


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) by the formula in the module docstring."""
    attn = 6 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
    return 6.0 * matmul_params(cfg) + attn


def human(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def describe(cfg: ModelConfig, seq_len: int | None = None) -> str:
    c = count_params(cfg)
    s = seq_len or cfg.max_seq_len
    return (f"{cfg.name}: {human(c['total'])} params ({human(c['non_embedding'])} non-embedding), "
            f"{cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads x {cfg.head_dim} "
            f"{cfg.attention_kind}, d_ff {cfg.d_ff}, vocab {cfg.vocab_size}, "
            f"{'tied' if cfg.tie_embeddings else 'untied'} embeddings; "
            f"{flops_per_token(cfg, s) / 1e9:.3f} GFLOP/token at seq {s}")


# ---- presets --------------------------------------------------------------------------

class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    model: ModelConfig
    #: trainer defaults for this preset (checked by train/config.py when merged)
    run: dict[str, Any] = {}


def list_presets() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".yaml"))


def _format_error(where: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{where}: {loc}: {msg}{extra}"


def load_preset(name_or_path: str, model_overrides: dict[str, Any] | None = None) -> Preset:
    """``tiny``, ``nano-1``, ..., ``depth:N`` or a path to a preset YAML."""
    overrides = dict(model_overrides or {})
    if name_or_path.startswith("depth:"):
        try:
            depth = int(name_or_path.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"preset {name_or_path!r}: expected depth:<integer>") from None
        try:
            keys = ("vocab_size", "max_seq_len")
            base = ModelConfig.from_depth(depth, **{k: overrides.pop(k) for k in keys if k in overrides})
            model = ModelConfig.model_validate({**base.model_dump(), **overrides})
        except ValidationError as e:
            raise ConfigError(_format_error(f"preset {name_or_path}", e)) from None
        return Preset(description=f"custom size from the depth dial ({depth} layers)", model=model)
    path = name_or_path if name_or_path.endswith(".yaml") else os.path.join(PRESET_DIR, f"{name_or_path}.yaml")
    if not os.path.exists(path):
        raise ConfigError(f"preset {name_or_path!r} not found (choose from {', '.join(list_presets())}, or depth:N)")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    model = dict(data.get("model") or {})
    model.setdefault("name", os.path.basename(path)[:-5])
    model.update(overrides)
    data["model"] = model
    try:
        return Preset.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(path, e)) from None
