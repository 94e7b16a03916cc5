"""The staged-mixture loader: deterministic, token-exact, resumable from a few integers.

``MixtureSource`` implements the trainer's ``BatchSource`` protocol
(``train/data.py``; this module never imports ``train/``)::

    src = MixtureSource.from_config("configs/mixtures/demo.yaml", batch_size=16, split="train", seed=0)
    batch = src.next_batch()          # inputs, targets, segment_ids, positions, loss_mask, source_ids: [B, L]
    state = src.get_state()           # small JSON dict: example index, counters, fingerprints
    src.set_state(state)              # continues with the identical batches

**Examples.**  One row of a batch is one packed sequence (``tokenizer/format.py``)
of ``S`` tokens; the stream of examples is a pure function of the example index
``e``, built with Grain ``MapDataset`` transformations over index ranges:

* per text source, a stream of record indices ``range(N_train).shuffle(seed_s).repeat()``:
  stream position ``q`` is record ``perm_{seed_s + epoch}(q mod N_train)`` with
  ``epoch = q // N_train`` (Grain reshuffles every epoch).  The stream runs on
  across stages, so stage 2 continues where stage 1 stopped: no record is
  repeated before every record of its source was used once in that epoch;
* per stage ``t`` of ``M_t`` examples the plan gives each source exactly
  ``n_{s,t}`` examples (largest-remainder apportionment of the weights,
  ``mixtures/config.py``).  The stage is the even interleaving of those counts
  (``interleave``: Grain ``mix``'s closed form on exact integer counts), shuffled
  inside consecutive windows (a Grain index permutation per window).  The window
  is ``mixing_window`` examples (default 4096), shrunk per stage so that it
  spans at most one epoch of any source it reads (``N_s * M_t / n_{s,t}``
  examples; the plan prints it).  The ``r``-th element of source ``s`` in the
  interleaving reads stream position ``offset_{s,t} + r``, so a stage reads each
  source's stream forward, a window at a time (``StageSelection``, plugged in
  with ``MapDataset.select_from_datasets``).  Consequences: each stage holds
  exactly its planned counts; a window holds a record of a source at most
  twice (when it straddles an epoch boundary of that source), and a repeated
  record otherwise comes back about one source epoch later; the loader touches
  at most a couple of epochs of a source at a time.

**Stage boundaries are exact whatever the batch size.**  Batch ``n`` is examples
``[nB, (n+1)B)``.  The stage of an example depends on ``e`` alone, never on
``B``, so a batch that straddles a boundary holds the last examples of stage 1
in its first rows and the first examples of stage 2 in the rest: the first
stage-2 example is always global example ``start_2``, i.e. token
``start_2 * S`` — the configured budget (rounded to whole sequences only when it
is not a multiple of ``S``; the plan prints the boundary).  Nothing is buffered,
so a mixture change discards nothing and a resume needs no warm-up.

**Proportions.**  Stage totals are exact (``|n_{s,t} - w_s M_t| < 1``).  At a
window boundary ``a`` the interleaving is within ``K`` (the number of sources)
of ``a w_s``; inside a window the first ``t`` examples are a uniformly shuffled
prefix of the window's multiset, so the count is hypergeometric (``sigma^2 =
t p (1-p) (W-t)/(W-1)``).  Every prefix of ``j`` examples of a stage therefore
satisfies ``|count_s - j w_s| <= 5 sigma + 3 K`` (tested at every batch boundary).
Per batch, the composition varies like sampling without replacement, and over a
window it is exact to a few examples (stratified, not i.i.d.).

**State.**  ``{"example": e, "consumed": per stage and source [sequences,
tokens], fingerprints}`` — a few integers.  ``set_state`` checks the fingerprint
(mixture plan + token manifests + split + seq_len) and says what changed.  A
state can be restored with another batch size: it counts examples, not batches.

**Inputs and targets.**  The trainer's ``seq_len`` ``L`` is ``S`` or ``S - 1``:

* ``L = S - 1`` (pack with ``--seq-len L+1``): ``inputs = t[0:L]``, ``targets = t[1:L+1]``;
* ``L = S``: ``inputs = t``, ``targets = t[1:] + [pad]``; the last position has no
  target in the record and is masked (one position in ``S`` lost).

``loss_mask[i] = 1`` iff position ``i`` is not padding and its target lies in the
same document piece (``segment_ids[i] == segment_ids[i+1]``): the EOD of a
document never predicts the next document's first token, and nothing predicts
across the end of the record.  ``segment_ids`` are the record's pieces (1..K, 0 =
padding); ``positions`` restart at 0 at each piece (a document continued from the
previous sequence restarts at 0, as in ``tokenizer/FORMAT.md``); ``source_ids``
index ``source_names`` (all mixture sources, in config order).

**Validation split.**  The last ``validation_sequences`` packed sequences of each
text source are held out (the pack order is a hash shuffle of documents, so this
is a random document sample) and never appear in training.  ``split="validation"``
reads them round-robin over sources (Grain ``MapDataset.mix`` with equal weights),
cycling, from the start at every construction.  A document cut by the train /
validation boundary has its first part in training; its validation part is
masked out of the loss, so every scored validation token comes from a document
the model never trained on.

**Media sources** (``kind: media``) take part exactly like text sources: each is
packed once into sequences of ``S`` positions by ``mixtures/multimodal.py``
(``MediaPackedSource``: captions / transcripts / interleaved text tokenized with the
mixture's ``tokenizer``, media as placeholder slots between the modality's begin /
end tokens; a pure function of the corpus), and its stream, stage counts, windows
and state are those of a text source of that many sequences.  The mixing window of
a stage is also shrunk to span at most one epoch of the media sources it reads, and
the repetition cap is checked again on the packed sequence counts (the plan's
media epochs are estimates from the manifest's token counts).  When a media source
has weight, every training batch carries the media fields of ``model/encoders.py``
(``media_patches``, ``media_kind``, ``media_positions``, ``media_group``,
``media_index``; text rows have none set) and ``loss_mask`` is 0 wherever the input
or the target is a media slot.  ``media_spec`` tells the trainer which encoder
settings the data needs.  Media sources are not part of the validation split.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from typing import Any

import grain
import numpy as np

from mixtures.config import MixtureError, Plan, plan_mixture

STATE_FORMAT = "corpusforge-mixture-state/1"
SPLITS = {"train": "train", "valid": "validation", "validation": "validation", "val": "validation"}
FIELDS = ("tokens", "segment_ids", "positions", "num_pad", "doc_token_offsets")


class LoaderError(MixtureError):
    """A loader problem (bad state, exhausted mixture, unsupported source), one line."""


def _seed(*parts: Any) -> int:
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8], 16)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _tag(parent: int, q: int, r: int) -> tuple[int, int, int]:
    return parent, q, int(r)


@functools.lru_cache(maxsize=64)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    ds = grain.MapDataset.range(n).shuffle(seed=seed)
    return np.fromiter((ds[epoch * n + k] for k in range(n)), np.int32, n)   # values in [0, n)


class ShuffledRange(grain.MapDataset):
    """``grain.MapDataset.range(n).shuffle(seed)``, with whole epochs of small ``n`` memoised.

    Grain's ``index_shuffle`` walks a domain of at least 2^16 indices, so one lookup
    in a permutation of ``n`` < 2^16 items costs ~2^16/n cycle-walking steps (5 ms at
    n = 10, 9 us at n = 65,536).  For such ``n`` an epoch's ``n`` values are computed
    once with Grain (~60 ms whatever ``n``) and kept (LRU, at most 64 x 256 KiB);
    larger ranges go to Grain on every lookup.  The values are Grain's (tested)."""

    SMALL = 1 << 16

    def __init__(self, n: int, seed: int):
        super().__init__()
        self._n, self._seed = int(n), int(seed)
        self._ds = grain.MapDataset.range(self._n).shuffle(seed=self._seed)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        if self._n > self.SMALL:
            return self._ds[index]
        epoch, i = divmod(int(index), self._n)
        return int(_epoch_permutation(self._n, self._seed, epoch)[i])

    def __str__(self) -> str:
        return f"ShuffledRange(n={self._n}, seed={self._seed})"


