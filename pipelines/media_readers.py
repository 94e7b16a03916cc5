"""Media readers, engine-free: files -> media *samples* (not yet decoded).

Recognised inputs (``detect_media``; ``pipelines.readers.detect_reader`` asks it
first, so ``--input name=GLOB`` routes media by extension):

* single files: images (jpg, png, webp, gif, bmp, tiff), audio (wav, flac, mp3,
  ogg, opus, m4a), video (mp4, m4v, mov, webm, mkv) -> reader ``media``.  A
  sidecar with the same stem (``x.jpg`` + ``x.txt`` / ``x.caption`` /
  ``x.json``) is the caption / transcript (paired in ``pipelines.media.split_files``).
* WebDataset tars (``.tar``, ``.tar.gz``, ``.tgz``) -> ``media``: members grouped by
  key; ``key.jpg``/``key.wav``/``key.mp4`` + ``key.txt``/``key.json``.
* Parquet with an image column (binary, or a ``{bytes, path}`` struct as written by
  Hugging Face datasets) or an image-path column -> ``media``.
* JSONL media manifests -> ``manifest``.  A ``.jsonl`` file is a manifest when its
  first record has ``modality`` and ``path`` keys (records ``id, modality, path,
  text | caption | transcript``), or ``texts`` and ``images`` lists (OBELICS-style
  interleaved documents), or ``segments`` / ``content`` lists of ``{"type": "text"
  | "image"}`` items.  A source may also say ``reader: manifest`` in the config.

Relative paths in a manifest resolve against ``media.media_root``
(``--media-root``) when given, else the manifest's folder, then its parent
folders (nearest first) where the file exists.  A relative path may not climb
out of its base with ``..``.

Each reader yields ``("sample", sample)``, ``("dead", DEAD_LETTER row)`` or
``("drop", DROPPED row)``; one event per input record (the ledger counts them).
"""
from __future__ import annotations

import json
import os
import posixpath
from typing import Any, Iterator

from filters.media import (
    MEDIA_EXT,
    TEXT_SIDECAR_EXT,
    iter_tar_members,
    read_bounded,
    safe_member_name,
    wds_split,
)
from filters.schema import dead_letter_row, make_id

Event = tuple[str, dict[str, Any]]

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
IMAGE_COLUMNS = ("image", "jpg", "jpeg", "png", "webp", "img", "image_bytes")
IMAGE_PATH_COLUMNS = ("image_path", "image_file", "file_name", "filepath", "path")
CAPTION_FIELDS = ("caption", "transcript", "text", "TEXT", "txt", "alt_text")
MANIFEST_TEXT_FIELDS = ("text", "caption", "transcript")
SIDECAR_MAX_BYTES = 1 << 20


# ------------------------------------------------------------------ helpers
def _open(path: str):
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def ext_of(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def is_tar(path: str) -> bool:
    return path.lower().endswith(TAR_SUFFIXES)


def _first_json_line(path: str) -> dict | None:
    from pipelines.readers import open_decompressed

    try:
        with open_decompressed(path) as f:
            for _ in range(50):
                line = f.readline(1 << 20)
                if not line:
                    return None
                if line.strip():
                    obj = json.loads(line)
                    return obj if isinstance(obj, dict) else None
    except Exception:  # noqa: BLE001 - not our format: the text reader will report it
        return None
    return None


def is_manifest_record(obj: dict | None) -> bool:
    if not obj:
        return False
    if "modality" in obj and "path" in obj:
        return True
    if isinstance(obj.get("texts"), list) and isinstance(obj.get("images"), list):
        return True
    return isinstance(obj.get("segments") or obj.get("content"), list) and obj.get("modality", "interleaved") == "interleaved"


def parquet_media_columns(schema) -> tuple[str | None, str | None]:
    """(image bytes column, image path column) of a Parquet schema, if any."""
    import pyarrow as pa

    names = {n.lower(): n for n in schema.names}
    img = None
    for c in IMAGE_COLUMNS:
        n = names.get(c)
        if n is None:
            continue
        t = schema.field(n).type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            img = n
            break
        if pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields)):
            img = n
            break
    pth = None
    for c in IMAGE_PATH_COLUMNS:
        n = names.get(c)
        if n is not None and pa.types.is_string(schema.field(n).type):
            pth = n
            break
    return img, pth


