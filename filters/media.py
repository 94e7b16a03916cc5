"""Media operators shared by images, audio and video: config, errors, the safe
ffmpeg runner, safe tar members, token costs, perceptual-hash matching and the
text-filter adapter for captions/transcripts.

Pure, engine-free code (no Beam).  The per-modality operators live in
``filters/media_image.py``, ``filters/media_audio.py`` and
``filters/media_video.py``; ``pipelines/media.py`` wires them into Beam.

Shard layout (WebDataset tars, written by ``pipelines/media.py`` at
``DIR/media/<modality>/<source>-<bucket>-<part>.tar``; also recorded in
``manifest.json["media"]["layout"]``): every sample is a group of tar members
sharing one key (``<key>`` = the input id when it is ``[A-Za-z0-9_-]``, else a
sanitised id plus a hash; the original id is in the JSON):

* image        ``<key>.jpg`` (or ``<key>.png`` when the image has alpha), ``<key>.json``
* audio        ``<key>.flac`` (16 kHz mono, 16-bit), ``<key>.json``
* video        ``<key>.f00.jpg`` ... ``<key>.f15.jpg`` (N evenly spaced frames),
               ``<key>.flac`` (the audio track at 16 kHz mono, when there is one), ``<key>.json``
* interleaved  ``<key>.json`` (``segments``: ``{"type": "text", "text": ...}`` or
               ``{"type": "image", "member": "img00.jpg"}`` in document order),
               ``<key>.img00.jpg`` ...

``<key>.json`` always holds ``id, source, modality, origin, text`` (caption /
transcript / interleaved text after the text filters, or null), ``tokens``
(``{"media": n, "text": n, "total": n}``), the measurements (``width``,
``height``, ``duration_s``, ``frames``...), ``content_hash`` and the perceptual
hashes.  Members are sorted, headers carry mtime 0, uid/gid 0, mode 0444, so a
shard's bytes depend only on its samples.
"""
from __future__ import annotations

import math
import os
import posixpath
import random
import re
import subprocess
import tarfile
import threading
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from filters.base import DocFilter, DocTransform, run_filter, run_transform
from filters.schema import new_text_record, stable_hash
from filters.stats import estimate_tokens

MODALITIES = ("image", "audio", "video", "interleaved")

IMAGE_EXT = {".jpg": "image", ".jpeg": "image", ".png": "image", ".webp": "image", ".gif": "image",
             ".bmp": "image", ".tif": "image", ".tiff": "image"}
AUDIO_EXT = {".wav": "audio", ".flac": "audio", ".mp3": "audio", ".ogg": "audio", ".oga": "audio",
             ".opus": "audio", ".m4a": "audio"}
VIDEO_EXT = {".mp4": "video", ".m4v": "video", ".mov": "video", ".webm": "video", ".mkv": "video"}
MEDIA_EXT = {**IMAGE_EXT, **AUDIO_EXT, **VIDEO_EXT}
#: Text sidecars of a media file / tar sample (WebDataset naming: ``key.txt``).
TEXT_SIDECAR_EXT = (".txt", ".caption", ".cap", ".transcript", ".json")

#: ffmpeg demuxer forced per extension: content sniffing is off, so a file named
#: ``.mp4`` that is really an HLS playlist or a concat script is refused instead of
#: being followed to other files (the classic ffmpeg local-file-read trap).
FFMPEG_DEMUXER = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".ogg": "ogg", ".oga": "ogg",
                  ".opus": "ogg", ".m4a": "mov", ".mp4": "mov", ".m4v": "mov", ".mov": "mov",
                  ".webm": "matroska", ".mkv": "matroska"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- config
class ImageConfig(_Strict):
    max_bytes: int = Field(32 * 1024 * 1024, gt=0)       # larger files: dead letter
    #: decompression-bomb limit, checked from the header before any pixel is decoded
    max_pixels: int = Field(64_000_000, gt=0)
    formats: list[str] = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"]
    min_side: int = Field(32, ge=1)                      # shorter side, pixels
    max_aspect: float = Field(4.0, ge=1.0)               # long side / short side
    min_std: float = Field(2.0, ge=0.0)                  # grey-level std: blank images below
    max_side: int = Field(1024, ge=16)                   # resized to fit (LANCZOS)
    jpeg_quality: int = Field(90, ge=30, le=100)


class AudioConfig(_Strict):
    sample_rate: int = Field(16000, ge=8000)
    max_bytes: int = Field(256 * 1024 * 1024, gt=0)
    min_duration_s: float = Field(0.3, ge=0.0)
    max_duration_s: float = Field(600.0, gt=0.0)
    #: a 20 ms frame quieter than this (RMS, dB full scale) counts as silent
    silence_dbfs: float = -45.0
    max_silent_fraction: float = Field(0.9, ge=0.0, le=1.0)
    ffmpeg_timeout_s: float = Field(60.0, gt=0)


