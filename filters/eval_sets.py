"""Evaluation-set loaders for decontamination: local files only, never a download.

An eval set is read from a local path (a file, a directory or a glob of JSONL /
JSON / Parquet / CSV files, optionally ``.gz``) or from a tensorflow-datasets
dataset that is already prepared under a local ``data_dir``.  Each record is
mapped by a *layout* onto the canonical fields that decontamination counts::

    question   the prompt / question / context sentence
    choices    answer options (multiple choice)
    answer     the reference answer text (the correct choice, the worked solution)
    code       reference code (HumanEval / MBPP solutions)
    passage    a reading-comprehension passage (SQuAD, DROP, BoolQ)

Layouts for the common public formats of MMLU, GSM8K, HumanEval, MBPP,
HellaSwag, ARC, PIQA, BoolQ, Winogrande, TriviaQA, NQ-open, SQuAD, MATH and
DROP are detected from the record keys (or named with ``layout:``); anything
else falls back to ``generic`` (``question``/``prompt``, ``answer``, ...) or an
explicit ``columns`` mapping.

Engine-free and pure apart from reading the files.
"""
from __future__ import annotations

import csv
import glob as globlib
import gzip
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

FIELDS = ("question", "choices", "answer", "code", "passage")
FILE_EXT = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv")

LAYOUTS = ("auto", "generic", "mmlu", "gsm8k", "humaneval", "mbpp", "hellaswag", "arc", "piqa", "boolq",
           "winogrande", "triviaqa", "nq_open", "squad", "math", "drop")
CODE_LAYOUTS = ("humaneval", "mbpp")
#: Eval-set names that are code benchmarks even in a generic layout (normalizer: auto).
CODE_NAME_HINTS = ("humaneval", "human_eval", "mbpp", "apps", "ds1000", "codecontests", "livecodebench")

#: Fields that count by default, per layout (``fields:`` in the config overrides).
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "generic": ("question", "answer", "code", "passage"),
    "mmlu": ("question", "answer"),
    "gsm8k": ("question", "answer"),
    "humaneval": ("question", "code"),
    "mbpp": ("question", "code"),
    "hellaswag": ("question", "answer"),
    "arc": ("question", "answer"),
    "piqa": ("question", "answer"),
    "boolq": ("question", "passage"),
    "winogrande": ("question",),
    "triviaqa": ("question",),
    "nq_open": ("question",),
    "squad": ("question", "passage"),
    "math": ("question", "answer"),
    "drop": ("question", "passage"),
}


class EvalSetError(ValueError):
    """A missing or unreadable eval set, as one line for the user."""


@dataclass
class EvalItem:
    set: str
    id: str
    question: str = ""
    choices: list[str] = field(default_factory=list)
    answer: str = ""
    code: str = ""
    passage: str = ""

    def get(self, name: str) -> Any:
        return getattr(self, name)


