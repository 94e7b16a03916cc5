"""Image operators: decode and validate with Pillow under decompression-bomb
limits, size / aspect / format / blank filters, resize, deterministic
re-encoding, perceptual signatures (imagehash pHash) and token cost.

``process_image(data, cfg)`` is the whole per-image step: it raises
``MediaError`` for bad input (dead letter) and ``MediaReject`` for a filter drop,
and returns an ``ImageOut`` otherwise.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import imagehash
from PIL import Image, ImageFile, ImageOps, ImageStat

from filters.media import ImageConfig, MediaConfig, MediaError, MediaReject, TokensConfig, image_tokens

# Never decode half an image silently: a truncated file is an error.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class ImageOut:
    data: bytes                  # re-encoded image (JPEG, or PNG when it has alpha)
    ext: str                     # "jpg" | "png"
    width: int                   # stored size (after resize)
    height: int
    orig_width: int
    orig_height: int
    format: str                  # source format (JPEG, PNG, ...)
    tokens: int
    signature: dict[str, Any] = field(default_factory=dict)
    n_frames: int = 1


def phash_int(img: Image.Image) -> int:
    """64-bit DCT perceptual hash (imagehash.phash) as an int."""
    return int(str(imagehash.phash(img)), 16)


def _center_crop(img: Image.Image, frac: float) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * frac)), max(1, round(h * frac))
    x, y = (w - cw) // 2, (h - ch) // 2
    return img.crop((x, y, x + cw, y + ch))


def signature(img: Image.Image, crop_probes: list[float] | tuple[float, ...] = (0.9, 0.8), mirror: bool = True) -> dict[str, Any]:
    """Perceptual signature: pHash of the image, of its mirror image (pHash is not
    flip-invariant, so a horizontally flipped copy is matched through the mirror's
    hash) and of centre crops (border trims and centre crops move every pixel; the
    matching crop of the original lines them up again).  ``filters.media.image_distance``
    compares two signatures."""
    g = img.convert("L")
    sig: dict[str, Any] = {"full": phash_int(g)}
    if mirror:
        sig["mirror"] = phash_int(ImageOps.mirror(g))
    sig["crops"] = [phash_int(_center_crop(g, f)) for f in crop_probes]
    return sig


def open_image(data: bytes, cfg: ImageConfig) -> Image.Image:
    """Decode ``data`` fully, refusing bombs before any pixel is decoded."""
    if not data:
        raise MediaError("empty_file")
    if len(data) > cfg.max_bytes:
        raise MediaError("file_too_large", f"{len(data)} bytes > {cfg.max_bytes}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise MediaError("decompression_bomb", str(e)[:200]) from None
        except Exception as e:  # noqa: BLE001 - UnidentifiedImageError, SyntaxError, ...
            raise MediaError("undecodable_image", f"{type(e).__name__}: {e}"[:200]) from None
        fmt = (img.format or "").upper()
        if fmt not in {f.upper() for f in cfg.formats}:
            raise MediaError("unsupported_format", fmt or "unknown")
        w, h = img.size
        if w <= 0 or h <= 0:
            raise MediaError("undecodable_image", f"size {w}x{h}")
        if w * h > cfg.max_pixels:
            raise MediaError("decompression_bomb", f"{w}x{h} = {w * h} pixels > max_pixels {cfg.max_pixels}")
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise MediaError("decompression_bomb", str(e)[:200]) from None
        except OSError as e:
            code = "truncated_image" if "truncat" in str(e).lower() else "undecodable_image"
            raise MediaError(code, str(e)[:200]) from None
        except Exception as e:  # noqa: BLE001 - decoders raise many types on garbage
            raise MediaError("undecodable_image", f"{type(e).__name__}: {e}"[:200]) from None
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, or RGBA when the image really has transparency."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            return rgba
        return rgba.convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # high bit depth: scale to 8 bits
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.round().astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def encode_image(img: Image.Image, quality: int) -> tuple[bytes, str]:
    """Deterministic encoding: JPEG (fixed quality, 4:2:0, no EXIF, not optimised,
    not progressive) or PNG (fixed compression level) when there is alpha."""
    buf = io.BytesIO()
    if img.mode == "RGBA":
        img.save(buf, format="PNG", compress_level=6, optimize=False)
        return buf.getvalue(), "png"
    img.save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
    return buf.getvalue(), "jpg"


def resize_to_fit(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)


def check_image(w: int, h: int, img: Image.Image, cfg: ImageConfig) -> None:
    """Size, aspect and blank filters (raise ``MediaReject``)."""
    short, long_ = min(w, h), max(w, h)
    if short < cfg.min_side:
        raise MediaReject("image_too_small", float(short), {"width": w, "height": h})
    aspect = long_ / short
    if aspect > cfg.max_aspect:
        raise MediaReject("image_aspect", aspect, {"width": w, "height": h})
    if cfg.min_std > 0:
        std = ImageStat.Stat(img.convert("L")).stddev[0]
        if std < cfg.min_std:
            raise MediaReject("image_blank", float(std))


def process_image(data: bytes, cfg: MediaConfig, *, with_signature: bool = True, apply_filters: bool = True) -> ImageOut:
    icfg = cfg.image
    img = open_image(data, icfg)
    fmt = (img.format or "").upper()
    n_frames = int(getattr(img, "n_frames", 1) or 1)
    try:
        img = ImageOps.exif_transpose(img)  # phone photos: store upright
    except Exception:  # noqa: BLE001 - broken EXIF is not a reason to lose the image
        pass
    ow, oh = img.size
    rgb = _to_rgb(img)
    small = resize_to_fit(rgb, icfg.max_side)
    if apply_filters:
        check_image(ow, oh, small, icfg)
    out, ext = encode_image(small, icfg.jpeg_quality)
    w, h = small.size
    res = ImageOut(data=out, ext=ext, width=w, height=h, orig_width=ow, orig_height=oh, format=fmt,
                   tokens=image_tokens(w, h, cfg.tokens), n_frames=n_frames)
    if with_signature:
        d = cfg.dedup
        res.signature = signature(small, d.crop_probes, d.mirror)
    return res


def frame_tokens(w: int, h: int, tcfg: TokensConfig) -> int:
    return image_tokens(w, h, tcfg)
