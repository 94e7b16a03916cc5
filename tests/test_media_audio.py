"""Audio operators on shipped speech (Asterisk prompts, data/sample/media) and corrupt variants."""
import io
import os
import wave

import numpy as np
import pytest
import soundfile as sf

from filters.media import MediaConfig, MediaError, MediaReject, hamming, run_bounded
from filters.media_audio import decode_audio, fingerprint, process_audio, process_audio_array

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "sample", "media", "audio")
CFG = MediaConfig()


def _wav(path, x, sr):
    sf.write(path, x, sr, subtype="PCM_16", format="WAV")


@pytest.mark.parametrize("name,dur", [("monday.flac", 0.92), ("conference_begin.wav", 3.57), ("not_answering.ogg", 1.65)])
def test_decode_to_16k_mono(name, dur):
    out = process_audio(os.path.join(SAMPLE, name), os.path.splitext(name)[1], CFG)
    assert out.sample_rate == 16000 and abs(out.duration_s - dur) < 0.1
    y, sr = sf.read(io.BytesIO(out.flac))
    assert sr == 16000 and y.ndim == 1 and abs(len(y) / sr - out.duration_s) < 1e-3
    assert out.fingerprint is not None and out.tokens == int(np.ceil(out.duration_s * 25))
    assert process_audio(os.path.join(SAMPLE, name), os.path.splitext(name)[1], CFG).flac == out.flac  # deterministic


def test_resamples_and_downmixes(tmp_path):
    t = np.arange(44100) / 44100
    st = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], axis=1)
    p = tmp_path / "stereo44k.wav"
    _wav(p, st, 44100)
    x = decode_audio(str(p), ".wav", CFG.audio)
    assert abs(len(x) - 16000) <= 2


def test_silence_and_duration_filters(tmp_path):
    p = tmp_path / "quiet.wav"
    _wav(p, np.zeros(32000), 16000)
    with pytest.raises(MediaReject) as e:
        process_audio(str(p), ".wav", CFG)
    assert e.value.reason == "audio_silent"
    x = decode_audio(os.path.join(SAMPLE, "monday.flac"), ".flac", CFG.audio)
    with pytest.raises(MediaReject) as e:
        process_audio_array(x[:1600], CFG)
    assert e.value.reason == "audio_too_short"
    short = MediaConfig.model_validate({"audio": {"max_duration_s": 0.5}})
    with pytest.raises(MediaReject) as e:
        process_audio_array(x, short)
    assert e.value.reason == "audio_too_long"


def test_fingerprint_survives_gain_padding_and_8k_round_trip():
    x = decode_audio(os.path.join(SAMPLE, "conference_begin.wav"), ".wav", CFG.audio)
    f0 = fingerprint(x, 16000)
    quiet = x * 10 ** (-6 / 20)
    padded = np.concatenate([np.zeros(4000, np.float32), x, np.zeros(4000, np.float32)])
    down = x[::2]  # crude 8 kHz (aliasing included), back up by linear interpolation
    up = np.interp(np.arange(len(x)) / 2, np.arange(len(down)), down).astype(np.float32)
    t = CFG.dedup.audio_threshold
    for v in (quiet, padded, up):
        assert hamming(f0, fingerprint(v, 16000)) <= t
    other = decode_audio(os.path.join(SAMPLE, "not_answering.ogg"), ".ogg", CFG.audio)
    assert hamming(f0, fingerprint(other, 16000)) > t


@pytest.mark.parametrize("content,code", [
    (b"", "undecodable_audio"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 40, "undecodable_audio"),
    (b"this is not audio" * 100, "undecodable_audio"),
])
def test_bad_audio_is_media_error(tmp_path, content, code):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(MediaError) as e:
        process_audio(str(p), ".wav", CFG)
    assert e.value.code == code


def test_wav_with_bad_header_from_real_clip(tmp_path):
    data = open(os.path.join(SAMPLE, "conference_begin.wav"), "rb").read()
    p = tmp_path / "badheader.wav"
    p.write_bytes(b"RIFX" + data[4:12] + b"junk" + data[16:])  # fmt chunk id destroyed
    with pytest.raises(MediaError):
        process_audio(str(p), ".wav", CFG)
    with wave.open(os.path.join(SAMPLE, "conference_begin.wav")) as w:  # the real clip is fine
        assert w.getframerate() == 16000


def test_runner_timeout_and_output_cap():
    with pytest.raises(MediaError) as e:
        run_bounded(["sleep", "10"], timeout=0.3, max_stdout=10)
    assert e.value.code == "ffmpeg_timeout"
    with pytest.raises(MediaError) as e:
        run_bounded(["yes"], timeout=10, max_stdout=100_000)
    assert e.value.code == "ffmpeg_output_too_large"
    assert run_bounded(["echo", "hi"], timeout=5, max_stdout=100).stdout == b"hi\n"