# ------------------------------------------------------------------ helpers
def _s(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return " ".join(_s(x) for x in v)
    return str(v)


def _first(rec: dict, *keys: str) -> Any:
    for k in keys:
        if k in rec and rec[k] not in (None, ""):
            return rec[k]
    return None


def _choice_index(ans: Any, n: int) -> int | None:
    """An answer given as 0-based int, digit string, or letter A.. -> index."""
    if isinstance(ans, bool):
        return None
    if isinstance(ans, (int, float)) and 0 <= int(ans) < n:
        return int(ans)
    s = _s(ans).strip()
    if s.isdigit() and 0 <= int(s) < n:
        return int(s)
    if len(s) == 1 and s.upper() in "ABCDEFGHIJ" and "ABCDEFGHIJ".index(s.upper()) < n:
        return "ABCDEFGHIJ".index(s.upper())
    return None


def _pick(choices: list[str], ans: Any) -> str:
    i = _choice_index(ans, len(choices))
    return choices[i] if i is not None else ""


_HELLASWAG_MARKERS = ("[header]", "[title]", "[step]", "[substeps]")


def _hellaswag_clean(s: str) -> str:
    for m in _HELLASWAG_MARKERS:
        s = s.replace(m, " ")
    return " ".join(s.split())


# ------------------------------------------------------------------ layouts
def _generic(rec: dict, cols: dict[str, str]) -> dict[str, Any]:
    def col(name: str, *defaults: str) -> Any:
        if name in cols:
            return rec.get(cols[name])
        return _first(rec, *defaults)

    choices = col("choices", "choices", "options", "endings")
    if isinstance(choices, dict):
        choices = choices.get("text") or list(choices.values())
    return {
        "id": col("id", "item_id", "id", "task_id", "qid", "question_id", "query_id", "uid", "idx"),
        "question": _s(col("question", "question", "prompt", "problem", "query", "input", "goal", "sentence")),
        "choices": [_s(c) for c in (choices or [])] if isinstance(choices, (list, tuple)) else [],
        "answer": _s(col("answer", "answer", "solution", "target", "output", "response")),
        "code": _s(col("code", "code", "canonical_solution")),
        "passage": _s(col("passage", "passage", "context", "article")),
    }


def _mmlu(rec: dict) -> dict[str, Any]:
    if "question" not in rec and "0" in rec:  # headerless original CSV: q, A, B, C, D, answer
        choices = [_s(rec.get(str(i))) for i in range(1, 5)]
        return {"question": _s(rec["0"]), "choices": choices, "answer": _pick(choices, rec.get("5"))}
    choices = rec.get("choices")
    if choices is None:
        choices = [rec.get(k) for k in ("A", "B", "C", "D") if k in rec]
    choices = [_s(c) for c in choices or []]
    return {"id": _first(rec, "id", "item_id"), "question": _s(rec.get("question")), "choices": choices,
            "answer": _pick(choices, rec.get("answer"))}


def _gsm8k(rec: dict) -> dict[str, Any]:
    return {"id": _first(rec, "id", "item_id"), "question": _s(rec.get("question")), "answer": _s(rec.get("answer"))}


def _humaneval(rec: dict) -> dict[str, Any]:
    return {"id": _first(rec, "task_id", "id"), "question": _s(rec.get("prompt")),
            "code": _s(rec.get("canonical_solution"))}


def _mbpp(rec: dict) -> dict[str, Any]:
    return {"id": _first(rec, "task_id", "id"), "question": _s(_first(rec, "text", "prompt")),
            "code": _s(rec.get("code"))}


def _hellaswag(rec: dict) -> dict[str, Any]:
    ctx = rec.get("ctx")
    if ctx is None:
        ctx = f"{_s(rec.get('ctx_a'))} {_s(rec.get('ctx_b'))}"
    endings = [_hellaswag_clean(_s(e)) for e in rec.get("endings") or []]
    rid = _first(rec, "id", "ind")
    if rid is not None and rec.get("source_id") and "id" not in rec:
        rid = f"{rec['source_id']}/{rid}"
    return {"id": rid, "question": _hellaswag_clean(_s(ctx)), "choices": endings,
            "answer": _pick(endings, rec.get("label"))}


def _arc(rec: dict) -> dict[str, Any]:
    q = rec.get("question")
    if isinstance(q, dict):  # original AI2 JSONL: question: {stem, choices: [{text, label}]}
        raw = q.get("choices") or []
        texts = [_s(c.get("text")) for c in raw]
        labels = [_s(c.get("label")) for c in raw]
        q = q.get("stem")
    else:
        ch = rec.get("choices") or {}
        texts = [_s(t) for t in (ch.get("text") or [])] if isinstance(ch, dict) else [_s(c) for c in ch]
        labels = [_s(x) for x in (ch.get("label") or [])] if isinstance(ch, dict) else []
    key = _s(rec.get("answerKey")).strip()
    ans = texts[labels.index(key)] if key in labels else _pick(texts, key)
    return {"id": rec.get("id"), "question": _s(q), "choices": texts, "answer": ans}


def _piqa(rec: dict) -> dict[str, Any]:
    sols = [_s(rec.get("sol1")), _s(rec.get("sol2"))]
    return {"id": _first(rec, "id"), "question": _s(rec.get("goal")), "choices": sols,
            "answer": _pick(sols, rec.get("label"))}


def _boolq(rec: dict) -> dict[str, Any]:
    ans = rec.get("answer", rec.get("label"))
    ans_s = "" if ans is None else ("yes" if ans in (True, 1, "true", "True") else "no")
    return {"id": _first(rec, "id", "idx"), "question": _s(rec.get("question")), "passage": _s(rec.get("passage")),
            "answer": ans_s}


def _winogrande(rec: dict) -> dict[str, Any]:
    opts = [_s(rec.get("option1")), _s(rec.get("option2"))]
    sent = _s(rec.get("sentence"))
    ans = _pick(opts, int(_s(rec.get("answer"))) - 1 if _s(rec.get("answer")).strip() in ("1", "2") else None)
    # Contamination looks like the finished sentence: fill the blank with the right option.
    filled = sent.replace("_", ans, 1) if ans else sent
    return {"id": _first(rec, "qID", "id"), "question": filled, "choices": opts, "answer": ans}


def _triviaqa(rec: dict) -> dict[str, Any]:
    a = rec.get("answer")
    ans = _s(a.get("value")) if isinstance(a, dict) else _s(a)
    return {"id": _first(rec, "question_id", "id"), "question": _s(rec.get("question")), "answer": ans}


def _nq_open(rec: dict) -> dict[str, Any]:
    a = rec.get("answer")
    ans = _s(a[0]) if isinstance(a, (list, tuple)) and a else _s(a)
    return {"id": _first(rec, "id"), "question": _s(rec.get("question")), "answer": ans}


def _squad(rec: dict) -> dict[str, Any]:
    a = rec.get("answers") or {}
    texts = a.get("text") if isinstance(a, dict) else [x.get("text") for x in a if isinstance(x, dict)]
    return {"id": rec.get("id"), "question": _s(rec.get("question")), "passage": _s(rec.get("context")),
            "answer": _s(texts[0]) if texts else ""}


def _math(rec: dict) -> dict[str, Any]:
    return {"id": _first(rec, "unique_id", "id"), "question": _s(rec.get("problem")), "answer": _s(rec.get("solution"))}


def _drop(rec: dict) -> dict[str, Any]:
    a = rec.get("answers_spans") or rec.get("answer") or {}
    spans = a.get("spans") if isinstance(a, dict) else None
    ans = _s(spans[0]) if spans else (_s(a.get("number")) if isinstance(a, dict) else "")
    return {"id": _first(rec, "query_id", "id"), "question": _s(rec.get("question")), "passage": _s(rec.get("passage")),
            "answer": ans}


_LAYOUT_FN: dict[str, Callable[[dict], dict[str, Any]]] = {
    "mmlu": _mmlu, "gsm8k": _gsm8k, "humaneval": _humaneval, "mbpp": _mbpp, "hellaswag": _hellaswag, "arc": _arc,
    "piqa": _piqa, "boolq": _boolq, "winogrande": _winogrande, "triviaqa": _triviaqa, "nq_open": _nq_open,
    "squad": _squad, "math": _math, "drop": _drop,
}


def detect_layout(rec: dict) -> str:
    """The layout of a record from its keys (``generic`` when none fits)."""
    k = set(rec)
    if "canonical_solution" in k or {"prompt", "entry_point"} <= k:
        return "humaneval"
    if "test_list" in k and "code" in k:
        return "mbpp"
    if "endings" in k and ("ctx" in k or "ctx_a" in k):
        return "hellaswag"
    if {"goal", "sol1"} <= k:
        return "piqa"
    if {"option1", "sentence"} <= k:
        return "winogrande"
    if "answers_spans" in k or ("passage" in k and "query_id" in k):
        return "drop"
    if {"context", "answers"} <= k:
        return "squad"
    if {"problem", "solution"} <= k:
        return "math"
    if "answerKey" in k:
        return "arc"
    if {"question", "passage"} <= k:
        return "boolq"
    if "0" in k and "5" in k and "question" not in k:
        return "mmlu"
    if {"question", "choices", "answer"} <= k:
        return "mmlu"
    if {"question", "answer"} <= k:
        a = rec["answer"]
        if isinstance(a, dict) and "aliases" in a:
            return "triviaqa"
        if isinstance(a, (list, tuple)):
            return "nq_open"
        if isinstance(a, str) and "\n#### " in a:
            return "gsm8k"
    return "generic"


def to_canonical(rec: dict, layout: str, columns: dict[str, str] | None = None) -> dict[str, Any]:
    if layout == "generic" or columns:
        out = _generic(rec, columns or {})
    else:
        out = _LAYOUT_FN[layout](rec)
    out.setdefault("id", None)
    for f in FIELDS:
        out.setdefault(f, [] if f == "choices" else "")
    return out


# ------------------------------------------------------------------ files
def _open_text(path: str) -> io.TextIOBase:
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _flatten_nested_json(obj: Any) -> list[dict]:
    """Official SQuAD (``{"data": [{"paragraphs": [...]}]}``) and DROP
    (``{section_id: {passage, qa_pairs}}``) JSON files -> flat records."""
    if isinstance(obj, list):
        return [r for r in obj if isinstance(r, dict)]
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        rows = []
        for art in obj["data"]:
            if isinstance(art, dict) and "paragraphs" in art:
                for para in art["paragraphs"]:
                    for qa in para.get("qas", []):
                        rows.append({"id": qa.get("id"), "title": art.get("title"), "context": para.get("context"),
                                     "question": qa.get("question"), "answers": qa.get("answers", [])})
            elif isinstance(art, dict):
                rows.append(art)
        return rows
    if isinstance(obj, dict) and obj and all(isinstance(v, dict) and "qa_pairs" in v for v in obj.values()):
        rows = []
        for sid, sec in obj.items():
            for qa in sec["qa_pairs"]:
                rows.append({"section_id": sid, "query_id": qa.get("query_id"), "passage": sec.get("passage"),
                             "question": qa.get("question"), "answer": qa.get("answer", {})})
        return rows
    raise ValueError("JSON file is neither JSON lines, a list of records, SQuAD nor DROP format")


def iter_file_records(path: str, fmt: str = "auto") -> Iterator[dict]:
    """Raw records of one eval file (``fmt``: auto | jsonl | parquet | csv)."""
    base = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(base)[1].lower()
    if fmt == "auto":
        fmt = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
               ".csv": "csv", ".tsv": "csv"}.get(ext, "")
        if not fmt:
            raise ValueError(f"unknown file type {ext!r} (use .jsonl, .json, .parquet, .csv or set format:)")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
        return
    if fmt == "csv":
        with _open_text(path) as f:
            rows = list(csv.reader(f, delimiter="\t" if ext == ".tsv" else ","))
        if not rows:
            return
        header = rows[0]
        known = {"question", "prompt", "answer", "id", "text", "choices", "goal", "sentence", "problem", "context",
                 "passage", "ctx", "task_id"}
        if known & set(header):
            for r in rows[1:]:
                yield dict(zip(header, r))
        else:  # headerless (e.g. the original MMLU CSVs): positional columns "0", "1", ...
            for r in rows:
                yield {str(i): v for i, v in enumerate(r)}
        return
    # jsonl / json
    with _open_text(path) as f:
        text = f.read()
    if ext == ".json" or text.lstrip().startswith("["):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # more than one value: JSON lines
        nested = isinstance(obj, dict) and (isinstance(obj.get("data"), list) or (
            obj and all(isinstance(v, dict) and "qa_pairs" in v for v in obj.values())))
        if isinstance(obj, list) or nested:
            yield from _flatten_nested_json(obj)
            return
        if isinstance(obj, dict):
            yield obj
            return
    for ln, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"line {ln}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"line {ln}: expected a JSON object")
        yield obj


