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

import gzip
import io
import json
import os
import posixpath
import re
import zlib
from typing import Any, BinaryIO, Iterator

from filters.schema import dead_letter_row, dropped_row, make_id, new_text_record

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


def open_decompressed(path: str) -> BinaryIO:
    """A binary stream of the decompressed content; errors surface on read."""
    raw = _open_raw(path)
    _, comp = split_compression(path)
    if comp == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # multi-member safe (Common Crawl)
    if comp == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


_STREAM_ERRORS = (EOFError, OSError, zlib.error, ValueError)


def _iter_lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None, str | None]]:
    """Yield ``(line_no, line, error)``; a line longer than ``max_bytes`` is yielded
    truncated with error ``record_too_large`` (the rest of it is skipped without
    holding it in memory); a decompression error ends the stream with its reason."""
    buf = io.BufferedReader(stream, buffer_size=1 << 20) if not isinstance(stream, io.BufferedReader) else stream
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


def _metadata(extra: dict[str, Any], origin: str) -> dict[str, Any]:
    """Reader fields plus ``origin`` (``file:line``, ``file@offset``, ``file#row``) and
    ``file``/``pos``, which order records as they appear in the input."""
    m = re.match(r"^(.*?)(?:[:@#](\d+))?$", origin)
    md = {"origin": origin, "file": m.group(1), "pos": int(m.group(2) or 0)}
    for k, v in extra.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            md[k] = v
        else:
            md[k] = json.loads(json.dumps(v, default=str))
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
            yield from _record_from_obj(obj, source, src_cfg, loc, line)
    if not saw_bytes:
        yield "dead", dead_letter_row(source, origin, "empty_file", b"")


def _record_from_obj(obj: dict, source: str, src_cfg, loc: str, raw: bytes) -> Iterator[Event]:
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
        text, source, id=str(rid), url=url if isinstance(url, str) else None, metadata=_metadata(extra, loc)
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
                yield from _record_from_obj(obj, source, src_cfg, loc, raw)
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


class _Resync(io.RawIOBase):
    """A stream that starts at the next ``WARC/`` header after a damaged record."""

    def __init__(self, stream: BinaryIO, skip: bytes = b""):
        self._s = stream
        self._pending = skip

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._pending:
            n = min(len(b), len(self._pending))
            b[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            return n
        chunk = self._s.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def _skip_to_next_header(stream: BinaryIO, limit: int) -> tuple[bytes, bytes]:
    """Read until the next line starting with ``WARC/``; return (skipped, rest-of-buffer)."""
    skipped = bytearray()
    buf = b""
    while True:
        chunk = stream.read(1 << 16)
        if not chunk:
            return bytes(skipped + buf), b""
        buf += chunk
        idx = buf.find(b"\n" + _WARC_MAGIC, 1)
        if idx >= 0:
            skipped += buf[: idx + 1]
            return bytes(skipped[:limit]), buf[idx + 1:]
        keep = len(_WARC_MAGIC) + 1
        skipped += buf[:-keep]
        buf = buf[-keep:]
        if len(skipped) > limit * 4:
            skipped = skipped[: limit]


def read_warc(path: str, source: str, src_cfg, read_cfg, origin: str) -> Iterator[Event]:
    """WARC (responses with HTML → main text) and WET (conversion records → text)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    try:
        stream = open_decompressed(path)
    except Exception as e:  # noqa: BLE001
        yield "dead", dead_letter_row(source, origin, f"unreadable_file: {type(e).__name__}: {e}"[:300], None)
        return
    wanted = WarcRecordType.response | WarcRecordType.conversion | WarcRecordType.resource
    current: BinaryIO = stream
    n_records = 0
    resyncs = 0
    with stream:
        while True:
            it = ArchiveIterator(current, record_types=wanted, parse_http=True, strict_mode=False)
            try:
                for rec in it:
                    n_records += 1
                    yield from _warc_record(rec, source, read_cfg, origin)
                break  # clean end of file
            except _STREAM_ERRORS + (RuntimeError,) as e:
                reason = f"{type(e).__name__}: {e}"
                if isinstance(e, (EOFError, zlib.error)) or "gzip" in reason.lower() or "compressed" in reason.lower():
                    yield "dead", dead_letter_row(source, f"{origin}@record{n_records + 1}", f"truncated_or_corrupt_stream: {reason}"[:300], None)
                    break
                try:
                    skipped, rest = _skip_to_next_header(current, DEAD_LETTER_CAP)
                except _STREAM_ERRORS as e2:
                    yield "dead", dead_letter_row(source, f"{origin}@record{n_records + 1}", f"truncated_or_corrupt_stream: {type(e2).__name__}: {e2}"[:300], None)
                    break
                resyncs += 1
                yield "dead", dead_letter_row(source, f"{origin}@record{n_records + 1}", f"warc_invalid_header: {e}"[:300], skipped)
                if not rest or resyncs > 10000:
                    break
                current = io.BufferedReader(_Resync(current, rest))
    if n_records == 0 and resyncs == 0:
        # nothing parseable at all: an empty or non-WARC file is itself a dead letter
        yield "dead", dead_letter_row(source, origin, "no_warc_records", None)


DEAD_LETTER_CAP = 64 * 1024


def _warc_record(rec, source: str, read_cfg, origin: str) -> Iterator[Event]:
    from fastwarc.warc import WarcRecordType

    rid = (rec.record_id or "").strip("<>") or None
    url = rec.headers.get("WARC-Target-URI")
    loc = f"{origin}@{rec.stream_pos}"
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
    if rec.record_type == WarcRecordType.conversion:  # WET: already text
        text, err = _decode(body, read_cfg.invalid_utf8)
        if err:
            yield "dead", dead_letter_row(source, loc, err, body)
            return
    else:
        ctype = rec.http_headers.get("Content-Type") if rec.http_headers is not None else rec.headers.get("Content-Type")
        if rec.record_type == WarcRecordType.response and rec.http_headers is None:
            yield "dead", dead_letter_row(source, loc, "http_parse_error", body)
            return
        if not ctype or "html" not in ctype.lower():
            stub = {"id": rid, "source": source, "url": url, "content_hash": None}
            yield "drop", dropped_row(stub, "read", "not_html", detail={"content_type": ctype})
            return
        meta["http_status"] = rec.http_headers.status_code if rec.http_headers is not None else None
        try:
            text = extract_html_text(body, ctype, read_cfg.html_extractor)
        except Exception as e:  # noqa: BLE001
            yield "dead", dead_letter_row(source, loc, f"html_extraction_failed: {type(e).__name__}: {e}"[:300], body)
            return
        if len(text.strip()) < read_cfg.min_extracted_chars:
            stub = {"id": rid, "source": source, "url": url, "content_hash": None}
            yield "drop", dropped_row(stub, "read", "no_text_extracted", detail={"content_type": ctype})
            return
    yield "doc", new_text_record(text, source, id=rid, url=url, metadata=_metadata(meta, loc))


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
    rec = new_text_record(text, source, id=rid, url=None, metadata=_metadata(meta, origin))
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
