"""fastText document classifiers: training from examples, scoring documents.

One machinery for the quality classifier (``python -m filters.quality train``)
and the toxicity classifier (``python -m filters.safety train``):

* ``load_examples(path)`` reads JSONL (``{"text": ...}`` per line) or Parquet
  (a ``text`` column); globs allowed.
* ``train_classifier(...)`` splits the examples deterministically (by a hash of
  the text) into train/validation, trains ``fasttext.train_supervised`` with
  ``__label__pos`` / ``__label__neg``, reports validation precision, recall and
  F1 of the positive class at 0.5 and the ROC AUC, and saves the model plus a
  ``<model>.json`` with those numbers and the training parameters.
* ``FastTextScorer`` loads a model once (per Beam worker) and returns
  P(positive) for a document.

fastText's ``train_supervised`` can fail with "Encountered NaN" in a process
that already ran a Beam pipeline or SentencePiece (see shared notes), so
training always happens in its own process: the CLI is one, and
``train_in_subprocess`` runs the CLI for callers inside a bigger process.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from filters.resources import resolve
from filters.schema import stable_hash

POS, NEG = "__label__pos", "__label__neg"


class ClassifierError(ValueError):
    """Bad training input or parameters: one line for the user."""


def model_text(text: str, max_chars: int = 20000) -> str:
    """What the classifier sees: one line, lower-cased, at most ``max_chars``."""
    return " ".join(text[:max_chars].lower().split())


def load_examples(path: str, text_field: str = "text", limit: int | None = None) -> list[str]:
    """Texts from JSONL or Parquet files (``path`` may be a glob)."""
    try:
        files = resolve(path)
    except ValueError as e:
        raise ClassifierError(str(e)) from None
    out: list[str] = []
    for f in files:
        if f.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(f)
            if text_field not in table.column_names:
                raise ClassifierError(f"{f}: no column {text_field!r} (columns: {table.column_names})")
            out.extend(t for t in table.column(text_field).to_pylist() if isinstance(t, str) and t.strip())
        else:
            with open(f, encoding="utf-8") as fh:
                for i, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ClassifierError(f"{f}:{i}: not valid JSON ({e.msg})") from None
                    t = obj.get(text_field) if isinstance(obj, dict) else None
                    if isinstance(t, str) and t.strip():
                        out.append(t)
        if limit and len(out) >= limit:
            return out[:limit]
    return out


def _split(texts: list[str], label: str, valid_frac: float) -> tuple[list[str], list[str]]:
    train, valid = [], []
    for t in texts:
        line = f"{label} {model_text(t)}"
        bucket = int(stable_hash(label, t, size=4), 16) / 2**32
        (valid if bucket < valid_frac else train).append(line)
    return train, valid


@dataclass
class TrainParams:
    dim: int = 64
    epoch: int = 10
    lr: float = 0.2
    word_ngrams: int = 2
    min_count: int = 1
    minn: int = 2
    maxn: int = 5
    bucket: int = 200_000
    threads: int = 2
    seed: int = 0
    valid_frac: float = 0.1


def _metrics(probs: list[float], labels: list[int]) -> dict[str, float]:
    tp = sum(1 for p, y in zip(probs, labels) if p >= 0.5 and y == 1)
    fp = sum(1 for p, y in zip(probs, labels) if p >= 0.5 and y == 0)
    fn = sum(1 for p, y in zip(probs, labels) if p < 0.5 and y == 1)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    # ROC AUC by ranks (ties averaged)
    pos = [p for p, y in zip(probs, labels) if y == 1]
    neg = [p for p, y in zip(probs, labels) if y == 0]
    auc = 0.0
    if pos and neg:
        import numpy as np

        allp = np.array(probs)
        order = allp.argsort(kind="stable")
        ranks = np.empty(len(allp))
        sorted_p = allp[order]
        i = 0
        while i < len(sorted_p):
            j = i
            while j + 1 < len(sorted_p) and sorted_p[j + 1] == sorted_p[i]:
                j += 1
            ranks[order[i:j + 1]] = (i + j) / 2 + 1
            i = j + 1
        r_pos = ranks[np.array(labels) == 1].sum()
        auc = float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
    return {"precision": prec, "recall": rec, "f1": f1, "auc": auc, "n_valid": len(labels),
            "n_valid_pos": len(pos), "n_valid_neg": len(neg)}


def train_classifier(positive: list[str], negative: list[str], output: str, params: TrainParams | None = None,
                     log=print) -> dict[str, Any]:
    """Train, validate and save; returns the metrics (also written to ``output + '.json'``).
    Call only in a fresh process (see module docstring)."""
    import fasttext

    p = params or TrainParams()
    if len(positive) < 10 or len(negative) < 10:
        raise ClassifierError(f"need at least 10 positive and 10 negative examples (got {len(positive)}, {len(negative)})")
    tr_p, va_p = _split(positive, POS, p.valid_frac)
    tr_n, va_n = _split(negative, NEG, p.valid_frac)
    train = sorted(tr_p + tr_n, key=lambda s: stable_hash(s, size=8))  # deterministic shuffle
    valid = va_p + va_n
    if not valid:
        raise ClassifierError("validation split is empty: give more examples or a larger --valid-frac")
    log(f"training on {len(train)} examples ({len(tr_p)} positive), validating on {len(valid)}")
    os.makedirs(os.path.dirname(os.path.abspath(output)) or ".", exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(train) + "\n")
        train_path = f.name
    try:
        model = fasttext.train_supervised(
            input=train_path, dim=p.dim, epoch=p.epoch, lr=p.lr, wordNgrams=p.word_ngrams, minCount=p.min_count,
            minn=p.minn, maxn=p.maxn, bucket=p.bucket, thread=p.threads, seed=p.seed, loss="softmax", verbose=0,
        )
    finally:
        os.unlink(train_path)
    scorer = FastTextScorer(model=model)
    probs = [scorer.prob_of_line(line.split(" ", 1)[1]) for line in valid]
    labels = [1 if line.startswith(POS) else 0 for line in valid]
    metrics = _metrics(probs, labels)
    model.save_model(output)
    report = {"model": os.path.abspath(output), "params": p.__dict__, "validation": metrics,
              "n_train": len(train), "n_positive": len(positive), "n_negative": len(negative)}
    with open(output + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    log(f"validation: precision {metrics['precision']:.3f}  recall {metrics['recall']:.3f}  "
        f"F1 {metrics['f1']:.3f}  AUC {metrics['auc']:.3f}  (n={metrics['n_valid']})")
    log(f"saved {output} (+ {output}.json)")
    return report


class FastTextScorer:
    """P(``__label__pos``) of a text under a trained fastText model."""

    def __init__(self, path: str | None = None, model: Any = None, max_chars: int = 20000):
        if model is None:
            import fasttext

            found = resolve(path)  # type: ignore[arg-type]
            model = fasttext.load_model(found[0])
        self.model = model
        self.max_chars = max_chars
        labels = set(self.model.get_labels())
        if POS not in labels:
            raise ClassifierError(f"model {path}: has labels {sorted(labels)}, expected {POS} and {NEG}")

    def prob_of_line(self, line: str) -> float:
        if not line.strip():
            return 0.0
        labels, probs = self.model.predict(line, k=2)
        for lab, pr in zip(labels, probs):
            if lab == POS:
                return float(min(max(pr, 0.0), 1.0))
        return float(max(0.0, 1.0 - sum(float(x) for x in probs)))

    def prob(self, text: str) -> float:
        return self.prob_of_line(model_text(text, self.max_chars))


# ----------------------------------------------------------------------------- CLI
def cli(argv: list[str] | None, prog: str, what: str, pos_help: str, neg_help: str) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=f"Train the fastText {what} classifier.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help=f"train a {what} classifier from positive and negative examples")
    t.add_argument("--positive", required=True, metavar="PATH", help=pos_help + " (JSONL or Parquet, globs allowed)")
    t.add_argument("--negative", required=True, metavar="PATH", help=neg_help + " (JSONL or Parquet, globs allowed)")
    t.add_argument("--output", required=True, metavar="MODEL", help="model file to write (.bin); metrics go to MODEL.json")
    t.add_argument("--text-field", default="text")
    t.add_argument("--limit", type=int, default=None, help="at most this many examples per class")
    for name, default in TrainParams().__dict__.items():
        t.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    s = sub.add_parser("score", help="print P(positive) for each line of a JSONL/Parquet file")
    s.add_argument("--model", required=True)
    s.add_argument("--input", required=True)
    s.add_argument("--text-field", default="text")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "train":
            pos = load_examples(args.positive, args.text_field, args.limit)
            neg = load_examples(args.negative, args.text_field, args.limit)
            params = TrainParams(**{k: getattr(args, k) for k in TrainParams().__dict__})
            train_classifier(pos, neg, args.output, params)
        else:
            sc = FastTextScorer(args.model)
            for t_ in load_examples(args.input, args.text_field):
                print(f"{sc.prob(t_):.6f}")
    except (ClassifierError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def train_in_subprocess(module: str, positive: str, negative: str, output: str, extra: list[str] | None = None,
                        timeout: float = 600) -> dict[str, Any]:
    """Run ``python -m <module> train ...`` in a fresh process (fastText NaN trap)."""
    cmd = [sys.executable, "-m", module, "train", "--positive", positive, "--negative", negative, "--output", output,
           *(extra or [])]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise ClassifierError(f"{' '.join(cmd[1:4])} failed: {(r.stderr or r.stdout).strip()[-500:]}")
    with open(output + ".json", encoding="utf-8") as f:
        return json.load(f)