def interleave(k: int, counts: list[int]) -> tuple[int, int]:
    """Element ``k`` of the even interleaving of sources with these exact counts:
    (source, its rank among that source's elements so far).

    The closed form of Grain's ``MapDataset.mix`` (``_dataset_and_key_of_next_element``):
    source 0 holds ``ceil(k p0 / R)`` of the first ``k`` elements, the rest recurse on
    sources 1.. .  Over ``k`` in ``[0, sum(counts))`` source ``i`` appears exactly
    ``counts[i]`` times, its ranks increase with ``k``, and every prefix is within
    ``len(counts)`` of ``k counts[i] / sum(counts)``.  Written out because ``mix``
    rescales float weights to integers (min weight -> 100, truncated) and rejects
    zero weights, so it would not reproduce the apportioned counts exactly."""
    remaining = sum(counts)
    if not 0 <= k < remaining:
        raise IndexError(f"element {k} outside the interleaving of {remaining}")
    cur, cur1 = k, k + 1
    for i, c in enumerate(counts):
        nxt, nxt1 = cur * (remaining - c) // remaining, cur1 * (remaining - c) // remaining
        if cur - nxt != cur1 - nxt1:
            return i, cur1 - nxt1 - 1
        remaining -= c
        cur, cur1 = nxt, nxt1
    raise AssertionError("unreachable: the counts sum to the range")