def detect_media(path: str) -> str | None:
    """``media`` | ``manifest`` | None (not a media input) for a path."""
    low = path.lower()
    if is_tar(low):
        return "media"
    ext = ext_of(low[:-3] if low.endswith(".gz") else low)
    if ext_of(low) in MEDIA_EXT:
        return "media"
    if ext in (".jsonl", ".ndjson", ".json"):
        return "manifest" if is_manifest_record(_first_json_line(path)) else None
    if ext_of(low) == ".parquet":
        try:
            import pyarrow.parquet as pq

            with _open(path) as f:
                schema = pq.ParquetFile(f).schema_arrow
            img, pth = parquet_media_columns(schema)
            return "media" if (img or pth) else None
        except Exception:  # noqa: BLE001 - the text Parquet reader will report a bad file
            return None
    return None


def _caption_from_json(obj: dict) -> tuple[str | None, str | None]:
    for k in CAPTION_FIELDS:
        v = obj.get(k)
        if isinstance(v, str) and v.strip():
            return v, ("transcript" if k == "transcript" else "caption")
    return None, None


def read_sidecar(path: str) -> tuple[str | None, dict[str, Any], str | None]:
    """(text, extra metadata, error) of a caption sidecar."""
    try:
        with _open(path) as f:
            data, size = read_bounded(f, SIDECAR_MAX_BYTES)
    except Exception as e:  # noqa: BLE001
        return None, {}, f"unreadable_sidecar: {type(e).__name__}: {e}"[:300]
    if size > SIDECAR_MAX_BYTES:
        return None, {}, f"sidecar_too_large: {size} bytes"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, {}, f"invalid_utf8 in sidecar at byte {e.start}"
    if ext_of(path) == ".json":
        try:
            obj = json.loads(text)
        except ValueError:
            return None, {}, "invalid_json sidecar"
        if not isinstance(obj, dict):
            return None, {}, "sidecar json is not an object"
        cap, _ = _caption_from_json(obj)
        meta = {k: v for k, v in obj.items() if k not in CAPTION_FIELDS and isinstance(v, (str, int, float, bool))}
        return cap, meta, None
    return text.strip() or None, {}, None


def new_sample(source: str, sid: str, modality: str, origin: str, *, ext: str, path: str | None = None,
               data: bytes | None = None, text: str | None = None, meta: dict | None = None,
               order: tuple[str, int] = ("", 0), segments: list | None = None) -> dict[str, Any]:
    return {"id": sid, "source": source, "modality": modality, "origin": origin, "ext": ext, "path": path,
            "data": data, "text": text, "meta": meta or {}, "order": list(order), "segments": segments}


def _file_order(origin: str) -> tuple[str, int]:
    return origin, 0


# ------------------------------------------------------------------ single files
def read_media_file(path: str, source: str, origin: str, sidecars: list[str] | None = None) -> Iterator[Event]:
    ext = ext_of(path)
    modality = MEDIA_EXT[ext]
    text, meta = None, {}
    for sc in sidecars or []:
        t, m, err = read_sidecar(sc)
        if err:
            meta.setdefault("sidecar_errors", []).append(err)
        meta.update(m)
        text = text or t
    sid = meta.pop("id", None)
    sid = str(sid) if isinstance(sid, (str, int)) and sid != "" else make_id(source, origin, b"")
    yield "sample", new_sample(source, sid, modality, origin, ext=ext, path=path, text=text, meta=meta,
                               order=_file_order(origin))


# ------------------------------------------------------------------ WebDataset tars
def read_tar(path: str, source: str, origin: str, max_member_bytes: int) -> Iterator[Event]:
    try:
        stream = _open(path)  # tarfile's "r|*" stream mode detects gzip / bz2 / xz itself
    except Exception as e:  # noqa: BLE001
        yield "dead", dead_letter_row(source, origin, f"unreadable_file: {type(e).__name__}: {e}"[:300], None, stage="media")
        return
    pos = 0
    group_key, group = None, []
    saw = False

    def flush(key, members, pos):
        return list(_tar_sample(source, origin, key, members, pos))

    with stream:
        for name, norm, data, err in iter_tar_members(stream, max_member_bytes):
            saw = True
            if err:
                if group:
                    yield from flush(group_key, group, pos)
                    pos += 1
                    group_key, group = None, []
                loc = f"{origin}#{name}" if name else origin
                yield "dead", dead_letter_row(source, loc, err, data, stage="media")
                if err.startswith("corrupt_tar"):
                    return
                continue
            key, mext = wds_split(norm)
            if group and key != group_key:
                yield from flush(group_key, group, pos)
                pos += 1
                group = []
            group_key = key
            group.append((mext, norm, data))
        if group:
            yield from flush(group_key, group, pos)
    if not saw:
        yield "dead", dead_letter_row(source, origin, "empty_tar", b"", stage="media")


