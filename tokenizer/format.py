"""The packed-token format: one ArrayRecord record per training sequence.

See ``tokenizer/FORMAT.md`` for the full description.  In short, a record is
(little-endian)::

    offset  size        field
    0       4           magic b"CFPK"
    4       1           version (1)
    5       1           token width W in bytes (2: uint16, 4: uint32)
    6       2           flags (reserved, 0)
    8       4  uint32   S   sequence length (tokens, padding included)
    12      4  uint32   K   number of segments (document pieces) in the sequence
    16      4  uint32   P   padding tokens at the end (only the last sequence of a source)
    20      4  uint32   B   length of the document-id blob
    24      S*W         tokens (pad_id in the last P slots), then zero bytes up to a multiple of 4
    ...     16*K        K x 4 uint32: start (in the sequence), length, doc_token_offset
                        (where the piece starts inside its document), doc_num_tokens
    ...     4*K uint32  end offset of each document id in the blob
    ...     B           document ids, UTF-8, concatenated

Segments are contiguous and in order: they cover positions [0, S - P).  A piece
starts a document when ``doc_token_offset == 0`` and ends it (its last token is
EOD) when ``doc_token_offset + length == doc_num_tokens``.

``PackedSource`` reads one source's shards as a Grain ``RandomAccessDataSource``
(``__len__``/``__getitem__``) through ``array_record``'s data source, without
TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

MAGIC = b"CFPK"
VERSION = 1
HEADER = struct.Struct("<4sBBHIIII")
TOKEN_MANIFEST = "token_manifest.json"
MANIFEST_FORMAT = "corpusforge-packed/1"
RECORD_FORMAT = "CFPK/1"
DEFAULT_FIELDS = ("tokens", "segment_ids", "positions")


class FormatError(ValueError):
    """A record, shard or token manifest that is not what it claims to be."""


class FingerprintMismatch(ValueError):
    """Data made from another tokenizer / corpus / config than the one expected."""


@dataclass(frozen=True)
class Segment:
    start: int            # position of the piece's first token in the sequence
    length: int
    doc_token_offset: int  # position of that token inside its document
    doc_num_tokens: int    # the whole document's tokens (EOD included)
    doc_id: str

    @property
    def starts_doc(self) -> bool:
        return self.doc_token_offset == 0

    @property
    def ends_doc(self) -> bool:
        return self.doc_token_offset + self.length == self.doc_num_tokens


def token_width(vocab_size: int, dtype: str = "auto") -> int:
    if dtype == "uint16" or (dtype == "auto" and vocab_size <= 1 << 16):
        if vocab_size > 1 << 16:
            raise FormatError(f"token_dtype uint16 cannot hold a vocabulary of {vocab_size}")
        return 2
    return 4


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def encode_record(tokens: Sequence[int] | np.ndarray, segments: Sequence[Segment], *, num_pad: int = 0,
                  width: int = 4) -> bytes:
    """One packed sequence to bytes; ``tokens`` has the full length S (padding included)."""
    toks = np.asarray(tokens)
    s = int(toks.shape[0])
    if width not in (2, 4):
        raise FormatError(f"token width must be 2 or 4, got {width}")
    if toks.size and (int(toks.min()) < 0 or int(toks.max()) >= (1 << (8 * width))):
        raise FormatError(f"token ids out of range for {8 * width}-bit storage")
    pos = 0
    for seg in segments:
        if seg.start != pos or seg.length <= 0:
            raise FormatError(f"segments must be contiguous and non-empty (segment at {seg.start}, expected {pos})")
        if not 0 <= seg.doc_token_offset < seg.doc_num_tokens or seg.doc_token_offset + seg.length > seg.doc_num_tokens:
            raise FormatError(f"segment of {seg.doc_id!r} lies outside its document")
        pos += seg.length
    if pos + num_pad != s:
        raise FormatError(f"segments cover {pos} tokens + {num_pad} padding, but the sequence has {s}")
    ids = [seg.doc_id.encode("utf-8") for seg in segments]
    blob = b"".join(ids)
    tok_bytes = toks.astype("<u2" if width == 2 else "<u4").tobytes()
    tok_bytes += b"\0" * (_pad4(len(tok_bytes)) - len(tok_bytes))
    seg_arr = np.array([[g.start, g.length, g.doc_token_offset, g.doc_num_tokens] for g in segments],
                       dtype="<u4").reshape(-1, 4)
    ends = np.cumsum([len(x) for x in ids], dtype=np.int64).astype("<u4") if ids else np.zeros(0, "<u4")
    header = HEADER.pack(MAGIC, VERSION, width, 0, s, len(segments), num_pad, len(blob))
    return b"".join((header, tok_bytes, seg_arr.tobytes(), ends.tobytes(), blob))


def _parse(data: bytes):
    if len(data) < HEADER.size:
        raise FormatError(f"record of {len(data)} bytes is shorter than the header")
    magic, version, width, _flags, s, k, p, b = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise FormatError(f"not a packed-token record (magic {magic!r})")
    if version != VERSION:
        raise FormatError(f"record version {version} is not supported (this reader knows {VERSION})")
    off = HEADER.size
    tok_len = _pad4(s * width)
    need = off + tok_len + 16 * k + 4 * k + b
    if len(data) != need:
        raise FormatError(f"record is {len(data)} bytes, its header says {need}")
    tokens = np.frombuffer(data, dtype="<u2" if width == 2 else "<u4", count=s, offset=off)
    off += tok_len
    segs = np.frombuffer(data, dtype="<u4", count=4 * k, offset=off).reshape(k, 4)
    off += 16 * k
    ends = np.frombuffer(data, dtype="<u4", count=k, offset=off)
    off += 4 * k
    return tokens, segs, ends, off, s, k, p


def decode_record(data: bytes, fields: Sequence[str] | None = None) -> dict[str, Any]:
    """Bytes to a dict of arrays.  Fields:

    ``tokens`` int32[S]; ``segment_ids`` int32[S] (1..K per document piece, 0 = padding);
    ``positions`` int32[S] (position inside the piece, from 0; 0 on padding);
    ``num_pad`` int; ``segment_starts``, ``segment_lengths``, ``doc_token_offsets``,
    ``doc_num_tokens`` int64[K]; ``doc_ids`` list[str] (K).

    ``fields`` limits the result (the default: all); ``doc_ids`` is the only
    non-numeric field (leave it out for batching in Grain)."""
    tokens, segs, ends, off, s, k, p = _parse(data)
    want = set(fields) if fields is not None else None
    out: dict[str, Any] = {}

    def need(name):
        return want is None or name in want

    lengths = segs[:, 1].astype(np.int64)
    starts = segs[:, 0].astype(np.int64)
    if need("tokens"):
        out["tokens"] = tokens.astype(np.int32)
    if need("segment_ids"):
        seg_ids = np.zeros(s, np.int32)
        seg_ids[: s - p] = np.repeat(np.arange(1, k + 1, dtype=np.int32), lengths)
        out["segment_ids"] = seg_ids
    if need("positions"):
        positions = np.zeros(s, np.int32)
        positions[: s - p] = np.arange(s - p, dtype=np.int64) - np.repeat(starts, lengths)
        out["positions"] = positions
    if need("num_pad"):
        out["num_pad"] = int(p)
    if need("segment_starts"):
        out["segment_starts"] = starts
    if need("segment_lengths"):
        out["segment_lengths"] = lengths
    if need("doc_token_offsets"):
        out["doc_token_offsets"] = segs[:, 2].astype(np.int64)
    if need("doc_num_tokens"):
        out["doc_num_tokens"] = segs[:, 3].astype(np.int64)
    if need("doc_ids"):
        blob = bytes(data[off:])
        prev = 0
        ids = []
        for e in ends.tolist():
            ids.append(blob[prev:e].decode("utf-8"))
            prev = e
        out["doc_ids"] = ids
    return out


def record_segments(data: bytes) -> list[Segment]:
    d = decode_record(data, ("segment_starts", "segment_lengths", "doc_token_offsets", "doc_num_tokens", "doc_ids"))
    return [Segment(int(a), int(b), int(c), int(n), i) for a, b, c, n, i in zip(
        d["segment_starts"], d["segment_lengths"], d["doc_token_offsets"], d["doc_num_tokens"], d["doc_ids"])]


# ----------------------------------------------------------------- manifests
def manifest_fingerprint(manifest: dict[str, Any]) -> str:
    """Hash of the token manifest (everything but the fingerprint itself)."""
    body = {k: v for k, v in manifest.items() if k != "fingerprint"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def load_token_manifest(packed_dir: str) -> dict[str, Any]:
    from tokenizer.corpus import exists, join, read_json

    path = join(packed_dir, TOKEN_MANIFEST)
    if not exists(path):
        raise FormatError(f"{packed_dir}: no {TOKEN_MANIFEST} (not packed, or packing did not finish)")
    m = read_json(path)
    if m.get("format") != MANIFEST_FORMAT:
        raise FormatError(f"{path}: format {m.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    if m.get("fingerprint") != manifest_fingerprint(m):
        raise FormatError(f"{path}: fingerprint does not match its content (the file was edited)")
    return m


def check_compatible(manifest: dict[str, Any], *, tokenizer: Any = None, corpus_manifest_hash: str | None = None,
                     seq_len: int | None = None, fingerprint: str | None = None) -> None:
    """Raise ``FingerprintMismatch`` (one clear line) unless the packed data were made
    with this tokenizer (a ``Tokenizer`` or its sha256), from this corpus and with
    this sequence length / token-manifest fingerprint."""
    where = manifest.get("_path", "packed tokens")
    if tokenizer is not None:
        sha = tokenizer if isinstance(tokenizer, str) else tokenizer.sha256
        have = manifest["tokenizer"]["model_sha256"]
        if sha != have:
            raise FingerprintMismatch(f"{where} were tokenized with model {have[:12]}, not the tokenizer given "
                                      f"({sha[:12]}): re-pack with this tokenizer or load the matching one")
    if corpus_manifest_hash is not None and corpus_manifest_hash != manifest["corpus"]["manifest_hash"]:
        raise FingerprintMismatch(f"{where} were packed from corpus manifest {manifest['corpus']['manifest_hash']}, "
                                  f"not {corpus_manifest_hash}: the corpus changed since packing (re-pack)")
    if seq_len is not None and seq_len != manifest["seq_len"]:
        raise FingerprintMismatch(f"{where} have seq_len {manifest['seq_len']}, not {seq_len}")
    if fingerprint is not None and fingerprint != manifest["fingerprint"]:
        raise FingerprintMismatch(f"{where} have fingerprint {manifest['fingerprint']}, expected {fingerprint}")


# ----------------------------------------------------------------- reader
class PackedSource:
    """One source's packed sequences, random access by global sequence index.

    A Grain ``RandomAccessDataSource``::

        src = PackedSource("artifacts/tokens", "web", tokenizer=tok)   # checks fingerprints
        ds = grain.MapDataset.source(src).shuffle(seed=0).batch(8)

    Items are dicts of ``fields`` (default tokens, segment_ids, positions: int32[S]);
    ``record(i)`` gives everything, ``lineage(i)`` the documents behind sequence i.
    """

    def __init__(self, packed_dir: str, source: str, *, fields: Sequence[str] = DEFAULT_FIELDS,
                 tokenizer: Any = None, corpus_manifest_hash: str | None = None, seq_len: int | None = None,
                 verify_shards: bool = False):
        from tokenizer.corpus import join

        m = load_token_manifest(packed_dir)
        m["_path"] = f"packed tokens in {packed_dir}"
        check_compatible(m, tokenizer=tokenizer, corpus_manifest_hash=corpus_manifest_hash, seq_len=seq_len)
        m.pop("_path")
        if source not in m["sources"]:
            raise FormatError(f"{packed_dir}: no source {source!r} (sources: {', '.join(sorted(m['sources']))})")
        self.packed_dir = packed_dir
        self.source = source
        self.fields = tuple(fields)
        self.manifest = m
        self.info = m["sources"][source]
        self.seq_len = m["seq_len"]
        self.paths = [join(packed_dir, sh["path"]) for sh in self.info["shards"]]
        if verify_shards:
            self.verify()
        self._ds = None
        if len(self._source()) != self.info["sequences"]:
            raise FormatError(f"{packed_dir}/{source}: shards hold {len(self._source())} sequences, "
                              f"the manifest says {self.info['sequences']}")

    def _source(self):
        if self._ds is None:
            from array_record.python.array_record_data_source import ArrayRecordDataSource

            self._ds = ArrayRecordDataSource(self.paths)
        return self._ds

    def verify(self) -> None:
        """Checks every shard's sha256 against the manifest (reads all bytes)."""
        from apache_beam.io.filesystems import FileSystems

        for sh, path in zip(self.info["shards"], self.paths):
            h = hashlib.sha256()
            with FileSystems.open(path) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != sh["sha256"]:
                raise FingerprintMismatch(f"{path}: sha256 differs from the token manifest (shard changed)")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ds"] = None  # reopened lazily in each worker process
        return state

    def __len__(self) -> int:
        return int(self.info["sequences"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return decode_record(self.raw(index), self.fields)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [decode_record(r, self.fields) for r in self._source().__getitems__(
            [self._index(i) for i in indices])]

    def _index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence {index} out of range for {self.source} ({n} sequences)")
        return i

    def raw(self, index: int) -> bytes:
        return self._source()[self._index(index)]

    def record(self, index: int) -> dict[str, Any]:
        return decode_record(self.raw(index))

    def lineage(self, index: int) -> list[Segment]:
        """The document pieces of sequence ``index``: ids and token offsets."""
        return record_segments(self.raw(index))

    def __repr__(self) -> str:
        return (f"PackedSource({self.packed_dir!r}, {self.source!r}: {len(self)} x {self.seq_len} tokens, "
                f"{len(self.paths)} shards)")


def packed_sources(packed_dir: str, **kwargs) -> dict[str, PackedSource]:
    """Every source of a packed directory."""
    m = load_token_manifest(packed_dir)
    return {s: PackedSource(packed_dir, s, **kwargs) for s in sorted(m["sources"])}


def document_index(packed_dir: str, source: str):
    """Arrow table ``id, token_start, num_tokens, first_sequence, last_sequence`` of a
    source (documents to sequences, the reverse of ``lineage``)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from tokenizer.corpus import join

    m = load_token_manifest(packed_dir)
    if source not in m["sources"]:
        raise FormatError(f"{packed_dir}: no source {source!r}")
    tables = []
    for rel in m["sources"][source]["doc_index"]:
        with FileSystems.open(join(packed_dir, rel)) as f:
            tables.append(pq.read_table(io.BytesIO(f.read())))
    return pa.concat_tables(tables).sort_by("token_start")
