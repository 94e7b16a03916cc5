"""Video operators: probe, duration / resolution filters, N evenly spaced frames
(default 16) decoded by ffmpeg, the audio track at 16 kHz mono, per-frame
perceptual hashes (near-duplicate videos) and token cost.

Frames ``i = 0..N-1`` are the source frames ``round(i * (F - 1) / (N - 1))`` of
a clip with ``F`` frames (first and last included).  Short clips are decoded in
one streaming ffmpeg pass with a ``select`` filter; clips longer than
``SEEK_ABOVE_S`` use one fast seek per frame, so a long video is never decoded
end to end.  Frames come out already scaled to ``frame_max_side``; the process's
output is capped at exactly N scaled frames, so memory is bounded by
N x frame size whatever the input.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from PIL import Image

from filters.media import (
    MediaConfig,
    MediaError,
    MediaReject,
    audio_tokens,
    ffmpeg_input_args,
    ffmpeg_url,
    image_tokens,
    last_error_line,
    probe,
    run_bounded,
)
from filters.media_image import phash_int

SEEK_ABOVE_S = 60.0


@dataclass
class VideoInfo:
    width: int
    height: int
    duration_s: float
    fps: float
    n_frames: int          # frames in the clip (from the container, else duration x fps)
    has_audio: bool
    codec: str


@dataclass
class VideoOut:
    info: VideoInfo
    frames: list[bytes]               # JPEG per sampled frame
    frame_indices: list[int]
    frame_width: int
    frame_height: int
    frame_hashes: list[int]
    audio_flac: bytes | None = None
    audio_duration_s: float = 0.0
    audio_error: str | None = None
    tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _rate(s: str | None) -> float:
    try:
        f = Fraction(s or "0")
        return float(f) if f > 0 else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0


def video_info(path: str, ext: str, timeout: float) -> VideoInfo:
    meta = probe(path, ext, timeout)
    streams = meta.get("streams") or []
    v = next((s for s in streams if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")), None)
    if v is None:
        raise MediaError("no_video_stream", f"{len(streams)} streams")
    w, h = int(v.get("width") or 0), int(v.get("height") or 0)
    if w <= 0 or h <= 0:
        raise MediaError("undecodable_video", "no frame size")
    rot = 0
    for sd in v.get("side_data_list") or []:
        if "rotation" in sd:
            rot = int(float(sd["rotation"])) % 360
    rot = rot or int(float((v.get("tags") or {}).get("rotate", 0) or 0)) % 360
    if rot in (90, 270):  # ffmpeg auto-rotates on decode: frames come out transposed
        w, h = h, w
    dur = 0.0
    for cand in (v.get("duration"), (meta.get("format") or {}).get("duration")):
        try:
            dur = float(cand)
            if dur > 0:
                break
        except (TypeError, ValueError):
            continue
    fps = _rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate"))
    try:
        nb = int(v.get("nb_frames") or 0)
    except ValueError:
        nb = 0
    if dur <= 0 and nb > 0 and fps > 0:
        dur = nb / fps
    if dur <= 0:
        raise MediaError("undecodable_video", "unknown duration")
    if nb <= 0:
        nb = max(1, int(round(dur * fps))) if fps > 0 else 1
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    return VideoInfo(w, h, dur, fps, nb, has_audio, str(v.get("codec_name")))


def frame_indices(n_total: int, n: int) -> list[int]:
    """``n`` evenly spaced frame indices of ``0..n_total-1``, first and last included."""
    n = max(1, min(n, n_total))
    if n == 1:
        return [0]
    return sorted({round(i * (n_total - 1) / (n - 1)) for i in range(n)})


def fit_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    s = min(1.0, max_side / max(w, h))
    tw, th = max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2)
    return tw, th


def _decode_select(path: str, ext: str, idx: list[int], tw: int, th: int, timeout: float) -> bytes:
    import ffmpeg

    expr = "+".join(f"eq(n,{i})" for i in idx)
    out = (
        ffmpeg.input(ffmpeg_url(path), **ffmpeg_input_args(path, ext)).video
        .filter("select", expr)
        .filter("scale", tw, th, flags="bicubic")
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough", **{"frames:v": len(idx)})
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1")
    )
    res = run_bounded(ffmpeg.compile(out, cmd="ffmpeg"), timeout=timeout, max_stdout=len(idx) * tw * th * 3)
    if res.returncode != 0:
        raise MediaError("undecodable_video", last_error_line(res.stderr))
    return res.stdout


def _decode_seek(path: str, ext: str, idx: list[int], fps: float, tw: int, th: int, timeout: float) -> bytes:
    import ffmpeg

    chunks = []
    for i in idx:
        t = i / fps if fps > 0 else 0.0
        out = (
            ffmpeg.input(ffmpeg_url(path), ss=f"{t:.3f}", **ffmpeg_input_args(path, ext)).video
            .filter("scale", tw, th, flags="bicubic")
            .output("pipe:", format="rawvideo", pix_fmt="rgb24", **{"frames:v": 1})
            .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1")
        )
        res = run_bounded(ffmpeg.compile(out, cmd="ffmpeg"), timeout=timeout / max(len(idx), 1) + 5,
                          max_stdout=tw * th * 3)
        if res.returncode != 0:
            raise MediaError("undecodable_video", last_error_line(res.stderr))
        chunks.append(res.stdout)
    return b"".join(chunks)


def check_video(info: VideoInfo, cfg: MediaConfig) -> None:
    vc = cfg.video
    if info.duration_s < vc.min_duration_s:
        raise MediaReject("video_too_short", info.duration_s)
    if info.duration_s > vc.max_duration_s:
        raise MediaReject("video_too_long", info.duration_s)
    if min(info.width, info.height) < vc.min_side:
        raise MediaReject("video_resolution_low", float(min(info.width, info.height)),
                          {"width": info.width, "height": info.height})
    if info.width * info.height > vc.max_pixels:
        raise MediaReject("video_resolution_high", float(info.width * info.height),
                          {"width": info.width, "height": info.height})


def process_video(path: str, ext: str, cfg: MediaConfig, *, apply_filters: bool = True) -> VideoOut:
    """Probe, filter, sample frames and the audio track of a local video file."""
    vc = cfg.video
    info = video_info(path, ext, min(vc.ffmpeg_timeout_s, 60.0))
    if apply_filters:
        check_video(info, cfg)
    idx = frame_indices(info.n_frames, vc.n_frames)
    tw, th = fit_size(info.width, info.height, vc.frame_max_side)
    if info.duration_s > SEEK_ABOVE_S:
        raw = _decode_seek(path, ext, idx, info.fps, tw, th, vc.ffmpeg_timeout_s)
    else:
        raw = _decode_select(path, ext, idx, tw, th, vc.ffmpeg_timeout_s)
    fsize = tw * th * 3
    got = len(raw) // fsize
    if got == 0:
        raise MediaError("undecodable_video", "no frames decoded")
    # A container that over-states its frame count yields fewer frames: keep the
    # ones decoded (their indices are the first ``got`` requested).
    idx = idx[:got]
    frames, hashes = [], []
    for k in range(got):
        arr = np.frombuffer(raw[k * fsize:(k + 1) * fsize], dtype=np.uint8).reshape(th, tw, 3)
        img = Image.fromarray(arr, "RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=vc.jpeg_quality, subsampling=2, optimize=False, progressive=False)
        frames.append(buf.getvalue())
        hashes.append(phash_int(img))
    out = VideoOut(info=info, frames=frames, frame_indices=idx, frame_width=tw, frame_height=th, frame_hashes=hashes)
    if vc.audio and info.has_audio:
        from filters.media_audio import decode_audio, encode_flac

        try:
            x = decode_audio(path, ext, cfg.audio, max_duration_s=min(info.duration_s, vc.max_duration_s),
                             timeout=vc.ffmpeg_timeout_s)
            out.audio_flac = encode_flac(x, cfg.audio.sample_rate)
            out.audio_duration_s = len(x) / cfg.audio.sample_rate
        except MediaError as e:  # a broken audio track does not lose the frames
            out.audio_error = e.reason
    t = cfg.tokens
    out.tokens = len(frames) * image_tokens(tw, th, t) + audio_tokens(out.audio_duration_s, t)
    return out
