"""Media throughput per core: images/s, audio-seconds/s, video clips/s.

    PYTHONPATH=. .venv/bin/python bench/bench_media.py [--repeat 3]

One process, ffmpeg with ``-threads 1``: the numbers are per core (a Beam job
scales them by its worker count).  Each row is shown next to a baseline that
does only the decoding, so the table reads as "what our validation, resizing,
hashing and encoding cost on top of decoding".  Inputs: scikit-image's photos
(re-encoded as JPEG), the shipped speech clips and video (data/sample/media).
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SAMPLE = os.path.join(ROOT, "data", "sample", "media")


def _best(fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts)


def bench_images(repeat):
    import skimage
    from PIL import Image

    from filters.media import MediaConfig
    from filters.media_image import process_image

    d = os.path.join(os.path.dirname(skimage.__file__), "data")
    blobs = []
    for n in sorted(os.listdir(d)):
        if n.endswith((".png", ".jpg")) and os.path.getsize(os.path.join(d, n)) > 20000:
            b = io.BytesIO()
            Image.open(os.path.join(d, n)).convert("RGB").save(b, "JPEG", quality=90)
            blobs.append(b.getvalue())
    cfg = MediaConfig()
    mpix = sum(Image.open(io.BytesIO(b)).size[0] * Image.open(io.BytesIO(b)).size[1] for b in blobs) / 1e6

    def decode_only():
        for b in blobs:
            Image.open(io.BytesIO(b)).load()

    def full():
        for b in blobs:
            process_image(b, cfg)

    def no_hash():
        for b in blobs:
            process_image(b, cfg, with_signature=False)

    rows = []
    for name, fn in (("PIL decode only (baseline)", decode_only), ("validate+resize+encode", no_hash),
                     ("full image step (+ 4 pHashes)", full)):
        best, _ = _best(fn, repeat)
        rows.append(["image", name, f"{len(blobs) / best:,.1f} images/s", f"{mpix / best:,.1f} MP/s"])
    return rows


def bench_audio(repeat):
    import numpy as np
    import soundfile as sf

    from filters.media import MediaConfig
    from filters.media_audio import decode_audio, process_audio

    cfg = MediaConfig()
    clips = [os.path.join(SAMPLE, "audio", f) for f in ("monday.flac", "conference_begin.wav", "not_answering.ogg")]
    secs = sum(sf.info(c).duration for c in clips)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        # a long file: the speech clips looped to 120 s, 44.1 kHz stereo (resampling + downmix)
        x = decode_audio(clips[1], ".wav", cfg.audio)
        long = np.tile(x, int(120 * 16000 / len(x)) + 1)[: 120 * 16000]
        up = np.interp(np.arange(int(len(long) * 44100 / 16000)) * 16000 / 44100, np.arange(len(long)), long)
        lp = os.path.join(td, "long.wav")
        sf.write(lp, np.stack([up, up], 1), 44100, subtype="PCM_16")
        for label, files, total in (("short clips (0.9-3.6 s)", clips, secs), ("one 120 s 44.1 kHz stereo file", [lp], 120.0)):
            best, _ = _best(lambda: [decode_audio(f, os.path.splitext(f)[1], cfg.audio) for f in files], repeat)
            rows.append(["audio", f"ffmpeg decode to 16k only, {label}", f"{total / best:,.1f} audio-s/s", ""])
            best, _ = _best(lambda: [process_audio(f, os.path.splitext(f)[1], cfg) for f in files], repeat)
            rows.append(["audio", f"full audio step, {label}", f"{total / best:,.1f} audio-s/s",
                         f"{len(files) / best:,.1f} files/s"])
    return rows


def bench_video(repeat):
    from filters.media import MediaConfig, probe
    from filters.media_video import process_video

    cfg = MediaConfig()
    rows = []
    for name in ("slideshow.mp4", "slideshow_small.webm"):
        p = os.path.join(SAMPLE, "video", name)
        best, _ = _best(lambda: probe(p, os.path.splitext(p)[1], 30), repeat)
        rows.append(["video", f"ffprobe only, {name}", f"{1 / best:,.1f} clips/s", ""])
        best, _ = _best(lambda: process_video(p, os.path.splitext(p)[1], cfg), repeat)
        rows.append(["video", f"16 frames + audio track, {name}", f"{1 / best:,.1f} clips/s", f"{16 / best:,.1f} frames/s"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rows = bench_images(a.repeat) + bench_audio(a.repeat) + bench_video(a.repeat)
    w = max(len(r[1]) for r in rows)
    print(f"\nMedia throughput, one core (best of {a.repeat}; machine shared, treat as rough)")
    print(f"{'kind':6s} {'step':{w}s} {'throughput':>20s} {'':>14s}")
    for r in rows:
        print(f"{r[0]:6s} {r[1]:{w}s} {r[2]:>20s} {r[3]:>14s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
