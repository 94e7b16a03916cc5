"""Near-duplicate removal and boilerplate lines on Beam (MinHash + LSH + exact
Jaccard + distributed connected components).  The document logic lives in
``filters/minhash.py`` and ``filters/boilerplate.py``; this module only wires it.

``NearDup`` (stage ``near_dup``), every step a GroupByKey::

  docs ─Sign─► (band key, doc key) entries, packed per partition ──GBK partition──► Buckets
        │      one bucket = one band hash; its pairs (a star + chain when large)
        │                                                    ──GBK leaf partition──► Dedup
        │                                                         (distinct edges)
        └──► (doc key, doc) ──────────────GBK doc key (with edge marks)──────────► Join
             non-candidates leave here (kept); a candidate sends its shingle set to
             the leaves of its buckets                          ──GBK leaf key──► Verify
             exact Jaccard ≥ threshold → edge             ──GBK partition × rounds──► CC
             each round: every edge goes to the partitions of both its ends; the
             connected components of a partition's edges become stars around their
             smallest key (``contract``: Kiveris et al.'s large-star/small-star idea,
             applied to whole partitions).  Each round's change count is a side input
             of the next round's gate: once a round changes nothing, later rounds
             receive nothing (the DAG is static, the work stops) ──GBK doc key──► Rank
             ──GBK component──► Pick (survivor = smallest policy key) ──GBK doc key──►
             Decide: kept, or a ``dropped`` row with cluster id, survivor id and the
             similarity to its nearest verified neighbour.

Bounded memory: band entries and edges travel as int64 arrays grouped by
``hash mod K`` partitions, K = auto from the corpus size (``partition_target``
entries per partition) — a worker holds one partition, never the corpus.
A bucket of at most ``bucket_all_pairs_max`` documents gives all its pairs; a
larger one (n identical documents) a star plus a chain, 2n edges, not n²
pairs; a leaf receives a bounded number of shingle sets (≤ 2 per band for large
buckets, ≤ all_pairs_max − 1 per band otherwise); connected components hold
numpy arrays of one partition's edges, never a Python list of a component.
Per-document shuffles carry only candidate documents after the first join.

Determinism: every partition is sorted before use, survivor ties end on the
smallest id, and the result of connected components (component = its smallest
doc key) does not depend on the order of the rounds' inputs, so the output is
identical with any number of workers.

``BoilerplateLines`` (stage ``boilerplate``): a distributed count of distinct
documents per normalised line key; keys at or above the threshold become a
small sorted side input; each worker removes those lines from its documents.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import AsDict, AsList, AsSingleton, TaggedOutput
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from filters.boilerplate import BoilerplateConfig, applies, distinct_keys, remove_boilerplate
from filters.minhash import (
    MinHasher,
    NearDupConfig,
    Shingler,
    band_keys,
    doc_key,
    jaccard_sorted,
    signature_similarity,
    survivor_rank,
)
from filters.normalize import dedup_key
from filters.schema import content_hash, dropped_row, stable_hash
from pipelines.stages import StageResult, with_text

log = logging.getLogger(__name__)

STAGE = "near_dup"
BOILER_STAGE = "boilerplate"
MIN_PARTITIONS = 1
MAX_PARTITIONS = 1 << 16
#: similarity buckets of the report's sample pairs (lower edges)
SIM_BUCKETS = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)

PAIR_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),       # pair id
    pa.field("bucket", pa.string(), nullable=False),
    pa.field("similarity", pa.float64(), nullable=False),
    pa.field("accepted", pa.bool_(), nullable=False),
    pa.field("id_a", pa.string(), nullable=False),
    pa.field("id_b", pa.string(), nullable=False),
    pa.field("text_a", pa.large_string()),
    pa.field("text_b", pa.large_string()),
])


# ======================================================================== helpers
def auto_partitions(n_items: int, target: int, fixed: int = 0) -> int:
    """Partitions so that each holds about ``target`` items (a power of two)."""
    if fixed:
        return fixed
    k = MIN_PARTITIONS
    while k * target < n_items and k < MAX_PARTITIONS:
        k *= 2
    return k


def pack(rows: np.ndarray) -> bytes:
    return np.ascontiguousarray(rows, dtype=np.int64).tobytes()


def unpack(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.int64).reshape(-1, 2)


def concat(values: Iterable[tuple[int, bytes]]) -> tuple[np.ndarray, int]:
    """Packed partition values (k, rows) -> all rows and the partition count k."""
    parts, k = [], 1
    for k, data in values:
        parts.append(unpack(data))
    return (np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)), k


def unique_rows(rows: np.ndarray) -> np.ndarray:
    """Rows sorted by (col0, col1), duplicates removed."""
    if len(rows) == 0:
        return rows
    r = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    keep = np.ones(len(r), dtype=bool)
    keep[1:] = (r[1:] != r[:-1]).any(axis=1)
    return r[keep]


def unique_rows_counts(rows: np.ndarray) -> np.ndarray:
    """How often each distinct row occurs (rows sorted by (col0, col1))."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    r = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    new = np.ones(len(r), dtype=bool)
    new[1:] = (r[1:] != r[:-1]).any(axis=1)
    return np.diff(np.append(np.flatnonzero(new), len(r)))


