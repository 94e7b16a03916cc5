"""Group-wise int4 weight quantization of the Transformer's parameters (weight-only).

Layout.  Every matmul weight is viewed as a 2-D matrix ``[IN, OUT]`` (``IN`` = the
axes it contracts with the activations; stacked layer weights keep their leading
``layers`` axis): ``wq/wk/wv [L, D | N, H]``, ``wo [L, N·H | D]``, ``w_gate/w_up
[L, D | F]``, ``w_down [L, F | D]``, the untied ``lm_head [D | V]`` and the
embedding ``embed [V, D]`` transposed to ``[D | V]`` (its rows are looked up, its
transpose is the tied output head: both read it along ``D``).  ``IN`` is cut into
groups of ``group_size`` consecutive entries per output column (zero-padded at the
end when ``IN`` is not a multiple); each group has its own scale:

* symmetric:  ``s = max|w| / 7``, ``q = clip(round(w / s), -7, 7)``, stored as the
  nibble ``q + 8`` (1..15), ``w ≈ (nibble - 8) · s``;
* asymmetric: ``s = (max w - min w) / 15``, ``z = clip(round(-min w / s), 0, 15)``,
  ``q = clip(round(w / s) + z, 0, 15)``, ``w ≈ (q - z) · s``; ``z`` is one uint8 per
  group (a 4-bit value; kept in a byte, 1/8 bit per weight at group 64).

Two nibbles per byte along ``IN``: entry ``2i`` in the low nibble, ``2i + 1`` in the
high one.  Storage per weight at group size g: 4 bits + 16/g (fp16 scale) [+ 8/g
(zero)] — 4.25 / 4.375 bits at g = 64, i.e. ~7.5x smaller than fp32 and ~3.7x
smaller than bf16.  Norm scales stay float32 (2·D per layer).  The embedding (and an
untied output head) stay bfloat16 by default (``embedding``): they are a large share
of a small model's parameters but the most sensitive ones (every token's input, and
the logits); ``embedding: int4`` quantizes them too.

``QuantizedModel`` holds the packed arrays plus the static layout; ``unpack`` /
``unpack_layer`` turn them back into float weights inside a jitted forward pass (per
layer, so a forward pass never holds all float weights at once).  This is weight-only
quantization: it cuts storage and weight memory ~4x versus bf16; the matmuls still
run in the compute dtype (no int4 kernels on CPU; on GPUs XLA fuses the unpacking
into the weight read).

This module imports nothing above ``model/``; the file format lives in
``save`` / ``load`` (safetensors + a JSON config, see ``FORMAT``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.config import ConfigError, ModelConfig, count_params

FORMAT = "corpusforge-int4/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

#: matmul weights of a layer: (number of IN axes after the leading layers axis)
LAYER_IN_AXES = {"wq": 1, "wk": 1, "wv": 1, "wo": 2, "w_gate": 1, "w_up": 1, "w_down": 1}


class QuantConfig(BaseModel):
    """``configs/quant/int4.yaml``; unknown keys fail."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    bits: Literal[4] = 4
    #: consecutive input entries sharing one scale (and zero); even
    group_size: int = Field(64, gt=0)
    scheme: Literal["symmetric", "asymmetric"] = "symmetric"
    scale_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    #: storage of the embedding table and an untied output head
    embedding: Literal["bfloat16", "float32", "int4"] = "bfloat16"

    @model_validator(mode="after")
    def _check(self) -> "QuantConfig":
        if self.group_size % 2:
            raise ValueError(f"group_size ({self.group_size}) must be even (two 4-bit values per byte)")
        return self


