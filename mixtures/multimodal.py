"""Media shards as packed training sequences: the multimodal side of the mixture loader.

``MediaPackedSource`` reads one media source of a corpus (``DIR/media/<modality>/*.tar``,
the WebDataset layout of ``filters/media.py``) and presents it like a packed text
source (``tokenizer.format.PackedSource``): ``len(src)`` sequences of ``S`` positions,
``src[i]`` a record with ``tokens``, ``segment_ids``, ``positions``, ``num_pad`` and,
for the media, ``media_slot`` (per position: 0 = text, k = media token k-1 of the
record) and the media tokens' features.  The mixture loader (``mixtures/loader.py``)
plans, shuffles, interleaves and resumes it exactly like a text source.

**Documents.**  Every sample becomes one document, in the tokenizer's vocabulary:

* image:       ``<boi> [patches] <eoi> caption <eod>``
* audio:       ``<boa> [audio tokens] <eoa> transcript <eod>``
* video:       ``<bov> [frame 0 patches] ... [frame N-1 patches] [audio-track tokens] <eov> caption <eod>``
* interleaved: the JSON's segments in order, each image as ``<boi> [patches] <eoi>``
  (two text segments in a row are joined by a blank line), then ``<eod>``

(``<bos>`` first when the token manifest says ``add_bos``).  A media item is placed
after the text that describes it would be, so captions are predicted from the media.
A ``[...]`` slot holds a placeholder id (``<pad>``) whose embedding the model replaces
with the media encoder's output (``model/encoders.py``).

**Token costs.**  The media tokens of a sample are exactly those the corpus manifest
recorded (``<key>.json["tokens"]["media"]``), by the same rules and the same config
(``manifest.json["media"]["token_cost"]``): an image or video frame is
``filters.media.image_grid`` patches of ``patch_size`` pixels (the image is resized to
exactly ``cols * p`` x ``rows * p``: variable resolution -> variable tokens, at most
``image_max_tokens``), audio is ``filters.media.audio_tokens`` of its decoded length
(``audio_tokens_per_s``; one token = ``frames_per_token`` stacked 10 ms log-mel frames),
a video is its frames plus its audio track.  Building the layout checks every sample
and refuses a corpus whose costs disagree.  On top of the media tokens a document has
its text in real tokenizer tokens (the manifest's ``text`` count is the pipeline's
estimate), 2 begin/end tokens per media item and ``<eod>``; ``stats()`` reports both.

**Packing.**  Documents are taken in a fixed hash order (blake2b of source and id, as
``tokenizer.pack`` orders text), independent of shard layout.  A document of at most
``S`` tokens is never split: it goes into the first of the last ``open_bins``
sequences with room for it (first-fit), else into a new sequence (the oldest open one
is then closed and padded).  A longer document fills fresh sequences and may be cut
between text tokens or between media items, never inside one; a single media item
longer than ``S`` is an error that names the sample and the settings to change.
The layout is computed once from the JSON members (no pixels decoded) and is a pure
function of the corpus, tokenizer, ``S`` and these rules: sequence ``i`` always
holds the same documents, so resume needs only the loader's example index.

**Features** are computed on the host in numpy when a sequence is read: images
(PIL bicubic resize, then a reshape into ``patch_size``² x 3 patches in [-1, 1]),
audio (FLAC via soundfile, 16 kHz; 25 ms Hann window, 10 ms hop, 80-bin mel
filterbank, log10 clamped to 8 decades below the clip's maximum, scaled as Whisper
does).  Written in numpy because the stack has no audio-feature library (no
librosa / torchaudio) and the whole transform is a dozen lines.

``collate_media`` pads the media tokens of a batch to a bucketed budget ``M`` (powers
of two from 32 up to the sequence length), so XLA compiles a handful of programs,
not one per batch.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from filters.media import TokensConfig, audio_tokens, image_grid, safe_member_name, wds_split
from mixtures.config import MixtureError

LAYOUT_VERSION = "corpusforge-media-pack/1"
KIND_NONE, KIND_IMAGE, KIND_FRAME, KIND_AUDIO = 0, 1, 2, 3          # as model/encoders.py
HOP_S = 0.010                                                        # log-mel hop (10 ms)
WIN_S = 0.025                                                        # log-mel window (25 ms)
N_MELS = 80
MIN_BUCKET = 32
BEGIN_END = {"image": ("<boi>", "<eoi>"), "audio": ("<boa>", "<eoa>"), "video": ("<bov>", "<eov>")}


class MediaLoaderError(MixtureError):
    """A media source that cannot be packed (config, corpus, sizes), one line."""


# ----------------------------------------------------------------- token-cost config
@dataclass(frozen=True)
class MediaCost:
    """The corpus's token-cost rules (``manifest.json["media"]["token_cost"]``)."""
    tokens: TokensConfig
    sample_rate: int

    @classmethod
    def from_manifest(cls, media: dict[str, Any] | None, where: str = "corpus") -> "MediaCost":
        tc = (media or {}).get("token_cost") or {}
        if "patch_size" not in tc or "audio_tokens_per_s" not in tc:
            raise MediaLoaderError(f"{where}: manifest.json has no media token_cost (rebuild the corpus)")
        kw = {"patch_size": int(tc["patch_size"]), "audio_tokens_per_s": float(tc["audio_tokens_per_s"])}
        if "image_max_tokens" in tc:
            kw["image_max_tokens"] = int(tc["image_max_tokens"])
        return cls(TokensConfig(**kw), int(tc.get("audio_sample_rate", 16000)))

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * HOP_S))

    @property
    def frames_per_token(self) -> int:
        """10 ms log-mel frames per audio token (25 tokens/s -> 4)."""
        f = self.sample_rate / (self.tokens.audio_tokens_per_s * self.hop)
        if abs(f - round(f)) > 1e-9 or round(f) < 1:
            raise MediaLoaderError(f"audio_tokens_per_s {self.tokens.audio_tokens_per_s:g} is not a whole number of "
                                   f"10 ms log-mel frames per token (use 100 / k tokens per second: 25, 12.5, 50...)")
        return int(round(f))

    def spec(self) -> dict[str, int]:
        """What the model's encoders must be built with (``model.config.MultimodalConfig``)."""
        return {"patch_size": self.tokens.patch_size, "channels": 3, "n_mels": N_MELS,
                "frames_per_token": self.frames_per_token}

    @property
    def feature_dim(self) -> int:
        return max(self.tokens.patch_size ** 2 * 3, N_MELS * self.frames_per_token)

    def as_dict(self) -> dict[str, Any]:
        return {"patch_size": self.tokens.patch_size, "image_max_tokens": self.tokens.image_max_tokens,
                "audio_tokens_per_s": self.tokens.audio_tokens_per_s, "sample_rate": self.sample_rate}


