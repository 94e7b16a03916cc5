"""One media sample -> a shard-ready record, a drop or a dead letter (engine-free).

``process_sample`` glues the readers' samples to the operators of
``filters/media_*.py`` and to the corpus text operators (captions, transcripts,
interleaved text).  It yields ``(kind, payload)``:

* ``("kept", record)``      the shard-ready record (see ``make_record``);
* ``("drop", row)``         DROPPED_SCHEMA row, stage ``media`` (a filter said no);
* ``("dead", row)``         DEAD_LETTER row, stage ``media`` (bad media: the Beam
                            layer also records it as a drop, so the ledger balances);
* ``("dead_only", row)``    a dead letter that is not an input record of its own
                            (a bad image inside a kept interleaved document);
* ``("event", (name, n))``  ledger counts of modifications.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Any, Iterator

from filters.media import (
    MediaConfig,
    MediaError,
    MediaReject,
    read_bounded,
    run_text_ops,
    sample_key,
    text_tokens,
)
from filters.schema import DEAD_LETTER_RAW_CAP, dead_letter_row, dropped_row

STAGE = "media"


# ------------------------------------------------------------------ bytes and files
def _open(path: str):
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def load_bytes(path: str, cap: int) -> bytes:
    try:
        with _open(path) as f:
            data, size = read_bounded(f, cap)
    except FileNotFoundError:
        raise MediaError("media_not_found", path[-200:]) from None
    except OSError as e:
        raise MediaError("unreadable_file", f"{type(e).__name__}: {e}"[:200]) from None
    if size == 0:
        raise MediaError("empty_file")
    if size > cap:
        raise MediaError("file_too_large", f"{size} bytes > {cap}")
    return data


@contextlib.contextmanager
def local_file(sample: dict[str, Any], cap: int):
    """A local path for ffmpeg: the file itself, or a bounded temporary copy of
    in-memory bytes (tar members, Parquet cells) or of a remote file."""
    data, path, ext = sample.get("data"), sample.get("path"), sample.get("ext") or ""
    if data is None and path and "://" not in path:
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise MediaError("media_not_found", f"{type(e).__name__}: {path[-200:]}") from None
        if size == 0:
            raise MediaError("empty_file")
        if size > cap:
            raise MediaError("file_too_large", f"{size} bytes > {cap}")
        yield path
        return
    tmp = tempfile.NamedTemporaryFile(prefix="cf-media-", suffix=ext, delete=False)
    try:
        with tmp:
            if data is not None:
                if not data:
                    raise MediaError("empty_file")
                if len(data) > cap:
                    raise MediaError("file_too_large", f"{len(data)} bytes > {cap}")
                tmp.write(data)
            else:
                n = 0
                try:
                    with _open(path) as f:
                        while True:
                            chunk = f.read(1 << 20)
                            if not chunk:
                                break
                            n += len(chunk)
                            if n > cap:
                                raise MediaError("file_too_large", f"over {cap} bytes")
                            tmp.write(chunk)
                except OSError as e:
                    raise MediaError("unreadable_file", f"{type(e).__name__}: {e}"[:200]) from None
                if n == 0:
                    raise MediaError("empty_file")
        yield tmp.name
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


def raw_head(sample: dict[str, Any]) -> bytes:
    """The first bytes of a sample's media, for its dead letter."""
    if sample.get("data") is not None:
        return bytes(sample["data"])[:DEAD_LETTER_RAW_CAP]
    path = sample.get("path")
    if not path:
        return b""
    try:
        with _open(path) as f:
            return f.read(DEAD_LETTER_RAW_CAP)
    except Exception:  # noqa: BLE001
        return b""


# ------------------------------------------------------------------ records
def survivor_rank(policy: list[str], size: tuple[float, ...], sample: dict[str, Any], source_rank: dict[str, int]) -> list:
    """Sort key of a sample in a duplicate cluster; the smallest survives."""
    key: list[Any] = []
    for p in policy:
        if p == "largest":
            key.extend(-float(s) for s in size)
        elif p == "first_seen":
            order = sample.get("order") or ["", 0]
            key.extend((source_rank.get(sample["source"], len(source_rank)), str(order[0]), int(order[1])))
        elif p == "smallest_id":
            key.append(sample["id"])
    return key


def make_record(sample: dict[str, Any], *, members: dict[str, bytes], info: dict[str, Any], content_hash: str,
                sig: dict[str, Any] | None, media_tokens: int, text: str | None, text_info: dict[str, Any],
                size: tuple[float, ...], seconds: float, cfg: MediaConfig, source_rank: dict[str, int]) -> dict[str, Any]:
    ttok = text_tokens(text)
    body = {
        "id": sample["id"],
        "source": sample["source"],
        "modality": sample["modality"],
        "origin": sample["origin"],
        "text": text,
        **text_info,
        "tokens": {"media": media_tokens, "text": ttok, "total": media_tokens + ttok},
        "content_hash": content_hash,
        **info,
        "meta": sample.get("meta") or {},
    }
    if sig:
        body["phash"] = {k: (f"{v:016x}" if isinstance(v, int) else [f"{x:016x}" for x in v] if isinstance(v, list) else None)
                         for k, v in sorted(sig.items())}
    js = json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")
    members = {**members, "json": js}
    return {
        "id": sample["id"],
        "source": sample["source"],
        "modality": sample["modality"],
        "key": sample_key(sample["id"]),
        "members": members,
        "content_hash": content_hash,
        "sig": sig,
        "rank": survivor_rank(cfg.dedup.survivor, size, sample, source_rank),
        "tokens": media_tokens + ttok,
        "media_tokens": media_tokens,
        "text_tokens": ttok,
        "bytes": sum(len(v) for v in members.values()) + 512 * (len(members) + 1),
        "seconds": float(seconds),
        "url": (sample.get("meta") or {}).get("url") if isinstance((sample.get("meta") or {}).get("url"), str) else None,
    }


