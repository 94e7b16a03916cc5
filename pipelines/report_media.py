"""Report section for the media branch: per-modality counts and token costs,
drops (stage ``media`` / ``media_dedup``), dedup clusters, and a contact sheet of
sampled video frames (read from the first video shards; never the whole corpus)."""
from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from pipelines.reportlib import Section, join, new_figure, read_json, read_parquet_dir

SHEET_VIDEOS = 4


def _drops(out_dir: str) -> list[dict[str, Any]]:
    t = read_parquet_dir(out_dir, "dropped")
    if t is None:
        return []
    rows = [r for r in t.to_pylist() if r["stage"] in ("media", "media_dedup")]
    for r in rows:
        try:
            r["_detail"] = json.loads(r.get("detail") or "{}")
        except ValueError:
            r["_detail"] = {}
    return rows


def video_frames(out_dir: str, index_rel: str, max_videos: int = SHEET_VIDEOS) -> list[tuple[str, list[bytes]]]:
    """(key, frame JPEGs) of the first ``max_videos`` videos in the shards of an index."""
    from apache_beam.io.filesystems import FileSystems

    index = read_json(out_dir, index_rel)
    if not index:
        return []
    base = index_rel.rsplit("/", 1)[0]
    out: dict[str, dict[str, bytes]] = {}
    for sh in index["shardlist"]:
        with FileSystems.open(join(out_dir, base, sh["url"])) as f, tarfile.open(fileobj=f, mode="r|") as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                if not (ext.startswith("f") and ext.endswith(".jpg")):
                    continue
                if key not in out and len(out) >= max_videos:
                    break
                out.setdefault(key, {})[ext] = tf.extractfile(m).read()
        if len(out) >= max_videos:
            break
    return [(k, [v[e] for e in sorted(v)]) for k, v in sorted(out.items())]


def _contact_sheet(sec: Section, videos: list[tuple[str, list[bytes]]]) -> None:
    from PIL import Image

    cols = max(len(f) for _, f in videos)
    fig, axes = new_figure(min(1.0 * cols, 16), 1.1 * len(videos) + 0.3)
    fig.clf()
    for r, (key, frames) in enumerate(videos):
        for c, jpg in enumerate(frames):
            ax = fig.add_subplot(len(videos), cols, r * cols + c + 1)
            ax.imshow(Image.open(io.BytesIO(jpg)))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(key[:14], fontsize=6)
            if r == 0:
                ax.set_title(f"f{c:02d}", fontsize=6)
    fig.subplots_adjust(wspace=0.04, hspace=0.08)
    sec.plot(fig, "media_video_contact_sheet",
             f"Sampled video frames ({cols} evenly spaced per clip) of the first {len(videos)} videos in the shards")


def section(out_dir: str):
    manifest = read_json(out_dir, "manifest.json") or {}
    media = manifest.get("media")
    drops = _drops(out_dir)
    if not media and not drops:
        return None
    sec = Section("Media: images, audio, video, interleaved documents")
    mods = (media or {}).get("modalities", {})
    rows = []
    for m, e in mods.items():
        rows.append([m, e["samples"], e["tokens"], e["media_tokens"], e["text_tokens"], round(e["seconds"], 1),
                     e["bytes"], len(e["shards"]), round(e["tokens"] / max(e["samples"], 1), 1)])
    sec.table(["modality", "samples kept", "tokens", "media tokens", "text tokens", "seconds", "shard bytes", "shards",
               "tokens / sample"], rows, "Kept media per modality (token costs: see manifest.json media.token_cost)")
    src_rows = [[m, s, v["samples"], v["tokens"], v["tokens_per_sample"]]
                for m, e in mods.items() for s, v in e["sources"].items()]
    if src_rows:
        sec.table(["modality", "source", "samples", "tokens", "tokens / sample"], src_rows, "Per source")
    if media:
        tc = media["token_cost"]
        sec.p(f"Token cost model: image {tc['image']}; audio {tc['audio']}; video {tc['video']}. "
              f"Shards: DIR/media/<modality>/*.tar with index.json (wids shard list).")
    if mods:
        fig, ax = new_figure(6.5, 2.8)
        ax.bar(list(mods), [e["tokens"] for e in mods.values()], color="#4f81bd")
        ax.set_ylabel("tokens")
        ax.set_title("Estimated tokens per modality (for token-weighted mixtures)")
        sec.plot(fig, "media_tokens", "Estimated tokens per modality")

    agg: dict[tuple[str, str, str], int] = {}
    for r in drops:
        key = (r["stage"], r["_detail"].get("modality", "?"), r["reason"])
        agg[key] = agg.get(key, 0) + 1
    if agg:
        sec.table(["stage", "modality", "reason", "dropped"],
                  [[*k, n] for k, n in sorted(agg.items(), key=lambda kv: (-kv[1], kv[0]))],
                  "Media drops (media: bad media, filters, caption/transcript text filters; media_dedup: duplicates)")
        bad = [r for r in drops if r["stage"] == "media" and r["_detail"].get("reason")][:8]
        if bad:
            sec.table(["id", "origin", "dead-letter reason"],
                      [[r["id"], r["_detail"].get("origin", ""), r["_detail"]["reason"][:120]] for r in bad],
                      "Examples of bad media (full rows in dead_letter/)")

    clusters: dict[str, dict[str, Any]] = {}
    for r in drops:
        if r["stage"] != "media_dedup" or not r.get("cluster_id"):
            continue
        c = clusters.setdefault(r["cluster_id"], {"survivor": r["survivor_id"], "members": [], "max": 0.0,
                                                  "kind": r["reason"], "modality": r["_detail"].get("modality", "?")})
        c["members"].append(r["id"])
        c["max"] = max(c["max"], r.get("score") or 0.0)
    if clusters:
        by_mod: dict[tuple[str, str], list[int]] = {}
        for c in clusters.values():
            e = by_mod.setdefault((c["modality"], c["kind"]), [0, 0])
            e[0] += 1
            e[1] += len(c["members"])
        sec.table(["modality", "kind", "clusters", "records dropped"], [[*k, *v] for k, v in sorted(by_mod.items())],
                  "Dedup clusters (exact: same bytes; near_duplicate: perceptual hashes)")
        top = sorted(clusters.items(), key=lambda kv: (-len(kv[1]["members"]), kv[0]))[:20]
        sec.table(["cluster", "modality", "kind", "survivor", "dropped copies", "max distance"],
                  [[cid[:28], c["modality"], c["kind"], c["survivor"], ", ".join(sorted(c["members"]))[:160], c["max"]]
                   for cid, c in top], "Largest dedup clusters (distance: Hamming bits of 64; video: mean per frame)")
    vid = mods.get("video")
    if vid and vid.get("index"):
        try:
            videos = video_frames(out_dir, vid["index"])
        except Exception as e:  # noqa: BLE001 - a broken shard must not hide the section
            sec.p(f"Contact sheet unavailable: {type(e).__name__}: {e}")
            videos = []
        if videos:
            _contact_sheet(sec, videos)
    return sec