# ----------------------------------------------------------------- features (host, numpy)
def image_patches(data: bytes, rows: int, cols: int, patch: int) -> np.ndarray:
    """[rows*cols, patch*patch*3] float32 in [-1, 1]: the image resized to exactly
    ``cols*patch`` x ``rows*patch`` (bicubic) and cut row-major into patches."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB").resize((cols * patch, rows * patch), Image.Resampling.BICUBIC)
        a = np.asarray(im, dtype=np.float32)
    a = a / 127.5 - 1.0
    return np.ascontiguousarray(a.reshape(rows, patch, cols, patch, 3).transpose(0, 2, 1, 3, 4)
                                .reshape(rows * cols, patch * patch * 3))


def grid_positions(rows: int, cols: int, t: int = 0) -> np.ndarray:
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([np.full(rows * cols, t), r, c], axis=1).astype(np.int32)


def mel_filterbank(sr: int, n_fft: int, n_mels: int = N_MELS) -> np.ndarray:
    """[n_fft//2 + 1, n_mels] triangular filters on the HTK mel scale, area-normalised (Slaney)."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(0.0), mel(sr / 2), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    fb *= (2.0 / (hi - lo))
    return fb.T.astype(np.float32)


_FB_CACHE: dict[tuple[int, int], np.ndarray] = {}


def log_mel_tokens(x: np.ndarray, n_tokens: int, cost: MediaCost) -> np.ndarray:
    """[n_tokens, frames_per_token * 80] float32: log-mel frames of the 16 kHz waveform
    ``x`` (frame i = samples [i*hop, i*hop + 25 ms), zero-padded at the end), stacked
    ``frames_per_token`` at a time."""
    sr, hop, fpt = cost.sample_rate, cost.hop, cost.frames_per_token
    win = int(round(sr * WIN_S))
    n_fft = 1 << (win - 1).bit_length()
    n_frames = n_tokens * fpt
    need = (n_frames - 1) * hop + win
    x = np.asarray(x, np.float32)[:need]
    x = np.pad(x, (0, need - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n_frames]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)).astype(np.float32)   # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, n=n_fft, axis=1)) ** 2
    fb = _FB_CACHE.get((sr, n_fft))
    if fb is None:
        fb = _FB_CACHE.setdefault((sr, n_fft), mel_filterbank(sr, n_fft))
    logm = np.log10(np.maximum(power.astype(np.float32) @ fb, 1e-10))
    logm = np.maximum(logm, logm.max() - 8.0)
    logm = (logm + 4.0) / 4.0
    return np.ascontiguousarray(logm.reshape(n_tokens, fpt * N_MELS).astype(np.float32))