def _tar_sample(source: str, origin: str, key: str, members: list[tuple[str, str, bytes]], pos: int) -> Iterator[Event]:
    loc = f"{origin}#{key}"
    media = [(e, n, d) for e, n, d in members if "." + e.rsplit(".", 1)[-1] in MEDIA_EXT]
    texts = {e: d for e, n, d in members if "." + e.rsplit(".", 1)[-1] in TEXT_SIDECAR_EXT}
    if not media:
        raw = members[0][2] if members else b""
        yield "dead", dead_letter_row(source, loc, f"no_media_member: {sorted(e for e, _, _ in members)}"[:300], raw, stage="media")
        return
    mext, mname, data = media[0]
    ext = "." + mext.rsplit(".", 1)[-1]
    meta: dict[str, Any] = {"tar_key": key}
    if len(media) > 1:
        meta["ignored_members"] = [n for _, n, _ in media[1:]]
    text = None
    for te in sorted(texts, key=lambda e: (e.endswith("json"), e)):
        raw = texts[te]
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            meta.setdefault("sidecar_errors", []).append(f"invalid_utf8 in {te}")
            continue
        if te.endswith("json"):
            try:
                obj = json.loads(s)
            except ValueError:
                meta.setdefault("sidecar_errors", []).append(f"invalid_json in {te}")
                continue
            if isinstance(obj, dict):
                cap, _ = _caption_from_json(obj)
                text = text or cap
                for k, v in obj.items():
                    if k not in CAPTION_FIELDS and isinstance(v, (str, int, float, bool)):
                        meta.setdefault(k, v)
        else:
            text = text or (s.strip() or None)
    sid = meta.get("id") if isinstance(meta.get("id"), str) and meta.get("id") else key
    meta.pop("id", None)
    yield "sample", new_sample(source, str(sid), MEDIA_EXT[ext], loc, ext=ext, data=data, text=text, meta=meta,
                               order=(origin, pos))


# ------------------------------------------------------------------ Parquet image-text pairs
def read_media_parquet(path: str, source: str, origin: str, src_cfg, media_cfg) -> Iterator[Event]:
    import pyarrow.parquet as pq

    try:
        f = _open(path)
        pf = pq.ParquetFile(f)
    except Exception as e:  # noqa: BLE001
        yield "dead", dead_letter_row(source, origin, f"invalid_parquet: {type(e).__name__}: {e}"[:300], None, stage="media")
        return
    img_col, path_col = parquet_media_columns(pf.schema_arrow)
    names = pf.schema_arrow.names
    text_col = src_cfg.text_field if src_cfg.text_field in names else next((c for c in CAPTION_FIELDS if c in names), None)
    id_col = src_cfg.id_field if src_cfg.id_field in names else ("key" if "key" in names else None)
    url_col = src_cfg.url_field if src_cfg.url_field in names else ("URL" if "URL" in names else None)
    cols = [c for c in (img_col, path_col, text_col, id_col, url_col) if c]
    base = posixpath.dirname(path)
    row = 0
    with f:
        try:
            for batch in pf.iter_batches(batch_size=16, columns=sorted(set(cols))):
                for obj in batch.to_pylist():
                    row += 1
                    loc = f"{origin}#{row}"
                    yield from _parquet_row(obj, source, loc, (origin, row), img_col, path_col, text_col, id_col,
                                            url_col, base, media_cfg)
        except Exception as e:  # noqa: BLE001 - a corrupt row group ends the file, not the job
            yield "dead", dead_letter_row(source, f"{origin}#{row + 1}", f"corrupt_parquet: {type(e).__name__}: {e}"[:300],
                                          None, stage="media")