def _stub(sample: dict[str, Any], content_hash: str | None = None) -> dict[str, Any]:
    url = (sample.get("meta") or {}).get("url")
    return {"id": sample["id"], "source": sample["source"], "content_hash": content_hash,
            "url": url if isinstance(url, str) else None}


def _dead(sample: dict[str, Any], e: MediaError) -> tuple[str, dict[str, Any]]:
    row = dead_letter_row(sample["source"], sample["origin"], e.reason, raw_head(sample), stage=STAGE)
    row["id"] = sample["id"]  # keep the input's id, so dead letter and drop row match
    return "dead", row


# ------------------------------------------------------------------ text
def _text(sample: dict[str, Any], ops: list[Any], cfg: MediaConfig):
    """(text, info for the JSON, drop reason or None, score, events)."""
    text = sample.get("text")
    if not text or not text.strip() or not cfg.text_filters or not ops:
        return text, {}, None, None, {}
    ops = [op for op in ops if op.stage in cfg.caption_stages]
    if not ops:
        return text, {}, None, None, {}
    v = run_text_ops(ops, [text], sample["source"], sample["id"])
    info = {"text_scores": {k: round(x, 6) for k, x in sorted(v.scores.items())}}
    if v.lang:
        info["lang"] = v.lang
    return (v.text if v.reason is None else text), info, v.reason, v.score, v.events


# ------------------------------------------------------------------ per modality
def _image(sample, cfg: MediaConfig, apply_filters: bool):
    from filters.media_image import process_image

    data = sample["data"] if sample.get("data") is not None else load_bytes(sample["path"], cfg.image.max_bytes)
    chash = hashlib.sha256(data).hexdigest()
    out = process_image(data, cfg, apply_filters=apply_filters)
    info = {"width": out.width, "height": out.height, "orig_width": out.orig_width, "orig_height": out.orig_height,
            "format": out.format, "frames_in_file": out.n_frames}
    return ({out.ext: out.data}, info, chash, out.signature, out.tokens, (out.orig_width * out.orig_height,), 0.0)


def _audio(sample, cfg: MediaConfig, apply_filters: bool):
    from filters.media_audio import audio_summary, process_audio

    with local_file(sample, cfg.audio.max_bytes) as lp:
        chash = file_sha256(lp)
        out = process_audio(lp, sample["ext"], cfg, apply_filters=apply_filters)
    info = audio_summary(out)
    sig = {"audio": out.fingerprint} if out.fingerprint is not None else None
    return ({"flac": out.flac}, info, chash, sig, out.tokens, (out.duration_s,), out.duration_s)


def _video(sample, cfg: MediaConfig, apply_filters: bool):
    from filters.media_video import process_video

    with local_file(sample, cfg.video.max_bytes) as lp:
        chash = file_sha256(lp)
        out = process_video(lp, sample["ext"], cfg, apply_filters=apply_filters)
    members = {f"f{i:02d}.jpg": b for i, b in enumerate(out.frames)}
    if out.audio_flac is not None:
        members["flac"] = out.audio_flac
    i = out.info
    info = {"width": i.width, "height": i.height, "duration_s": round(i.duration_s, 4), "fps": round(i.fps, 4),
            "source_frames": i.n_frames, "codec": i.codec, "frames": len(out.frames),
            "frame_indices": out.frame_indices, "frame_width": out.frame_width, "frame_height": out.frame_height,
            "audio_duration_s": round(out.audio_duration_s, 4), "has_audio": out.audio_flac is not None}
    if out.audio_error:
        info["audio_error"] = out.audio_error
    return (members, info, chash, {"frames": out.frame_hashes}, out.tokens, (i.width * i.height, i.duration_s),
            i.duration_s)


HANDLERS = {"image": _image, "audio": _audio, "video": _video}