class VideoConfig(_Strict):
    max_bytes: int = Field(2 * 1024 * 1024 * 1024, gt=0)  # streamed from disk, never loaded whole
    n_frames: int = Field(16, ge=1, le=256)
    frame_max_side: int = Field(512, ge=16)
    jpeg_quality: int = Field(90, ge=30, le=100)
    min_duration_s: float = Field(0.5, ge=0.0)
    max_duration_s: float = Field(3600.0, gt=0.0)
    min_side: int = Field(64, ge=1)                      # resolution filter (shorter side)
    max_pixels: int = Field(8192 * 8192, gt=0)            # width x height
    audio: bool = True                                    # extract the audio track (16 kHz mono)
    ffmpeg_timeout_s: float = Field(180.0, gt=0)


class TokensConfig(_Strict):
    """Token-cost estimate per sample, so mixtures can be weighted in tokens."""
    patch_size: int = Field(16, ge=1)                     # image tokens = ceil(w/p) * ceil(h/p)
    image_max_tokens: int = Field(4096, ge=1)             # cap per image / per frame
    audio_tokens_per_s: float = Field(25.0, gt=0)         # e.g. one token per 40 ms feature frame


class MediaDedupConfig(_Strict):
    enabled: bool = True
    exact: bool = True
    perceptual: bool = True
    #: Hamming distance (of 64 bits) at or below which two items are near-duplicates.
    image_threshold: int = Field(10, ge=0, le=64)
    video_threshold: float = Field(10.0, ge=0, le=64)     # mean over aligned frames
    audio_threshold: int = Field(8, ge=0, le=64)
    #: images are also hashed on centre crops of these fractions (border trims,
    #: centre crops) and mirrored (flips); see ``image_distance``.
    crop_probes: list[float] = [0.9, 0.8]
    mirror: bool = True
    #: bit-sampling LSH for candidate pairs: ``tables`` keys of ``bits`` sampled bits
    #: per hash.  P(candidate | distance d) = 1 - (1 - (1 - d/64)^bits)^tables.
    lsh_bits: int = Field(16, ge=4, le=64)
    lsh_tables: int = Field(32, ge=1, le=256)
    max_bucket: int = Field(2000, ge=2)                   # larger buckets: compared to their first max_bucket
    cc_rounds: int = Field(8, ge=1, le=64)                # label-propagation rounds (cluster diameter)
    #: survivor of a cluster: ``largest`` (pixels, then duration), ``first_seen``
    #: (source order, then file, then position), ``smallest_id``; must end with smallest_id
    survivor: list[Literal["largest", "first_seen", "smallest_id"]] = ["largest", "first_seen", "smallest_id"]

    @field_validator("survivor")
    @classmethod
    def _survivor(cls, v: list[str]) -> list[str]:
        if not v or v[-1] != "smallest_id":
            raise ValueError("must end with 'smallest_id' so the choice is always deterministic")
        return v

    @field_validator("crop_probes")
    @classmethod
    def _probes(cls, v: list[float]) -> list[float]:
        if any(not (0.3 <= f < 1.0) for f in v):
            raise ValueError("crop fractions must be in [0.3, 1)")
        return v


class MediaShardConfig(_Strict):
    target_bytes: int = Field(64 * 1024 * 1024, gt=0)     # a tar never exceeds this unless one sample does


class InterleavedConfig(_Strict):
    max_images: int = Field(64, ge=0)
    on_bad_image: Literal["remove", "drop_document"] = "remove"


class MediaConfig(_Strict):
    #: base of relative paths in media manifests (``--media-root``); default: the
    #: manifest's folder, then its parent folders (nearest first) where the file exists
    media_root: str | None = None
    max_tar_member_bytes: int = Field(512 * 1024 * 1024, gt=0)
    text_filters: bool = True     # captions / transcripts / interleaved text go through the text operators
    #: which text-operator stages run on a caption or transcript: document-level
    #: quality rules (>= 50 words, >= 5 sentences, ...) would drop nearly every caption
    caption_stages: list[str] = ["normalize", "safety", "pii"]
    #: ... and on the text of an interleaved (OBELICS-like) document
    interleaved_stages: list[str] = ["normalize", "language", "quality", "safety", "pii"]
    image: ImageConfig = ImageConfig()
    audio: AudioConfig = AudioConfig()
    video: VideoConfig = VideoConfig()
    tokens: TokensConfig = TokensConfig()
    dedup: MediaDedupConfig = MediaDedupConfig()
    shards: MediaShardConfig = MediaShardConfig()
    interleaved: InterleavedConfig = InterleavedConfig()