def decode_flac(data: bytes, sample_rate: int) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    if sr != sample_rate:
        raise MediaLoaderError(f"audio at {sr} Hz, the corpus manifest says {sample_rate} Hz")
    return x if x.ndim == 1 else x.mean(axis=1)


def flac_samples(data: bytes) -> int:
    import soundfile as sf

    return int(sf.info(io.BytesIO(data)).frames)


# ----------------------------------------------------------------- shards
class TarIndex:
    """Random access to the members of one (uncompressed) WebDataset tar: the member
    headers are read once (tarfile seeks over the data), then a member is one seek +
    read.  What ``wids`` does for WebDataset; written here because webdataset 1.0
    ships no indexed reader."""

    def __init__(self, path: str):
        self.path = path
        self.members: dict[str, dict[str, tuple[int, int]]] = {}
        try:
            with tarfile.open(path, "r:") as tf:
                for m in tf:
                    name = safe_member_name(m.name)
                    if not m.isfile() or name is None:
                        continue
                    key, ext = wds_split(name)
                    self.members.setdefault(key, {})[ext] = (m.offset_data, m.size)
        except (OSError, tarfile.TarError) as e:
            raise MediaLoaderError(f"{path}: cannot read the media shard ({type(e).__name__}: {e})") from None
        self.keys = sorted(self.members)
        self._fh = None

    def read(self, key: str, ext: str) -> bytes:
        try:
            off, size = self.members[key][ext]
        except KeyError:
            raise MediaLoaderError(f"{self.path}: sample {key!r} has no member .{ext}") from None
        if self._fh is None:
            self._fh = open(self.path, "rb")
        self._fh.seek(off)
        data = self._fh.read(size)
        if len(data) != size:
            raise MediaLoaderError(f"{self.path}: member {key}.{ext} is truncated")
        return data

    def __getstate__(self):
        return {**self.__dict__, "_fh": None}


# ----------------------------------------------------------------- documents
@dataclass
class MediaItem:
    kind: int                     # KIND_IMAGE / KIND_FRAME / KIND_AUDIO
    member: str                   # tar member extension
    n_tokens: int
    rows: int = 0
    cols: int = 0
    t: int = 0                    # frame index (video)
    group: int = 0                # media item id inside the document (1, 2, ...)
    samples: int = 0              # audio samples