def _parquet_row(obj, source, loc, order, img_col, path_col, text_col, id_col, url_col, base, media_cfg):
    data, ref = None, None
    if img_col:
        v = obj.get(img_col)
        if isinstance(v, dict):
            data, ref = v.get("bytes"), v.get("path")
        else:
            data = v
    if data is None and path_col:
        ref = obj.get(path_col)
    text = obj.get(text_col) if text_col else None
    rid = obj.get(id_col) if id_col else None
    sid = str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and rid != "" else make_id(source, loc, data or (ref or "").encode())
    meta = {"url": obj.get(url_col)} if url_col and isinstance(obj.get(url_col), str) else {}
    ext = ext_of(ref) if ref else ".jpg"
    if data is not None:
        yield "sample", new_sample(source, sid, "image", loc, ext=ext or ".jpg", data=bytes(data),
                                   text=text if isinstance(text, str) else None, meta=meta, order=order)
        return
    if not ref:
        yield "dead", dead_letter_row(source, loc, "missing_image: no bytes and no path", None, stage="media")
        return
    resolved, err = resolve_ref(ref, media_cfg.media_root, base)
    if err:
        yield "dead", dead_letter_row(source, loc, err, ref.encode(), stage="media")
        return
    yield "sample", new_sample(source, sid, "image", loc, ext=ext_of(resolved), path=resolved,
                               text=text if isinstance(text, str) else None, meta=meta, order=order)


# ------------------------------------------------------------------ manifests
def _exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.exists(path)
    except Exception:  # noqa: BLE001
        return False


