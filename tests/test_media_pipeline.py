"""The media branch inside build_corpus, end to end on the shipped sample plus corrupt files:
ledger balance, shards + index, dedup drops with survivors, dead letters, report, and
byte-identical outputs across runner modes / worker counts."""
import glob
import hashlib
import io
import json
import os
import shutil
import tarfile

import pyarrow.parquet as pq
import pytest

from pipelines import build_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDIA = os.path.join(ROOT, "data", "sample", "media")

pytestmark = pytest.mark.slow


def _bad_inputs(d):
    os.makedirs(d)
    open(os.path.join(d, "zero.wav"), "wb").close()
    wav = open(os.path.join(MEDIA, "audio", "conference_begin.wav"), "rb").read()
    open(os.path.join(d, "badheader.wav"), "wb").write(b"RIFX" + wav[4:12] + b"junk" + b"\xff" * 64)
    mp4 = open(os.path.join(MEDIA, "video", "slideshow.mp4"), "rb").read()
    i = mp4.index(b"moov") - 4
    open(os.path.join(d, "nomoov.mp4"), "wb").write(mp4[:i] + mp4[i + int.from_bytes(mp4[i:i + 4], "big"):])
    jpg = open(os.path.join(MEDIA, "images", "rocket.jpg"), "rb").read()
    with tarfile.open(os.path.join(d, "evil.tar"), "w") as tf:
        for name, data in (("../escape.jpg", jpg), ("/abs.jpg", jpg), ("ok1.jpg", jpg), ("ok1.txt", b"a rocket")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


def _run(out, bad, *extra):
    return build_corpus.run([
        "--input", f"media={MEDIA}/manifest.jsonl", "--input", f"media_pairs={MEDIA}/pairs.tar",
        "--input", f"bad={bad}", "--output", out, *extra])


def _digests(out):
    res = {}
    for sub in ("media", "dropped", "dead_letter"):
        for p in sorted(glob.glob(os.path.join(out, sub, "**", "*"), recursive=True)):
            if os.path.isfile(p):
                res[os.path.relpath(p, out)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return res


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("media_pipe")
    bad = str(base / "bad")
    _bad_inputs(bad)
    out = str(base / "out")
    summary = _run(out, bad)
    return base, bad, out, summary


def test_ledger_balances_and_counts_every_input(built):
    _, _, out, summary = built
    ledger = json.load(open(os.path.join(out, "ledger.json")))
    assert ledger["balanced"]
    src = ledger["sources"]
    assert src["media"]["input"] == 15 and src["media_pairs"]["input"] == 3
    # 3 bad files + 2 unsafe members + 1 good pair (an exact copy of the sample's rocket: dropped, cross-source)
    assert src["bad"]["input"] == 6 and src["bad"]["kept"] == 0
    assert src["bad"]["dropped"]["media_dedup"] == {"duplicate": 1}
    assert src["media"]["dropped"]["media"] == {"truncated_image": 1}
    assert src["media"]["dropped"]["media_dedup"] == {"near_duplicate": 4}
    assert "media" in ledger["stage_order"] and "media_dedup" in ledger["stage_order"]


def test_dead_letters_have_reasons(built):
    _, _, out, _ = built
    dead = pq.read_table(glob.glob(os.path.join(out, "dead_letter", "*.parquet"))).to_pylist()
    reasons = {r["origin"]: r["reason"].split(":")[0] for r in dead}
    assert reasons["zero.wav"] == "empty_file"
    assert reasons["badheader.wav"] == "undecodable_audio"
    assert reasons["nomoov.mp4"] == "unreadable_media" and "moov" in [r for r in dead if r["origin"] == "nomoov.mp4"][0]["reason"]
    assert reasons["evil.tar#../escape.jpg"] == "unsafe_tar_member" and reasons["evil.tar#/abs.jpg"] == "unsafe_tar_member"
    assert reasons["manifest.jsonl:8"] == "truncated_image"
    assert all(r["stage"] == "media" for r in dead)


def test_shards_index_and_manifest(built):
    _, _, out, _ = built
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    mods = manifest["media"]["modalities"]
    assert {m: e["samples"] for m, e in mods.items()} == {"image": 8, "audio": 3, "video": 1, "interleaved": 1}
    for m, e in mods.items():
        index = json.load(open(os.path.join(out, e["index"])))
        assert sum(s["nsamples"] for s in index["shardlist"]) == e["samples"] and index["wids_version"] == 1
        keys = []
        for s in index["shardlist"]:
            path = os.path.join(out, "media", m, s["url"])
            assert hashlib.sha256(open(path, "rb").read()).hexdigest() == s["sha256"]
            with tarfile.open(path) as tf:
                ms = tf.getmembers()
            assert all(x.mtime == 0 and x.uid == 0 and x.mode == 0o444 for x in ms)
            names = [x.name for x in ms]
            keys += sorted({n.split(".", 1)[0] for n in names})
            assert all(n.split(".", 1)[0] + ".json" in names for n in names)
        assert len(keys) == e["samples"]
        assert e["tokens"] == e["media_tokens"] + e["text_tokens"] > 0
    video = tarfile.open(os.path.join(out, mods["video"]["shards"][0]["path"]))
    names = sorted(video.getnames())
    assert names == sorted([f"vid-slideshow.f{i:02d}.jpg" for i in range(16)] + ["vid-slideshow.flac", "vid-slideshow.json"])
    js = json.loads(video.extractfile("vid-slideshow.json").read())
    assert js["frames"] == 16 and js["tokens"]["total"] == mods["video"]["tokens"]
    assert manifest["media"]["token_cost"]["patch_size"] == 16


def test_dedup_drops_name_kept_survivors(built):
    _, _, out, _ = built
    dropped = pq.read_table(glob.glob(os.path.join(out, "dropped", "*.parquet"))).to_pylist()
    dd = {r["id"]: r for r in dropped if r["stage"] == "media_dedup"}
    assert {k: v["survivor_id"] for k, v in dd.items()} == {
        "img-chelsea-flip": "img-chelsea", "img-coffee-small": "img-coffee",
        "aud-monday-quiet": "aud-monday", "vid-slideshow-small": "vid-slideshow", "ok1": "img-rocket"}
    assert all(v["cluster_id"] for v in dd.values())
    assert dd["ok1"]["reason"] == "duplicate" and dd["img-coffee-small"]["reason"] == "near_duplicate"


def test_report_has_media_section_and_contact_sheet(built):
    _, _, out, _ = built
    md = open(os.path.join(out, "report.md")).read()
    assert "## Media" in md and "near_duplicate" in md and "img-chelsea-flip" in md
    assert os.path.getsize(os.path.join(out, "report", "media_video_contact_sheet.png")) > 5000


def test_byte_identical_across_runner_modes(built):
    base, bad, out, _ = built
    out2 = str(base / "out2")
    _run(out2, bad, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    a, b = _digests(out), _digests(out2)
    assert a == b and any(k.endswith(".tar") for k in a)
    shutil.rmtree(out2)


def test_dry_run_keeps_everything_it_can_and_balances(tmp_path):
    out = str(tmp_path / "dry")
    build_corpus.run(["--input", f"media={MEDIA}/manifest.jsonl", "--output", out, "--dry-run", "--no-report"])
    ledger = json.load(open(os.path.join(out, "ledger.json")))
    src = ledger["sources"]["media"]
    assert ledger["balanced"] and src["kept"] == 14 and src["dropped"] == {"media": {"truncated_image": 1}}
    assert src["modified"]["media_dedup"]["would_drop.near_duplicate"] == 4
    assert not os.path.exists(os.path.join(out, "media"))
