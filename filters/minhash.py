"""Near-duplicate detection, the pure part: shingles, MinHash, LSH bands, Jaccard,
survivor policy.  No Beam here; ``pipelines/neardup.py`` wires these into
distributed steps.

Shingles
    ``Shingler`` turns a text into 64-bit shingle hashes.  Word shingles are
    n-grams of whitespace tokens (``str.split`` semantics) of the lower-cased
    text; character shingles are n-grams of the non-whitespace characters, used
    for text in scripts written without spaces (Han, kana, Thai, Lao, Khmer,
    Myanmar, Tibetan) when ``unit: auto`` (the default) sees enough of them.
    Hashing is vectorised with numpy: each token is a polynomial hash of its
    code points mod 2^64 (Horner form, checked against a plain Python reference
    in the tests; all tokens of a text from one prefix sum), finished with the
    MurmurHash3 64-bit finaliser; n-grams are a weighted sum of finalised token
    hashes, finalised again.  We do not call ``xxhash`` per token: ``str.split``
    plus one ``xxhash`` call per token costs ≈ 2× the vectorised hash on real
    text, and tokenising is the largest part of signing.

Signatures
    ``MinHasher`` applies datasketch's ``affine64`` permutation scheme
    (datasketch ≥ 2.0: fmix64 pre-mix, then ``a·h + b mod 2^64`` with odd ``a``)
    to a whole batch of documents at once.  The permutation parameters are taken
    from ``datasketch.MinHash`` itself, and the tests check that signatures are
    bit-identical to ``datasketch.MinHash(scheme="affine64").update_batch``.

Bands × rows
    ``lsh_params(threshold, num_perm, fp_weight, fn_weight)`` picks ``b`` bands of
    ``r`` rows (``b·r ≤ num_perm``) minimising ``fp_weight·FP + fn_weight·FN``,
    where FP is the area under the candidate curve ``P(s) = 1-(1-s^r)^b`` below
    the threshold and FN the area above it where pairs are missed (the same
    objective as ``datasketch.MinHashLSH``; the tests check agreement).  The
    trade-off: weighting FN up moves the S-curve left, so pairs just above the
    threshold are almost always candidates (recall), at the price of more
    candidate pairs below it.  Those cost only verification time when exact
    Jaccard verification is on (the default), so the default weights favour
    recall: with 112 permutations, threshold 0.8 and weights 0.05/0.95 this gives
    14 × 8 (datatrove's default), P(candidate) = 0.92 at s = 0.8, 0.99 at 0.85,
    0.57 at 0.7, 0.05 at 0.5.  ``describe_lsh`` prints that curve.

Survivor policy
    ``survivor_rank(doc, policy, source_rank)`` gives a sort key; the smallest
    key in a cluster survives.  Policy items: ``max:<scores key>`` /
    ``min:<scores key>`` (documents lacking the score rank after those that
    have it), ``longest``, ``shortest``, ``source_priority`` (earlier
    ``--input`` sources win) and ``smallest_id`` (required last: a total order).
"""
from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Iterable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

U64 = np.uint64
MASK64 = (1 << 64) - 1
_M1, _M2 = U64(0xFF51AFD7ED558CCD), U64(0xC4CEB9FE1A85EC53)
_S33 = U64(33)
#: odd multiplier of the per-token polynomial hash
_BASE = 0x100000001B3
#: per-position weights of n-gram combination and band combination (odd, fixed)
_POS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                 0x27D4EB2F165667C5, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB,
                 0xBF58476D1CE4E5B9, 0x2545F4914F6CDD1D, 0x5851F42D4C957F2D, 0x14057B7EF767814F,
                 0x9FB21C651E98DF25, 0xDA942042E4DD58B5, 0x6A09E667F3BCC909, 0xBB67AE8584CAA73B], dtype=U64)
_UNIT_TAG = {"word": U64(0x5E1F0A3D7C9B2461), "char": U64(0x3A8F6D2C1B4E5907)}
#: sentinel of an empty signature (no shingles): never a candidate
EMPTY = np.iinfo(np.uint64).max