def load_quant_config(path: str | None, overrides: dict[str, Any] | None = None) -> QuantConfig:
    import yaml
    data: dict[str, Any] = {}
    if path:
        if not os.path.exists(path):
            raise ConfigError(f"{path}: quantization config not found")
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {getattr(e, 'problem', e)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    data.update(overrides or {})
    try:
        return QuantConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{path or 'quantization config'}: {loc}: {msg}") from None


# ---- nibbles ----------------------------------------------------------------------------

def pack_int4(q):
    """uint8 values 0..15 ``[..., IN, OUT]`` (IN even) -> bytes ``[..., IN/2, OUT]``."""
    xp = jnp if isinstance(q, jax.Array) else np
    lo, hi = q[..., 0::2, :], q[..., 1::2, :]
    return (lo | (hi << 4)).astype(xp.uint8)


def unpack_int4(p):
    """Inverse of ``pack_int4``: ``[..., IN/2, OUT]`` -> ``[..., IN, OUT]`` values 0..15."""
    xp = jnp if isinstance(p, jax.Array) else np
    lo, hi = p & 0x0F, p >> 4
    out = xp.stack([lo, hi], axis=-2)                       # [..., IN/2, 2, OUT]
    return out.reshape(*p.shape[:-2], p.shape[-2] * 2, p.shape[-1]).astype(xp.uint8)


# ---- one matrix -------------------------------------------------------------------------

def quantize_matrix(w: np.ndarray, group_size: int, scheme: str, scale_dtype: str = "float16") -> dict[str, np.ndarray]:
    """``w`` ``[..., IN, OUT]`` float -> {"packed" uint8 [..., IN_p/2, OUT], "scale" [..., G, OUT],
    "zero" uint8 [..., G, OUT] (asymmetric)} with ``IN_p = G · group_size >= IN``."""
    w = np.asarray(w, np.float32)
    *lead, n_in, n_out = w.shape
    g = group_size
    n_groups = -(-n_in // g)
    pad = n_groups * g - n_in
    if pad:
        w = np.concatenate([w, np.zeros((*lead, pad, n_out), np.float32)], axis=-2)
    wg = w.reshape(*lead, n_groups, g, n_out)
    sdt = _np_dtype(scale_dtype)
    if scheme == "symmetric":
        scale = (np.abs(wg).max(axis=-2) / 7.0).astype(sdt)
        s = _safe(scale.astype(np.float32))[..., None, :]
        q = np.clip(np.round(wg / s), -7, 7) + 8
        out = {"scale": scale}
    elif scheme == "asymmetric":
        lo, hi = np.minimum(wg.min(axis=-2), 0.0), np.maximum(wg.max(axis=-2), 0.0)   # 0 is representable
        scale = ((hi - lo) / 15.0).astype(sdt)
        s = _safe(scale.astype(np.float32))
        zero = np.clip(np.round(-lo / s), 0, 15).astype(np.uint8)
        q = np.clip(np.round(wg / s[..., None, :]) + zero[..., None, :], 0, 15)
        out = {"scale": scale, "zero": zero}
    else:
        raise ValueError(f"unknown scheme {scheme!r}")
    out["packed"] = pack_int4(q.astype(np.uint8).reshape(*lead, n_groups * g, n_out))
    return out


def dequantize_matrix(qt: dict, n_in: int, group_size: int, dtype=jnp.float32):
    """Inverse of ``quantize_matrix`` (numpy in -> numpy out, jax in -> jax out)."""
    xp = jnp if isinstance(qt["packed"], jax.Array) else np
    q = unpack_int4(qt["packed"])
    *lead, n_in_p, n_out = q.shape
    n_groups = n_in_p // group_size
    q = q.reshape(*lead, n_groups, group_size, n_out).astype(xp.float32)
    scale = qt["scale"].astype(xp.float32)[..., None, :]
    zero = qt["zero"].astype(xp.float32)[..., None, :] if "zero" in qt else 8.0
    w = ((q - zero) * scale).reshape(*lead, n_in_p, n_out)[..., :n_in, :]
    return w.astype(dtype)


def _safe(s: np.ndarray) -> np.ndarray:
    return np.where(s > 0, s, 1.0)                      # all-zero group: any scale works


def _np_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes
        return ml_dtypes.bfloat16
    return np.dtype(name)


# ---- the whole model --------------------------------------------------------------------

@dataclass(frozen=True)
class LeafSpec:
    """How one parameter is stored: ``kind`` int4 (with the 2-D view) or a float dtype."""
    kind: str                 # "int4" | "float32" | "bfloat16"
    shape: tuple[int, ...]    # original shape (with the leading layers axis for layer weights)
    n_in: int = 0             # IN of the 2-D view
    transpose: bool = False   # embed: stored as [D, V]

    def to_json(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape), "n_in": self.n_in, "transpose": self.transpose}

    @classmethod
    def from_json(cls, d: dict) -> "LeafSpec":
        return cls(kind=d["kind"], shape=tuple(d["shape"]), n_in=int(d["n_in"]), transpose=bool(d["transpose"]))


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, name + "."))
        else:
            out[name] = v
    return out