def by_partition(rows: np.ndarray, k: int, col: int = 0) -> Iterable[tuple[int, tuple[int, bytes]]]:
    """Split rows by ``row[col] mod k``: one (partition, (k, packed rows)) per
    partition (k travels with the data, so later steps need no side input)."""
    if len(rows) == 0:
        return
    part = rows[:, col] % k
    order = np.argsort(part, kind="stable")
    rows, part = rows[order], part[order]
    bounds = np.flatnonzero(np.diff(part)) + 1
    for chunk, p in zip(np.split(rows, bounds), np.split(part, bounds)):
        yield int(p[0]), (k, pack(chunk))


def groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a sorted key column: (start index of each run, run id of each row)."""
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = keys[1:] != keys[:-1]
    return np.flatnonzero(starts), np.cumsum(starts) - 1


def sim_bucket(s: float) -> str:
    lo = max(b for b in SIM_BUCKETS if s >= b - 1e-12)
    if lo >= 1.0:
        return "1.00"
    hi = SIM_BUCKETS[SIM_BUCKETS.index(lo) + 1]
    return f"{lo:.2f}-{hi:.2f}"


def cluster_id(comp: int) -> str:
    return f"nd-{comp & ((1 << 64) - 1):016x}"


def _wv(value):
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


def merge_metric(kv):
    name, values = kv
    values = list(values)
    return name, (max(values) if name.endswith("_max") else sum(values))


# ===================================================================== signatures
@beam.typehints.with_output_types(Any)
class _SignFn(beam.DoFn):
    """doc -> (doc key, ("d", doc)); band entries (band key, doc key) packed per
    partition on the 'bands' output, signed in vectorised batches."""

    def __init__(self, cfg: NearDupConfig, bands: int, rows: int):
        self._cfg, self._bands, self._rows = cfg, bands, rows

    def setup(self):
        self._shingler = Shingler(self._cfg.shingle)
        self._hasher = MinHasher(self._cfg.num_perm, self._cfg.seed)

    def start_bundle(self):
        self._keys: list[int] = []
        self._hashes: list[np.ndarray] = []
        self._k = MIN_PARTITIONS

    def process(self, doc, k):
        self._k = k
        key = doc_key(doc["id"])
        yield key, ("d", doc)
        h = self._shingler.hashes(doc["text"])
        if len(h):
            self._keys.append(key)
            self._hashes.append(h)
        else:
            yield TaggedOutput("metrics", ("docs_without_shingles", 1))
        if len(self._keys) >= self._cfg.batch_docs:
            for out in self._flush():
                yield TaggedOutput("bands", out)

    def finish_bundle(self):
        for out in self._flush():
            yield TaggedOutput("bands", _wv(out))

    def _flush(self):
        if not self._keys:
            return []
        sigs = self._hasher.signatures(self._hashes)
        bk = band_keys(sigs, self._bands, self._rows).view(np.int64)
        entries = np.column_stack([bk.ravel(), np.repeat(np.array(self._keys, dtype=np.int64), self._bands)])
        self._keys, self._hashes = [], []
        return list(by_partition(entries, self._k, col=0))


def bucket_edges(rows: np.ndarray, all_pairs_max: int) -> np.ndarray:
    """Candidate edges (larger doc key, smaller doc key) from band entries sorted
    by (band key, doc key).  A bucket of at most ``all_pairs_max`` documents gives
    all its pairs; a larger one gives a star to its smallest key plus the chain of
    consecutive keys (2·n edges, not n²) — enough to connect it, and identical
    documents all verify against the star's hub."""
    first, run = groups(rows[:, 0])
    sizes = np.diff(np.append(first, len(rows)))
    size = sizes[run]
    doc = rows[:, 1]
    parts = []
    for d in range(1, max(2, min(all_pairs_max, int(sizes.max())))):
        same = run[d:] == run[:-d]
        if d > 1:
            same &= size[d:] <= all_pairs_max
        parts.append(np.column_stack([doc[d:][same], doc[:-d][same]]))
    big = (size > all_pairs_max) & (np.arange(len(rows)) != first[run])
    parts.append(np.column_stack([doc[big], doc[first[run[big]]]]))
    return unique_rows(np.concatenate(parts))