def _join(base: str, rel: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(base, rel) if "://" in base else os.path.join(base, rel)


def resolve_ref(ref: str, media_root: str | None, manifest_dir: str) -> tuple[str | None, str | None]:
    """(resolved path, None) or (None, dead-letter reason) for a media reference."""
    if not isinstance(ref, str) or not ref.strip():
        return None, "missing_path"
    if ref.startswith(("http://", "https://", "ftp://")):
        return None, f"remote_media_not_fetched: {ref[:200]}"
    if "://" in ref or os.path.isabs(ref):
        return (ref, None) if _exists(ref) else (None, f"media_not_found: {ref[:200]}")
    norm = safe_member_name(ref)
    if norm is None:
        return None, f"unsafe_path: {ref[:200]}"
    bases = [media_root] if media_root else []
    if not media_root:
        d = manifest_dir.rstrip("/")
        for _ in range(4):
            bases.append(d)
            parent = posixpath.dirname(d) if "://" in d else os.path.dirname(d)
            if not parent or parent == d:
                break
            d = parent
    for b in bases:
        p = _join(b, norm)
        if _exists(p):
            return p, None
    return None, f"media_not_found: {ref[:200]}"


def read_manifest(path: str, source: str, origin: str, src_cfg, read_cfg, media_cfg) -> Iterator[Event]:
    from pipelines.readers import _iter_lines, open_decompressed

    try:
        stream = open_decompressed(path)
    except Exception as e:  # noqa: BLE001
        yield "dead", dead_letter_row(source, origin, f"unreadable_file: {type(e).__name__}: {e}"[:300], None, stage="media")
        return
    mdir = posixpath.dirname(path) if "://" in path else os.path.dirname(os.path.abspath(path))
    saw = False
    with stream:
        for line_no, line, err in _iter_lines(stream, read_cfg.max_record_bytes):
            saw = True
            loc = f"{origin}:{line_no}"
            if err:
                yield "dead", dead_letter_row(source, loc, err, line, stage="media")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                yield "dead", dead_letter_row(source, loc, f"invalid_json: {type(e).__name__}"[:300], line, stage="media")
                continue
            if not isinstance(obj, dict):
                yield "dead", dead_letter_row(source, loc, "not_a_json_object", line, stage="media")
                continue
            yield from manifest_record(obj, source, loc, (origin, line_no), line, src_cfg, media_cfg, mdir)
    if not saw:
        yield "dead", dead_letter_row(source, origin, "empty_file", b"", stage="media")


def manifest_record(obj: dict, source: str, loc: str, order, raw: bytes, src_cfg, media_cfg, mdir: str) -> Iterator[Event]:
    rid = obj.get(src_cfg.id_field, obj.get("id"))
    sid = str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and rid != "" else make_id(source, loc, raw)
    modality = obj.get("modality")
    segs_in = None
    if isinstance(obj.get("texts"), list) and isinstance(obj.get("images"), list):
        modality = "interleaved"
        segs_in = []
        for t, im in zip(obj["texts"], obj["images"]):
            if isinstance(t, str):
                segs_in.append({"type": "text", "text": t})
            if im is not None:
                segs_in.append({"type": "image", "ref": im})
    elif isinstance(obj.get("segments") or obj.get("content"), list) and modality in (None, "interleaved"):
        modality = "interleaved"
        segs_in = []
        for it in obj.get("segments") or obj.get("content"):
            if not isinstance(it, dict):
                continue
            if it.get("type") == "text" and isinstance(it.get("text"), str):
                segs_in.append({"type": "text", "text": it["text"]})
            elif it.get("type") == "image":
                segs_in.append({"type": "image", "ref": it.get("path") or it.get("image") or it.get("url")})
    skip = {"id", src_cfg.id_field, "modality", "path", "texts", "images", "segments", "content"} | set(MANIFEST_TEXT_FIELDS)
    meta = {k: v for k, v in obj.items() if k not in skip}
    meta = json.loads(json.dumps(meta, default=str))
    if modality == "interleaved":
        segments = []
        for s in segs_in or []:
            if s["type"] == "text":
                segments.append(s)
                continue
            ref = s.get("ref")
            resolved, err = resolve_ref(ref, media_cfg.media_root, mdir) if isinstance(ref, str) else (None, "missing_path")
            segments.append({"type": "image", "ref": ref if isinstance(ref, str) else None, "path": resolved, "error": err,
                             "ext": ext_of(resolved or (ref if isinstance(ref, str) else "")) or ".jpg"})
        if not any(s["type"] == "text" for s in segments) and not any(s["type"] == "image" for s in segments):
            yield "dead", dead_letter_row(source, loc, "empty_interleaved_document", raw, stage="media")
            return
        yield "sample", new_sample(source, sid, "interleaved", loc, ext="", meta=meta, order=order, segments=segments)
        return
    ref = obj.get("path")
    if modality is None and isinstance(ref, str):
        modality = MEDIA_EXT.get(ext_of(ref))
    if modality not in ("image", "audio", "video"):
        yield "dead", dead_letter_row(source, loc, f"unknown_modality: {str(modality)[:50]}", raw, stage="media")
        return
    resolved, err = resolve_ref(ref, media_cfg.media_root, mdir)
    if err:
        yield "dead", dead_letter_row(source, loc, err, raw, stage="media")
        return
    text = None
    for k in (src_cfg.text_field, *MANIFEST_TEXT_FIELDS):
        v = obj.get(k)
        if isinstance(v, str) and v.strip():
            text = v
            meta["text_field"] = k
            break
    yield "sample", new_sample(source, sid, modality, loc, ext=ext_of(resolved), path=resolved, text=text,
                               meta=meta, order=order)


# ------------------------------------------------------------------ dispatch
def read_media(path: str, reader: str, source: str, src_cfg, read_cfg, media_cfg, origin: str,
               sidecars: list[str] | None = None) -> Iterator[Event]:
    """Dispatch a planned media file (reader ``media`` or ``manifest``)."""
    try:
        if reader == "manifest":
            yield from read_manifest(path, source, origin, src_cfg, read_cfg, media_cfg)
        elif is_tar(path):
            yield from read_tar(path, source, origin, media_cfg.max_tar_member_bytes)
        elif ext_of(path) == ".parquet":
            yield from read_media_parquet(path, source, origin, src_cfg, media_cfg)
        elif ext_of(path) in MEDIA_EXT:
            yield from read_media_file(path, source, origin, sidecars)
        elif ext_of(path.removesuffix(".gz")) in (".jsonl", ".ndjson", ".json"):
            yield from read_manifest(path, source, origin, src_cfg, read_cfg, media_cfg)
        else:
            yield "dead", dead_letter_row(source, origin, f"no_media_reader_for_file: {ext_of(path)}", None, stage="media")
    except Exception as e:  # noqa: BLE001 - a reader bug must not lose the file silently
        yield "dead", dead_letter_row(source, origin, f"reader_error: {type(e).__name__}: {e}"[:300], None, stage="media")