class StageSelection(grain.transforms.DatasetSelectionMap):
    """Stage-local example ``j`` -> (parent stream, stream position).

    The stage's ``M`` examples are the even interleaving of its planned per-source
    counts (``interleave``), shuffled inside consecutive windows of ``window``
    examples (a Grain permutation per window, like Grain's ``WindowShuffleMapDataset``
    but with an exact last, partial window): example ``j`` of window ``w`` is
    interleaving element ``w * window + perm_w[j - w * window]``.  The element's
    rank inside its source, plus the source's offset at the start of the stage,
    is the stream position."""

    def __init__(self, sequences: int, counts: list[int], offsets: list[int], seed: int, window: int):
        self._m = int(sequences)
        self._counts = [int(c) for c in counts]
        self._offsets = [int(o) for o in offsets]
        self._seed, self._window = int(seed), int(window)

    def __len__(self) -> int:
        return self._m

    def __getitem__(self, j: int) -> tuple[int, int]:
        if not 0 <= j < self._m:
            raise IndexError(f"stage example {j} out of range [0, {self._m})")
        w, i = divmod(int(j), self._window)
        start = w * self._window
        size = min(self._window, self._m - start)
        k = start + int(_epoch_permutation(size, _seed(self._seed, "window", w), 0)[i])
        src, rank = interleave(k, self._counts)
        return src, self._offsets[src] + rank