@dataclass
class Doc:
    """A sample as a flat token stream: ``ids`` (placeholder at media slots), ``slot``
    (0 = text, k = the document's k-th media token), its media ``items`` in order and
    the ``blocks`` [begin, end] a cut may not fall inside."""
    id: str
    ids: np.ndarray
    slot: np.ndarray
    items: list[MediaItem]
    blocks: list[tuple[int, int]]
    media_tokens: int
    text_tokens: int

    @property
    def n(self) -> int:
        return len(self.ids)

    def cut_at_most(self, start: int, end: int) -> int:
        """The largest cut position in (start, end] not inside a media block."""
        c = end
        for b0, b1 in self.blocks:
            if b0 < c <= b1:
                c = b0
        return c


@dataclass
class _DocRef:
    shard: int
    key: str
    id: str
    n: int
    blocks: list[tuple[int, int]] | None     # only for documents longer than S
    media_tokens: int
    text_tokens: int


@dataclass
class Piece:
    doc: int                      # index into the source's documents
    start: int                    # first token of the document in this piece
    length: int


@dataclass
class _Bin:
    index: int
    pieces: list[Piece] = field(default_factory=list)
    used: int = 0


def _order_key(source: str, sample_id: str) -> tuple[int, str]:
    h = hashlib.blake2b(f"{source}\0{sample_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") >> 1, sample_id


