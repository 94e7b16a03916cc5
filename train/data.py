"""The trainer's data contract, and two sources that honour it.

A batch is a dict of numpy arrays, all [B, L]:

  ``inputs``       int32   token ids fed to the model
  ``targets``      int32   the token to predict at each position
  ``segment_ids``  int32   0 = padding, 1..k = document index within the row; attention
                           never crosses a document boundary
  ``positions``    int32   position within the document (RoPE restarts at 0 per document)
  ``loss_mask``    float32 1 where the target counts in the loss
  ``source_ids``   int32   optional: index into ``source.source_names`` (per-source losses)

Multimodal batches (``mixtures/multimodal.py``) add the media fields of
``model/encoders.py`` — ``media_patches`` float32 [B, M, F], ``media_kind``,
``media_group`` int32 [B, M], ``media_positions`` int32 [B, M, 3], ``media_index``
int32 [B, L] — all five or none; ``M`` may vary between batches (bucketed).

A ``BatchSource`` produces batches deterministically and can save and restore its place:
``get_state()`` is small and JSON-serialisable (it is written into every checkpoint),
``set_state(state)`` puts the source back exactly there, and ``fingerprint`` identifies the
data + settings, so resuming a run on different data fails loudly instead of silently
training on something else (OLMo-core's rule).

Sources here:
  * ``SyntheticSource``: seeded, learnable tasks (copy, arithmetic progressions, key-value
    recall, a fixed Markov chain) packed into rows with document boundaries.  Batch n is a
    pure function of (seed, split, n), so the state is just n.
  * ``TokenFileSource``: a flat token array (.npy) with documents separated by an EOS id,
    cut into fixed windows read in a seeded per-epoch permutation (index-based state, like
    Grain's).
The staged-mixture loader (``mixtures/``, issue 8) implements the same protocol and plugs
in through ``build_source(kind="mixture")``.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

REQUIRED = {"inputs": np.int32, "targets": np.int32, "segment_ids": np.int32, "positions": np.int32,
            "loss_mask": np.float32}
OPTIONAL = {"source_ids": np.int32}
MEDIA = {"media_patches": np.float32, "media_kind": np.int32, "media_positions": np.int32, "media_group": np.int32,
         "media_index": np.int32}


class DataError(ValueError):
    """A data problem, already formatted as one line for the user."""


@runtime_checkable
class BatchSource(Protocol):
    batch_size: int
    seq_len: int
    vocab_size: int               # ids are < vocab_size
    source_names: list[str]       # names of source_ids 0..n-1 (one entry when there are none)
    fingerprint: str

    def next_batch(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> dict[str, Any]: ...
    def set_state(self, state: dict[str, Any]) -> None: ...


def validate_batch(batch: dict[str, np.ndarray], batch_size: int, seq_len: int, vocab_size: int) -> None:
    """Raise DataError (one line) unless ``batch`` follows the contract above."""
    for key, dtype in {**REQUIRED, **OPTIONAL}.items():
        if key not in batch:
            if key in REQUIRED:
                raise DataError(f"batch is missing {key!r} (has {sorted(batch)})")
            continue
        a = batch[key]
        if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != (batch_size, seq_len):
            got = f"{getattr(a, 'dtype', type(a).__name__)}{list(getattr(a, 'shape', []))}"
            raise DataError(f"batch[{key!r}] must be {np.dtype(dtype).name}[{batch_size}, {seq_len}], got {got}")
    extra = set(batch) - set(REQUIRED) - set(OPTIONAL) - set(MEDIA)
    if extra:
        raise DataError(f"batch has unknown keys {sorted(extra)}")
    if any(k in batch for k in MEDIA):
        validate_media(batch, batch_size, seq_len)
    for key in ("inputs", "targets"):
        a = batch[key]
        if a.size and (a.min() < 0 or a.max() >= vocab_size):
            raise DataError(f"batch[{key!r}] has ids outside [0, {vocab_size}): min {a.min()}, max {a.max()}")
    if batch["segment_ids"].min() < 0 or batch["positions"].min() < 0:
        raise DataError("segment_ids and positions must be >= 0")
    if np.any((batch["segment_ids"] == 0) & (batch["loss_mask"] > 0)):
        raise DataError("loss_mask is set on padding (segment_ids == 0)")


def validate_media(batch: dict[str, np.ndarray], batch_size: int, seq_len: int) -> None:
    """The media fields of a multimodal batch (see the module docstring)."""
    missing = [k for k in MEDIA if k not in batch]
    if missing:
        raise DataError(f"batch has media fields but not {missing}")
    p = batch["media_patches"]
    if not isinstance(p, np.ndarray) or p.dtype != np.float32 or p.ndim != 3 or p.shape[0] != batch_size:
        raise DataError(f"batch['media_patches'] must be float32[{batch_size}, M, F], got "
                        f"{getattr(p, 'dtype', type(p).__name__)}{list(getattr(p, 'shape', []))}")
    m = p.shape[1]
    for key, shape in (("media_kind", (batch_size, m)), ("media_group", (batch_size, m)),
                       ("media_positions", (batch_size, m, 3)), ("media_index", (batch_size, seq_len))):
        a = batch[key]
        if not isinstance(a, np.ndarray) or a.dtype != np.int32 or a.shape != shape:
            raise DataError(f"batch[{key!r}] must be int32{list(shape)}, got "
                            f"{getattr(a, 'dtype', type(a).__name__)}{list(getattr(a, 'shape', []))}")
    idx, kind = batch["media_index"], batch["media_kind"]
    if idx.min() < 0 or idx.max() > m:
        raise DataError(f"batch['media_index'] must be in [0, {m}], got [{idx.min()}, {idx.max()}]")
    if kind.min() < 0 or kind.max() > 3:
        raise DataError("batch['media_kind'] must be 0 (none), 1 (image), 2 (video frame) or 3 (audio)")
    rows, cols = np.nonzero(idx)
    if len(rows) and np.any(kind[rows, idx[rows, cols] - 1] == 0):
        raise DataError("batch['media_index'] points at an empty media slot")
    if np.any((idx > 0) & (batch["loss_mask"] > 0)):
        raise DataError("loss_mask is set on a media position (the loss is on text tokens only)")


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _check_state(name: str, state: dict[str, Any], keys: tuple[str, ...]) -> None:
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise DataError(f"{name}: bad saved state {state!r} (expected keys {list(keys)})")


class Packer:
    """Greedy row packer: documents go into rows of ``seq_len`` positions; a document of
    n tokens fills n-1 positions (inputs t[:-1], targets t[1:]) and gets its own segment
    id; what does not fit is padding."""

    def __init__(self, batch_size: int, seq_len: int):
        self.b, self.l = batch_size, seq_len
        self.arrays = {k: np.zeros((batch_size, seq_len), dtype) for k, dtype in {**REQUIRED, **OPTIONAL}.items()}
        self.row, self.col, self.seg = 0, 0, 0

    def room(self) -> int:
        return self.l - self.col

    def add(self, doc: np.ndarray, source_id: int = 0, loss_mask: np.ndarray | None = None) -> None:
        n = len(doc) - 1
        assert 0 < n <= self.room(), (n, self.room())
        s = slice(self.col, self.col + n)
        self.seg += 1
        a = self.arrays
        a["inputs"][self.row, s] = doc[:-1]
        a["targets"][self.row, s] = doc[1:]
        a["segment_ids"][self.row, s] = self.seg
        a["positions"][self.row, s] = np.arange(n)
        a["loss_mask"][self.row, s] = 1.0 if loss_mask is None else loss_mask
        a["source_ids"][self.row, s] = source_id
        self.col += n

    def next_row(self) -> bool:
        self.row, self.col, self.seg = self.row + 1, 0, 0
        return self.row < self.b


# ---- synthetic tasks ------------------------------------------------------------------

PAD, BOS, SEP, QUERY = 0, 1, 2, 3
FIRST_CONTENT = 4


def kv_document(rng: np.random.Generator, vocab_size: int, n_pairs: int, filler: int, n_queries: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Key-value recall: ``BOS k1 v1 ... kn vn <filler> (QUERY ki vi)*``.  Keys come from the
    lower half of the content ids, values from the upper half, filler from all of them.
    Returns the tokens and the indices (into the tokens) of the answer values."""
    c = vocab_size - FIRST_CONTENT
    half = c // 2
    keys = FIRST_CONTENT + rng.choice(half, size=n_pairs, replace=False)
    vals = FIRST_CONTENT + half + rng.integers(0, c - half, size=n_pairs)
    pairs = np.stack([keys, vals], 1).reshape(-1)
    fill = FIRST_CONTENT + rng.integers(0, c, size=filler)
    q = rng.integers(0, n_pairs, size=n_queries)
    queries = np.stack([np.full(n_queries, QUERY), keys[q], vals[q]], 1).reshape(-1)
    doc = np.concatenate([[BOS], pairs, fill, queries]).astype(np.int32)
    start = 1 + 2 * n_pairs + filler
    answers = start + 3 * np.arange(n_queries) + 2
    return doc, answers