@beam.typehints.with_output_types(Any)
class _BucketsFn(beam.DoFn):
    """One partition of band entries -> candidate edges (leaf = larger key, hub =
    smaller key), sent to the leaf's partition."""

    def __init__(self, all_pairs_max: int):
        self._max = all_pairs_max

    def process(self, kv):
        rows, k = concat(kv[1])
        rows = unique_rows(rows)  # sorted by (band key, doc key)
        if len(rows) == 0:
            return
        first, _ = groups(rows[:, 0])
        sizes = np.diff(np.append(first, len(rows)))
        yield TaggedOutput("metrics", ("band_entries", len(rows)))
        yield TaggedOutput("metrics", ("buckets_shared", int((sizes > 1).sum())))
        yield TaggedOutput("metrics", ("bucket_size_max", int(sizes.max())))
        if (sizes > 1).any():
            yield from by_partition(bucket_edges(rows, self._max), k, col=0)


@beam.typehints.with_output_types(Any)
class _DedupEdgesFn(beam.DoFn):
    """Distinct candidate edges of one leaf partition -> join marks for both ends
    (and, without verification, the edges themselves for connected components)."""

    def __init__(self, verify: str):
        self._verify = verify

    def process(self, kv):
        rows, k = concat(kv[1])
        rows = unique_rows(rows)  # sorted by leaf
        yield TaggedOutput("metrics", ("candidate_pairs", len(rows)))
        # one mark per leaf (its hubs) and one per hub and partition (its leaves)
        first, _ = groups(rows[:, 0])
        for leaf, hubs in zip(rows[first, 0].tolist(), np.split(rows[:, 1], first[1:])):
            yield leaf, ("h", hubs.tobytes())
        by_hub = rows[np.lexsort((rows[:, 0], rows[:, 1]))]
        first, _ = groups(by_hub[:, 1])
        for hub, leaves in zip(by_hub[first, 1].tolist(), np.split(by_hub[:, 0], first[1:])):
            yield hub, ("l", leaves.tobytes())
        if self._verify == "none":
            for out in both_directions(rows, k):
                yield TaggedOutput("edges", out)


@beam.typehints.with_output_types(Any)
class _JoinFn(beam.DoFn):
    """Per doc key: the document and its candidate marks.  Non-candidates leave
    as kept; a candidate goes on (with its survivor rank) and ships its shingle
    set (or signature) to the leaves of the buckets it heads."""

    def __init__(self, cfg: NearDupConfig, source_rank: dict[str, int]):
        self._cfg = cfg
        self._rank = dict(source_rank)

    def setup(self):
        self._shingler = Shingler(self._cfg.shingle)
        self._hasher = MinHasher(self._cfg.num_perm, self._cfg.seed) if self._cfg.verify == "signature" else None

    def _payload(self, text: str) -> bytes:
        if self._cfg.verify == "signature":
            return self._hasher.signature(self._shingler.hashes(text)).tobytes()
        return self._shingler.shingle_set(text).tobytes()

    def process(self, kv):
        key, values = kv
        docs, hubs, has_leaves = [], set(), False
        for tag, v in values:  # pass 1: the document, the hubs of its buckets (≤ bands)
            if tag == "d":
                docs.append(v)
            elif tag == "h":
                hubs.update(np.frombuffer(v, dtype=np.int64).tolist())
            else:
                has_leaves = True
        if len(docs) != 1:
            # 64-bit id-hash collision (or a repeated id): never merged, all kept
            for d in docs:
                yield TaggedOutput("events", ((d["source"], STAGE, "key_collisions"), 1))
                yield d
            return
        doc = docs[0]
        if not hubs and not has_leaves:
            yield doc
            return
        yield TaggedOutput("cand", (key, ("d", doc)))
        yield TaggedOutput("rank", (key, ("r", survivor_rank(doc, self._cfg.survivor, self._rank), doc["id"], doc["source"])))
        if self._cfg.verify == "none":
            return
        payload = self._payload(doc["text"])
        if hubs:
            yield TaggedOutput("verify", (key, ("s", doc["id"], payload)))
        if has_leaves:
            for tag, v in values:  # pass 2 (group values are re-iterable)
                if tag == "l":
                    for leaf in np.frombuffer(v, dtype=np.int64).tolist():
                        yield TaggedOutput("verify", (leaf, ("o", key, doc["id"], payload)))