class MediaPackedSource:
    """One media source of a corpus as packed sequences (see the module docstring)."""

    def __init__(self, corpus_dir: str, manifest_media: dict[str, Any], modality: str, media_source: str,
                 tokenizer, seq_len: int, *, add_bos: bool = False, open_bins: int = 8, name: str | None = None):
        self.corpus_dir, self.modality, self.media_source = corpus_dir, modality, media_source
        self.name = name or media_source
        self.S = int(seq_len)
        self.tok = tokenizer
        self.add_bos = bool(add_bos)
        self.open_bins = int(open_bins)
        self.cost = MediaCost.from_manifest(manifest_media, corpus_dir)
        self.cost.frames_per_token                                   # noqa: B018 - validates the audio rate
        sp = tokenizer.special_ids()
        need = ["<boi>", "<eoi>", "<boa>", "<eoa>", "<bov>", "<eov>"]
        missing = [t for t in need if t not in sp]
        if missing:
            raise MediaLoaderError(f"tokenizer has no {', '.join(missing)} control symbols (train it with the "
                                   "default control_symbols of configs/tokenizer.yaml)")
        self.sp = sp
        self.pad_id, self.eod_id, self.bos_id = int(sp["pad"]), int(sp["eod"]), int(sp["bos"])
        mod = (manifest_media or {}).get("modalities", {}).get(modality)
        if not mod:
            raise MediaLoaderError(f"corpus {corpus_dir} has no {modality} media")
        shards = [s for s in mod.get("shards", []) if s["source"] == media_source]
        if not shards:
            raise MediaLoaderError(f"corpus {corpus_dir}: no {modality} shards of source {media_source!r}")
        self.shard_info = sorted(shards, key=lambda s: s["path"])
        self.shards: list[TarIndex] = []
        for s in self.shard_info:
            path = os.path.join(corpus_dir, s["path"])
            if not os.path.exists(path):
                raise MediaLoaderError(f"{path}: media shard listed in the manifest is missing")
            if os.path.getsize(path) != s["bytes"]:
                raise MediaLoaderError(f"{path}: {os.path.getsize(path)} bytes, the manifest says {s['bytes']} "
                                       "(the shard changed since the corpus was built)")
            self.shards.append(TarIndex(path))
        self.fingerprint = hashlib.sha256(json.dumps({
            "version": LAYOUT_VERSION, "modality": modality, "source": media_source, "S": self.S,
            "shards": [s["sha256"] for s in self.shard_info], "tokenizer": tokenizer.sha256, "cost": self.cost.as_dict(),
            "add_bos": self.add_bos, "open_bins": self.open_bins}, sort_keys=True).encode()).hexdigest()[:16]
        self._build_layout()

    # ------------------------------------------------------------ documents
    def _json(self, shard: int, key: str) -> dict[str, Any]:
        try:
            return json.loads(self.shards[shard].read(key, "json"))
        except ValueError as e:
            raise MediaLoaderError(f"{self.shards[shard].path}: {key}.json is not JSON ({e})") from None

    def _encode(self, text: str | None) -> list[int]:
        return list(self.tok.encode(text)) if text else []

    def doc(self, shard: int, key: str, meta: dict[str, Any] | None = None) -> Doc:
        """The document of sample ``key`` (no pixels decoded; audio lengths read from the FLAC header)."""
        meta = meta if meta is not None else self._json(shard, key)
        tar = self.shards[shard]
        t = self.cost.tokens
        sp = self.sp
        atoms: list[Any] = []                       # list[int] (text) or (begin, end, [items])
        group = [0]

        def image_item(member: str, w: int, h: int, kind: int = KIND_IMAGE, frame: int = 0) -> MediaItem:
            r, c = image_grid(int(w), int(h), t)
            return MediaItem(kind, member, r * c, rows=r, cols=c, t=frame, group=group[0])

        def audio_item(member: str) -> MediaItem:
            n = flac_samples(tar.read(key, member))
            return MediaItem(KIND_AUDIO, member, audio_tokens(n / self.cost.sample_rate, t), group=group[0],
                             samples=n)

        mod = meta.get("modality", self.modality)
        text = meta.get("text")
        if mod == "image":
            ext = "png" if "png" in tar.members.get(key, {}) else "jpg"
            group[0] += 1
            atoms.append(("<boi>", "<eoi>", [image_item(ext, meta["width"], meta["height"])]))
            atoms.append(self._encode(text))
        elif mod == "audio":
            group[0] += 1
            atoms.append(("<boa>", "<eoa>", [audio_item("flac")]))
            atoms.append(self._encode(text))
        elif mod == "video":
            frames = sorted(e for e in tar.members.get(key, {}) if e.startswith("f") and e.endswith(".jpg"))
            group[0] += 1
            items = [image_item(e, meta["frame_width"], meta["frame_height"], KIND_FRAME, i) for i, e in enumerate(frames)]
            if "flac" in tar.members.get(key, {}):
                group[0] += 1
                items.append(audio_item("flac"))
            atoms.append(("<bov>", "<eov>", items))
            atoms.append(self._encode(text))
        elif mod == "interleaved":
            prev_text = False
            for seg in meta.get("segments") or []:
                if seg.get("type") == "text":
                    atoms.append(self._encode(("\n\n" if prev_text else "") + seg["text"]))
                    prev_text = True
                else:
                    group[0] += 1
                    atoms.append(("<boi>", "<eoi>", [image_item(seg["member"], seg["width"], seg["height"])]))
                    prev_text = False
        else:
            raise MediaLoaderError(f"{tar.path}: sample {key!r} has unknown modality {mod!r}")

        ids: list[int] = [self.bos_id] if self.add_bos else []
        slot: list[int] = [0] * len(ids)
        items: list[MediaItem] = []
        blocks: list[tuple[int, int]] = []
        k = 0
        text_tokens = 0
        for a in atoms:
            if isinstance(a, list):
                ids += a
                slot += [0] * len(a)
                text_tokens += len(a)
                continue
            begin, end, its = a
            b0 = len(ids)
            ids.append(int(sp[begin]))
            slot.append(0)
            for it in its:
                ids += [self.pad_id] * it.n_tokens
                slot += list(range(k + 1, k + 1 + it.n_tokens))
                k += it.n_tokens
                items.append(it)
            ids.append(int(sp[end]))
            slot.append(0)
            blocks.append((b0, len(ids) - 1))
        ids.append(self.eod_id)
        slot.append(0)
        recorded = (meta.get("tokens") or {}).get("media")
        if recorded is not None and int(recorded) != k:
            raise MediaLoaderError(
                f"{tar.path}: sample {meta.get('id', key)!r} packs {k} media tokens but the corpus manifest costed it "
                f"{recorded}: the corpus was built with other token-cost rules than {self.cost.as_dict()}")
        return Doc(id=str(meta.get("id", key)), ids=np.asarray(ids, np.int32), slot=np.asarray(slot, np.int32),
                   items=items, blocks=blocks, media_tokens=k, text_tokens=text_tokens)

    # ------------------------------------------------------------ layout
    def _build_layout(self) -> None:
        refs: list[_DocRef] = []
        for si, tar in enumerate(self.shards):
            for key in tar.keys:
                if "json" not in tar.members[key]:
                    continue
                d = self.doc(si, key)
                refs.append(_DocRef(si, key, d.id, d.n, d.blocks if d.n > self.S else None, d.media_tokens,
                                    d.text_tokens))
        if not refs:
            raise MediaLoaderError(f"corpus {self.corpus_dir}: {self.modality} source {self.media_source!r} has no samples")
        refs.sort(key=lambda r: _order_key(self.media_source, r.id))
        self.docs = refs
        S = self.S
        bins: list[_Bin] = []
        open_: list[_Bin] = []
        for di, r in enumerate(refs):
            if r.n <= S:
                b = next((b for b in open_ if S - b.used >= r.n), None)
                if b is None:
                    b = _Bin(len(bins))
                    bins.append(b)
                    open_.append(b)
                    if len(open_) > self.open_bins:
                        open_.pop(0)
                b.pieces.append(Piece(di, 0, r.n))
                b.used += r.n
                if b.used == S:
                    open_.remove(b)
                continue
            start = 0
            doc = Doc(r.id, np.zeros(0), np.zeros(0), [], r.blocks or [], 0, 0)
            while start < r.n:
                end = doc.cut_at_most(start, min(start + S, r.n))
                if end <= start:
                    b0, b1 = next((b0, b1) for b0, b1 in doc.blocks if b0 <= start < b1 + 1)
                    raise MediaLoaderError(
                        f"{self.modality} sample {r.id!r} ({self.media_source}): one media item takes {b1 - b0 + 1} "
                        f"tokens (begin/end included), more than the {S}-token sequence; raise the sequence length or "
                        f"lower the corpus's media.tokens.image_max_tokens / media.video.n_frames / "
                        f"media.tokens.audio_tokens_per_s")
                b = _Bin(len(bins), [Piece(di, start, end - start)], end - start)
                bins.append(b)
                start = end
                if start >= r.n and b.used < S:
                    open_.append(b)
                    if len(open_) > self.open_bins:
                        open_.pop(0)
        self.sequences = [b.pieces for b in bins]
        self._pad = np.array([S - b.used for b in bins], np.int64)

    def __len__(self) -> int:
        return len(self.sequences)

    def num_pad(self, i: int) -> int:
        return int(self._pad[i])

    def stats(self) -> dict[str, Any]:
        """Tokens of one epoch of this source, by kind, next to the manifest's count."""
        media = sum(r.media_tokens for r in self.docs)
        text = sum(r.text_tokens for r in self.docs)
        total = sum(r.n for r in self.docs)
        return {"samples": len(self.docs), "sequences": len(self), "tokens": total, "media_tokens": media,
                "text_tokens": text, "structure_tokens": total - media - text, "pad_tokens": int(self._pad.sum()),
                "seq_len": self.S}

    # ------------------------------------------------------------ records
    def _features(self, d: Doc, shard: int, key: str, it: MediaItem) -> tuple[np.ndarray, np.ndarray]:
        tar = self.shards[shard]
        if it.kind in (KIND_IMAGE, KIND_FRAME):
            feats = image_patches(tar.read(key, it.member), it.rows, it.cols, self.cost.tokens.patch_size)
            return feats, grid_positions(it.rows, it.cols, it.t)
        x = decode_flac(tar.read(key, it.member), self.cost.sample_rate)
        if len(x) != it.samples:
            raise MediaLoaderError(f"{tar.path}: {key}.{it.member} decodes to {len(x)} samples, header says {it.samples}")
        feats = log_mel_tokens(x, it.n_tokens, self.cost)
        pos = np.zeros((it.n_tokens, 3), np.int32)
        pos[:, 0] = np.arange(it.n_tokens)
        return feats, pos

    def __getitem__(self, i: int) -> dict[str, Any]:
        S, F = self.S, self.cost.feature_dim
        tokens = np.full(S, self.pad_id, np.int32)
        seg = np.zeros(S, np.int32)
        pos = np.zeros(S, np.int32)
        mslot = np.zeros(S, np.int32)
        feats, kinds, mpos, groups = [], [], [], []
        offsets = []
        col = 0
        n_media = 0
        n_group = 0
        for k, p in enumerate(self.sequences[i]):
            r = self.docs[p.doc]
            d = self.doc(r.shard, r.key)
            s = slice(p.start, p.start + p.length)
            dst = slice(col, col + p.length)
            tokens[dst] = d.ids[s]
            seg[dst] = k + 1
            pos[dst] = np.arange(p.length)
            offsets.append(p.start)
            sl = d.slot[s]
            media_here = sl[sl > 0]
            if len(media_here):
                lo, hi = int(media_here.min()), int(media_here.max())
                # renumber: the record's media tokens in order of appearance
                mslot[dst] = np.where(sl > 0, sl - lo + 1 + n_media, 0)
                first = 1
                last_group = None
                for it in d.items:
                    a, b = first, first + it.n_tokens - 1
                    first += it.n_tokens
                    if b < lo or a > hi:
                        continue
                    f, q = self._features(d, r.shard, r.key, it)
                    pad = np.zeros((len(f), F), np.float32)
                    pad[:, :f.shape[1]] = f
                    feats.append(pad)
                    mpos.append(q)
                    kinds.append(np.full(len(f), it.kind, np.int32))
                    if it.group != last_group:
                        n_group += 1
                        last_group = it.group
                    groups.append(np.full(len(f), n_group, np.int32))
                n_media += hi - lo + 1
            col += p.length
        m = {"features": np.concatenate(feats) if feats else np.zeros((0, F), np.float32),
             "kind": np.concatenate(kinds) if kinds else np.zeros(0, np.int32),
             "positions": np.concatenate(mpos) if mpos else np.zeros((0, 3), np.int32),
             "group": np.concatenate(groups) if groups else np.zeros(0, np.int32)}
        assert len(m["features"]) == n_media == int((mslot > 0).sum()), (i, n_media)
        return {"tokens": tokens, "segment_ids": seg, "positions": pos, "num_pad": int(self._pad[i]),
                "doc_token_offsets": np.asarray(offsets, np.int64), "media_slot": mslot, "media": m}

    def lineage(self, i: int):
        from tokenizer.format import Segment

        out, col = [], 0
        for p in self.sequences[i]:
            r = self.docs[p.doc]
            out.append(Segment(col, p.length, p.start, r.n, r.id))
            col += p.length
        return out


