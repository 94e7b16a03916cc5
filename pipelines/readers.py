"""File readers: one generator per input format, engine-free.

Each reader takes a path (any Beam filesystem: local, gs://, s3://, ...), the
source's config and the read config, and yields ``Event``s:

* ``("doc", record)``   a text record in the schema of ``filters.schema``;
* ``("dead", row)``     malformed input for the dead letters (``DEAD_LETTER_SCHEMA``);
* ``("drop", row)``     a well-formed input that is not a document we keep
                        (e.g. a non-HTML WARC response), as a ``DROPPED_SCHEMA`` row.

A reader never raises on bad data: every failure becomes a dead letter with a
reason, and reading goes on with the next record where the format allows it.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import re
import zlib
from typing import Any, BinaryIO, Iterator

from filters.schema import DEAD_LETTER_RAW_CAP, dead_letter_row, dropped_row, make_id, new_text_record

Event = tuple[str, dict[str, Any]]

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
JSONL_EXT = (".jsonl", ".json", ".ndjson")
WARC_EXT = (".warc", ".wet", ".arc")
PARQUET_EXT = (".parquet",)


# ------------------------------------------------------------------ file handling
def split_compression(path: str) -> tuple[str, str | None]:
    """``a/b.jsonl.gz`` -> (``a/b.jsonl``, ``gzip``)."""
    root, ext = os.path.splitext(path)
    comp = COMPRESSIONS.get(ext.lower())
    return (root, comp) if comp else (path, None)


def detect_reader(path: str, code_extensions: dict[str, str], text_extensions: list[str]) -> str | None:
    """The reader for a path by extension, or None when nothing fits."""
    from pipelines.media_readers import detect_media  # media files, WebDataset tars, media manifests

    media = detect_media(path)
    if media:
        return media
    base, _ = split_compression(path)
    ext = os.path.splitext(base)[1].lower()
    if ext in JSONL_EXT:
        return "jsonl"
    if ext in PARQUET_EXT:
        return "parquet"
    if ext in WARC_EXT:
        return "warc"
    if ext in text_extensions:
        return "text"
    if ext in code_extensions:
        return "code"
    return None


def _open_raw(path: str) -> BinaryIO:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


class _Decompressed(io.RawIOBase):
    """Streaming decompression that hands out every byte decoded *before* a
    truncation or corruption, then raises (``gzip.GzipFile`` loses the data of the
    read call that fails).  Multi-member gzip and multi-frame zstd are followed."""

    def __init__(self, raw: BinaryIO, kind: str, chunk: int = 1 << 16, lenient: bool = False):
        self._raw, self._kind, self._chunk = raw, kind, chunk
        self._lenient = lenient
        self.truncated: str | None = None  # lenient mode: why the data ended early
        self._buf = b""
        self._d = self._new()
        self._in_member = False
        self._error: Exception | None = None
        self._pos = 0

    def _new(self):
        if self._kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()

    def readable(self) -> bool:
        return True

    def tell(self) -> int:  # fastwarc asks for the position; the stream is not seekable
        return self._pos

    def _fill(self) -> None:
        while not self._buf:
            if self._error is not None:
                err, self._error = self._error, None
                if self._lenient:
                    self.truncated = f"{type(err).__name__}: {err}"
                    return
                raise err
            if self.truncated:
                return
            comp = self._raw.read(self._chunk)
            if not comp:
                if self._in_member:
                    if self._lenient:
                        self.truncated = "EOFError: compressed stream ended before its end-of-stream marker"
                        return
                    raise EOFError("compressed stream ended before its end-of-stream marker")
                return
            self._in_member = True
            try:
                while comp:
                    out = self._d.decompress(comp)
                    self._buf += out
                    if not getattr(self._d, "eof", False):
                        break
                    comp = self._d.unused_data
                    self._d = self._new()
                    self._in_member = bool(comp.strip(b"\0"))
                    if not self._in_member:
                        break
            except Exception as e:  # noqa: BLE001 - serve what we have, raise on next read
                self._error = e
                if not self._buf:
                    continue
                return

    def readinto(self, b) -> int:
        self._fill()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self._pos += n
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def open_decompressed(path: str) -> BinaryIO:
    """A binary stream of the decompressed content; errors surface on read, after
    everything decoded before them."""
    raw = _open_raw(path)
    _, comp = split_compression(path)
    if comp in ("gzip", "zstd"):
        return io.BufferedReader(_Decompressed(raw, comp), buffer_size=1 << 16)
    return raw


_STREAM_ERRORS = (EOFError, OSError, zlib.error, ValueError)


def _iter_lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None, str | None]]:
    """Yield ``(line_no, line, error)``; a line longer than ``max_bytes`` is yielded
    truncated with error ``record_too_large`` (the rest of it is skipped without
    holding it in memory); a decompression error ends the stream with its reason."""
    buf = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream, buffer_size=1 << 16)
    line_no = 0
    while True:
        try:
            line = buf.readline(max_bytes + 1)
        except _STREAM_ERRORS as e:
            yield line_no + 1, None, f"truncated_or_corrupt_stream: {type(e).__name__}: {e}"[:300]
            return
        if not line:
            return
        line_no += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            head = line
            size = len(line)
            try:
                while True:  # skip the remainder of the over-long line, in chunks
                    more = buf.readline(1 << 20)
                    size += len(more)
                    if not more or more.endswith(b"\n"):
                        break
            except _STREAM_ERRORS as e:
                yield line_no, head, f"record_too_large ({size} bytes, then {type(e).__name__})"
                return
            yield line_no, head, f"record_too_large ({size} bytes > max_record_bytes {max_bytes})"
            continue
        yield line_no, line, None


def _decode(raw: bytes, policy: str) -> tuple[str | None, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        if policy == "replace":
            return raw.decode("utf-8", errors="replace"), None
        return None, f"invalid_utf8 at byte {e.start}"


def _metadata(extra: dict[str, Any], origin: str, fmt: str) -> dict[str, Any]:
    """Reader fields plus ``origin`` (``file:line``, ``file@offset``, ``file#row``),
    ``file``/``pos``, which order records as they appear in the input, and ``format``:
    the input format the record came from (``warc`` | ``wet`` | ``jsonl`` | ``parquet``
    | ``text`` | ``code``), which scopes the quality rules (``formats:`` in the config).
    A record field named ``format`` is kept as ``record_format``."""
    m = re.match(r"^(.*?)(?:[:@#](\d+))?$", origin)
    md = {"origin": origin, "file": m.group(1), "pos": int(m.group(2) or 0)}
    for k, v in extra.items():
        if k == "format":
            k = "record_format"
        if isinstance(v, (str, int, float, bool)) or v is None:
            md[k] = v
        else:
            md[k] = json.loads(json.dumps(v, default=str))
    md["format"] = fmt
    return md


def relative_origin(path: str, base: str) -> str:
    """``path`` relative to the non-wildcard prefix of its glob (stable locator)."""
    if base and path.startswith(base):
        rel = path[len(base):].lstrip("/")
        return rel or posixpath.basename(path)
    return path


# ---------------------------------------------------------------------------- JSONL
def read_jsonl(path: str, source: str, src_cfg, read_cfg, origin: str) -> Iterator[Event]:
    try:
        stream = open_decompressed(path)
    except Exception as e:  # noqa: BLE001 - unreadable file is a dead letter, never a crash
        yield "dead", dead_letter_row(source, origin, f"unreadable_file: {type(e).__name__}: {e}"[:300], None)
        return
    saw_bytes = False
    with stream:
        for line_no, line, err in _iter_lines(stream, read_cfg.max_record_bytes):
            saw_bytes = saw_bytes or bool(line) or bool(err)
            loc = f"{origin}:{line_no}"
            if err:
                yield "dead", dead_letter_row(source, loc, err, line)
                continue
            if not line.strip():
                continue
            text, err = _decode(line, read_cfg.invalid_utf8)
            if err:
                yield "dead", dead_letter_row(source, loc, err, line)
                continue
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as e:
                yield "dead", dead_letter_row(source, loc, f"invalid_json: {e.msg if hasattr(e, 'msg') else e}", line)
                continue
            if not isinstance(obj, dict):
                yield "dead", dead_letter_row(source, loc, f"not_a_json_object ({type(obj).__name__})", line)
                continue
            yield from _record_from_obj(obj, source, src_cfg, loc, line, "jsonl")
    if not saw_bytes:
        yield "dead", dead_letter_row(source, origin, "empty_file", b"")


def _record_from_obj(obj: dict, source: str, src_cfg, loc: str, raw: bytes, fmt: str) -> Iterator[Event]:
    text = obj.get(src_cfg.text_field)
    if text is None:
        yield "dead", dead_letter_row(source, loc, f"missing_field: {src_cfg.text_field}", raw)
        return
    if not isinstance(text, str):
        yield "dead", dead_letter_row(source, loc, f"text_not_a_string ({type(text).__name__})", raw)
        return
    rid = obj.get(src_cfg.id_field)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
        rid = make_id(source, loc, raw)
    url = obj.get(src_cfg.url_field)
    extra = {k: v for k, v in obj.items() if k not in (src_cfg.text_field, src_cfg.id_field, src_cfg.url_field)}
    yield "doc", new_text_record(
        text, source, id=str(rid), url=url if isinstance(url, str) else None, metadata=_metadata(extra, loc, fmt)
    )


# -------------------------------------------------------------------------- Parquet
def read_parquet(path: str, source: str, src_cfg, read_cfg, origin: str) -> Iterator[Event]:
    import pyarrow.parquet as pq

    try:
        with _open_raw(path) as f:
            data = f.read()
        if not data:
            yield "dead", dead_letter_row(source, origin, "empty_file", b"")
            return
        pf = pq.ParquetFile(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001
        yield "dead", dead_letter_row(source, origin, f"invalid_parquet: {type(e).__name__}: {e}"[:300], None)
        return
    if src_cfg.text_field not in pf.schema_arrow.names:
        yield "dead", dead_letter_row(source, origin, f"missing_column: {src_cfg.text_field}", None)
        return
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                row += 1
                loc = f"{origin}#{row}"
                raw = json.dumps(obj, default=str, ensure_ascii=False).encode()
                if len(raw) > read_cfg.max_record_bytes:
                    yield "dead", dead_letter_row(source, loc, f"record_too_large ({len(raw)} bytes)", raw)
                    continue
                yield from _record_from_obj(obj, source, src_cfg, loc, raw, "parquet")
    except Exception as e:  # noqa: BLE001 - a corrupt row group ends the file, not the job
        yield "dead", dead_letter_row(source, f"{origin}#{row + 1}", f"corrupt_parquet: {type(e).__name__}: {e}"[:300], None)


# ----------------------------------------------------------------------------- WARC
_WARC_MAGIC = b"WARC/"


def extract_html_text(html: bytes, content_type: str | None, extractor: str) -> str:
    """Main text of an HTML page (boilerplate removed) by resiliparse or trafilatura."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    charset = None
    if content_type and "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip().strip('"')
    try:
        text_html = bytes_to_str(html, charset or detect_encoding(html))
    except Exception:  # noqa: BLE001
        text_html = bytes_to_str(html, detect_encoding(html))
    if extractor == "trafilatura":
        import trafilatura

        return trafilatura.extract(text_html, include_comments=False, include_tables=True, favor_recall=True) or ""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(text_html, main_content=True, alt_texts=False, links=False, list_bullets=True)


def _open_at(path: str, offset: int) -> BinaryIO:
    """The decompressed stream positioned at ``offset`` (reading forward; lenient
    about truncation so fastwarc sees a clean end of data, see ``truncated``)."""
    raw = _open_raw(path)
    _, comp = split_compression(path)
    stream: BinaryIO = io.BufferedReader(_Decompressed(raw, comp, lenient=True), 1 << 16) if comp else raw
    left = offset
    while left > 0:
        got = stream.read(min(left, 1 << 20))
        if not got:
            break
        left -= len(got)
    return stream


def _truncation(stream: BinaryIO) -> str | None:
    raw = getattr(stream, "raw", None)
    return getattr(raw, "truncated", None)


def _next_header(path: str, start: int) -> int | None:
    """Absolute offset of the next line beginning with ``WARC/`` at or after
    ``start`` (``start`` counts as a line start); None at the end of the data."""
    keep = len(_WARC_MAGIC)
    with _open_at(path, start) as f:
        buf, buf_pos = b"\n", start - 1  # a virtual newline before ``start``
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                return None
            buf += chunk
            j = buf.find(b"\n" + _WARC_MAGIC)
            if j >= 0:
                return buf_pos + j + 1
            buf_pos += len(buf) - keep
            buf = buf[-keep:]


def read_warc(path: str, source: str, src_cfg, read_cfg, origin: str) -> Iterator[Event]:
    """WARC (responses with HTML → main text) and WET (conversion records → text).

    A damaged record (fastwarc refuses its header) becomes one dead letter with the
    damaged bytes, and reading resumes at the next ``WARC/`` header: the file is
    reopened at the last good record and scanned forward, so nothing that fastwarc
    had buffered is lost.  A truncated or corrupt compressed stream ends the file
    with a dead letter after everything before the damage has been read.
    """
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    wanted = WarcRecordType.response | WarcRecordType.conversion | WarcRecordType.resource
    base = 0          # absolute (decompressed) offset where the current iterator starts
    n_records = 0
    n_dead = 0
    for _attempt in range(10_000):
        try:
            stream = _open_at(path, base)
        except Exception as e:  # noqa: BLE001
            yield "dead", dead_letter_row(source, origin, f"unreadable_file: {type(e).__name__}: {e}"[:300], None)
            return
        last_good = None
        failure = None
        with stream:
            try:
                for rec in ArchiveIterator(stream, record_types=wanted, parse_http=True, strict_mode=False):
                    last_good, last_len = base + rec.stream_pos, rec.content_length
                    n_records += 1
                    yield from _warc_record(rec, source, read_cfg, origin, base)
            except _STREAM_ERRORS + (RuntimeError,) as e:
                failure = e
            truncated = _truncation(stream)
        if failure is None:
            if truncated:
                yield "dead", dead_letter_row(source, f"{origin}@end", f"truncated_or_corrupt_stream: {truncated}"[:300], None)
                n_dead += 1
            break
        if last_good is not None:
            # resume at the first header after the last good record (maybe the bad one);
            # bytes between that record's end and the next header are the damage.
            end = _record_end(path, last_good, last_len)
            nxt = _next_header(path, max(end, last_good + 1))
            gap = _peek(path, end, min((nxt if nxt is not None else end + DEAD_LETTER_RAW_CAP) - end, DEAD_LETTER_RAW_CAP))
            if gap.strip():
                yield "dead", dead_letter_row(source, f"{origin}@{end}", f"warc_invalid_header: {failure}"[:300], gap)
                n_dead += 1
            if nxt is None:
                break
            base = nxt
            continue
        # the iterator failed on its very first record at ``base``: skip that region
        nxt = _next_header(path, base + 1)
        size = DEAD_LETTER_RAW_CAP if nxt is None else min(nxt - base, DEAD_LETTER_RAW_CAP)
        yield "dead", dead_letter_row(source, f"{origin}@{base}", f"warc_invalid_header: {failure}"[:300],
                                      _peek(path, base, size))
        n_dead += 1
        if nxt is None:
            break
        base = nxt
    if n_records == 0 and n_dead == 0:
        # nothing parseable at all: an empty or non-WARC file is itself a dead letter
        yield "dead", dead_letter_row(source, origin, "no_warc_records", _peek(path, 0, 4096))


def _record_end(path: str, start: int, content_length: int) -> int:
    """Offset just past the record at ``start`` (header, block, CRLF CRLF)."""
    head = _peek(path, start, 1 << 16)
    i = head.find(b"\r\n\r\n")
    return start + 1 if i < 0 else start + i + 4 + int(content_length or 0) + 4


def _peek(path: str, offset: int, n: int) -> bytes:
    try:
        with _open_at(path, offset) as f:
            return f.read(n)
    except Exception:  # noqa: BLE001
        return b""


def _parse_http(block: bytes) -> tuple[int, str | None, bytes] | None:
    """(status, content type, body) of an HTTP response block, or None."""
    if not block.startswith(b"HTTP/"):
        return None
    end = block.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = block.find(b"\n\n"), 2
    if end < 0:
        return None
    lines = block[:end].decode("latin-1").splitlines()
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return None
    ctype = None
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-type":
            ctype = v.strip()
    return status, ctype, block[end + sep:]


def _warc_record(rec, source: str, read_cfg, origin: str, base: int = 0) -> Iterator[Event]:
    from fastwarc.warc import WarcRecordType

    rid = (rec.record_id or "").strip("<>") or None
    url = rec.headers.get("WARC-Target-URI")
    loc = f"{origin}@{base + rec.stream_pos}"
    try:
        body = rec.reader.read(read_cfg.max_record_bytes + 1)
    except _STREAM_ERRORS as e:
        yield "dead", dead_letter_row(source, loc, f"truncated_record: {type(e).__name__}: {e}"[:300], None)
        return
    rid = rid or make_id(source, loc, body[:4096])
    if len(body) > read_cfg.max_record_bytes:
        yield "dead", dead_letter_row(source, loc, "record_too_large", body)
        return
    meta = {"warc_record_id": rid, "warc_date": rec.headers.get("WARC-Date")}
    fmt = "warc"
    if rec.record_type == WarcRecordType.conversion:  # WET: already text
        fmt = "wet"
        text, err = _decode(body, read_cfg.invalid_utf8)
        if err:
            yield "dead", dead_letter_row(source, loc, err, body)
            return
    else:
        status = None
        if rec.http_headers is not None:
            ctype, status = rec.http_headers.get("Content-Type"), rec.http_headers.status_code
        elif rec.record_type == WarcRecordType.response:
            # fastwarc parses HTTP only when the WARC Content-Type says application/http
            parsed = _parse_http(body)
            if parsed is None:
                yield "dead", dead_letter_row(source, loc, "http_parse_error", body)
                return
            status, ctype, body = parsed
        else:  # resource record: the block is the document itself
            ctype = rec.headers.get("Content-Type")
        if not ctype or "html" not in ctype.lower():
            stub = {"id": rid, "source": source, "url": url, "content_hash": None}
            yield "drop", dropped_row(stub, "read", "not_html", detail={"content_type": ctype})
            return
        meta["http_status"] = status
        try:
            text = extract_html_text(body, ctype, read_cfg.html_extractor)
        except Exception as e:  # noqa: BLE001
            yield "dead", dead_letter_row(source, loc, f"html_extraction_failed: {type(e).__name__}: {e}"[:300], body)
            return
        if len(text.strip()) < read_cfg.min_extracted_chars:
            stub = {"id": rid, "source": source, "url": url, "content_hash": None}
            yield "drop", dropped_row(stub, "read", "no_text_extracted", detail={"content_type": ctype})
            return
    yield "doc", new_text_record(text, source, id=rid, url=url, metadata=_metadata(meta, loc, fmt))


# ------------------------------------------------------------------ text/code trees
def _read_whole(path: str, read_cfg) -> tuple[bytes | None, int, str | None]:
    try:
        with open_decompressed(path) as f:
            data = f.read(read_cfg.max_record_bytes + 1)
            size = len(data)
            if size > read_cfg.max_record_bytes:
                while True:
                    more = f.read(1 << 20)
                    if not more:
                        break
                    size += len(more)
                return data, size, f"record_too_large ({size} bytes > max_record_bytes {read_cfg.max_record_bytes})"
            return data, size, None
    except _STREAM_ERRORS as e:
        return None, 0, f"truncated_or_corrupt_stream: {type(e).__name__}: {e}"[:300]


def read_text_file(path: str, source: str, src_cfg, read_cfg, origin: str, *, code_lang: str | None = None) -> Iterator[Event]:
    """One document per file (books, articles, source files)."""
    data, size, err = _read_whole(path, read_cfg)
    if err:
        yield "dead", dead_letter_row(source, origin, err, data)
        return
    if not data:
        yield "dead", dead_letter_row(source, origin, "empty_file", b"")
        return
    if b"\0" in data[:8192]:
        yield "dead", dead_letter_row(source, origin, "binary_content (NUL bytes)", data)
        return
    text, err = _decode(data, read_cfg.invalid_utf8)
    if err:
        yield "dead", dead_letter_row(source, origin, err, data)
        return
    rid = make_id(source, origin, data)
    meta = {"path": origin}
    fmt = "code" if code_lang else "text"
    rec = new_text_record(text, source, id=rid, url=None, metadata=_metadata(meta, origin, fmt))
    if code_lang:
        rec["lang"] = f"code:{code_lang}"
        rec["lang_score"] = 1.0
    yield "doc", rec


def read_file(path: str, reader: str, source: str, src_cfg, read_cfg, origin: str) -> Iterator[Event]:
    """Dispatch on the reader name (see ``detect_reader``)."""
    if reader == "jsonl":
        yield from read_jsonl(path, source, src_cfg, read_cfg, origin)
    elif reader == "parquet":
        yield from read_parquet(path, source, src_cfg, read_cfg, origin)
    elif reader == "warc":
        yield from read_warc(path, source, src_cfg, read_cfg, origin)
    elif reader == "text":
        yield from read_text_file(path, source, src_cfg, read_cfg, origin)
    elif reader == "code":
        base, _ = split_compression(path)
        lang = read_cfg.code_extensions.get(os.path.splitext(base)[1].lower(), "unknown")
        yield from read_text_file(path, source, src_cfg, read_cfg, origin, code_lang=lang)
    else:
        yield "dead", dead_letter_row(source, origin, f"no_reader_for_file (reader={reader})", None)