# --------------------------------------------------------------------------- errors
class MediaError(Exception):
    """Bad media: ``code`` is the categorical reason (ledger), ``detail`` the rest."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail

    @property
    def reason(self) -> str:
        return (f"{self.code}: {self.detail}" if self.detail else self.code)[:300]


class MediaReject(Exception):
    """Well-formed media that a filter rejects (a drop, not a dead letter)."""

    def __init__(self, reason: str, score: float | None = None, detail: dict[str, Any] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.score = score
        self.detail = detail or {}


# --------------------------------------------------------------------------- ffmpeg
class FFmpegResult:
    def __init__(self, stdout: bytes, stderr: str, returncode: int):
        self.stdout, self.stderr, self.returncode = stdout, stderr, returncode


def run_bounded(args: list[str], *, timeout: float, max_stdout: int, stdin_data: bytes | None = None,
                max_stderr: int = 64 * 1024) -> FFmpegResult:
    """Run a command (a list: never a shell) with a wall-clock timeout and a cap on
    what it may write; a process that exceeds either is killed and ``MediaError``
    (``ffmpeg_timeout`` / ``ffmpeg_output_too_large``) is raised."""
    try:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, shell=False)
    except OSError as e:
        raise MediaError("ffmpeg_unavailable", f"{args[0]}: {e}") from None
    out = bytearray()
    err = bytearray()
    state = {"too_large": False}

    def pump_out():
        while True:
            chunk = proc.stdout.read(1 << 16)
            if not chunk:
                return
            if len(out) + len(chunk) > max_stdout:
                state["too_large"] = True
                proc.kill()
                return
            out.extend(chunk)

    def pump_err():
        while True:
            chunk = proc.stderr.read(1 << 14)
            if not chunk:
                return
            err.extend(chunk)
            if len(err) > 2 * max_stderr:
                del err[: len(err) - max_stderr]

    threads = [threading.Thread(target=pump_out, daemon=True), threading.Thread(target=pump_err, daemon=True)]
    for t in threads:
        t.start()
    if stdin_data is not None:
        try:
            proc.stdin.write(stdin_data)
        except (BrokenPipeError, OSError):
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for t in threads:
            t.join(5)
        raise MediaError("ffmpeg_timeout", f"{os.path.basename(args[0])} ran over {timeout:g}s") from None
    for t in threads:
        t.join(30)
    if state["too_large"]:
        raise MediaError("ffmpeg_output_too_large", f"over {max_stdout} bytes")
    return FFmpegResult(bytes(out), bytes(err[-max_stderr:]).decode("utf-8", "replace"), rc)


def ffmpeg_input_args(path: str, ext: str) -> dict[str, Any]:
    """ffmpeg-python ``input`` kwargs for a local file: forced demuxer, file protocol only."""
    kw: dict[str, Any] = {"protocol_whitelist": "file"}
    fmt = FFMPEG_DEMUXER.get(ext.lower())
    if fmt:
        kw["f"] = fmt
    return kw


def ffmpeg_url(path: str) -> str:
    """``file:`` + absolute path: a name like ``-x`` or ``concat:a|b`` is never an option or protocol."""
    return "file:" + os.path.abspath(path)


def last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no message"


def probe(path: str, ext: str, timeout: float) -> dict[str, Any]:
    """``ffprobe`` JSON of a local file (forced demuxer, bounded output, timeout)."""
    import json

    args = ["ffprobe", "-v", "error", "-protocol_whitelist", "file"]
    fmt = FFMPEG_DEMUXER.get(ext.lower())
    if fmt:
        args += ["-f", fmt]
    args += ["-show_format", "-show_streams", "-of", "json", ffmpeg_url(path)]
    res = run_bounded(args, timeout=timeout, max_stdout=4 * 1024 * 1024)
    if res.returncode != 0:
        raise MediaError("unreadable_media", last_error_line(res.stderr))
    try:
        return json.loads(res.stdout.decode("utf-8", "replace"))
    except ValueError:
        raise MediaError("unreadable_media", "ffprobe printed no JSON") from None


# --------------------------------------------------------------------------- tar members
def safe_member_name(name: str) -> str | None:
    """The member's normalised relative path, or None when it is unsafe: absolute,
    climbing out with ``..``, a drive letter, or a NUL byte."""
    if not name or "\0" in name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return None
    parts = re.split(r"[\\/]+", name)
    if any(p == ".." for p in parts):
        return None
    norm = posixpath.normpath("/".join(p for p in parts if p not in ("", ".")))
    return None if norm in ("", ".") else norm


def iter_tar_members(fileobj, max_member_bytes: int) -> Iterator[tuple[str, str, bytes | None, str | None]]:
    """Stream a tar: yields ``(name, normalised_name, data, error)`` per member.

    Unsafe names (``../``, absolute), links, devices and members over the size cap
    yield an error instead of data (the member is skipped, not extracted: nothing is
    ever written to disk under a member's name).  Directories are skipped.  A
    corrupt archive ends with one ``("", "", None, "corrupt_tar: ...")``."""
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as e:
        yield "", "", None, f"corrupt_tar: {type(e).__name__}: {e}"[:300]
        return
    try:
        for m in tf:
            if m.isdir():
                continue
            norm = safe_member_name(m.name)
            if norm is None:
                yield m.name, "", None, f"unsafe_tar_member: {m.name!r}"[:300]
                continue
            if not m.isfile():
                kind = "symlink" if m.issym() else "hardlink" if m.islnk() else "special file"
                yield m.name, norm, None, f"unsafe_tar_member: {kind} {m.name!r}"[:300]
                continue
            if m.size > max_member_bytes:
                yield m.name, norm, None, f"tar_member_too_large: {m.size} bytes > {max_member_bytes}"
                continue
            f = tf.extractfile(m)
            data = f.read() if f is not None else b""
            if len(data) != m.size:
                yield m.name, norm, None, f"corrupt_tar: member {m.name!r} truncated"
                return
            yield m.name, norm, data, None
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        yield "", "", None, f"corrupt_tar: {type(e).__name__}: {e}"[:300]


def wds_split(name: str) -> tuple[str, str]:
    """WebDataset convention: ``dir/abc.seg.jpg`` -> key ``dir/abc``, extension ``seg.jpg``."""
    d, base = posixpath.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return posixpath.join(d, stem) if d else stem, ext.lower()


# --------------------------------------------------------------------------- keys, tokens
_CLEAN_KEY = re.compile(r"^[A-Za-z0-9_-]{1,120}$")


def sample_key(sample_id: str) -> str:
    """Tar key for an id: the id itself when it is ``[A-Za-z0-9_-]{1,120}``,
    else a sanitised prefix plus a hash (WebDataset keys may not contain dots)."""
    if _CLEAN_KEY.match(sample_id):
        return sample_id
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", sample_id).strip("_")[:80] or "id"
    return f"{clean}-{stable_hash(sample_id, size=6)}"


def image_grid(width: int, height: int, cfg: TokensConfig) -> tuple[int, int]:
    """Patch grid ``(rows, cols)`` of one image (or video frame) at its stored size.

    The variable-resolution rule shared by the token costs here and the trainer's
    packer (``mixtures/multimodal.py``, which resizes the image to exactly
    ``cols * patch_size`` x ``rows * patch_size`` pixels and cuts it into patches):
    ``ceil(h / p)`` x ``ceil(w / p)`` patches; when that is more than
    ``image_max_tokens``, both sides are scaled by ``sqrt(max / (rows * cols))``
    (rounded down, at least 1; aspect ratio kept) and trimmed one row or column at a
    time, longer side first, until the grid fits the budget."""
    p, cap = cfg.patch_size, cfg.image_max_tokens
    rows, cols = max(1, math.ceil(height / p)), max(1, math.ceil(width / p))
    if rows * cols <= cap:
        return rows, cols
    s = math.sqrt(cap / (rows * cols))
    r, c = max(1, math.floor(rows * s)), max(1, math.floor(cols * s))
    while r * c > cap:
        if r >= c:
            r -= 1
        else:
            c -= 1
    return r, c


def image_tokens(width: int, height: int, cfg: TokensConfig) -> int:
    """Tokens of one image (or video frame) at its stored resolution: one per patch of
    ``image_grid`` (``ceil(w/p) * ceil(h/p)`` unless that exceeds ``image_max_tokens``)."""
    r, c = image_grid(width, height, cfg)
    return r * c


def audio_tokens(duration_s: float, cfg: TokensConfig) -> int:
    return int(math.ceil(duration_s * cfg.audio_tokens_per_s)) if duration_s > 0 else 0


def text_tokens(text: str | None) -> int:
    return estimate_tokens(text) if text else 0


# --------------------------------------------------------------------------- perceptual matching
def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def lsh_positions(bits: int, tables: int, seed: int = 0x5EED) -> list[list[int]]:
    """Fixed pseudo-random bit positions (of 64) for each LSH table."""
    rng = random.Random(seed)
    return [sorted(rng.sample(range(64), bits)) for _ in range(tables)]


def lsh_keys(hashes: list[int], positions: list[list[int]]) -> set[tuple[int, int]]:
    """Bit-sampling LSH keys ``(table, sampled bits)`` of all ``hashes`` of one item."""
    keys = set()
    for h in hashes:
        for t, pos in enumerate(positions):
            v = 0
            for p in pos:
                v = (v << 1) | ((h >> p) & 1)
            keys.add((t, v))
    return keys


def image_distance(a: dict[str, Any], b: dict[str, Any]) -> int:
    """Near-duplicate distance of two image signatures (``filters.media_image.signature``):
    the smallest Hamming distance between one's full-image pHash and the other's
    full, mirrored or centre-cropped pHashes (either way round)."""
    best = hamming(a["full"], b["full"])
    for x, y in ((a, b), (b, a)):
        for h in [y.get("mirror")] + list(y.get("crops") or []):
            if h is not None:
                best = min(best, hamming(x["full"], h))
    return best


def frames_distance(a: list[int], b: list[int]) -> float:
    """Mean Hamming distance of aligned frame hashes (evenly spaced frames align
    across re-encodes and rescales); frames are matched by relative position."""
    if not a or not b:
        return 64.0
    n = min(len(a), len(b))
    ia = [round(i * (len(a) - 1) / max(n - 1, 1)) for i in range(n)]
    ib = [round(i * (len(b) - 1) / max(n - 1, 1)) for i in range(n)]
    return sum(hamming(a[i], b[j]) for i, j in zip(ia, ib)) / n


# --------------------------------------------------------------------------- text adapter
class TextVerdict:
    def __init__(self):
        self.text: str | None = None
        self.reason: str | None = None
        self.score: float | None = None
        self.scores: dict[str, float] = {}
        self.lang: str | None = None
        self.segments: list[str | None] = []
        self.events: dict[str, int] = {}


def run_text_ops(ops: list[Any], segments: list[str], source: str, rid: str) -> TextVerdict:
    """Captions / transcripts / interleaved text through the corpus text operators.

    One pseudo text record (``filters.schema.new_text_record``) carries the text
    through the operator list, so later filters see what earlier ones set (``lang``,
    scores).  Transforms (normalisation, redaction...) run on each segment
    separately, so interleaved text keeps its segment boundaries (``segments`` of
    the verdict is aligned with the input; None where a transform emptied a
    segment); filters (language, quality, safety...) score the segments joined by
    blank lines.  The first filter reason becomes ``text.<stage>.<reason>``."""
    v = TextVerdict()
    segs: list[str | None] = list(segments)

    def joined() -> str:
        return "\n\n".join(s for s in segs if s is not None)

    doc = new_text_record(joined(), source, id=rid)
    for op in ops:
        if isinstance(op, DocTransform) and not isinstance(op, DocFilter):
            for i, s in enumerate(segs):
                if s is None:
                    continue
                res = run_transform(op, {**doc, "text": s})
                for k, n in res.counts.items():
                    if n:
                        v.events[f"{op.name}.{k}"] = v.events.get(f"{op.name}.{k}", 0) + int(n)
                if res.doc is None:
                    segs[i] = None
                    continue
                segs[i] = res.doc["text"]
                doc = {**doc, "scores": {**doc["scores"], **(res.doc.get("scores") or {})},
                       "lang": res.doc.get("lang") or doc.get("lang"),
                       "lang_score": res.doc.get("lang_score", doc.get("lang_score")),
                       "script": res.doc.get("script") or doc.get("script")}
            if all(s is None for s in segs):
                v.reason = f"text.{op.stage}.{getattr(op, 'name', 'transform')}_emptied"
                v.scores = dict(doc["scores"])
                v.segments = segs
                return v
            doc = {**doc, "text": joined()}
        else:
            out = run_filter(op, doc)
            doc = out.doc
            if out.reason is not None:
                v.reason = f"text.{op.stage}.{out.reason}"
                v.score = out.score
                break
    v.text = doc["text"]
    v.segments = segs
    v.scores = dict(doc.get("scores") or {})
    v.lang = doc.get("lang")
    return v


def read_bounded(f, cap: int) -> tuple[bytes, int]:
    """Read at most ``cap`` bytes; returns (data, true size) without holding more than cap + 1 MiB."""
    data = f.read(cap + 1)
    size = len(data)
    if size > cap:
        while True:
            more = f.read(1 << 20)
            if not more:
                break
            size += len(more)
        data = data[:cap]
    return data, size