class SyntheticSource:
    """Deterministic synthetic corpus with four learnable "sources" (tasks):

    * ``copy``:   BOS x1..xa SEP x1..xa            (second half is predictable)
    * ``arith``:  BOS s, s+d, s+2d, ... (mod C)    (predictable after two tokens)
    * ``kv``:     key-value pairs, filler, queries (in-context retrieval; see kv_document)
    * ``markov``: a fixed sparse Markov chain      (learnable statistics)

    Documents of random length in [min_doc, max_doc] tokens are packed into rows.
    """

    TASKS = ("copy", "arith", "kv", "markov")

    def __init__(self, batch_size: int, seq_len: int, vocab_size: int = 512, seed: int = 0, split: str = "train",
                 weights: dict[str, float] | None = None, min_doc: int = 16, max_doc: int | None = None):
        if vocab_size < 64:
            raise DataError(f"synthetic: vocab_size {vocab_size} too small (need >= 64)")
        self.batch_size, self.seq_len, self.vocab_size, self.seed, self.split = batch_size, seq_len, vocab_size, seed, split
        w = weights or {t: 1.0 for t in self.TASKS}
        unknown = set(w) - set(self.TASKS)
        if unknown:
            raise DataError(f"synthetic: unknown tasks {sorted(unknown)} (choose from {list(self.TASKS)})")
        self.source_names = list(self.TASKS)
        p = np.array([w.get(t, 0.0) for t in self.TASKS], np.float64)
        if p.sum() <= 0 or (p < 0).any():
            raise DataError("synthetic: task weights must be >= 0 and not all zero")
        self.p = p / p.sum()
        self.min_doc = max(8, min_doc)
        self.max_doc = min(max_doc or seq_len + 1, seq_len + 1)
        if self.min_doc > self.max_doc:
            raise DataError(f"synthetic: min_doc {min_doc} > max_doc {self.max_doc}")
        self._split_id = int(hashlib.sha256(split.encode()).hexdigest()[:8], 16)
        # the Markov chain is part of the "corpus": fixed by the seed alone
        chain_rng = np.random.default_rng([seed, 7])
        c = vocab_size - FIRST_CONTENT
        self._succ = chain_rng.integers(0, c, size=(c, 4))
        self._succ_p = np.cumsum(chain_rng.dirichlet(np.ones(4) * 0.5, size=c), axis=1)
        self.fingerprint = _fingerprint({"kind": "synthetic", "b": batch_size, "l": seq_len, "v": vocab_size,
                                         "seed": seed, "split": split, "p": self.p.tolist(),
                                         "min": self.min_doc, "max": self.max_doc})
        self._n = 0

    # -- protocol
    def get_state(self) -> dict[str, Any]:
        return {"batches": self._n}

    def set_state(self, state: dict[str, Any]) -> None:
        _check_state("synthetic", state, ("batches",))
        self._n = int(state["batches"])

    def next_batch(self) -> dict[str, np.ndarray]:
        batch = self.batch_at(self._n)
        self._n += 1
        return batch

    # -- generation
    def batch_at(self, n: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self._split_id, n])
        pk = Packer(self.batch_size, self.seq_len)
        while True:
            while pk.room() >= self.min_doc - 1:
                length = int(rng.integers(self.min_doc, self.max_doc + 1))
                length = min(length, pk.room() + 1)
                task = int(rng.choice(len(self.TASKS), p=self.p))
                pk.add(self.document(rng, self.TASKS[task], length), source_id=task)
            if not pk.next_row():
                return pk.arrays

    def document(self, rng: np.random.Generator, task: str, length: int) -> np.ndarray:
        c = self.vocab_size - FIRST_CONTENT
        if task == "copy":
            a = (length - 2) // 2
            x = FIRST_CONTENT + rng.integers(0, c, size=a)
            doc = np.concatenate([[BOS], x, [SEP], x])
            doc = np.concatenate([doc, x[: length - len(doc)]])
        elif task == "arith":
            s, d = rng.integers(0, c), rng.integers(1, 8)
            doc = np.concatenate([[BOS], FIRST_CONTENT + (s + d * np.arange(length - 1)) % c])
        elif task == "kv":
            n_pairs = int(rng.integers(1, max(2, min(8, (length - 4) // 5) + 1)))
            n_queries = int(rng.integers(1, 4))
            filler = length - 1 - 2 * n_pairs - 3 * n_queries
            while filler < 0 and n_queries > 1:
                n_queries -= 1
                filler = length - 1 - 2 * n_pairs - 3 * n_queries
            doc, _ = kv_document(rng, self.vocab_size, n_pairs, max(filler, 0), n_queries)
            doc = doc[:length]
        else:  # markov
            u = rng.random(length - 1)
            state = int(rng.integers(0, c))
            out = np.empty(length - 1, np.int64)
            for i in range(length - 1):
                out[i] = state
                state = int(self._succ[state, np.searchsorted(self._succ_p[state], u[i] * self._succ_p[state, -1])])
            doc = np.concatenate([[BOS], FIRST_CONTENT + out])
        return doc[:length].astype(np.int32)


# ---- flat token file ------------------------------------------------------------------

class TokenFileSource:
    """A flat 1-D token array (``.npy``, memory-mapped) with documents ending in ``eos_id``.

    The array is cut into windows of seq_len + 1 tokens (window w starts at w·seq_len);
    a source reads a range of them (``windows``: the trainer keeps the last 5% for
    validation unless a separate val_path is given), each epoch all of its windows in a
    permutation seeded by (seed, epoch).  Inside a
    window a new segment starts after every EOS; the EOS position itself is masked out of
    the loss (its target belongs to the next document, which it cannot see).  The first
    document of a window may be the tail of a longer one: its positions start at 0 there.
    """

    def __init__(self, path: str, batch_size: int, seq_len: int, eos_id: int, seed: int = 0, shuffle: bool = True,
                 vocab_size: int | None = None, source_name: str | None = None,
                 windows: tuple[float, float] = (0.0, 1.0)):
        """``windows``: the fraction of the file's windows this source reads, e.g. (0, 0.95)
        for training and (0.95, 1) for a held-out validation split of the same file."""
        if not os.path.exists(path):
            raise DataError(f"{path}: token file not found")
        try:
            self.tokens = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: not a .npy array ({e})") from None
        if self.tokens.ndim != 1 or not np.issubdtype(self.tokens.dtype, np.integer):
            raise DataError(f"{path}: expected a 1-D integer array, got {self.tokens.dtype}{list(self.tokens.shape)}")
        total = (len(self.tokens) - 1) // seq_len
        self.first = int(round(windows[0] * total))
        self.n_windows = int(round(windows[1] * total)) - self.first
        if self.n_windows < 1:
            raise DataError(f"{path}: {len(self.tokens)} tokens give {total} windows of {seq_len + 1}; "
                            f"the range {windows} of them is empty")
        self.path, self.batch_size, self.seq_len, self.eos_id = path, batch_size, seq_len, eos_id
        self.seed, self.shuffle = seed, shuffle
        top = int(self.tokens.max())                     # one streaming pass over the memory map
        if vocab_size is not None and top >= vocab_size:
            raise DataError(f"{path}: token ids go up to {top} but the model's vocab_size is {vocab_size} "
                            f"(set model.vocab_size={top + 1} or more)")
        self.vocab_size = vocab_size or top + 1
        self.source_names = [source_name or os.path.splitext(os.path.basename(path))[0]]
        head = np.asarray(self.tokens[:4096]).tobytes() + np.asarray(self.tokens[-4096:]).tobytes()
        self.fingerprint = _fingerprint({"kind": "tokens", "n": len(self.tokens), "dtype": str(self.tokens.dtype),
                                         "sample": hashlib.sha256(head).hexdigest(), "b": batch_size, "l": seq_len,
                                         "eos": eos_id, "seed": seed, "shuffle": shuffle,
                                         "windows": [self.first, self.n_windows]})
        self._n = 0
        self._perm_epoch, self._perm = -1, None

    def get_state(self) -> dict[str, Any]:
        return {"batches": self._n}

    def set_state(self, state: dict[str, Any]) -> None:
        _check_state("tokens", state, ("batches",))
        self._n = int(state["batches"])

    def _window(self, g: int) -> int:
        epoch, i = divmod(g, self.n_windows)
        if not self.shuffle:
            return self.first + i
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._perm_epoch = epoch
        return self.first + int(self._perm[i])

    def next_batch(self) -> dict[str, np.ndarray]:
        b, l = self.batch_size, self.seq_len
        w = np.stack([np.asarray(self.tokens[s * l: s * l + l + 1]) for s in
                      (self._window(self._n * b + r) for r in range(b))]).astype(np.int32)
        self._n += 1
        inputs, targets = w[:, :-1], w[:, 1:]
        is_eos = inputs == self.eos_id
        # segment k+1 starts right after the k-th EOS of the row
        seg = 1 + np.concatenate([np.zeros((b, 1), np.int32), np.cumsum(is_eos, axis=1)[:, :-1]], axis=1)
        idx = np.broadcast_to(np.arange(l), (b, l))
        starts = np.where(np.concatenate([np.ones((b, 1), bool), seg[:, 1:] != seg[:, :-1]], axis=1), idx, 0)
        positions = idx - np.maximum.accumulate(starts, axis=1)
        return {"inputs": inputs, "targets": targets, "segment_ids": seg.astype(np.int32),
                "positions": positions.astype(np.int32), "loss_mask": (~is_eos).astype(np.float32),
                "source_ids": np.zeros((b, l), np.int32)}


def write_byte_tokens(paths: list[str], out: str) -> dict[str, int]:
    """Byte-level tokens (ids 0..255, EOS = 256) of text files, one document per file:
    a tokenizer-free corpus for smoke runs until the SentencePiece shards exist."""
    parts = []
    for p in sorted(paths):
        with open(p, "rb") as f:
            parts.append(np.frombuffer(f.read(), np.uint8).astype(np.uint16))
        parts.append(np.array([256], np.uint16))
    arr = np.concatenate(parts) if parts else np.zeros(0, np.uint16)
    np.save(out, arr)
    return {"tokens": int(len(arr)), "eos_id": 256, "vocab_size": 257, "documents": len(paths)}


# ---- factory --------------------------------------------------------------------------

def build_source(kind: str, *, batch_size: int, seq_len: int, seed: int, split: str, vocab_size: int | None,
                 options: dict[str, Any]) -> BatchSource:
    """The one place the trainer turns its ``data`` config into a BatchSource."""
    opts = dict(options)
    if kind == "synthetic":
        return SyntheticSource(batch_size, seq_len, vocab_size=vocab_size, seed=seed, split=split, **opts)
    if kind == "tokens":
        path = opts.pop("path", None)
        val_path = opts.pop("val_path", None)
        if not path:
            raise DataError("data.options.path is required for data.kind 'tokens'")
        holdout = float(opts.pop("holdout", 0.05))
        if val_path:
            path = val_path if split != "train" else path
            windows = (0.0, 1.0)
        else:  # hold out the last windows of the file for validation
            windows = (0.0, 1.0 - holdout) if split == "train" else (1.0 - holdout, 1.0)
        return TokenFileSource(path, batch_size, seq_len, seed=seed, vocab_size=vocab_size, windows=windows, **opts)
    if kind == "mixture":
        # Seam for the staged-mixture loader (issue 8): ``mixtures`` exposes
        # build_batch_source(config_path, *, batch_size, seq_len, seed, split) -> BatchSource.
        import mixtures
        build = getattr(mixtures, "build_batch_source", None)
        if build is None:
            raise DataError("data.kind 'mixture': the mixture loader (mixtures.build_batch_source) is not available yet")
        try:
            return build(opts["config"], batch_size=batch_size, seq_len=seq_len, seed=seed, split=split)
        except ValueError as e:          # mixtures.MixtureError: bad mixture, data or plan (message + table)
            raise DataError(str(e)) from None
    raise DataError(f"unknown data kind {kind!r} (synthetic | tokens | mixture)")
