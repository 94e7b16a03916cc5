"""The report's two long-context probes, cheap enough to run at the end of every run.

* NLL by token position: mean negative log-likelihood of held-out documents, bucketed by
  position within the document (log2 buckets).  A model that uses its context keeps
  getting better further into a document (the report's curve keeps falling to 32k).
* Synthetic key-value retrieval: ``BOS k1 v1 ... kn vn <random filler> QUERY ki ?``; the
  answer counts as correct when the model's top next-token prediction is ``vi``.
  Accuracy is measured across context lengths, including beyond the training length.
  Keys and values are token ids (see ``train.data.kv_document``), so the probe needs no
  tokenizer; a model trained on the synthetic tasks has seen the format, a model trained
  on text is being asked for pure in-context copying.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from train.data import FIRST_CONTENT, kv_document


def nll_by_position(nll_fn: Callable, batches: Iterable[dict[str, np.ndarray]], max_len: int) -> dict:
    """``nll_fn(batch) -> [B, L]`` per-token NLL.  Buckets [0,1), [1,2), [2,4), [4,8), ..."""
    edges = [0, 1]
    while edges[-1] < max_len:
        edges.append(edges[-1] * 2)
    sums = np.zeros(len(edges) - 1)
    counts = np.zeros(len(edges) - 1, np.int64)
    for batch in batches:
        nll = np.asarray(nll_fn(batch), np.float64)
        m = batch["loss_mask"] > 0
        b = np.searchsorted(edges, batch["positions"][m], side="right") - 1
        np.add.at(sums, b, nll[m])
        np.add.at(counts, b, 1)
    keep = counts > 0
    return {"kind": "probe_nll", "bucket_start": [int(e) for e in np.array(edges[:-1])[keep]],
            "bucket_end": [int(e) for e in np.array(edges[1:])[keep]],
            "positions": [float(np.sqrt(max(a, 1) * b)) for a, b in zip(np.array(edges[:-1])[keep],
                                                                         np.array(edges[1:])[keep])],
            "nll": [float(x) for x in sums[keep] / counts[keep]], "count": [int(c) for c in counts[keep]]}


def kv_retrieval(logits_fn: Callable, vocab_size: int, lengths: list[int], *, pairs: int = 4, trials: int = 32,
                 seed: int = 1234, rows_per_call: int = 8) -> dict:
    """``logits_fn(tokens, segment_ids, positions) -> [B, L, V]``.  Accuracy per context length."""
    c = vocab_size - FIRST_CONTENT
    acc = []
    used = []
    for length in lengths:
        filler = length - 1 - 2 * pairs - 3
        if filler < 0:
            continue
        rng = np.random.default_rng([seed, length])
        correct = 0
        for start in range(0, trials, rows_per_call):
            n = min(rows_per_call, trials - start)
            docs, answers = zip(*(kv_document(rng, vocab_size, pairs, filler, 1) for _ in range(n)))
            tokens = np.stack(docs).astype(np.int32)                    # [n, length]
            a = np.array([x[0] for x in answers])
            seg = np.ones_like(tokens)
            pos = np.broadcast_to(np.arange(length, dtype=np.int32), tokens.shape).copy()
            logits = np.asarray(logits_fn(tokens, seg, pos))
            pred = logits[np.arange(n), a - 1].argmax(-1)
            correct += int((pred == tokens[np.arange(n), a]).sum())
        acc.append(correct / trials)
        used.append(length)
    return {"kind": "probe_kv", "lengths": used, "accuracy": acc, "pairs": pairs, "trials": trials,
            "chance": 1.0 / (c - c // 2)}


def caption_gap(nll_fn: Callable, right: list[dict[str, np.ndarray]], shuffled: list[dict[str, np.ndarray]],
                *, seed: int = 0, bootstrap: int = 2000) -> dict:
    """Does the model use the images?  Mean caption NLL per token with the right image
    vs the same captions with another image (``right`` / ``shuffled``: batches whose rows
    are ``<boi> image <eoi> caption <eod>``, the loss mask on the caption; row i of both
    holds the same caption).  ``nll_fn(batch) -> [B, L]``.

    Reports the per-caption means, the gap (shuffled - right, in nats per caption token;
    > 0 means the right image makes the caption more likely), the fraction of captions
    for which the right image wins, and a 95% paired-bootstrap interval of the gap."""
    def per_caption(batches):
        out = []
        for b in batches:
            nll = np.asarray(nll_fn(b), np.float64) * b["loss_mask"]
            out.append(nll.sum(1) / np.maximum(b["loss_mask"].sum(1), 1))
        return np.concatenate(out)

    r, s = per_caption(right), per_caption(shuffled)
    d = s - r
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(bootstrap, len(d)))].mean(1)
    return {"kind": "probe_caption", "captions": int(len(d)), "nll_right": float(r.mean()),
            "nll_shuffled": float(s.mean()), "gap": float(d.mean()), "gap_ci95": [float(np.quantile(boots, 0.025)),
                                                                             float(np.quantile(boots, 0.975))],
            "right_wins": float((d > 0).mean())}
