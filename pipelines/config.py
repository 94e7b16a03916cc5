"""``configs/corpus.yaml``: load, override, validate — before any work starts.

Each section's model lives next to the operator it configures (``filters/``);
this module only composes them.  Errors are one line naming the file, the key
path and what is wrong, e.g.::

    configs/corpus.yaml: exact_dedup.survivor: unknown policy 'biggest' (choose from ...)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from filters.media import MediaConfig
from filters.language import LanguageConfig
from filters.decontam import DecontamConfig
from filters.boilerplate import BoilerplateConfig
from filters.minhash import NearDupConfig
from filters.normalize import NormalizeConfig
from filters.pii import PIIConfig
from filters.quality import QualityConfig
from filters.safety import SafetyConfig

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "corpus.yaml")

READERS = ("auto", "jsonl", "parquet", "warc", "text", "code", "media", "manifest")
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A config problem, already formatted as one line for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    name: str
    input: list[str]
    reader: Literal["auto", "jsonl", "parquet", "warc", "text", "code", "media", "manifest"] = "auto"
    text_field: str = "text"   # jsonl / parquet: the field holding the text
    id_field: str = "id"       # jsonl / parquet: kept as the document id when present
    url_field: str = "url"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _SOURCE_NAME.match(v):
            raise ValueError(f"source name {v!r} must match {_SOURCE_NAME.pattern} (used in shard file names)")
        return v

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [v]
        return v


class ReadConfig(_Strict):
    max_record_bytes: int = Field(16 * 1024 * 1024, gt=0)
    invalid_utf8: Literal["dead_letter", "replace"] = "dead_letter"
    html_extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    min_extracted_chars: int = Field(1, ge=0)
    #: file extension -> programming language, for the code-tree reader
    code_extensions: dict[str, str] = {
        ".py": "python", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp",
        ".pl": "perl", ".pm": "perl", ".js": "javascript", ".ts": "typescript", ".java": "java",
        ".go": "go", ".rs": "rust", ".rb": "ruby", ".sh": "shell", ".php": "php", ".cs": "csharp",
        ".kt": "kotlin", ".swift": "swift", ".scala": "scala", ".lua": "lua", ".r": "r", ".sql": "sql",
    }
    text_extensions: list[str] = [".txt", ".md", ".rst"]


class ExactDedupConfig(_Strict):
    enabled: bool = True
    #: Survivor policy, applied in order: ``first_seen`` (earliest source as listed,
    #: then file path, then position in the file: the original beats later copies),
    #: ``source_priority`` (earlier sources win), ``longest`` (longest text),
    #: ``smallest_id``.
    survivor: list[Literal["first_seen", "source_priority", "longest", "smallest_id"]] = ["first_seen", "smallest_id"]

    @field_validator("survivor")
    @classmethod
    def _survivor(cls, v: list[str]) -> list[str]:
        if not v or v[-1] != "smallest_id":
            raise ValueError("must end with 'smallest_id' so the choice is always deterministic")
        return v


class OutputConfig(_Strict):
    shard_target_bytes: int = Field(128 * 1024 * 1024, gt=0)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    samples_per_reason: int = Field(5, ge=0)
    sample_chars: int = Field(2000, ge=0)
    length_histogram_bins: int = Field(30, ge=5, le=200)


class StagesConfig(_Strict):
    """Stages on/off; a stage that is off passes every document through."""
    normalize: bool = True
    language: bool = True
    quality: bool = True
    safety: bool = True
    pii: bool = True
    exact_dedup: bool = True
    near_dup: bool = True
    boilerplate: bool = True


class CorpusConfig(_Strict):
    sources: list[SourceConfig] = []
    read: ReadConfig = ReadConfig()
    stages: StagesConfig = StagesConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    language: LanguageConfig = LanguageConfig()
    quality: QualityConfig = QualityConfig()
    safety: SafetyConfig = SafetyConfig()
    pii: PIIConfig = PIIConfig()
    exact_dedup: ExactDedupConfig = ExactDedupConfig()
    decontamination: DecontamConfig = DecontamConfig()
    near_dup: NearDupConfig = NearDupConfig()
    boilerplate: BoilerplateConfig = BoilerplateConfig()
    output: OutputConfig = OutputConfig()
    media: MediaConfig = MediaConfig()

    def fingerprint(self) -> str:
        """Hash of the validated config (canonical JSON), recorded in the manifest."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _format_error(path: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {loc}: {msg}{extra}"


def _set_path(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[k] = nxt
        cur = nxt
    cur[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``key.path=value`` with the value parsed as YAML (so ``false``, ``3``, ``[a,b]`` work)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({e.__class__.__name__})") from None


def load_config(path: str | None = None, overrides: list[str] | None = None) -> CorpusConfig:
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
        return CorpusConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(path, e)) from None