# ----------------------------------------------------------------- batches
def bucket(n: int, length: int) -> int:
    """Media budget for a batch whose fullest row has ``n`` media tokens: the
    smallest of 32, 64, 128, ... (capped at the sequence length) that holds it."""
    b = MIN_BUCKET
    while b < n:
        b *= 2
    return max(min(b, length), n)


def collate_media(records: list[dict[str, Any]], L: int, feature_dim: int) -> dict[str, np.ndarray]:
    """The batch's media fields (``model/encoders.py``) for records of S >= L positions;
    a text record (no ``media_slot``) has none.  Media tokens beyond position L (the
    record's last position when L = S - 1) are left out."""
    B = len(records)
    counts = []
    for r in records:
        s = r.get("media_slot")
        counts.append(int((s[:L] > 0).sum()) if s is not None else 0)
    M = bucket(max(counts + [1]), L)
    out = {"media_patches": np.zeros((B, M, feature_dim), np.float32), "media_kind": np.zeros((B, M), np.int32),
           "media_positions": np.zeros((B, M, 3), np.int32), "media_group": np.zeros((B, M), np.int32),
           "media_index": np.zeros((B, L), np.int32)}
    for b, (r, n) in enumerate(zip(records, counts)):
        if not n:
            continue
        m = r["media"]
        out["media_index"][b] = r["media_slot"][:L]
        out["media_patches"][b, :n] = m["features"][:n]
        out["media_kind"][b, :n] = m["kind"][:n]
        out["media_positions"][b, :n] = m["positions"][:n]
        out["media_group"][b, :n] = m["group"][:n]
    return out