@beam.typehints.with_output_types(Any)
class _VerifyFn(beam.DoFn):
    """Per leaf: its own set and its hubs' sets -> exact Jaccard per pair.
    Accepted edges, the hubs' nearest partners, pair samples and counts are
    gathered per bundle and emitted in bulk (few elements, same result)."""

    def __init__(self, verify: str, threshold: float, samples_per_bucket: int):
        self._verify, self._threshold, self._samples = verify, threshold, samples_per_bucket

    def start_bundle(self):
        self._edges: list[tuple[int, int]] = []
        self._hub_best: dict[int, tuple[float, str]] = {}
        self._pairs: dict[str, list] = {}
        self._n = {"pairs_accepted": 0, "pairs_rejected": 0}
        self._k = 1

    def process(self, kv, k):
        self._k = k
        key, values = kv
        mine, my_id, hubs = None, None, {}
        for v in values:
            if v[0] == "s":
                my_id, mine = v[1], np.frombuffer(v[2], dtype=np.uint64)
            else:
                hubs[v[1]] = (v[2], v[3])
        if mine is None:
            return
        best = None
        for hub in sorted(hubs):
            hub_id, payload = hubs[hub]
            other = np.frombuffer(payload, dtype=np.uint64)
            sim = signature_similarity(mine, other) if self._verify == "signature" else jaccard_sorted(mine, other)
            ok = sim >= self._threshold - 1e-12
            self._n["pairs_accepted" if ok else "pairs_rejected"] += 1
            if self._samples:
                self._sample(sim, ok, my_id, hub_id)
            if ok:
                self._edges.append((key, hub))
                best = max(best, (sim, hub_id)) if best else (sim, hub_id)
                hb = self._hub_best.get(hub)
                self._hub_best[hub] = max(hb, (sim, my_id)) if hb else (sim, my_id)
        if best is not None:
            yield key, best
        if len(self._edges) >= self.FLUSH or len(self._hub_best) >= self.FLUSH:
            yield from self._flush(lambda v: v)

    FLUSH = 100_000  # bound the per-bundle buffers

    def _flush(self, wrap):
        if self._edges:
            for out in both_directions(np.array(self._edges, dtype=np.int64), self._k):
                yield TaggedOutput("edges", wrap(out))
        for hub, best in self._hub_best.items():
            yield wrap((hub, best))
        self._edges, self._hub_best = [], {}

    def _sample(self, sim, ok, a, b):
        bucket = sim_bucket(sim)
        pid = stable_hash(*sorted((a, b)), size=8)
        lst = self._pairs.setdefault(bucket, [])
        if len(lst) < self._samples or pid < lst[-1][0]:
            lst.append((pid, a, b, sim, ok))
            lst.sort()
            del lst[self._samples:]

    def finish_bundle(self):
        yield from self._flush(_wv)
        for bucket, lst in self._pairs.items():
            for item in lst:
                yield TaggedOutput("pairs", _wv((bucket, item)))
        for name, n in self._n.items():
            if n:
                yield TaggedOutput("metrics", _wv((name, n)))


# ============================================================ connected components
def both_directions(rows: np.ndarray, k: int) -> Iterable[tuple[int, bytes]]:
    """Edges (a, b) -> rows (a, b) in a's partition and (b, a) in b's partition."""
    return by_partition(np.concatenate([rows, rows[:, ::-1]]), k)