def process_sample(sample: dict[str, Any], cfg: MediaConfig, ops: list[Any], source_rank: dict[str, int],
                   dry_run: bool = False) -> Iterator[tuple[str, Any]]:
    if sample["modality"] == "interleaved":
        yield from _process_interleaved(sample, cfg, ops, source_rank, dry_run)
        return
    handler = HANDLERS.get(sample["modality"])
    if handler is None:
        yield _dead(sample, MediaError("unknown_modality", str(sample["modality"])))
        return
    text, text_info, treason, tscore, tevents = _text(sample, ops, cfg)
    for name, n in tevents.items():
        yield "event", (name, n)
    if treason is not None:
        yield "drop", dropped_row(_stub(sample), STAGE, treason, score=tscore,
                                  detail={"modality": sample["modality"], "origin": sample["origin"], "text": (text or "")[:300]})
        if not dry_run:
            return
    try:
        try:
            members, info, chash, sig, mtok, size, secs = handler(sample, cfg, True)
        except MediaReject as r:
            yield "drop", dropped_row(_stub(sample), STAGE, r.reason, score=r.score,
                                      detail={"modality": sample["modality"], "origin": sample["origin"], **r.detail})
            if not dry_run:
                return
            members, info, chash, sig, mtok, size, secs = handler(sample, cfg, False)
    except MediaError as e:
        yield _dead(sample, e)
        return
    except Exception as e:  # noqa: BLE001 - an unexpected decoder failure is bad media, not a crash
        yield _dead(sample, MediaError("media_error", f"{type(e).__name__}: {e}"[:200]))
        return
    yield "kept", make_record(sample, members=members, info=info, content_hash=chash, sig=sig, media_tokens=mtok,
                              text=text, text_info=text_info, size=size, seconds=secs, cfg=cfg,
                              source_rank=source_rank)


def _process_interleaved(sample, cfg: MediaConfig, ops, source_rank, dry_run):
    from filters.media_image import process_image

    segs = sample.get("segments") or []
    texts = [s["text"] for s in segs if s["type"] == "text"]
    kept_texts: list[str | None] = texts
    text_info: dict[str, Any] = {}
    ops = [op for op in ops if op.stage in cfg.interleaved_stages]
    if texts and cfg.text_filters and ops:
        v = run_text_ops(ops, texts, sample["source"], sample["id"])
        for name, n in v.events.items():
            yield "event", (name, n)
        text_info = {"text_scores": {k: round(x, 6) for k, x in sorted(v.scores.items())}}
        if v.lang:
            text_info["lang"] = v.lang
        if v.reason is not None:
            yield "drop", dropped_row(_stub(sample), STAGE, v.reason, score=v.score,
                                      detail={"modality": "interleaved", "origin": sample["origin"],
                                              "text": "\n\n".join(texts)[:300]})
            if not dry_run:
                return
        else:
            kept_texts = v.segments
    out_segs: list[dict[str, Any]] = []
    members: dict[str, bytes] = {}
    hashes: list[str] = []
    mtok = 0
    n_img = 0
    ti = 0
    for s in segs:
        if s["type"] == "text":
            t = kept_texts[ti] if ti < len(kept_texts) else None
            ti += 1
            if t:
                out_segs.append({"type": "text", "text": t})
                hashes.append("t:" + t)
            continue
        ref = s.get("ref")
        try:
            if n_img >= cfg.interleaved.max_images:
                raise MediaReject("too_many_images")
            if s.get("error"):
                code, _, detail = s["error"].partition(": ")
                raise MediaError(code, detail)
            data = load_bytes(s["path"], cfg.image.max_bytes)
            img = process_image(data, cfg, with_signature=False)
        except (MediaError, MediaReject) as e:
            reason = e.reason if isinstance(e, MediaError) else f"{e.reason}"
            if cfg.interleaved.on_bad_image == "drop_document" and isinstance(e, MediaError):
                yield _dead(sample, MediaError(f"interleaved_{e.code}", f"image {ref!r}: {e.detail}"))
                return
            if isinstance(e, MediaError):
                yield "dead_only", dead_letter_row(sample["source"], f"{sample['origin']}#{ref}", reason,
                                                   raw_head({"data": None, "path": s.get("path")}) if s.get("path") else (ref or "").encode(),
                                                   stage=STAGE)
            yield "event", (f"interleaved.image_removed.{reason.split(':', 1)[0]}", 1)
            continue
        except Exception as e:  # noqa: BLE001
            yield "dead_only", dead_letter_row(sample["source"], f"{sample['origin']}#{ref}",
                                               f"media_error: {type(e).__name__}: {e}"[:300], b"", stage=STAGE)
            yield "event", ("interleaved.image_removed.media_error", 1)
            continue
        name = f"img{n_img:02d}.{img.ext}"
        members[name] = img.data
        out_segs.append({"type": "image", "member": name, "ref": ref, "width": img.width, "height": img.height})
        hashes.append("i:" + hashlib.sha256(data).hexdigest())
        mtok += img.tokens
        n_img += 1
    if not out_segs:
        yield _dead(sample, MediaError("empty_interleaved_document", "no text or image survived"))
        return
    text = "\n\n".join(s["text"] for s in out_segs if s["type"] == "text") or None
    chash = hashlib.sha256("\0".join(hashes).encode("utf-8", "surrogatepass")).hexdigest()
    info = {"segments": out_segs, "images": n_img, "text_segments": sum(1 for s in out_segs if s["type"] == "text")}
    yield "kept", make_record(sample, members=members, info=info, content_hash=chash, sig=None, media_tokens=mtok,
                              text=text, text_info=text_info, size=(n_img,), seconds=0.0, cfg=cfg,
                              source_rank=source_rank)