def media_loss_mask(records: list[dict[str, Any]], L: int) -> np.ndarray:
    """[B, L] bool: False where the input or the target is a media slot (the loss is on
    text: predicting a begin token counts, predicting a media slot or the end token after
    the last one does not)."""
    out = np.ones((len(records), L), bool)
    for b, r in enumerate(records):
        s = r.get("media_slot")
        if s is None:
            continue
        nxt = np.concatenate([s[1:], [0]])
        out[b] = (s[:L] == 0) & (nxt[:L] == 0)
    return out


# ----------------------------------------------------------------- probe rows
def caption_rows(src: MediaPackedSource, image_docs: list[tuple[int, str]], captions_of: list[int], L: int,
                 pad_id: int) -> tuple[dict[str, np.ndarray], list[int]]:
    """One row per (image of ``image_docs[j]``, caption of ``image_docs[captions_of[j]]``):
    ``<boi> [patches of j] <eoi> caption <eod>``, loss on the caption tokens and
    ``<eod>``.  Returns the batch (text + media fields) and the caption token count
    per row.  Rows that do not fit ``L`` raise."""
    recs, n_cap = [], []
    for j, c in enumerate(captions_of):
        si, key = image_docs[j]
        d = src.doc(si, key)
        dc = src.doc(*image_docs[c])
        if len(d.blocks) != 1 or len(dc.blocks) != 1:
            raise MediaLoaderError(f"probe sample {key!r}: expected one image and a caption")
        b0, b1 = d.blocks[0]
        c0, c1 = dc.blocks[0]
        cap = dc.ids[c1 + 1:]
        ids = np.concatenate([d.ids[:b1 + 1], cap]).astype(np.int32)
        slot = np.concatenate([d.slot[:b1 + 1], np.zeros(len(cap), np.int32)])
        if len(ids) - 1 > L:
            raise MediaLoaderError(f"probe sample {key!r}: {len(ids)} tokens do not fit {L + 1}")
        feats, pos = src._features(d, si, key, d.items[0])
        F = src.cost.feature_dim
        full = np.zeros((len(feats), F), np.float32)
        full[:, :feats.shape[1]] = feats
        tokens = np.full(L + 1, pad_id, np.int32)
        tokens[:len(ids)] = ids
        sl = np.zeros(L + 1, np.int32)
        sl[:len(ids)] = slot
        seg = np.zeros(L + 1, np.int32)
        seg[:len(ids)] = 1
        recs.append({"tokens": tokens, "segment_ids": seg, "media_slot": sl, "n": len(ids),
                     "media": {"features": full, "kind": np.full(len(feats), d.items[0].kind, np.int32),
                               "positions": pos, "group": np.ones(len(feats), np.int32)}})
        n_cap.append(len(cap))
    B = len(recs)
    toks = np.stack([r["tokens"] for r in recs])
    seg = np.stack([r["segment_ids"] for r in recs])
    mask = (seg[:, :L] > 0) & (seg[:, 1:] == seg[:, :L]) & media_loss_mask(recs, L)
    # only the caption (after <eoi>) counts
    for b, r in enumerate(recs):
        eoi = int(np.nonzero(r["media_slot"])[0].max()) + 1
        mask[b, :eoi] = False
    batch = {"inputs": toks[:, :L], "targets": toks[:, 1:], "segment_ids": seg[:, :L],
             "positions": np.where(seg[:, :L] > 0, np.arange(L)[None], 0).astype(np.int32),
             "loss_mask": mask.astype(np.float32), "source_ids": np.zeros((B, L), np.int32)}
    batch.update(collate_media(recs, L, src.cost.feature_dim))
    return batch, n_cap