def contract(rows: np.ndarray) -> tuple[np.ndarray, int]:
    """One partition's step of connected components.

    ``rows``: every edge incident to the partition's nodes.  The connected
    components of these edges (scipy's csgraph, in C) are replaced by stars:
    ``(min, node)`` for every other node of each local component.  Stars span
    the same nodes, so the global components never change; a node's whole
    neighbourhood is local, so this contracts at least as much as a
    large-star + small-star pair of Kiveris et al. (2014) for that node, and
    more when neighbours share the partition.  Returns the canonical star edges
    (sorted, unique) and how many edges changed (symmetric difference);
    0 changes everywhere means every component is a star around its smallest
    key — the fixed point."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = unique_rows(np.sort(rows, axis=1))
    nodes, inv = np.unique(edges, return_inverse=True)
    inv = inv.reshape(-1, 2)
    n = len(nodes)
    graph = coo_matrix((np.ones(len(inv), dtype=np.int8), (inv[:, 0], inv[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    first = np.unique(label, return_index=True)[1]  # nodes are ascending: the first is the smallest
    mins = np.empty(len(first), dtype=np.int64)
    mins[label[first]] = nodes[first]
    m = mins[label]
    other = nodes != m
    out = unique_rows(np.column_stack([m[other], nodes[other]]))
    both = unique_rows_counts(np.concatenate([edges, out]))
    return out, int(np.count_nonzero(both == 1))


@beam.typehints.with_output_types(Any)
class _ContractFn(beam.DoFn):
    def process(self, kv):
        rows, k = concat(kv[1])
        if len(rows) == 0:
            return
        out, changes = contract(rows)
        yield TaggedOutput("changes", changes)
        yield from by_partition(out, k)


@beam.typehints.with_output_types(Any)
class _GateFn(beam.DoFn):
    """Star edges of the previous round: final ('done') when that round changed
    nothing; otherwise sent, both directions, to the next round."""

    def process(self, kv, changes):
        if sum(changes) == 0:
            yield TaggedOutput("done", kv)
        else:
            k, data = kv[1]
            yield from both_directions(unpack(data), k)


@beam.typehints.with_output_types(Any)
class _NotConvergedFn(beam.DoFn):
    def __init__(self, rounds: int):
        self._rounds = rounds

    def process(self, kv, changes):
        changes = sum(changes)
        if changes:
            raise RuntimeError(
                f"near_dup: connected components did not converge in {self._rounds} rounds "
                f"({changes} edges still changing); raise near_dup.cc_max_rounds")
        yield kv


class ConnectedComponents(beam.PTransform):
    """Edges (packed rows, both directions, keyed by the partition of the first
    node) -> star edges (component min, node) for every node that has an edge.

    Rounds are unrolled (a Beam graph is a DAG); each round's change count is a
    side input of the next round's gate, so once a round changes nothing the
    later rounds receive no input and do no work.  ``self.changes``: the change
    count PCollection of every round (for stats)."""

    def __init__(self, max_rounds: int, label: str = "CC"):
        super().__init__(label)
        self._rounds = max_rounds
        self.changes: list = []

    def expand(self, edges):
        done = []
        cur = edges
        for i in range(1, self._rounds + 1):
            if i > 1:
                gated = cur | f"Gate{i}" >> beam.ParDo(_GateFn(), AsList(self.changes[-1])).with_outputs(
                    "done", main="go")
                done.append(gated.done)
                cur = gated.go
            step = (cur | f"Group{i}" >> beam.GroupByKey()
                    | f"Contract{i}" >> beam.ParDo(_ContractFn()).with_outputs("changes", main="edges"))
            self.changes.append(step.changes)
            cur = step.edges
        last = cur | "CheckConverged" >> beam.ParDo(_NotConvergedFn(self._rounds), AsList(self.changes[-1]))
        return tuple(done) + (last,) | "Components" >> beam.Flatten()


# =========================================================== survivors and output
def _labels(kv):
    rows = unique_rows(unpack(kv[1][1]))  # (component min, node)
    for m, v in rows.tolist():
        yield v, ("m", m)
    for m in np.unique(rows[:, 0]).tolist():
        yield m, ("c", None)


@beam.typehints.with_output_types(Any)
class _RankFn(beam.DoFn):
    """Per doc key: its rank and its component label -> (component, member)."""

    def process(self, kv):
        key, values = kv
        rank, comp, center = None, None, False
        for v in values:
            if v[0] == "r":
                rank = v
            elif v[0] == "m":
                comp = v[1] if comp is None else min(comp, v[1])
            else:
                center = True
        # without a verified edge a candidate is a singleton: the decision step keeps it
        if rank is not None and (comp is not None or center):
            yield (key if comp is None else comp), (rank[1], rank[2], key, rank[3])


@beam.typehints.with_output_types(Any)
class _PickFn(beam.DoFn):
    """Per component: the member with the smallest policy key survives (two
    streaming passes over the group; nothing is collected)."""

    def process(self, kv):
        comp, members = kv
        best, n = None, 0
        for rank, doc_id, key, source in members:
            n += 1
            cand = (rank, doc_id, key, source)
            if best is None or cand[:3] < best[:3]:
                best = cand
        yield TaggedOutput("sizes", (n, 1))
        yield TaggedOutput("events", ((best[3], STAGE, "clusters"), 1))
        for _, _, key, _ in members:
            yield key, ("x", comp, best[1], n, key == best[2])


@beam.typehints.with_output_types(Any)
class _DecideFn(beam.DoFn):
    def process(self, kv):
        _, values = kv
        doc, dec, best = None, None, None
        for v in values:
            if v[0] == "d":
                doc = v[1]
            elif v[0] == "x":
                dec = v
            else:
                best = v[1]
        if doc is None:
            return
        if dec is None or dec[4]:
            yield doc
            return
        _, comp, surv, size, _ = dec
        detail = {"cluster_size": size}
        if best is not None:
            detail.update(nearest_id=best[1], nearest_similarity=round(best[0], 6))
        row = dropped_row(doc, STAGE, "near_duplicate", survivor_id=surv, cluster_id=cluster_id(comp),
                          score=None if best is None else best[0], detail=detail)
        yield TaggedOutput("dropped", with_text(row, doc))


# ========================================================================== stage
class NearDup(beam.PTransform):
    """The ``near_dup`` stage: docs -> StageResult(kept, dropped, events).

    ``report_dir``: when given, also writes ``near_dup/stats.json`` and sample
    pairs with text per similarity bucket (``near_dup/pairs-*.parquet``)."""

    def __init__(self, cfg: NearDupConfig, source_rank: dict[str, int] | None = None, *,
                 report_dir: str | None = None, compression: str = "zstd"):
        super().__init__("NearDup")
        self._cfg = cfg
        self._rank = dict(source_rank or {})
        self._report_dir = report_dir
        self._compression = compression

    def expand(self, docs):
        cfg = self._cfg
        bands, rows = cfg.lsh()
        n_docs = docs | "CountDocs" >> beam.combiners.Count.Globally()
        k_side = AsSingleton(n_docs | "Partitions" >> beam.Map(
            lambda n: auto_partitions(n * bands, cfg.partition_target, cfg.partitions)))

        signed = docs | "Sign" >> beam.ParDo(_SignFn(cfg, bands, rows), k_side).with_outputs("bands", "metrics", main="docs")
        buckets = (signed.bands | "GroupBands" >> beam.GroupByKey()
                   | "Buckets" >> beam.ParDo(_BucketsFn(cfg.bucket_all_pairs_max)).with_outputs("metrics", main="edges"))
        dedup = (buckets.edges | "GroupEdges" >> beam.GroupByKey()
                 | "DedupEdges" >> beam.ParDo(_DedupEdgesFn(cfg.verify)).with_outputs("edges", "metrics", main="marks"))
        joined = ((signed.docs, dedup.marks) | "JoinIn" >> beam.Flatten() | "GroupDocs" >> beam.GroupByKey()
                  | "Join" >> beam.ParDo(_JoinFn(cfg, self._rank)).with_outputs("cand", "rank", "verify", "events", main="kept"))
        metrics = [signed.metrics, buckets.metrics, dedup.metrics]
        if cfg.verify == "none":
            edges, best, pairs = dedup.edges, None, None
        else:
            ver = (joined.verify | "GroupVerify" >> beam.GroupByKey()
                   | "Verify" >> beam.ParDo(_VerifyFn(cfg.verify, cfg.threshold, cfg.sample_pairs_per_bucket), k_side)
                   .with_outputs("edges", "pairs", "metrics", main="best"))
            edges, best, pairs = ver.edges, ver.best, ver.pairs
            metrics.append(ver.metrics)

        cc = ConnectedComponents(cfg.cc_max_rounds)
        comps = edges | cc
        for i, ch in enumerate(cc.changes, 1):
            metrics.append(ch | f"RoundMetric{i}" >> beam.Map(lambda n, i=i: (f"cc_round_{i:03d}_changes", n)))

        labels = comps | "Labels" >> beam.FlatMap(_labels)
        members = ((joined.rank, labels) | "RankIn" >> beam.Flatten() | "GroupRank" >> beam.GroupByKey()
                   | "Rank" >> beam.ParDo(_RankFn()))
        picked = (members | "GroupComponents" >> beam.GroupByKey()
                  | "Pick" >> beam.ParDo(_PickFn()).with_outputs("sizes", "events", main="decisions"))
        decide_in = [joined.cand, picked.decisions]
        if best is not None:
            decide_in.append(best | "Best" >> beam.CombinePerKey(max) | "BestTag" >> beam.MapTuple(lambda k_, v: (k_, ("b", v))))
        decided = (tuple(decide_in) | "DecideIn" >> beam.Flatten() | "GroupDecide" >> beam.GroupByKey()
                   | "Decide" >> beam.ParDo(_DecideFn()).with_outputs("dropped", main="kept"))

        kept = (joined.kept, decided.kept) | "NearDupKept" >> beam.Flatten()
        events = (joined.events, picked.events) | "NearDupEvents" >> beam.Flatten()
        if self._report_dir:
            self._write_report(docs.pipeline, n_docs, k_side, bands, rows, metrics, picked.sizes, pairs, joined.cand)
        return StageResult(kept, decided.dropped, events)

    # ------------------------------------------------------------ report files
    def _write_report(self, p, n_docs, k_side, bands, rows, metrics, sizes, pairs, cand):
        from pipelines.outputs import WriteShards, join, write_json

        cfg, out = self._cfg, self._report_dir
        all_metrics = (tuple(metrics) | "AllMetrics" >> beam.Flatten() | "GroupMetrics" >> beam.GroupByKey()
                       | "MergeMetrics" >> beam.Map(merge_metric))
        hist = sizes | "SizeHist" >> beam.CombinePerKey(sum)

        def write_stats(_, n, k, metric_list, hist_list):
            m = dict(metric_list)
            # a round that received edges reports its changes; after convergence rounds receive nothing
            run = [v for _, v in sorted((name, v) for name, v in m.items() if name.startswith("cc_round_"))]
            stats = {
                "stage": STAGE,
                "config": cfg.model_dump(mode="json"),
                "bands": bands, "rows": rows, "partitions": k, "documents": n,
                "metrics": {name: v for name, v in sorted(m.items()) if not name.startswith("cc_round_")},
                "cc_changes_per_round": run,
                "cc_rounds_run": len(run),
                "cc_max_rounds": cfg.cc_max_rounds,
                "clusters": sum(c for _, c in hist_list),
                "cluster_size_histogram": {str(s): c for s, c in sorted(hist_list)},
            }
            write_json(join(out, STAGE, "stats.json"), stats)
            log.info("near_dup: %d documents, %d candidate pairs (%d accepted), %d clusters; connected components "
                     "converged after %d round(s)", n, stats["metrics"].get("candidate_pairs", 0),
                     stats["metrics"].get("pairs_accepted", 0), stats["clusters"], len(run))
            yield stats["clusters"]

        (p | "NearDupStatsTrigger" >> beam.Create([None])
           | "NearDupStats" >> beam.ParDo(write_stats, AsSingleton(n_docs), k_side, AsList(all_metrics), AsList(hist)))
        if pairs is None or cfg.sample_pairs_per_bucket == 0:
            return
        k, nchar = cfg.sample_pairs_per_bucket, cfg.sample_chars
        samples = (pairs | "SamplePairs" >> beam.combiners.Top.PerKey(k, key=lambda v: v[0], reverse=True)
                   | "SampleFlat" >> beam.FlatMap(lambda kv: [(kv[0],) + v for v in kv[1]]))

        def wanted_texts(kv, sample_list):
            doc = kv[1][1]
            ids = {s[2] for s in sample_list} | {s[3] for s in sample_list}
            if doc["id"] in ids:
                yield doc["id"], doc["text"][:nchar]

        texts = cand | "SampleTexts" >> beam.FlatMap(wanted_texts, AsList(samples))

        def rows_fn(_, sample_list, text_map):
            for bucket, pid, a, b, sim, ok in sample_list:
                yield {"id": pid, "bucket": bucket, "similarity": float(sim), "accepted": bool(ok), "id_a": a, "id_b": b,
                       "text_a": text_map.get(a), "text_b": text_map.get(b)}

        pair_rows = (p | "PairRowsTrigger" >> beam.Create([None])
                     | "PairRows" >> beam.ParDo(rows_fn, AsList(samples), AsDict(texts)))
        pair_rows | "WritePairs" >> WriteShards(out, STAGE, PAIR_SCHEMA, prefix_fn=lambda r: "pairs", size_fn=lambda r: 1,
                                                target=1_000_000, compression=self._compression, label="WriteNearDupPairs")


# =================================================================== boilerplate
@beam.typehints.with_output_types(Any)
class _LineKeysFn(beam.DoFn):
    """Distinct line keys per document, counted per bundle (one count per
    document), emitted as packed (key, count) rows per partition."""

    def __init__(self, cfg: BoilerplateConfig):
        self._cfg = cfg

    def start_bundle(self):
        self._parts: list[np.ndarray] = []
        self._n = 0
        self._k = MIN_PARTITIONS

    def process(self, doc, k):
        self._k = k
        if not applies(doc, self._cfg):
            return
        keys = distinct_keys(doc["text"], self._cfg)
        if len(keys):
            self._parts.append(keys)
            self._n += len(keys)
        if self._n >= 1_000_000:
            yield from self._flush()

    def finish_bundle(self):
        for out in self._flush():
            yield _wv(out)

    def _flush(self):
        if not self._parts:
            return []
        keys, counts = np.unique(np.concatenate(self._parts), return_counts=True)
        self._parts, self._n = [], 0
        return list(by_partition(np.column_stack([keys, counts.astype(np.int64)]), self._k))


@beam.typehints.with_output_types(Any)
class _FrequentKeysFn(beam.DoFn):
    def __init__(self, cfg: BoilerplateConfig):
        self._cfg = cfg

    def process(self, kv, n_docs):
        rows, _ = concat(kv[1])
        if len(rows) == 0:
            return
        keys, inv = np.unique(rows[:, 0], return_inverse=True)
        counts = np.bincount(inv, weights=rows[:, 1]).astype(np.int64)
        floor = max(self._cfg.min_docs, math.ceil(self._cfg.min_doc_fraction * n_docs))
        sel = counts >= floor
        if sel.any():
            yield pack(np.column_stack([keys[sel], counts[sel]]))


class _TopKeys(beam.CombineFn):
    """Global set of boilerplate keys: the ``max_keys`` most frequent, as packed
    (key, docs) rows sorted by key."""

    def __init__(self, max_keys: int):
        self._max = max_keys

    def _trim(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) > self._max:
            rows = rows[np.lexsort((rows[:, 0], -rows[:, 1]))][: self._max]
        return rows

    def create_accumulator(self):
        return np.zeros((0, 2), dtype=np.int64)

    def add_input(self, acc, data):
        return self._trim(np.concatenate([acc, unpack(data)]))

    def merge_accumulators(self, accs):
        return self._trim(np.concatenate(list(accs)))

    def extract_output(self, acc):
        return pack(acc[np.argsort(acc[:, 0], kind="stable")])


@beam.typehints.with_output_types(Any)
class _RemoveLinesFn(beam.DoFn):
    def __init__(self, cfg: BoilerplateConfig):
        self._cfg = cfg

    def setup(self):
        self._seen: set[int] = set()  # keys whose text this worker already reported

    def process(self, doc, table):
        if not applies(doc, self._cfg):
            yield doc
            return
        rows = unpack(table)
        if len(rows) == 0:
            yield doc
            return
        new, n, removed = remove_boilerplate(doc["text"], self._cfg, rows[:, 0])
        if n == 0:
            yield doc
            return
        src = doc["source"]
        yield TaggedOutput("events", ((src, BOILER_STAGE, "docs_modified"), 1))
        yield TaggedOutput("events", ((src, BOILER_STAGE, "lines_removed"), n))
        for key, text in removed:
            if key not in self._seen and len(self._seen) < 100_000:
                self._seen.add(key)
                yield TaggedOutput("texts", (key, text))
        if not new.strip():
            row = dropped_row(doc, BOILER_STAGE, "empty_after_boilerplate", score=float(n), detail={"lines_removed": n})
            yield TaggedOutput("dropped", with_text(row, doc))
            return
        scores = {**(doc.get("scores") or {}), "boilerplate.lines_removed": float(n)}
        yield {**doc, "text": new, "content_hash": content_hash(dedup_key(new)), "scores": scores}


class BoilerplateLines(beam.PTransform):
    """The ``boilerplate`` stage: docs -> StageResult(kept (lines removed), dropped
    (documents that were only boilerplate), events (docs_modified, lines_removed))."""

    def __init__(self, cfg: BoilerplateConfig, *, report_dir: str | None = None):
        super().__init__("Boilerplate")
        self._cfg = cfg
        self._report_dir = report_dir

    def expand(self, docs):
        cfg = self._cfg
        n_docs = docs | "CountDocs" >> beam.combiners.Count.Globally()
        k_side = AsSingleton(n_docs | "Partitions" >> beam.Map(
            lambda n: auto_partitions(n * 50, 4_000_000, cfg.partitions)))
        table = (docs | "LineKeys" >> beam.ParDo(_LineKeysFn(cfg), k_side)
                 | "GroupLineKeys" >> beam.GroupByKey()
                 | "FrequentKeys" >> beam.ParDo(_FrequentKeysFn(cfg), AsSingleton(n_docs))
                 | "TopKeys" >> beam.CombineGlobally(_TopKeys(cfg.max_keys)))
        res = docs | "RemoveLines" >> beam.ParDo(_RemoveLinesFn(cfg), AsSingleton(table)).with_outputs(
            "events", "dropped", "texts", main="kept")
        if self._report_dir:
            from pipelines.outputs import join, write_json

            texts = res.texts | "MinText" >> beam.CombinePerKey(min)
            top_n = cfg.report_top

            def write(_, table_bytes, text_map, n):
                rows = unpack(table_bytes)
                order = np.lexsort((rows[:, 0], -rows[:, 1]))
                top = [{"docs": int(rows[i, 1]), "text": text_map.get(int(rows[i, 0]), "")}
                       for i in order if int(rows[i, 0]) in text_map][:top_n]
                write_json(join(self._report_dir, BOILER_STAGE, "stats.json"), {
                    "stage": BOILER_STAGE, "config": cfg.model_dump(mode="json"), "documents": n,
                    "boilerplate_keys": int(len(rows)), "top_removed": top})
                log.info("boilerplate: %d %ss occur in ≥ %d documents and are removed", len(rows), cfg.unit, cfg.min_docs)
                yield len(rows)

            (docs.pipeline | "BoilerStatsTrigger" >> beam.Create([None])
             | "BoilerStats" >> beam.ParDo(write, AsSingleton(table), AsDict(texts), AsSingleton(n_docs)))
        return StageResult(res.kept, res.dropped, res.events)


def stage_json(out_dir: str, stage: str) -> dict[str, Any] | None:
    """Read ``<out>/<stage>/stats.json`` (None if absent) — for the report and the bench."""
    from pipelines.reportlib import read_json

    return read_json(out_dir, f"{stage}/stats.json")


