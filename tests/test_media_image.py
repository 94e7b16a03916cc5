"""Image operators on real photos (scikit-image's bundled data) and corrupt variants."""
import io
import struct
import zlib

import pytest
from PIL import Image, ImageOps

from filters.media import MediaConfig, MediaError, MediaReject, image_distance, image_tokens
from filters.media_image import encode_image, process_image, signature

skdata = pytest.importorskip("skimage.data")


def _jpeg(img, q=90):
    b = io.BytesIO()
    img.save(b, "JPEG", quality=q)
    return b.getvalue()


@pytest.fixture(scope="module")
def photos():
    return {n: Image.fromarray(getattr(skdata, n)()).convert("RGB") for n in ("chelsea", "coffee", "astronaut", "rocket", "camera")}


def _png_header_only(w, h):
    """A PNG whose header claims w x h pixels (a decompression bomb as far as the header goes)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_process_real_photo_resizes_and_counts_tokens(photos):
    cfg = MediaConfig.model_validate({"image": {"max_side": 256}})
    out = process_image(_jpeg(photos["astronaut"]), cfg)
    assert (out.orig_width, out.orig_height) == (512, 512)
    assert max(out.width, out.height) == 256 and out.ext == "jpg" and out.format == "JPEG"
    assert out.tokens == image_tokens(256, 256, cfg.tokens) == 256
    assert Image.open(io.BytesIO(out.data)).size == (256, 256)
    # same input, same bytes (deterministic encoder settings)
    assert process_image(_jpeg(photos["astronaut"]), cfg).data == out.data


def test_alpha_kept_as_png():
    img = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    for x in range(64):
        img.putpixel((x, x), (0, 0, 255, 255))
    b = io.BytesIO()
    img.save(b, "PNG")
    out = process_image(b.getvalue(), MediaConfig.model_validate({"image": {"min_std": 0}}))
    assert out.ext == "png" and Image.open(io.BytesIO(out.data)).mode == "RGBA"


@pytest.mark.parametrize("size,reason", [((20, 200), "image_too_small"), ((400, 60), "image_aspect")])
def test_size_and_aspect_filters(photos, size, reason):
    img = photos["coffee"].resize(size)
    with pytest.raises(MediaReject) as e:
        process_image(_jpeg(img), MediaConfig())
    assert e.value.reason == reason


def test_blank_image_filtered():
    with pytest.raises(MediaReject) as e:
        process_image(_jpeg(Image.new("RGB", (128, 128), (200, 200, 200))), MediaConfig())
    assert e.value.reason == "image_blank"


def test_format_filter(photos):
    b = io.BytesIO()
    photos["camera"].save(b, "BMP")
    with pytest.raises(MediaError) as e:
        process_image(b.getvalue(), MediaConfig.model_validate({"image": {"formats": ["JPEG", "PNG"]}}))
    assert e.value.code == "unsupported_format"


@pytest.mark.parametrize("make,code", [
    (lambda j: j[: len(j) // 2], "truncated_image"),
    (lambda j: b"", "empty_file"),
    (lambda j: b"not an image at all" * 10, "undecodable_image"),
    (lambda j: _png_header_only(100_000, 100_000), "decompression_bomb"),
    (lambda j: _png_header_only(9000, 9000), "decompression_bomb"),  # 81 MP > default 64 MP
])
def test_bad_images_raise_media_error(photos, make, code):
    with pytest.raises(MediaError) as e:
        process_image(make(_jpeg(photos["rocket"])), MediaConfig())
    assert e.value.code == code


def test_file_size_cap(photos):
    with pytest.raises(MediaError) as e:
        process_image(_jpeg(photos["rocket"]), MediaConfig.model_validate({"image": {"max_bytes": 1000}}))
    assert e.value.code == "file_too_large"


def test_perceptual_signature_matches_transforms_not_other_photos(photos):
    base = photos["chelsea"]
    w, h = base.size
    variants = {
        "jpeg_q30": Image.open(io.BytesIO(_jpeg(base, 30))),
        "half": base.resize((w // 2, h // 2), Image.LANCZOS),
        "hflip": ImageOps.mirror(base),
        "centre_crop_90": base.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
    }
    s0 = signature(base)
    t = MediaConfig().dedup.image_threshold
    for name, v in variants.items():
        assert image_distance(s0, signature(v)) <= t, name
    for other in ("coffee", "astronaut", "rocket", "camera"):
        assert image_distance(s0, signature(photos[other])) > t, other
    # without the mirror hash a flip is not found: the mirror is what makes it work
    no_mirror = signature(base, mirror=False)
    assert image_distance(no_mirror, signature(variants["hflip"], mirror=False)) > t


def test_encode_is_deterministic(photos):
    a = encode_image(photos["coffee"], 90)
    assert a == encode_image(photos["coffee"].copy(), 90) and a[1] == "jpg"