# Whitespace exactly as ``str.split()`` / ``str.isspace`` (all below U+3001); the
# last entry stands for every code point above.
_WS = np.zeros(0x3002, dtype=bool)
for _c in range(0x3001):
    _WS[_c] = chr(_c).isspace()

# Scripts written without spaces between words: char shingles there.
_NOSPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width katakana
    (0x20000, 0x3FFFF),  # CJK extensions B..
)
_NOSPACE_BOUNDS = np.array([x for lo, hi in _NOSPACE_RANGES for x in (lo, hi + 1)], dtype=np.uint32)


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection), element-wise; returns a new array."""
    x = np.asarray(x, dtype=U64)
    x = x ^ (x >> _S33)
    x = x * _M1
    x ^= x >> _S33
    x *= _M2
    x ^= x >> _S33
    return x


def fmix64_int(v: int) -> int:
    """Scalar ``fmix64`` on a Python int (reference implementation for tests)."""
    v &= MASK64
    v ^= v >> 33
    v = (v * 0xFF51AFD7ED558CCD) & MASK64
    v ^= v >> 33
    v = (v * 0xC4CEB9FE1A85EC53) & MASK64
    v ^= v >> 33
    return v


def doc_key(doc_id: str) -> int:
    """Signed 64-bit node key of a document id (blake2b); stable across processes."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little", signed=True)


