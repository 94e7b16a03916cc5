"""``configs/tokenizer.yaml``: sampling, SentencePiece training and packing.

Validated on load (pydantic, ``extra="forbid"``); errors are one line naming the
file, the key path and the problem, e.g.::

    configs/tokenizer.yaml: train.model_type: Input should be 'unigram' or 'bpe'

``--set key.path=value`` overrides any value (the value is parsed as YAML).
The choices and their trade-offs are documented in ``configs/tokenizer.yaml``.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "tokenizer.yaml")

class ConfigError(ValueError):
    """A config problem, already formatted as one line for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HoldoutConfig(_Strict):
    """Documents kept out of the tokenizer's training sample, for the report.

    Per language and document script (``ja/Kana``), the ``docs_per_language``
    documents with the smallest ``hash(seed, id)`` are held out, but never more
    than ``max_fraction`` of them (a language with 4 documents holds out none)."""
    docs_per_language: int = Field(20, ge=0)
    max_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    max_chars_per_doc: int = Field(20_000, gt=0)  # held-out text is truncated to this


class SampleConfig(_Strict):
    #: ``line``: every non-blank line is a unit; ``sentence``: lines are further cut
    #: after sentence-final punctuation (. ! ? 。 ！ ？ ؟ । ...).
    unit: Literal["line", "sentence"] = "line"
    #: Group weights, hierarchical: a script gets p ∝ chars^(1/script_temperature)
    #: (1 = proportional, large = uniform); a language inside its script
    #: ∝ chars^(1/language_temperature); a source inside a language ∝ chars^(1/source_temperature).
    script_temperature: float = Field(1.25, ge=1.0, le=1000.0)
    language_temperature: float = Field(1.0, ge=1.0, le=1000.0)
    source_temperature: float = Field(1.0, ge=1.0, le=1000.0)
    #: Sample size in characters.  The sample is min(max_chars, corpus chars):
    #: balancing re-weights inside that budget (down-sampling big languages,
    #: repeating small ones up to ``max_repeat`` times).
    max_chars: int = Field(200_000_000, gt=0)
    max_repeat: float = Field(2.0, ge=1.0)
    #: Longer units are cut (at a space when there is one); SentencePiece skips
    #: sentences longer than its ``max_sentence_length`` (set to the same value).
    max_unit_bytes: int = Field(4096, ge=64)
    min_unit_chars: int = Field(1, ge=1)
    #: Language key of a document: ``lang`` when set, else the first of these
    #: metadata keys that is present, else ``und``.
    lang_metadata_keys: list[str] = ["lang", "language", "lang_hint"]
    #: ``zh-CN`` -> ``zh``, ``pt-BR`` -> ``pt`` (``code:python`` is kept whole).
    base_language: bool = True
    seed: int = 0
    shard_target_bytes: int = Field(64 * 1024 * 1024, gt=0)
    holdout: HoldoutConfig = HoldoutConfig()


