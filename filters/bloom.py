"""A Bloom filter over 64-bit keys, as a numpy bit array.

Why not a PyPI library: the maintained ones (rbloom, pybloom-live,
bloom-filter2, fastbloom-rs) take one Python object per call, hash it
themselves (rbloom's default hash is per-process unless a callback is given)
and answer one membership question per call.  Decontamination asks about every
n-gram of every document, and the keys are already well-mixed 64-bit hashes in
a numpy array, so a vectorised filter answers a whole document in a few numpy
operations, serialises to deterministic bytes (a side input must be identical
on every worker) and adds no dependency.  ``bench/bench_decontam.py`` measures it.

Probe ``i`` is ``splitmix64(key + i * golden) mod m``: k independent mixes (not
double hashing, whose ``h1 + i*h2`` collapses when ``h2 mod m`` is small, which
matters at the 1e-9 rates used here).
"""
from __future__ import annotations

import math

import numpy as np

_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_S1 = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 in, uint64 out)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _C1
    x = x ^ (x >> np.uint64(27))
    x = x * _C2
    return x ^ (x >> np.uint64(31))


class BloomFilter:
    """``BloomFilter.for_capacity(n, fp_rate)``; ``add(keys)``; ``contains(keys)``."""

    def __init__(self, n_bits: int, n_hashes: int, bits: np.ndarray | None = None, n_added: int = 0):
        if n_bits < 64 or n_hashes < 1:
            raise ValueError("a Bloom filter needs at least 64 bits and 1 hash")
        self.n_bits = int(n_bits)
        self.n_hashes = int(n_hashes)
        self.bits = np.zeros((self.n_bits + 7) // 8, dtype=np.uint8) if bits is None else bits
        self.n_added = int(n_added)

    @classmethod
    def for_capacity(cls, n_items: int, fp_rate: float) -> "BloomFilter":
        """Optimal size for ``n_items`` keys at false-positive rate ``fp_rate``."""
        if not 0 < fp_rate < 1:
            raise ValueError("fp_rate must be in (0, 1)")
        n = max(int(n_items), 1)
        m = max(64, math.ceil(-n * math.log(fp_rate) / (math.log(2) ** 2)))
        k = max(1, round(m / n * math.log(2)))
        return cls(m, k)

    def _probe(self, keys: np.ndarray, i: int) -> np.ndarray:
        # one independent mix per probe (plain double hashing h1 + i*h2 collapses
        # when h2 mod m is small, which is not rare enough at 1e-9 rates)
        salt = np.uint64(((i + 1) * 0x9E3779B97F4A7C15) % 2**64)
        return mix64(keys + salt) % np.uint64(self.n_bits)

    def add(self, keys: np.ndarray, chunk: int = 1 << 20) -> None:
        keys = np.asarray(keys, dtype=np.uint64)
        flags = np.unpackbits(self.bits, bitorder="little")[: self.n_bits].astype(bool)  # scratch: 1 byte/bit
        for s in range(0, len(keys), chunk):
            part = keys[s:s + chunk]
            for i in range(self.n_hashes):
                flags[self._probe(part, i).astype(np.int64)] = True
        self.bits = np.packbits(flags, bitorder="little")
        self.n_added += len(keys)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Boolean array: ``True`` where the key may be in the set (never a false
        negative).  Probes run one at a time on the keys still alive, so a
        non-member costs about two probes on a half-full filter, not ``k``."""
        keys = np.asarray(keys, dtype=np.uint64)
        alive = np.arange(len(keys))
        for i in range(self.n_hashes):
            if not len(alive):
                break
            pos = self._probe(keys[alive], i)
            bit = (self.bits[(pos >> np.uint64(3)).astype(np.int64)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1
            alive = alive[bit.astype(bool)]
        out = np.zeros(len(keys), dtype=bool)
        out[alive] = True
        return out

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)

    def expected_fp_rate(self) -> float:
        if not self.n_added:
            return 0.0
        return (1 - math.exp(-self.n_hashes * self.n_added / self.n_bits)) ** self.n_hashes

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, BloomFilter) and self.n_bits == other.n_bits and self.n_hashes == other.n_hashes
                and bool(np.array_equal(self.bits, other.bits)))

    def to_bytes(self) -> bytes:
        head = np.array([self.n_bits, self.n_hashes, self.n_added], dtype="<u8").tobytes()
        return head + self.bits.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "BloomFilter":
        n_bits, k, n_added = (int(x) for x in np.frombuffer(data[:24], dtype="<u8"))
        bits = np.frombuffer(data[24:], dtype=np.uint8).copy()
        if len(bits) != (n_bits + 7) // 8:
            raise ValueError("corrupt Bloom filter bytes")
        return cls(n_bits, k, bits, n_added)
