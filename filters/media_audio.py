"""Audio operators: decode anything ffmpeg reads (wav, flac, mp3, ogg, ...) to
16 kHz mono through ffmpeg-python, duration and silence filters, FLAC encoding
(libsndfile via soundfile) and a 64-bit spectral fingerprint for near-duplicates.

ffmpeg runs without a shell, with a timeout, a forced demuxer (no content
sniffing), the ``file`` protocol only, and a cap on its output: at most
``max_duration_s`` (+ 1 s) of audio is ever decoded, so a 10-hour file costs no
more memory than a clip of the cap.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from filters.media import (
    AudioConfig,
    MediaConfig,
    MediaError,
    MediaReject,
    audio_tokens,
    ffmpeg_input_args,
    ffmpeg_url,
    last_error_line,
    run_bounded,
)

FRAME_S = 0.02  # analysis frame for the silence filter


@dataclass
class AudioOut:
    flac: bytes
    duration_s: float
    sample_rate: int
    silent_fraction: float
    peak_dbfs: float
    tokens: int
    fingerprint: int | None


def decode_audio(path: str, ext: str, cfg: AudioConfig, *, max_duration_s: float | None = None,
                 stream: str = "a:0", timeout: float | None = None) -> np.ndarray:
    """Decode the first audio stream of a local file to float32 mono at ``cfg.sample_rate``.

    Raises ``MediaError`` (``undecodable_audio``, ``no_audio_stream``,
    ``ffmpeg_timeout``...).  Returns at most ``max_duration_s + 1`` seconds."""
    import ffmpeg  # ffmpeg-python: builds the command line; run_bounded runs it

    max_d = cfg.max_duration_s if max_duration_s is None else max_duration_s
    sr = cfg.sample_rate
    inp = ffmpeg.input(ffmpeg_url(path), t=f"{max_d + 1:.3f}", **ffmpeg_input_args(path, ext))
    out = (
        inp[stream]
        .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sr)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1")
    )
    args = ffmpeg.compile(out, cmd="ffmpeg")
    cap = int((max_d + 2) * sr * 4)
    res = run_bounded(args, timeout=cfg.ffmpeg_timeout_s if timeout is None else timeout, max_stdout=cap)
    if res.returncode != 0:
        msg = last_error_line(res.stderr)
        if "matches no streams" in res.stderr or "does not contain any stream" in res.stderr:
            raise MediaError("no_audio_stream", msg)
        raise MediaError("undecodable_audio", msg)
    if len(res.stdout) < 4:
        raise MediaError("undecodable_audio", "no samples decoded")
    n = len(res.stdout) // 4
    return np.frombuffer(res.stdout[: n * 4], dtype="<f4").astype(np.float32)


def frame_rms_db(x: np.ndarray, sr: int, frame_s: float = FRAME_S) -> np.ndarray:
    n = max(1, int(round(sr * frame_s)))
    k = len(x) // n
    if k == 0:
        return np.array([20 * math.log10(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + 1e-12)])
    fr = x[: k * n].astype(np.float64).reshape(k, n)
    return 20 * np.log10(np.sqrt(np.mean(fr * fr, axis=1)) + 1e-12)


def silence_stats(x: np.ndarray, sr: int, silence_dbfs: float) -> tuple[float, float]:
    """(fraction of 20 ms frames quieter than ``silence_dbfs``, peak dBFS)."""
    db = frame_rms_db(x, sr)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return float(np.mean(db < silence_dbfs)), 20 * math.log10(peak + 1e-12)


def encode_flac(x: np.ndarray, sr: int) -> bytes:
    """16-bit FLAC (libsndfile's encoder: same input, same bytes)."""
    import soundfile as sf

    pcm = np.clip(np.round(x.astype(np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def fingerprint(x: np.ndarray, sr: int, *, n_bands: int = 9, n_times: int = 9, fmin: float = 150.0,
                fmax: float = 3400.0) -> int | None:
    """64-bit spectral-shape fingerprint (Haitsma-Kalker style sign bits).

    Leading/trailing silence is trimmed (padding does not move it), log band
    energies are differenced across bands and time (a gain change cancels out),
    and only 150-3400 Hz is used (a round trip through 8 kHz keeps it).  The
    time axis is pooled into ``n_times`` equal segments, so the hash compares
    whole clips of any length; None for clips too short to hash."""
    db = frame_rms_db(x, sr)
    hop = max(1, int(round(sr * FRAME_S)))
    active = np.nonzero(db > max(db.max() - 35.0, -60.0))[0]
    if len(active) == 0:
        return None
    x = x[active[0] * hop: (active[-1] + 1) * hop]
    nfft = 512
    step = nfft // 2
    if len(x) < nfft * 2:
        return None
    k = 1 + (len(x) - nfft) // step
    idx = np.arange(nfft)[None, :] + step * np.arange(k)[:, None]
    frames = x[idx].astype(np.float64) * np.hanning(nfft)[None, :]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    edges = np.geomspace(fmin, fmax, n_bands + 1)
    bands = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
    if k < n_times:
        return None
    seg = np.array_split(np.arange(k), n_times)
    e = np.log(np.stack([bands[s].mean(axis=0) for s in seg]) + 1e-10)  # (n_times, n_bands)
    d = (e[1:, :-1] - e[1:, 1:]) - (e[:-1, :-1] - e[:-1, 1:])           # (n_times-1, n_bands-1)
    bits = (d > 0).ravel()
    v = 0
    for b in bits[:64]:
        v = (v << 1) | int(b)
    return v


def process_audio_array(x: np.ndarray, cfg: MediaConfig, *, apply_filters: bool = True) -> AudioOut:
    acfg = cfg.audio
    sr = acfg.sample_rate
    duration = len(x) / sr
    if apply_filters:
        if duration > acfg.max_duration_s:
            raise MediaReject("audio_too_long", duration, {"max_duration_s": acfg.max_duration_s})
        if duration < acfg.min_duration_s:
            raise MediaReject("audio_too_short", duration)
    silent, peak = silence_stats(x, sr, acfg.silence_dbfs)
    if apply_filters and silent > acfg.max_silent_fraction:
        raise MediaReject("audio_silent", silent, {"peak_dbfs": round(peak, 2)})
    x = x[: int(acfg.max_duration_s * sr)]
    return AudioOut(flac=encode_flac(x, sr), duration_s=len(x) / sr, sample_rate=sr, silent_fraction=silent,
                    peak_dbfs=peak, tokens=audio_tokens(len(x) / sr, cfg.tokens), fingerprint=fingerprint(x, sr))


def process_audio(path: str, ext: str, cfg: MediaConfig, *, apply_filters: bool = True) -> AudioOut:
    """Decode a local audio file and run the filters (``MediaError`` / ``MediaReject``)."""
    x = decode_audio(path, ext, cfg.audio)
    return process_audio_array(x, cfg, apply_filters=apply_filters)


def audio_summary(out: AudioOut) -> dict[str, Any]:
    return {"duration_s": round(out.duration_s, 4), "sample_rate": out.sample_rate,
            "silent_fraction": round(out.silent_fraction, 4), "peak_dbfs": round(out.peak_dbfs, 2)}