class TrainConfig(_Strict):
    model_type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = Field(32000, ge=300, le=1_048_576)
    #: ``strict``: fail when the sample cannot support ``vocab_size``; ``fit``:
    #: train the largest vocabulary it supports and record that (warned).
    vocab_size_policy: Literal["strict", "fit"] = "fit"
    character_coverage: float = Field(0.9995, ge=0.98, le=1.0)
    byte_fallback: bool = True
    split_digits: bool = True
    #: identity keeps text byte-exact (required for decode(encode(x)) == x);
    #: the nfkc variants fold compatibility characters and are lossy.
    normalization_rule_name: Literal["identity", "nfkc", "nmt_nfkc", "nfkc_cf", "nmt_nfkc_cf"] = "identity"
    remove_extra_whitespaces: bool = False
    add_dummy_prefix: bool = False
    allow_whitespace_only_pieces: bool = True
    split_by_whitespace: bool = True
    split_by_number: bool = True
    split_by_unicode_script: bool = True
    max_sentencepiece_length: int = Field(16, ge=1, le=512)
    #: Special pieces.  ``pad`` = id 0, ``eod`` (end of document, SentencePiece's
    #: eos) = id 1, ``bos`` = id 2, ``unk`` = id 3.
    pad_piece: str = "<pad>"
    eod_piece: str = "<eod>"
    bos_piece: str = "<bos>"
    unk_piece: str = "<unk>"
    #: Control symbols: reserved ids that text never produces (a literal "<boi>" in
    #: a web page stays text); the trainer/data pipeline inserts them by id.
    control_symbols: list[str] = ["<boi>", "<eoi>", "<boa>", "<eoa>", "<bov>", "<eov>"]
    #: Extra ``<reserved_i>`` control symbols kept free for later use.
    reserved_symbols: int = Field(0, ge=0)
    #: User-defined symbols are always one piece when they occur in text.
    user_defined_symbols: list[str] = ["\n", "\t"]
    #: SentencePiece's EM/BPE work is split per thread and the model depends on it:
    #: pinned here (not taken from the machine) so training is reproducible.
    num_threads: int = Field(8, ge=1, le=256)
    #: Any other SentencePiece trainer option, passed through verbatim.
    extra_options: dict[str, str | int | float | bool] = {}

    @field_validator("control_symbols", "user_defined_symbols")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if any(not s for s in v):
            raise ValueError("symbols must be non-empty strings")
        if len(set(v)) != len(v):
            raise ValueError("symbols must be unique")
        if any("," in s for s in v):
            raise ValueError("symbols cannot contain ',' (SentencePiece joins them with commas)")
        return v

    @field_validator("extra_options")
    @classmethod
    def _extra(cls, v: dict) -> dict:
        managed = set(TrainConfig.model_fields) | {
            "input", "model_prefix", "sentence_iterator", "model_writer", "pad_id", "eos_id", "bos_id", "unk_id",
            "eos_piece", "max_sentence_length", "input_sentence_size"}
        clash = sorted(set(v) & managed)
        if clash:
            raise ValueError(f"{clash} are set by their own keys, not extra_options")
        return v

    @model_validator(mode="after")
    def _specials(self) -> "TrainConfig":
        specials = [self.pad_piece, self.eod_piece, self.bos_piece, self.unk_piece]
        if len(set(specials)) != 4:
            raise ValueError("pad/eod/bos/unk pieces must differ")
        clash = set(specials) & (set(self.control_symbols) | set(self.user_defined_symbols))
        if clash:
            raise ValueError(f"{sorted(clash)} is both a special piece and a symbol")
        both = set(self.control_symbols) & set(self.user_defined_symbols)
        if both:
            raise ValueError(f"{sorted(both)} is both a control and a user-defined symbol")
        return self

    @property
    def lossless(self) -> bool:
        """Whether decode(encode(text)) == text holds for every valid Unicode text."""
        return (self.byte_fallback and self.normalization_rule_name == "identity"
                and not self.remove_extra_whitespaces and not self.add_dummy_prefix)

    def all_control_symbols(self) -> list[str]:
        return list(self.control_symbols) + [f"<reserved_{i}>" for i in range(self.reserved_symbols)]


class PackConfig(_Strict):
    seq_len: int = Field(1024, ge=2, le=1 << 24)
    add_bos: bool = False          # a BOS token before each document
    #: Document order inside a source: ascending blake2b(seed, source, id) — a
    #: deterministic shuffle that does not depend on input file order.
    order_seed: int = 0
    #: ArrayRecord shard size target (sequences per shard = target / sequence bytes).
    shard_target_bytes: int = Field(64 * 1024 * 1024, gt=0)
    #: Documents grouped per packing bucket (bounded memory per worker).  An
    #: execution setting: the output does not depend on it (not in the pack hash).
    bucket_tokens: int = Field(16 * 1024 * 1024, gt=0)
    #: ArrayRecord writer options: group_size:1 gives cheap random access.
    array_record_options: str = "group_size:1"
    token_dtype: Literal["auto", "uint16", "uint32"] = "auto"

    def output_settings(self) -> dict[str, Any]:
        """The settings the packed bytes depend on (recorded and hashed)."""
        return self.model_dump(mode="json", exclude={"bucket_tokens"})


class TokenizerConfig(_Strict):
    sample: SampleConfig = SampleConfig()
    train: TrainConfig = TrainConfig()
    pack: PackConfig = PackConfig()

    def section_hash(self, *sections: str) -> str:
        dump = {s: (self.pack.output_settings() if s == "pack" else getattr(self, s).model_dump(mode="json"))
                for s in sections}
        blob = json.dumps(dump, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------- loading
def _format_error(path: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


def parse_override(item: str) -> tuple[str, Any]:
    """``key.path=value``; the value is parsed as YAML (``false``, ``3``, ``[a, b]``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({e.__class__.__name__})") from None


def _set_path(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        if not isinstance(cur.get(k), dict):
            cur[k] = {}
        cur = cur[k]
    cur[keys[-1]] = value


def load_config(path: str | None = None, overrides: list[str] | None = None) -> TokenizerConfig:
    path = path or DEFAULT_CONFIG
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
    for item in overrides or []:
        k, v = parse_override(item)
        _set_path(data, k, v)
    try:
        return TokenizerConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(path, e)) from None
