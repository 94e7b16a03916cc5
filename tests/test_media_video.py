"""Video operators on the shipped clip (skimage photos + Asterisk speech) and corrupt variants."""
import os
import shutil

import pytest

from filters.media import MediaConfig, MediaError, MediaReject, frames_distance
from filters.media_video import fit_size, frame_indices, process_video

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "sample", "media", "video")
MP4 = os.path.join(SAMPLE, "slideshow.mp4")
WEBM = os.path.join(SAMPLE, "slideshow_small.webm")
CFG = MediaConfig()


@pytest.fixture(scope="module")
def mp4_out():
    return process_video(MP4, ".mp4", CFG)


def test_frame_indices_evenly_spaced():
    assert frame_indices(192, 16) == [0, 13, 25, 38, 51, 64, 76, 89, 102, 115, 127, 140, 153, 166, 178, 191]
    assert frame_indices(5, 16) == [0, 1, 2, 3, 4]
    assert frame_indices(1, 16) == [0]
    assert fit_size(1920, 1080, 512) == (512, 288)


def test_sixteen_frames_and_audio_track(mp4_out):
    o = mp4_out
    assert len(o.frames) == 16 and o.frame_indices == frame_indices(o.info.n_frames, 16)
    assert (o.frame_width, o.frame_height) == (320, 240)
    assert o.info.has_audio and o.audio_flac and 3.0 < o.audio_duration_s < 4.5
    assert o.tokens == 16 * 20 * 15 + int(-(-o.audio_duration_s * 25 // 1))
    assert process_video(MP4, ".mp4", CFG).frames == o.frames  # deterministic


def test_downscaled_webm_reencode_is_near_duplicate(mp4_out):
    w = process_video(WEBM, ".webm", CFG)
    assert len(w.frames) == 16 and (w.frame_width, w.frame_height) == (240, 180)
    assert frames_distance(mp4_out.frame_hashes, w.frame_hashes) <= CFG.dedup.video_threshold
    rev = list(reversed(w.frame_hashes))  # same frames, different video: far apart
    assert frames_distance(mp4_out.frame_hashes, rev) > CFG.dedup.video_threshold


def test_duration_and_resolution_filters():
    with pytest.raises(MediaReject) as e:
        process_video(MP4, ".mp4", MediaConfig.model_validate({"video": {"min_side": 480}}))
    assert e.value.reason == "video_resolution_low"
    with pytest.raises(MediaReject) as e:
        process_video(MP4, ".mp4", MediaConfig.model_validate({"video": {"max_duration_s": 2}}))
    assert e.value.reason == "video_too_long"


def test_mp4_without_moov_atom(tmp_path):
    data = open(MP4, "rb").read()
    assert b"moov" in data
    p = tmp_path / "nomoov.mp4"
    i = data.index(b"moov") - 4  # cut the whole atom out, as when a recording is interrupted
    size = int.from_bytes(data[i:i + 4], "big")
    p.write_bytes(data[:i] + data[i + size:])
    with pytest.raises(MediaError) as e:
        process_video(str(p), ".mp4", CFG)
    assert e.value.code in ("unreadable_media", "no_video_stream", "undecodable_video")


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n"])
def test_garbage_and_disguised_playlists_refused(tmp_path, content):
    p = tmp_path / "x.mp4"
    p.write_bytes(content)
    with pytest.raises(MediaError):
        process_video(str(p), ".mp4", CFG)


def test_truncated_mp4(tmp_path):
    data = open(MP4, "rb").read()
    p = tmp_path / "trunc.mp4"
    p.write_bytes(data[: len(data) // 3])
    try:
        o = process_video(str(p), ".mp4", CFG)
    except MediaError:
        return  # refused: fine
    assert 1 <= len(o.frames) <= 16  # or partially decoded, never more than asked


def test_filename_is_never_an_option(tmp_path):
    p = tmp_path / "-i"
    shutil.copy(MP4, p)
    assert len(process_video(str(p), ".mp4", CFG).frames) == 16