class MixtureSource:
    """A staged mixture as a trainer ``BatchSource`` (see the module docstring)."""

    def __init__(self, plan: Plan, batch_size: int, *, seq_len: int | None = None, split: str = "train",
                 tokenizer_dir: str | None = None):
        from tokenizer.format import PackedSource

        if split not in SPLITS:
            raise LoaderError(f"split {split!r}: use train or validation")
        if batch_size < 1:
            raise LoaderError(f"batch_size must be >= 1, got {batch_size}")
        self.plan = plan
        self.split = SPLITS[split]
        data = plan.data
        S = plan.seq_len
        L = S if seq_len is None else int(seq_len)
        if L not in (S, S - 1):
            raise LoaderError(f"the packed sequences are {S} tokens, so seq_len must be {S} (last position masked) "
                              f"or {S - 1} (inputs/targets shifted inside the record); got {L}: re-pack with "
                              f"--seq-len {L + 1}")
        self.batch_size = int(batch_size)
        self.seq_len = L
        self.tokens_per_example = S
        self.vocab_size = data.vocab_size
        self.pad_id = int(data.special_ids["pad"])
        self.source_names = list(data.sources)
        parts = plan.fingerprint_parts()
        self._parts = {**parts, "split": self.split, "seq_len": L}
        self.fingerprint = _hash(self._parts)
        if self.split == "train":
            used = [n for n in self.source_names if sum(st.counts[n] for st in plan.stages)]
        else:
            used = [n for n in self.source_names if data.sources[n].kind == "text" and data.sources[n].validation]
            if not used:
                raise LoaderError(f"mixture {plan.cfg.name}: no source holds out validation sequences "
                                  "(validation_sequences is 0)")
        self._parents = used                                    # parent stream i -> source name
        self._sid = {n: self.source_names.index(n) for n in used}
        self._readers = {n: PackedSource(data.sources[n].tokens_dir, data.sources[n].packed, fields=FIELDS)
                         for n in used if data.sources[n].kind == "text"}
        for n, r in self._readers.items():
            if r.manifest["fingerprint"] != data.sources[n].manifest_fingerprint:
                raise LoaderError(f"source {n}: the token manifest changed while loading (re-run)")
        self._media: dict[str, Any] = {}
        self.media_spec: dict[str, int] | None = None
        media_used = [n for n in used if data.sources[n].kind == "media"]
        if media_used:
            self._open_media(media_used, tokenizer_dir)
            self._readers.update(self._media)
            self._parts["media"] = _hash({n: m.fingerprint for n, m in self._media.items()})
            self.fingerprint = _hash(self._parts)
        self._index = self._build_index()
        self.total_examples = plan.total_sequences if self.split == "train" else None
        self._e = 0
        self._consumed: dict[str, dict[str, list[int]]] = {}

    @classmethod
    def from_config(cls, mixture: str, batch_size: int, split: str = "train", seed: int | None = None, *,
                    seq_len: int | None = None, tokens_dir: str | None = None, corpus: str | None = None,
                    overrides: list[str] | None = None, tokenizer: str | None = None) -> "MixtureSource":
        """Load and validate a mixture YAML (repetition caps enforced) and build the
        loader.  ``seed`` (the trainer's data seed) replaces the YAML's when given."""
        ov = list(overrides or []) + ([f"seed={int(seed)}"] if seed is not None else [])
        plan = plan_mixture(mixture, overrides=ov, tokens_dir=tokens_dir, corpus=corpus)
        return cls(plan, batch_size, seq_len=seq_len, split=split, tokenizer_dir=tokenizer)

    # ------------------------------------------------------------ media sources
    def _open_media(self, names: list[str], tokenizer_dir: str | None) -> None:
        from mixtures.multimodal import MediaCost, MediaLoaderError, MediaPackedSource

        data = self.plan.data
        path = tokenizer_dir or self.plan.cfg.tokenizer
        if not path:
            raise LoaderError(f"mixture {self.plan.cfg.name}: media sources {', '.join(names)} have weight; set "
                              "tokenizer: (the tokenizer directory) so the loader can tokenize their text")
        path = path if "://" in path else os.path.abspath(os.path.expanduser(path))
        from tokenizer.format import FingerprintMismatch
        from tokenizer.sp import Tokenizer
        try:
            tok = Tokenizer.load(path)
        except (FingerprintMismatch, ValueError) as e:
            raise LoaderError(f"tokenizer {path}: {e}") from None
        if tok.sha256 != data.tokenizer_sha256:
            raise LoaderError(f"tokenizer {path} (sha256 {tok.sha256[:12]}) is not the one the text was packed "
                              f"with ({data.tokenizer_sha256[:12]})")
        add_bos = bool(next(iter(data.manifests.values())).get("add_bos", False))
        S = self.tokens_per_example
        try:
            for n in names:
                sd = data.sources[n]
                self._media[n] = MediaPackedSource(data.corpus_dir, data.media_manifest, sd.modality, sd.media_source,
                                                   tok, S, add_bos=add_bos, name=n)
            cost = MediaCost.from_manifest(data.media_manifest, data.corpus_dir)
        except MediaLoaderError as e:
            raise LoaderError(str(e)) from None
        self.media_spec = cost.spec()
        self._feature_dim = cost.feature_dim
        if self.split == "train":
            for n, m in self._media.items():
                total = sum(st.counts[n] for st in self.plan.stages)
                ep = total / len(m)
                if ep > data.sources[n].max_epochs * (1 + 1e-9):
                    raise LoaderError(f"mixture {self.plan.cfg.name}: media source {n} packs into {len(m):,} sequences "
                                      f"of {S} tokens, so its {total:,} planned sequences are {ep:.2f} epochs > max_epochs "
                                      f"{data.sources[n].max_epochs:g} (the plan's estimate from the manifest's token "
                                      f"counts was {self.plan.epochs(None, n):.2f}); lower its weight or raise max_epochs")

    def _n_train(self, name: str) -> int:
        """Training sequences of a source (a media source: its packed sequences)."""
        m = self._media.get(name)
        return len(m) if m is not None else self.plan.data.sources[name].train_sequences

    def media_stats(self) -> dict[str, dict[str, Any]]:
        """Per media source: one epoch's samples, sequences and tokens by kind (``MediaPackedSource.stats``)."""
        return {n: m.stats() for n, m in self._media.items()}

    # ------------------------------------------------------------ index pipeline
    def _build_index(self):
        plan, data = self.plan, self.plan.data
        seed = plan.cfg.seed
        streams = []
        for i, n in enumerate(self._parents):
            sd = data.sources[n]
            if self.split == "train":
                ds = ShuffledRange(self._n_train(n), _seed(seed, "source", n)).repeat()
            else:
                ds = grain.MapDataset.range(sd.train_sequences, sd.sequences).repeat()
            streams.append(ds.map_with_index(functools.partial(_tag, i)))
        if self.split == "validation":
            return grain.MapDataset.mix(streams)               # equal weights: round robin over sources
        stages = []
        for st in plan.stages:
            window = st.window
            for n in self._media:               # at most one epoch of every media source too
                if st.counts[n]:
                    window = min(window, max(1, len(self._media[n]) * st.sequences // st.counts[n]))
            sel = StageSelection(st.sequences, [st.counts[n] for n in self._parents],
                                 [st.offsets[n] for n in self._parents], _seed(seed, "stage", st.index, st.name),
                                 window)
            stages.append(grain.MapDataset.select_from_datasets(streams, sel))
        return grain.MapDataset.concatenate(stages)

    def locate(self, example: int) -> dict[str, Any]:
        """Where global example ``example`` comes from: stage, source, stream
        position, epoch and packed sequence index (no record is read)."""
        if example < 0 or (self.total_examples is not None and example >= self.total_examples):
            raise LoaderError(self._exhausted_msg(example, 1))
        i, q, r = self._index[example]
        n = self._parents[i]
        sd = self.plan.data.sources[n]
        if self.split == "train":
            stage = self.plan.stage_of(example).name
            epoch = q // self._n_train(n)
        else:
            stage, epoch = "validation", q // sd.validation
        return {"example": example, "stage": stage, "source": n, "source_id": self._sid[n], "stream_position": q,
                "epoch": epoch, "sequence": r}

    # ------------------------------------------------------------ batches
    def _exhausted_msg(self, e0: int, n: int) -> str:
        p = self.plan
        return (f"mixture {p.cfg.name}: batch needs examples {e0:,}..{e0 + n - 1:,} but the stages plan "
                f"{p.total_sequences:,} ({p.total_tokens:,} tokens); raise the last stage's budget or train fewer steps")

    def examples(self, e0: int, n: int) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """Examples ``[e0, e0 + n)`` as a batch, and where each row came from.  Pure:
        the loader's position does not move."""
        if e0 < 0 or (self.total_examples is not None and e0 + n > self.total_examples):
            raise LoaderError(self._exhausted_msg(e0, n))
        where = [self.locate(e) for e in range(e0, e0 + n)]
        # one read per record: array_record's __getitems__ starts a thread per call
        recs = [self._readers[w["source"]][w["sequence"]] for w in where]
        for w, rec in zip(where, recs):
            w["tokens"] = self.tokens_per_example - rec["num_pad"]
        return self._rows(recs, where), where

    def _rows(self, recs: list[dict[str, Any]], where: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        B, S, L = len(recs), self.tokens_per_example, self.seq_len
        toks = np.stack([r["tokens"] for r in recs])
        seg = np.stack([r["segment_ids"] for r in recs])
        pos = np.stack([r["positions"] for r in recs])
        if L == S - 1:
            targets, seg_next = toks[:, 1:], seg[:, 1:]
        else:
            targets = np.concatenate([toks[:, 1:], np.full((B, 1), self.pad_id, np.int32)], axis=1)
            seg_next = np.concatenate([seg[:, 1:], np.zeros((B, 1), np.int32)], axis=1)
        seg_in = seg[:, :L]
        mask = (seg_in > 0) & (seg_in == seg_next)
        if self.split == "validation":
            # the first held-out sequence may start inside a document that began in training
            for b, (w, r) in enumerate(zip(where, recs)):
                sd = self.plan.data.sources[w["source"]]
                if w["sequence"] == sd.train_sequences and len(r["doc_token_offsets"]) and r["doc_token_offsets"][0] > 0:
                    mask[b] &= seg_in[b] != 1
        sids = np.array([w["source_id"] for w in where], np.int32)
        batch = {
            "inputs": np.ascontiguousarray(toks[:, :L]),
            "targets": np.ascontiguousarray(targets),
            "segment_ids": np.ascontiguousarray(seg_in),
            "positions": np.ascontiguousarray(pos[:, :L]),
            "loss_mask": mask.astype(np.float32),
            "source_ids": np.repeat(sids[:, None], L, axis=1),
        }
        if self._media and self.split == "train":
            from mixtures.multimodal import collate_media, media_loss_mask

            batch["loss_mask"] *= media_loss_mask(recs, L)
            batch.update(collate_media(recs, L, self._feature_dim))
        return batch

    def next_batch(self) -> dict[str, np.ndarray]:
        batch, where = self.examples(self._e, self.batch_size)
        for w in where:
            c = self._consumed.setdefault(w["stage"], {}).setdefault(w["source"], [0, 0])
            c[0] += 1
            c[1] += w["tokens"]
        self._e += self.batch_size
        return batch

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        """Batch ``step`` (from the start, at this batch size) without moving."""
        return self.examples(step * self.batch_size, self.batch_size)[0]

    # ------------------------------------------------------------ state
    @property
    def example(self) -> int:
        """Examples consumed so far (the next batch starts here)."""
        return self._e

    def consumed(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per stage and source: sequences and tokens (non-padding) handed out so far."""
        return {st: {src: {"sequences": c[0], "tokens": c[1]} for src, c in per.items()}
                for st, per in self._consumed.items()}

    def stage_hashes(self) -> list[dict[str, Any]]:
        """Per stage: name, example range and a hash of everything that decides its
        examples (mixture seed, counts, stream offsets, window).  Two mixtures with equal
        hashes for a stage hand out the same examples there (``warm_start`` relies on it)."""
        seed = self.plan.cfg.seed
        return [{"name": st.name, "start": st.start, "end": st.end,
                 "hash": _hash({"seed": seed, "index": st.index, "name": st.name, "start": st.start,
                                "sequences": st.sequences, "counts": st.counts, "offsets": st.offsets,
                                "window": st.window})}
                for st in self.plan.stages]

    def get_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "fingerprint": self.fingerprint, **self._parts,
                "example": self._e, "consumed": copy.deepcopy(self._consumed), "stages": self.stage_hashes()}

    def warm_start(self, state: dict[str, Any]) -> None:
        """Continue another run's position under this (different) mixture — the trainer's
        ``--init-from``, used by staged ablations (``mixtures/sweep.py``): a stage-1
        checkpoint is continued under many candidate stage-2 mixtures.

        Allowed: any change to the stages the saved run had not entered yet.  Required:
        the same packed data, split and seq_len, and every stage the saved run had
        entered planned identically here (same seed, budget, counts, offsets, window) —
        so the examples already trained on are exactly this mixture's first examples, and
        the warm-started run equals a run trained on this mixture from the start."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise LoaderError(f"not a mixture loader state (expected format {STATE_FORMAT!r}): {str(state)[:120]}")
        what = [k for k in ("data", "split", "seq_len") if state.get(k) != self._parts[k]]
        if what:
            raise LoaderError(f"warm start: the saved run used other {' / '.join(what)} (a warm start may change "
                              "the mixture's later stages, not the packed data, split or seq_len)")
        e = state.get("example")
        if not isinstance(e, int) or e < 0:
            raise LoaderError(f"saved loader state: bad example index {e!r}")
        old = state.get("stages")
        if not isinstance(old, list):
            raise LoaderError("warm start: the saved state has no stage hashes (saved by an older loader)")
        new = self.stage_hashes()
        for i, st in enumerate(old):
            if st.get("start", 0) >= e:
                break
            if i >= len(new) or new[i]["hash"] != st.get("hash"):
                raise LoaderError(f"warm start: the saved run trained {e:,} examples into stage {st.get('name')!r}, "
                                  f"but this mixture plans that stage differently (stage {i + 1} must keep its "
                                  "name, budget, weights and seed; change only later stages)")
        self.set_state({**state, "fingerprint": self.fingerprint, "mixture": self._parts["mixture"]})

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise LoaderError(f"not a mixture loader state (expected format {STATE_FORMAT!r}): {str(state)[:120]}")
        if state.get("fingerprint") != self.fingerprint:
            what = []
            if state.get("mixture") != self._parts["mixture"]:
                what.append("the mixture plan (stages, budgets, weights, caps, seed or validation split)")
            if state.get("data") != self._parts["data"]:
                what.append("the packed data (token manifest fingerprints)")
            if state.get("media") != self._parts.get("media"):
                what.append("the media sources (shards, tokenizer or packing)")
            for k in ("split", "seq_len"):
                if state.get(k) != self._parts[k]:
                    what.append(f"{k} ({state.get(k)} -> {self._parts[k]})")
            raise LoaderError(f"saved loader state has fingerprint {state.get('fingerprint')}, this loader "
                              f"{self.fingerprint}: {', '.join(what) or 'the fingerprint'} changed since it was "
                              "saved; resume with the same mixture and data, or start fresh")
        e = state.get("example")
        if not isinstance(e, int) or e < 0 or (self.total_examples is not None and e > self.total_examples):
            raise LoaderError(f"saved loader state: bad example index {e!r}")
        consumed = state.get("consumed")
        stages = {st.name for st in self.plan.stages} | {"validation"}
        ok = isinstance(consumed, dict) and all(
            st in stages and isinstance(per, dict) and all(
                src in self.source_names and isinstance(c, list) and len(c) == 2 and all(isinstance(x, int) for x in c)
                for src, c in per.items()) for st, per in consumed.items())
        if not ok:
            raise LoaderError(f"saved loader state: malformed consumed counters {str(consumed)[:120]}")
        self._e = e
        self._consumed = copy.deepcopy(consumed)

    # ------------------------------------------------------------ inspection
    def lineage(self, step: int, batch_size: int | None = None) -> list[dict[str, Any]]:
        """The rows of batch ``step``: where each came from and its document pieces
        (``tokenizer.format.Segment``: doc id, token offsets)."""
        b = batch_size or self.batch_size
        if self.total_examples is not None and (step < 0 or (step + 1) * b > self.total_examples):
            raise LoaderError(self._exhausted_msg(step * b, b))
        rows = []
        for k, e in enumerate(range(step * b, step * b + b)):
            w = self.locate(e)
            w["row"] = k
            w["pieces"] = self._readers[w["source"]].lineage(w["sequence"])
            rows.append(w)
        return rows

    def replay_consumed(self, upto: int, progress=None) -> dict[str, dict[str, list[int]]]:
        """Counters for examples ``[0, upto)`` recomputed from the index pipeline
        alone (no record reads: padding sits only in a source's last sequence)."""
        out: dict[str, dict[str, list[int]]] = {}
        S = self.tokens_per_example
        for e in range(upto):
            w = self.locate(e)
            sd = self.plan.data.sources[w["source"]]
            if w["source"] in self._media:
                tok = S - self._media[w["source"]].num_pad(w["sequence"])
            else:
                tok = S - (sd.pad_tokens if w["sequence"] == sd.sequences - 1 else 0)
            c = out.setdefault(w["stage"], {}).setdefault(w["source"], [0, 0])
            c[0] += 1
            c[1] += tok
            if progress is not None and e and e % 100_000 == 0:
                progress(e, upto)
        return out

    def __repr__(self) -> str:
        return (f"MixtureSource({self.plan.cfg.name!r}, split={self.split}, batch {self.batch_size} x {self.seq_len}, "
                f"{len(self._parents)} sources, at example {self._e:,})")


def build_batch_source(config_path: str, *, batch_size: int, seq_len: int, seed: int, split: str) -> MixtureSource:
    """The trainer's seam (``train/data.py:build_source(kind="mixture")``)."""
    return MixtureSource.from_config(config_path, batch_size, split=split, seed=seed, seq_len=seq_len)