def resolve_paths(path: str) -> list[str]:
    """A file, a directory (every eval file below it) or a glob -> sorted files."""
    if os.path.isdir(path):
        found = [os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs]
    elif any(c in path for c in "*?["):
        found = [p for p in globlib.glob(path, recursive=True) if os.path.isfile(p)]
    elif os.path.isfile(path):
        return [path]
    else:
        return []
    return sorted(p for p in found if p.lower().removesuffix(".gz").endswith(FILE_EXT))


# ------------------------------------------------------------------ tfds
def iter_tfds_records(name: str, split: str, data_dir: str | None) -> Iterator[dict]:
    """Records of a TFDS dataset that is already prepared locally (array_record
    format, read with ``tfds.data_source``; no TensorFlow and no download)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - unknown name / config
        raise EvalSetError(f"tfds {name!r}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if not builder.is_prepared():
        raise EvalSetError(f"tfds {name!r} is not prepared under {builder.data_dir} "
                           f"(nothing is downloaded at run time: run download_and_prepare there first)")
    try:
        source = builder.as_data_source(split=split)
    except Exception as e:  # noqa: BLE001 - e.g. tfrecord files, which need TensorFlow
        raise EvalSetError(f"tfds {name!r} split {split!r}: cannot open as a data source ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); prepare it with file_format='array_record'") from None
    for i in range(len(source)):
        yield _plain(source[i])


def _plain(v: Any) -> Any:
    """numpy / bytes values of a TFDS example -> plain Python."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if hasattr(v, "tolist"):
        return _plain(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


# ------------------------------------------------------------------ entry point
def load_eval_set(cfg: Any, base_dir: str | None = None) -> tuple[list[EvalItem], dict[str, Any]]:
    """Load one configured eval set (``EvalSetConfig``) -> (items, info).

    ``info`` records layout, files and counts for the report.  Raises
    ``EvalSetError`` (one line) for a missing set or unreadable file."""
    name = cfg.name
    records: list[tuple[str, int, dict]] = []  # (file label, row, record)
    files: list[str] = []
    if cfg.tfds:
        spec = cfg.tfds
        records = [(f"tfds:{spec}", i, r) for i, r in enumerate(iter_tfds_records(spec, cfg.split, cfg.tfds_data_dir))]
        files = [f"tfds:{spec}[{cfg.split}]"]
    else:
        path = cfg.path
        if base_dir and path and not os.path.isabs(path) and not os.path.exists(path):
            cand = os.path.join(base_dir, path)
            path = cand if os.path.exists(cand) or any(c in path for c in "*?[") else path
        files = resolve_paths(path)
        if not files:
            raise EvalSetError(f"eval set {name!r}: {cfg.path!r} not found or holds no .jsonl/.json/.parquet/.csv files "
                               f"(nothing is downloaded at run time)")
        root = path if os.path.isdir(path) else os.path.dirname(files[0])
        for fp in files:
            label = os.path.relpath(fp, root) if len(files) > 1 else os.path.basename(fp)
            try:
                for i, r in enumerate(iter_file_records(fp, cfg.format if cfg.format != "tfds" else "auto")):
                    records.append((label, i, r))
            except (OSError, ValueError, UnicodeDecodeError) as e:
                raise EvalSetError(f"eval set {name!r}: cannot read {fp}: {e}") from None
    if not records:
        raise EvalSetError(f"eval set {name!r}: no records in {', '.join(files)}")
    layout = cfg.layout
    if layout == "auto":
        layout = "generic" if cfg.columns else detect_layout(records[0][2])
    fields = tuple(cfg.fields) if cfg.fields else DEFAULT_FIELDS[layout]
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    multi = len(files) > 1
    for label, row, rec in records:
        c = to_canonical(rec, layout, cfg.columns)
        rid = c["id"]
        iid = str(rid) if rid not in (None, "") else None
        if iid is None:
            iid = f"{name}/{label}#{row}" if multi else f"{name}/{row}"
        if iid in seen:  # keep ids unique and deterministic
            seen[iid] += 1
            iid = f"{iid}~{seen[iid]}"
        else:
            seen[iid] = 0
        items.append(EvalItem(set=name, id=iid, question=c["question"], choices=list(c["choices"]),
                              answer=c["answer"], code=c["code"], passage=c["passage"]))
    empty = sum(1 for it in items if not any(it.get(f) for f in fields))
    info = {"layout": layout, "fields": list(fields), "files": files if len(files) <= 20 else files[:20] + ["..."],
            "n_files": len(files), "items": len(items), "items_without_counted_text": empty}
    return items, info


def iter_item_texts(item: EvalItem, fields: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(field, text) pairs of an item's counted fields (each choice on its own)."""
    for f in fields:
        v = item.get(f)
        if f == "choices":
            for c in v:
                if c and c.strip():
                    yield f, c
        elif v and v.strip():
            yield f, v