# ============================================================================ config
class ShingleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: word | char | auto (char shingles when ≥ char_script_min_fraction of the
    #: non-space characters are in scripts written without spaces)
    unit: Literal["auto", "word", "char"] = "auto"
    word_ngram: int = Field(5, ge=1, le=16)
    char_ngram: int = Field(5, ge=1, le=16)
    lowercase: bool = True
    char_script_min_fraction: float = Field(0.3, ge=0.0, le=1.0)


SurvivorItem = str
_POLICY_RE = re.compile(r"^(longest|shortest|source_priority|smallest_id|(max|min):[A-Za-z0-9_.\-]+)$")


def validate_policy(policy: Sequence[str]) -> list[str]:
    policy = list(policy)
    if not policy or policy[-1] != "smallest_id":
        raise ValueError("must end with 'smallest_id' so the choice is always deterministic")
    for p in policy:
        if not _POLICY_RE.match(p):
            raise ValueError(f"unknown policy item {p!r} (choose from max:<scores key>, min:<scores key>, "
                             "longest, shortest, source_priority, smallest_id)")
    return policy


class NearDupConfig(BaseModel):
    """``near_dup`` section: MinHash + LSH + verification + connected components."""
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    #: Jaccard similarity (of shingle sets) at or above which two documents are near-duplicates
    threshold: float = Field(0.8, gt=0.0, le=1.0)
    num_perm: int = Field(112, ge=2, le=1024)
    #: LSH bands × rows: derived from threshold and the weights below unless both are given
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    fp_weight: float = Field(0.05, ge=0.0)
    fn_weight: float = Field(0.95, ge=0.0)
    seed: int = Field(1, ge=0)
    shingle: ShingleConfig = ShingleConfig()
    #: candidate-pair check before clustering: exact (Jaccard of shingle sets),
    #: signature (MinHash estimate over all num_perm values), none (trust LSH)
    verify: Literal["exact", "signature", "none"] = "exact"
    #: survivor policy, applied in order (see filters/minhash.py)
    survivor: list[str] = ["longest", "smallest_id"]
    #: a bucket with at most this many documents yields all its pairs as candidates;
    #: a larger one a star to its smallest key plus a chain (bounded work, still connected)
    bucket_all_pairs_max: int = Field(16, ge=2, le=256)
    #: connected components: large-star/small-star rounds unrolled in the job; the
    #: job stops doing work once converged, and fails clearly if still not
    #: converged after this many (≈ 2·log2 of the longest chain is enough)
    cc_max_rounds: int = Field(24, ge=1, le=200)
    #: shuffle partitions for band buckets and graph steps; 0 = auto from corpus size
    partitions: int = Field(0, ge=0, le=1 << 16)
    #: auto partitions: about this many band entries / edges per partition
    partition_target: int = Field(4_000_000, ge=1000)
    #: documents hashed per vectorised batch on a worker
    batch_docs: int = Field(512, ge=1)
    #: report: candidate pairs sampled (with text) per similarity bucket
    sample_pairs_per_bucket: int = Field(3, ge=0)
    sample_chars: int = Field(1500, ge=0)

    @field_validator("survivor")
    @classmethod
    def _survivor(cls, v: list[str]) -> list[str]:
        return validate_policy(v)

    @model_validator(mode="after")
    def _bands_rows(self) -> "NearDupConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (derived from threshold)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands × rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        if self.fp_weight + self.fn_weight <= 0:
            raise ValueError("fp_weight + fn_weight must be > 0")
        return self

    def lsh(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows  # type: ignore[return-value]
        return lsh_params(self.threshold, self.num_perm, self.fp_weight, self.fn_weight)


# ========================================================================== shingles
class Shingler:
    """Text -> 64-bit shingle hashes (numpy uint64, one per n-gram position)."""

    #: texts longer than this are hashed in blocks split at whitespace
    BLOCK = 1 << 20

    def __init__(self, config: ShingleConfig | None = None):
        self.config = config or ShingleConfig()
        self._pw = np.ones(1, dtype=U64)   # _BASE ** i mod 2^64
        self._ipw = np.ones(1, dtype=U64)  # _BASE ** -i mod 2^64 (_BASE is odd: invertible)

    def _tables(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self._pw) < n:
            size = max(n, min(2 * len(self._pw), self.BLOCK + 1), 4096)
            for attr, base in (("_pw", _BASE), ("_ipw", pow(_BASE, -1, 1 << 64))):
                t = np.empty(size, dtype=U64)
                t[0] = 1
                t[1:] = U64(base)
                np.cumprod(t, out=t)  # wraps mod 2^64
                setattr(self, attr, t)
        return self._pw, self._ipw

    @staticmethod
    def codepoints(text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)

    def unit_for(self, cp: np.ndarray, ws: np.ndarray | None = None) -> str:
        unit = self.config.unit
        if unit != "auto":
            return unit
        if len(cp) == 0 or int(cp.max()) < _NOSPACE_RANGES[0][0]:
            return "word"
        nonspace = cp[~(_is_ws(cp) if ws is None else ws)]
        if len(nonspace) == 0:
            return "word"
        inside = np.searchsorted(_NOSPACE_BOUNDS, nonspace, side="right") & 1
        return "char" if inside.mean() >= self.config.char_script_min_fraction else "word"

    def token_hashes(self, cp: np.ndarray, ws: np.ndarray | None = None) -> np.ndarray:
        """Hash of each whitespace token: Σ c_j·B^(len-1-j) mod 2^64 (Horner form),
        finalised with fmix64.  Computed for all tokens at once from one prefix
        sum G[i] = Σ_{j<i} c_j·B^-j: token [s, e) hashes to (G[e] - G[s])·B^(e-1)."""
        ws = _is_ws(cp) if ws is None else ws
        n = len(cp)
        if n == 0:
            return np.zeros(0, dtype=U64)
        if n > self.BLOCK:  # split at whitespace so the power tables stay small
            cuts = [0]
            while cuts[-1] + self.BLOCK < n:
                nxt = np.flatnonzero(ws[cuts[-1] + self.BLOCK:])
                if not len(nxt):
                    break
                cuts.append(cuts[-1] + self.BLOCK + int(nxt[0]))
            if len(cuts) > 1:
                cuts.append(n)
                return np.concatenate([self.token_hashes(cp[a:b], ws[a:b]) for a, b in zip(cuts, cuts[1:])])
        edge = np.empty(n + 2, dtype=bool)
        edge[0] = edge[-1] = True
        edge[1:-1] = ws
        d = np.diff(edge.view(np.int8))
        starts = np.flatnonzero(d == -1)  # first char of each token
        ends = np.flatnonzero(d == 1)     # one past its last char
        if len(starts) == 0:
            return np.zeros(0, dtype=U64)
        pw, ipw = self._tables(n + 1)
        g = np.empty(n + 1, dtype=U64)
        g[0] = 0
        np.cumsum(cp * ipw[:n], out=g[1:])
        return fmix64((g[ends] - g[starts]) * pw[ends - 1])

    def hashes(self, text: str) -> np.ndarray:
        """Shingle hashes of ``text`` (duplicates kept; ``np.unique`` for a set)."""
        if self.config.lowercase:
            text = text.lower()
        cp = self.codepoints(text)
        ws = _is_ws(cp)
        unit = self.unit_for(cp, ws)
        if unit == "word":
            items = self.token_hashes(cp, ws)
            n = self.config.word_ngram
        else:
            items = fmix64(cp[~ws].astype(U64))
            n = self.config.char_ngram
        return ngram_hashes(items, n, _UNIT_TAG[unit])

    def shingle_set(self, text: str) -> np.ndarray:
        """Sorted unique shingle hashes (for exact Jaccard)."""
        return np.unique(self.hashes(text))


def _is_ws(cp: np.ndarray) -> np.ndarray:
    return _WS[np.minimum(cp, 0x3001)]


def ngram_hashes(items: np.ndarray, n: int, tag: np.uint64 = U64(0)) -> np.ndarray:
    """Hashes of the n-grams of a sequence of item hashes; a sequence shorter than
    ``n`` (but not empty) gives one shingle of all of it."""
    t = len(items)
    if t == 0:
        return np.zeros(0, dtype=U64)
    n_eff = min(n, t)
    m = t - n_eff + 1
    acc = items[:m] * _POS[0]
    for k in range(1, n_eff):
        acc += items[k:k + m] * _POS[k]
    acc ^= tag
    return fmix64(acc)


def reference_token_hash(token: str) -> int:
    """Plain-Python reference of one token's hash (tests compare against it)."""
    h = 0
    for ch in token:
        h = (h * _BASE + ord(ch)) & MASK64
    return fmix64_int(h)


# ======================================================================== signatures
class MinHasher:
    """Vectorised MinHash over many documents, bit-identical to
    ``datasketch.MinHash(num_perm, seed, scheme="affine64")`` fed the same
    64-bit shingle hashes (``hashfunc=int``)."""

    CHUNK = 4096  # shingles per block: the (num_perm × block) matrix stays in cache

    def __init__(self, num_perm: int = 112, seed: int = 1):
        from datasketch import MinHash

        a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine64").permutations
        self.num_perm = num_perm
        self.seed = seed
        self.a = np.ascontiguousarray(a, dtype=U64)[:, None]
        self.b = np.ascontiguousarray(b, dtype=U64)[:, None]
        self._buf = np.empty((num_perm, self.CHUNK), dtype=U64)

    def _block_min(self, hashes: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
        """min over shingles of a·fmix64(h)+b for one block; per document when
        ``offsets`` (segment starts) are given: (segments, num_perm)."""
        m = self._buf[:, : len(hashes)]
        np.multiply(self.a, fmix64(hashes)[None, :], out=m)
        np.add(m, self.b, out=m)
        if offsets is None:
            return m.min(axis=1)
        return np.minimum.reduceat(m, offsets, axis=1).T

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        return self.signatures([hashes])[0]

    def signatures(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """(n, num_perm) uint64; a document without shingles gets all ``EMPTY``."""
        out = np.full((len(arrays), self.num_perm), EMPTY, dtype=U64)
        group: list[int] = []
        size = 0

        def flush():
            nonlocal group, size
            if not group:
                return
            lens = np.array([len(arrays[i]) for i in group])
            offsets = np.concatenate(([0], np.cumsum(lens)[:-1]))
            out[group] = self._block_min(np.concatenate([arrays[i] for i in group]), offsets)
            group, size = [], 0

        for i, h in enumerate(arrays):
            n = len(h)
            if n == 0:
                continue
            if n >= self.CHUNK:
                acc = out[i]
                for s in range(0, n, self.CHUNK):
                    np.minimum(acc, self._block_min(h[s:s + self.CHUNK], None), out=acc)
                continue
            if size + n > self.CHUNK:
                flush()
            group.append(i)
            size += n
        flush()
        return out


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 bucket keys: a hash of each band's ``rows`` values and the band index."""
    if bands * rows > sigs.shape[1]:
        raise ValueError(f"bands × rows = {bands * rows} > num_perm = {sigs.shape[1]}")
    s = sigs[:, : bands * rows].reshape(len(sigs), bands, rows)
    w = np.array([fmix64_int(0xB5AD4ECEDA1CE2A9 + 2 * j) | 1 for j in range(rows)], dtype=U64)
    acc = (s * w).sum(axis=2, dtype=U64)  # wraps mod 2^64
    acc ^= np.array([fmix64_int(0x632BE59BD9B4E019 + j) for j in range(bands)], dtype=U64)[None, :]
    return fmix64(acc)


# =============================================================================== LSH
def candidate_probability(s, bands: int, rows: int):
    """P(a pair with Jaccard ``s`` shares at least one band) = 1-(1-s^r)^b (scalar or array)."""
    return 1.0 - (1.0 - np.power(s, float(rows))) ** float(bands)


def _integrate(f, lo: float, hi: float, n: int = 200) -> float:
    if hi <= lo:
        return 0.0
    xs = np.linspace(lo, hi, 2 * n + 1)  # Simpson's rule, vectorised
    ys = np.asarray(f(xs), dtype=float)
    h = (hi - lo) / (2 * n)
    return float(h / 3 * (ys[0] + ys[-1] + 4 * ys[1:-1:2].sum() + 2 * ys[2:-1:2].sum()))


def lsh_error(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    """(false-positive area below threshold, false-negative area above it)."""
    fp = _integrate(lambda s: candidate_probability(s, bands, rows), 0.0, threshold)
    fn = _integrate(lambda s: 1.0 - candidate_probability(s, bands, rows), threshold, 1.0)
    return fp, fn


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.05, fn_weight: float = 0.95) -> tuple[int, int]:
    """Bands and rows (b·r ≤ num_perm) minimising fp_weight·FP + fn_weight·FN
    (datasketch ``MinHashLSH``'s objective)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    best, opt = math.inf, (1, 1)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp, fn = lsh_error(threshold, b, r)
            err = fp * fp_weight + fn * fn_weight
            if err < best - 1e-12:
                best, opt = err, (b, r)
    return opt


def describe_lsh(bands: int, rows: int, points: Iterable[float] = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)) -> str:
    return ", ".join(f"P({s:.2f})={candidate_probability(s, bands, rows):.3f}" for s in points)


# =========================================================================== Jaccard
def jaccard_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique arrays."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    if len(a) > len(b):
        a, b = b, a
    idx = np.searchsorted(b, a)
    idx[idx == len(b)] = 0
    inter = int(np.count_nonzero(b[idx] == a)) if len(b) else 0
    return inter / (len(a) + len(b) - inter)


def signature_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """MinHash estimate of Jaccard: the share of equal signature values."""
    return float(np.count_nonzero(a == b)) / len(a)


# =================================================================== survivor policy
def survivor_rank(doc: dict[str, Any], policy: Sequence[str], source_rank: dict[str, int] | None = None) -> tuple:
    """Sort key of a cluster member; the smallest key survives."""
    source_rank = source_rank or {}
    key: list[Any] = []
    scores = doc.get("scores") or {}
    for p in policy:
        if p == "longest":
            key.append(-len(doc["text"]))
        elif p == "shortest":
            key.append(len(doc["text"]))
        elif p == "source_priority":
            key.append(source_rank.get(doc["source"], len(source_rank)))
        elif p == "smallest_id":
            key.append(doc["id"])
        else:
            kind, name = p.split(":", 1)
            v = scores.get(name)
            if v is None or not isinstance(v, (int, float)) or math.isnan(v):
                key.append((1, 0.0))
            else:
                key.append((0, -float(v) if kind == "max" else float(v)))
    return tuple(key)