def _unflat(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for name, v in flat.items():
        cur = tree
        *parts, last = name.split(".")
        for p in parts:
            cur = cur.setdefault(p, {})
        cur[last] = v
    return tree


class QuantizedModel:
    """Packed parameters (``arrays``: flat name -> array or {packed, scale, zero}) + layout."""

    def __init__(self, model_cfg: ModelConfig, qcfg: QuantConfig, spec: dict[str, LeafSpec], arrays: dict[str, Any]):
        self.model_cfg, self.qcfg, self.spec, self.arrays = model_cfg, qcfg, spec, arrays

    # -- build
    @classmethod
    def from_params(cls, params: dict, model_cfg: ModelConfig, qcfg: QuantConfig) -> "QuantizedModel":
        flat = {k: np.asarray(jax.device_get(v), np.float32) for k, v in _flat(params).items()}
        spec: dict[str, LeafSpec] = {}
        arrays: dict[str, Any] = {}
        for name, w in flat.items():
            leaf = name.split(".")[-1]
            if name.startswith("layers.") and leaf in LAYER_IN_AXES:
                n_in = int(np.prod(w.shape[1:1 + LAYER_IN_AXES[leaf]]))
                spec[name] = LeafSpec("int4", w.shape, n_in)
                arrays[name] = quantize_matrix(w.reshape(w.shape[0], n_in, -1), qcfg.group_size, qcfg.scheme,
                                               qcfg.scale_dtype)
            elif name in ("embed", "lm_head") and qcfg.embedding == "int4":
                t = name == "embed"
                m = w.T if t else w
                spec[name] = LeafSpec("int4", w.shape, m.shape[0], transpose=t)
                arrays[name] = quantize_matrix(m, qcfg.group_size, qcfg.scheme, qcfg.scale_dtype)
            else:
                kind = qcfg.embedding if name in ("embed", "lm_head") else "float32"
                spec[name] = LeafSpec(kind, w.shape)
                arrays[name] = w.astype(_np_dtype(kind))
        return cls(model_cfg, qcfg, spec, arrays)

    # -- run
    def device_arrays(self) -> dict:
        """The packed tree as jax arrays (what a jitted forward takes as its params)."""
        return _unflat({k: jax.tree.map(jnp.asarray, v) for k, v in self.arrays.items()})

    def _leaf(self, name: str, value, dtype, layer_slice: bool):
        sp = self.spec[name]
        if sp.kind != "int4":
            return value.astype(dtype)
        w = dequantize_matrix(value, sp.n_in, self.qcfg.group_size, dtype)
        shape = sp.shape[1:] if layer_slice else sp.shape
        if sp.transpose:
            return w.T.reshape(shape)
        return w.reshape(shape)

    def unpack(self, tree: dict, dtype=jnp.float32) -> dict:
        """Top-level float weights (embed, final_norm, lm_head) of ``tree`` (from
        ``device_arrays``); ``layers`` is passed through still packed."""
        return {k: (v if k == "layers" else self._leaf(k, v, dtype, False)) for k, v in tree.items()}

    def unpack_layer(self, layer: dict, dtype=jnp.float32) -> dict:
        """One layer's packed weights (the ``layers`` tree indexed at a layer) -> float weights."""
        return {k: self._leaf(f"layers.{k}", v, dtype, True) for k, v in layer.items()}

    def unpackers(self, dtype=jnp.float32) -> tuple:
        """(unpack, unpack_layer, dequantize) for ``dtype``: the same function objects on
        every call (they are static arguments of jitted functions: no recompiles)."""
        cache = self.__dict__.setdefault("_unpackers", {})
        key = jnp.dtype(dtype).name
        if key not in cache:
            cache[key] = (lambda t: self.unpack(t, dtype), lambda lp: self.unpack_layer(lp, dtype),
                          lambda t: self.dequantize(t, dtype))
        return cache[key]

    def dequantize(self, tree: dict | None = None, dtype=jnp.float32) -> dict:
        """All float parameters (same tree as ``init_params``)."""
        tree = self.device_arrays() if tree is None else tree
        top = self.unpack(tree, dtype)
        top["layers"] = {k: self._leaf(f"layers.{k}", v, dtype, False) for k, v in tree["layers"].items()}
        return top

    # -- accounting
    def nbytes(self) -> dict[str, int]:
        """Bytes of the stored arrays: int4 matrices (packed + scales + zeros) and the rest."""
        q = sum(sum(a.nbytes for a in v.values()) for k, v in self.arrays.items() if self.spec[k].kind == "int4")
        rest = sum(v.nbytes for k, v in self.arrays.items() if self.spec[k].kind != "int4")
        n_q = sum(int(np.prod(s.shape)) for s in self.spec.values() if s.kind == "int4")
        return {"int4_bytes": int(q), "other_bytes": int(rest), "total_bytes": int(q + rest),
                "int4_params": n_q, "params": count_params(self.model_cfg)["total"]}

    # -- file format
    def save(self, out_dir: str, extra: dict[str, Any] | None = None) -> dict:
        """``out_dir/model.safetensors`` (tensors named ``layers.wq.packed``, ``embed``, ...)
        and ``out_dir/config.json`` (format, model + quantization config, per-tensor layout,
        the weights' sha256, ``extra`` provenance).  Returns the config dict."""
        from safetensors.numpy import save_file

        os.makedirs(out_dir, exist_ok=True)
        tensors = {}
        for name, v in self.arrays.items():
            if isinstance(v, dict):
                for part, a in v.items():
                    tensors[f"{name}.{part}"] = np.ascontiguousarray(a)
            else:
                tensors[name] = np.ascontiguousarray(v)
        path = os.path.join(out_dir, WEIGHTS_FILE)
        tmp = path + ".tmp"
        save_file(tensors, tmp, metadata={"format": FORMAT})
        os.replace(tmp, path)
        cfg = {"format": FORMAT, "model": self.model_cfg.model_dump(mode="json"),
               "quantization": self.qcfg.model_dump(mode="json"),
               "tensors": {k: s.to_json() for k, s in self.spec.items()},
               "weights_file": WEIGHTS_FILE, "weights_bytes": os.path.getsize(path), "weights_sha256": _sha256(path),
               **(extra or {})}
        with open(os.path.join(out_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        return cfg

    @classmethod
    def load(cls, path: str, verify: bool = True) -> tuple["QuantizedModel", dict]:
        """The loader: ``path`` is an export directory (or its config.json).  Checks the
        format and the weights' size and sha256; one-line ``ConfigError`` otherwise."""
        from safetensors.numpy import load_file

        d = os.path.dirname(path) if path.endswith(".json") else path
        cfg_path = os.path.join(d, CONFIG_FILE)
        if not os.path.exists(cfg_path):
            raise ConfigError(f"{d}: not an int4 export (no {CONFIG_FILE})")
        with open(cfg_path, encoding="utf-8") as f:
            try:
                cfg = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{cfg_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if cfg.get("format") != FORMAT:
            raise ConfigError(f"{cfg_path}: format {cfg.get('format')!r} is not {FORMAT!r}")
        wpath = os.path.join(d, cfg.get("weights_file", WEIGHTS_FILE))
        if not os.path.exists(wpath):
            raise ConfigError(f"{d}: weights file {os.path.basename(wpath)} is missing")
        if os.path.getsize(wpath) != cfg.get("weights_bytes"):
            raise ConfigError(f"{wpath}: {os.path.getsize(wpath)} bytes, config.json says {cfg.get('weights_bytes')} "
                              "(truncated or replaced)")
        if verify and _sha256(wpath) != cfg.get("weights_sha256"):
            raise ConfigError(f"{wpath}: sha256 differs from config.json (corrupted or replaced)")
        try:
            model_cfg = ModelConfig.model_validate(cfg["model"])
            qcfg = QuantConfig.model_validate(cfg["quantization"])
        except ValidationError as e:
            raise ConfigError(f"{cfg_path}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
        spec = {k: LeafSpec.from_json(v) for k, v in cfg["tensors"].items()}
        tensors = load_file(wpath)
        arrays: dict[str, Any] = {}
        for name, sp in spec.items():
            if sp.kind == "int4":
                arrays[name] = {p: tensors[f"{name}.{p}"] for p in ("packed", "scale", "zero") if f"{name}.{p}" in tensors}
            else:
                arrays[name] = tensors[name]
        return cls(model_cfg, qcfg, spec, arrays), cfg


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
