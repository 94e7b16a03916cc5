"""Beam wiring of the media branch: read -> decode/validate/filter -> exact and
perceptual dedup -> WebDataset shards + index + manifest stats.

No media logic lives here (see ``filters/media*.py`` and
``pipelines/media_process.py``); this module only turns it into transforms.

Stages (ledger): ``media`` (bad media, filters, caption text filters) and
``media_dedup`` (exact: same bytes; perceptual: near-duplicates, with the
survivor's id and a cluster id).

Perceptual dedup is distributed end to end:

1. each image / video / audio record emits bit-sampling LSH keys of its 64-bit
   hashes (``filters.media.lsh_keys``);
2. a GroupByKey per key yields candidate pairs, verified with the exact distance
   (``image_distance`` / ``frames_distance`` / Hamming), giving edges;
3. connected components by min-label propagation, ``cc_rounds`` unrolled
   rounds of CoGroupByKey (each round moves labels one hop; a final round
   counts nodes that would still change as ``cc_unconverged`` in the ledger);
4. in each component the record with the smallest survivor key is kept.

No step ever gathers more than one LSH bucket or one node's neighbours on a worker.

Shards: ``DIR/media/<modality>/<source>-<bucket>-<part>.tar``; a record's bucket
is ``hash(uid) mod n`` with ``n = ceil(total bytes / target)`` from a global sum,
and each bucket is cut into parts of at most ``media.shards.target_bytes``
(unless one sample alone is larger).  ``DIR/media/<modality>/index.json`` lists
the shards in the ``wids`` shard-list format (``wids_version``, ``shardlist``
of ``{url, nsamples}``) plus bytes, sha256 and token counts.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Callable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsDict, AsList, TaggedOutput

from filters.media import (
    MEDIA_EXT,
    TEXT_SIDECAR_EXT,
    MediaConfig,
    frames_distance,
    hamming,
    image_distance,
    lsh_keys,
    lsh_positions,
)
from filters.schema import dropped_row, stable_hash

MEDIA_READERS = ("media", "manifest")
STAGES = ["media", "media_dedup"]

LAYOUT = {
    "image": {"members": ["<key>.jpg | <key>.png", "<key>.json"]},
    "audio": {"members": ["<key>.flac (16 kHz mono, 16-bit)", "<key>.json"]},
    "video": {"members": ["<key>.f00.jpg ... <key>.fNN.jpg (N evenly spaced frames)",
                          "<key>.flac (audio track, 16 kHz mono, when present)", "<key>.json"]},
    "interleaved": {"members": ["<key>.json (segments: text / image member refs, in order)",
                                "<key>.img00.jpg ..."]},
    "json": "id, source, modality, origin, text, tokens{media,text,total}, content_hash, phash, "
            "width/height | duration_s | frames, frame_indices, meta",
    "tar": "sorted members, mtime 0, uid/gid 0, mode 0444 (byte-identical across runs)",
}


# ------------------------------------------------------------------ planning
def split_files(files: list[tuple[str, str, str, str]]):
    """Planned files -> (text files, media files).  Media files are those whose
    reader is ``media`` / ``manifest``; a text file with the same source, folder and
    stem as a media file (``x.jpg`` + ``x.txt``) is that file's caption sidecar and
    becomes part of the media sample.  Media entries: (path, reader, source, origin, sidecars)."""
    media_stems = {}
    for path, reader, source, origin in files:
        if reader == "media" and os.path.splitext(path)[1].lower() in MEDIA_EXT:
            media_stems[(source, os.path.splitext(path)[0])] = path
    sidecars: dict[str, list[str]] = {}
    text_files = []
    for f in files:
        path, reader, source, origin = f
        stem, ext = os.path.splitext(path)
        if reader not in MEDIA_READERS and ext.lower() in TEXT_SIDECAR_EXT and (source, stem) in media_stems:
            sidecars.setdefault(media_stems[(source, stem)], []).append(path)
            continue
        if reader not in MEDIA_READERS:
            text_files.append(f)
    media_files = [(p, r, s, o, sorted(sidecars.get(p, []))) for p, r, s, o in files if r in MEDIA_READERS]
    return text_files, media_files


# ------------------------------------------------------------------ read + process
class ReadMediaFn(beam.DoFn):
    def __init__(self, sources: dict[str, Any], read_cfg: Any, media_cfg: MediaConfig):
        self._sources, self._read_cfg, self._media_cfg = sources, read_cfg, media_cfg

    def process(self, item):
        from pipelines.media_readers import read_media

        path, reader, source, origin, sidecars = item
        for kind, payload in read_media(path, reader, source, self._sources[source], self._read_cfg,
                                        self._media_cfg, origin, sidecars):
            Metrics.counter("ledger", f"{source}|input").inc()
            yield TaggedOutput("input", source)
            if kind == "sample":
                yield payload
            else:
                yield TaggedOutput(kind, payload)


class ProcessMediaFn(beam.DoFn):
    def __init__(self, ops_factory: Callable[[], list[Any]] | None, media_cfg: MediaConfig,
                 source_rank: dict[str, int], dry_run: bool):
        self._factory, self._cfg, self._rank, self._dry = ops_factory, media_cfg, source_rank, dry_run

    def setup(self):
        self._ops = self._factory() if (self._factory and self._cfg.text_filters) else []

    def process(self, sample):
        from pipelines.media_process import process_sample

        for kind, payload in process_sample(sample, self._cfg, self._ops, self._rank, self._dry):
            if kind == "kept":
                payload["uid"] = stable_hash(payload["source"], sample["origin"], payload["id"], size=12)
                payload["rank"] = list(payload["rank"]) + [payload["uid"]]
                Metrics.counter("media", f"{payload['modality']}_kept").inc()
                yield payload
            elif kind == "event":
                name, n = payload
                yield TaggedOutput("events", ((sample["source"], "media", name), n))
            elif kind == "dead":  # bad media: a dead letter and, for the ledger, a drop
                yield TaggedOutput("dead_only", payload)
                yield TaggedOutput("drop", dead_to_dropped(payload, sample["modality"]))
            elif kind == "drop" and self._dry:  # dry run: the record is kept; count the would-be drop
                yield TaggedOutput("events", ((sample["source"], "media", f"would_drop.{payload['reason']}"), 1))
            else:
                yield TaggedOutput(kind, payload)


def dead_to_dropped(d: dict[str, Any], modality: str | None = None) -> dict[str, Any]:
    from pipelines.stages import reason_code

    detail = {"origin": d["origin"], "reason": d["reason"], **({"modality": modality} if modality else {})}
    row = dropped_row({"id": d["id"], "source": d["source"], "content_hash": None}, d["stage"],
                      reason_code(d["reason"]), detail=detail)
    row["_text"] = f"[{modality or 'media'}] {d['origin']}: {d['reason']}"
    return row


# ------------------------------------------------------------------ dedup helpers
def _node(r: dict[str, Any]) -> tuple:
    """Survivor-ordered node label: (rank, uid, id, source, modality)."""
    return (tuple(r["rank"]), r["uid"], r["id"], r["source"], r["modality"])


def _light(r: dict[str, Any]) -> dict[str, Any]:
    return {"node": _node(r), "sig": r["sig"], "modality": r["modality"]}


def _dup_row(rec: dict[str, Any], stage: str, reason: str, info: dict[str, Any]) -> dict[str, Any]:
    row = dropped_row({"id": rec["id"], "source": rec["source"], "content_hash": rec["content_hash"], "url": rec.get("url")},
                      stage, reason, survivor_id=info["survivor_id"], cluster_id=info["cluster_id"],
                      score=info.get("score"), detail={"modality": rec["modality"], **info.get("detail", {})})
    row["_text"] = f"[{rec['modality']}] {rec['id']} duplicate of {info['survivor_id']}"
    return row


class _PickExactFn(beam.DoFn):
    def process(self, kv):
        (modality, chash), items = kv
        items = sorted(items)
        if len(items) < 2:
            return
        best = items[0]
        yield TaggedOutput("events", ((best[3], "media_dedup", f"{modality}.exact_clusters"), 1))
        for it in items[1:]:
            yield (it[1], {"survivor_id": best[2], "cluster_id": f"{modality}:{chash[:16]}", "score": 0.0,
                           "reason": "duplicate", "detail": {"copies": len(items)}})


def _bucket_pairs(kv, image_t: int, video_t: float, audio_t: int, max_bucket: int):
    """Verified near-duplicate edges inside one LSH bucket."""
    (modality, _t, _v), items = kv
    items = sorted(items, key=lambda x: x["node"])
    seen = set()
    uniq = []
    for it in items:  # an item may reach a bucket through several of its hashes
        if it["node"][1] not in seen:
            seen.add(it["node"][1])
            uniq.append(it)
    if len(uniq) < 2:
        return
    head = uniq[:max_bucket]
    for i, a in enumerate(uniq):
        for b in head[: i if i < max_bucket else max_bucket]:
            if modality == "image":
                d = image_distance(a["sig"], b["sig"])
                ok = d <= image_t
            elif modality == "video":
                d = frames_distance(a["sig"]["frames"], b["sig"]["frames"])
                ok = d <= video_t
            else:
                d = hamming(a["sig"]["audio"], b["sig"]["audio"])
                ok = d <= audio_t
            if ok:
                x, y = (a["node"], b["node"]) if a["node"] < b["node"] else (b["node"], a["node"])
                yield (x[1], y[1]), (x, y, float(d))


def _lsh_items(light: dict[str, Any], positions: list[list[int]]):
    sig, modality = light["sig"], light["modality"]
    if not sig:
        return
    if modality == "image":
        hashes = [sig["full"]] + ([sig["mirror"]] if sig.get("mirror") is not None else []) + list(sig.get("crops") or [])
    elif modality == "video":
        hashes = list(sig.get("frames") or [])
    elif modality == "audio":
        hashes = [sig["audio"]] if sig.get("audio") is not None else []
    else:
        return
    for t, v in sorted(lsh_keys(hashes, positions)):
        yield (modality, t, v), light


def _propagate(kv):
    uid, grp = kv
    labs = list(grp["lab"])
    adjs = list(grp["adj"])
    if not labs or not adjs:
        return
    lab = min(labs)
    yield uid, lab
    for nbr_uid in adjs[0][1]:
        yield nbr_uid, lab


def _unconverged(kv):
    _uid, grp = kv
    a, b, adj = list(grp["prev"]), list(grp["next"]), list(grp["adj"])
    if a and b and adj and min(a) != min(b):
        yield (adj[0][0][3], "media_dedup", "cc_unconverged"), 1


class MediaDedup(beam.PTransform):
    """Exact then perceptual dedup of processed media records (see module doc)."""

    def __init__(self, cfg: MediaConfig, dry_run: bool = False):
        super().__init__("MediaDedup")
        self._cfg = cfg.dedup
        self._dry = dry_run

    def expand(self, recs):
        c = self._cfg
        dups = []
        events = []
        if c.exact:
            ex = (
                recs
                | "ExactKey" >> beam.Map(lambda r: ((r["modality"], r["content_hash"]), (tuple(r["rank"]), r["uid"], r["id"], r["source"])))
                | "ExactGroup" >> beam.GroupByKey()
                | "ExactPick" >> beam.ParDo(_PickExactFn()).with_outputs("events", main="dup")
            )
            dups.append(ex.dup)
            events.append(ex.events)
        if c.perceptual:
            positions = lsh_positions(c.lsh_bits, c.lsh_tables)
            light = recs | "Light" >> beam.Map(lambda r: (r["uid"], _light(r)))
            if c.exact:  # exact copies are settled already: hash the survivors only
                light = (
                    {"rec": light, "dup": ex.dup | "DupMark" >> beam.Map(lambda kv: (kv[0], 1))}
                    | "SurvivorsOnly" >> beam.CoGroupByKey()
                    | "KeepSurvivors" >> beam.FlatMap(lambda kv: [] if list(kv[1]["dup"]) else [(kv[0], x) for x in kv[1]["rec"]])
                )
            keyed = light | "LshKeys" >> beam.FlatMap(lambda kv, pos: _lsh_items(kv[1], pos), positions)
            edges = (
                keyed
                | "LshGroup" >> beam.GroupByKey()
                | "Verify" >> beam.FlatMap(_bucket_pairs, c.image_threshold, c.video_threshold, c.audio_threshold, c.max_bucket)
                | "OneEdge" >> beam.CombinePerKey(lambda vs: min(vs, key=lambda e: e[2]))
                | "EdgeVals" >> beam.Values()
            )
            adj = (
                edges
                | "BothWays" >> beam.FlatMap(lambda e: [(e[0][1], (e[0], e[1], e[2])), (e[1][1], (e[1], e[0], e[2]))])
                | "Adjacency" >> beam.GroupByKey()
                | "AdjList" >> beam.MapTuple(lambda uid, es: (uid, (min(es)[0], sorted({n[1][1] for n in es}),
                                                                    min(n[2] for n in es))))
            )
            # round 0: own label = min(self, neighbours)
            labels = adj | "Label0" >> beam.FlatMap(
                lambda kv: [(kv[0], kv[1][0])])
            nbr_labels = (
                edges
                | "NbrLab" >> beam.FlatMap(lambda e: [(e[0][1], e[1]), (e[1][1], e[0])])
            )
            labels = (labels, nbr_labels) | "Lab0All" >> beam.Flatten() | "Lab0Min" >> beam.CombinePerKey(min)
            prev = labels
            for i in range(c.cc_rounds):
                prev = labels
                labels = (
                    {"lab": labels, "adj": adj}
                    | f"CC{i}Join" >> beam.CoGroupByKey()
                    | f"CC{i}Send" >> beam.FlatMap(_propagate)
                    | f"CC{i}Min" >> beam.CombinePerKey(min)
                )
            unconv = (
                {"prev": prev, "next": labels, "adj": adj}
                | "CCCheckJoin" >> beam.CoGroupByKey()
                | "CCCheck" >> beam.FlatMap(_unconverged)
            )
            events.append(unconv)
            near = (
                {"lab": labels, "adj": adj}
                | "NearJoin" >> beam.CoGroupByKey()
                | "NearDups" >> beam.FlatMap(_near_info)
            )
            dups.append(near)
            events.append(
                near
                | "ClusterIds" >> beam.Map(lambda kv: (kv[1]["cluster_id"], (kv[1]["survivor_source"], kv[1]["modality"])))
                | "OnePerCluster" >> beam.CombinePerKey(min)
                | "ClusterEvents" >> beam.Map(lambda kv: ((kv[1][0], "media_dedup", f"{kv[1][1]}.near_dup_clusters"), 1))
            )
        all_dups = tuple(dups) | "AllDups" >> beam.Flatten() if dups else (recs.pipeline | "NoDups" >> beam.Create([]))
        dry = self._dry
        res = (
            {"rec": recs | "ByUid" >> beam.Map(lambda r: (r["uid"], r)), "dup": all_dups}
            | "JoinDups" >> beam.CoGroupByKey()
            | "Decide" >> beam.ParDo(_DecideFn(dry)).with_outputs("dropped", "events", main="kept")
        )
        ev = tuple(events + [res.events]) | "DedupEvents" >> beam.Flatten()
        return res.kept, res.dropped, ev


def _near_info(kv):
    uid, grp = kv
    labs, adjs = list(grp["lab"]), list(grp["adj"])
    if not labs or not adjs:
        return
    lab = min(labs)
    node, _nbrs, dist = adjs[0]
    if lab[1] == uid:
        return
    yield uid, {"survivor_id": lab[2], "cluster_id": f"{node[4]}:{lab[1]}", "score": dist, "reason": "near_duplicate",
                "survivor_source": lab[3], "modality": node[4], "detail": {}}


class _DecideFn(beam.DoFn):
    def __init__(self, dry_run: bool):
        self._dry = dry_run

    def process(self, kv):
        _uid, grp = kv
        dups = sorted(grp["dup"], key=lambda d: (d["reason"] != "duplicate", d["survivor_id"]))
        for rec in grp["rec"]:
            if dups:
                d = dups[0]
                info = {k: d[k] for k in ("survivor_id", "cluster_id", "score")}
                info["detail"] = d.get("detail") or {}
                if self._dry:  # dry run: keep, and count the would-be drop
                    yield TaggedOutput("events", ((rec["source"], "media_dedup", f"would_drop.{d['reason']}"), 1))
                else:
                    yield TaggedOutput("dropped", _dup_row(rec, "media_dedup", d["reason"], info))
                    continue
            yield rec


# ------------------------------------------------------------------ shards
def _tar_bytes(samples: list[dict[str, Any]]) -> bytes:
    from webdataset import TarWriter

    buf = io.BytesIO()
    with TarWriter(buf, encoder=False, compress=False, mtime=0, user="corpusforge", group="corpusforge", mode=0o444) as tw:
        for s in samples:
            tw.write({"__key__": s["_key"], **s["members"]})
    return buf.getvalue()


def _member_size(n: int) -> int:
    return 512 + (n + 511) // 512 * 512


class _WriteTarsFn(beam.DoFn):
    def __init__(self, out_dir: str, target: int):
        self._out, self._target = out_dir, target

    def process(self, kv):
        from pipelines.outputs import join, write_bytes

        (modality, source, bucket), recs = kv
        recs = sorted(recs, key=lambda r: (r["key"], r["uid"]))
        prev = None
        for r in recs:  # duplicate ids in one source: keep tar keys unique
            r["_key"] = r["key"] if r["key"] != prev else f"{r['key']}-{r['uid'][:8]}"
            prev = r["key"]
        parts: list[list[dict[str, Any]]] = [[]]
        size = 1024
        for r in recs:
            s = sum(_member_size(len(v)) for v in r["members"].values())
            if parts[-1] and size + s > self._target:
                parts.append([])
                size = 1024
            parts[-1].append(r)
            size += s
        for i, part in enumerate(parts):
            data = _tar_bytes(part)
            rel = posixpath.join("media", modality, f"{source}-{bucket:05d}-{i:03d}.tar")
            write_bytes(join(self._out, rel), data)
            Metrics.counter("write", "media_tars").inc()
            yield {"path": rel, "modality": modality, "source": source, "samples": len(part), "bytes": len(data),
                   "sha256": hashlib.sha256(data).hexdigest(),
                   "tokens": sum(r["tokens"] for r in part), "media_tokens": sum(r["media_tokens"] for r in part),
                   "text_tokens": sum(r["text_tokens"] for r in part), "seconds": round(sum(r["seconds"] for r in part), 3),
                   "first_key": part[0]["_key"], "last_key": part[-1]["_key"]}


class WriteMediaShards(beam.PTransform):
    def __init__(self, out_dir: str, target: int):
        super().__init__("WriteMediaShards")
        self._out, self._target = out_dir, target

    def expand(self, recs):
        from pipelines.outputs import shard_of

        target = self._target
        n_buckets = AsDict(
            recs
            | "TarSize" >> beam.Map(lambda r: ((r["modality"], r["source"]), r["bytes"]))
            | "TarSizeSum" >> beam.CombinePerKey(sum)
            | "NBuckets" >> beam.MapTuple(lambda k, s: (k, max(1, math.ceil(s / target))))
        )
        return (
            recs
            | "Bucket" >> beam.Map(lambda r, ns: ((r["modality"], r["source"], shard_of(r["uid"], ns[(r["modality"], r["source"])])), r),
                                   n_buckets)
            | "GroupBucket" >> beam.GroupByKey()
            | "WriteTars" >> beam.ParDo(_WriteTarsFn(self._out, target))
        )


class _WriteIndexFn(beam.DoFn):
    def __init__(self, out_dir: str, cfg: MediaConfig):
        self._out, self._cfg = out_dir, cfg

    def process(self, kv):
        from pipelines.outputs import join, write_json

        modality, shards = kv
        shards = sorted(shards, key=lambda s: s["path"])
        index = {
            "wids_version": 1,
            "name": f"corpusforge-{modality}",
            "modality": modality,
            "layout": LAYOUT[modality],
            "shardlist": [{"url": posixpath.basename(s["path"]), "nsamples": s["samples"], "bytes": s["bytes"],
                           "sha256": s["sha256"], "source": s["source"], "tokens": s["tokens"]} for s in shards],
        }
        rel = posixpath.join("media", modality, "index.json")
        write_json(join(self._out, rel), index)
        yield modality, rel


# ------------------------------------------------------------------ summary for manifest.json
def _stat(r):
    return (r["modality"], r["source"]), (1, r["tokens"], r["media_tokens"], r["text_tokens"], r["bytes"], r["seconds"])


def _sum(vals):
    acc = [0, 0, 0, 0, 0, 0.0]
    for v in vals:
        acc = [a + b for a, b in zip(acc, v)]
    return tuple(acc)


class _SummaryFn(beam.DoFn):
    def __init__(self, cfg: MediaConfig, sources: list[str]):
        self._cfg, self._sources = cfg, sources

    def process(self, _, stats, shards, indexes):
        mods: dict[str, Any] = {}
        for (m, s), (n, tok, mtok, ttok, nbytes, secs) in sorted(stats):
            e = mods.setdefault(m, {"samples": 0, "tokens": 0, "media_tokens": 0, "text_tokens": 0, "bytes": 0,
                                    "seconds": 0.0, "sources": {}, "shards": [], "index": None, "layout": LAYOUT[m]})
            e["samples"] += n
            e["tokens"] += tok
            e["media_tokens"] += mtok
            e["text_tokens"] += ttok
            e["bytes"] += nbytes
            e["seconds"] = round(e["seconds"] + secs, 3)
            e["sources"][s] = {"samples": n, "tokens": tok, "media_tokens": mtok, "text_tokens": ttok,
                               "seconds": round(secs, 3), "tokens_per_sample": round(tok / max(n, 1), 2)}
        for sh in sorted(shards, key=lambda x: x["path"]):
            if sh["modality"] in mods:
                mods[sh["modality"]]["shards"].append({k: sh[k] for k in ("path", "source", "samples", "bytes", "sha256", "tokens")})
        for e in mods.values():  # real tar sizes once written (a dry run keeps the payload estimate)
            if e["shards"]:
                e["bytes"] = sum(sh["bytes"] for sh in e["shards"])
        for m, rel in sorted(indexes):
            if m in mods:
                mods[m]["index"] = rel
        t = self._cfg.tokens
        yield {"media": {
            "format": "corpusforge-media/1",
            "modalities": dict(sorted(mods.items())),
            "totals": {k: sum(v[k] for v in mods.values()) for k in ("samples", "tokens", "media_tokens", "text_tokens", "bytes")},
            "token_cost": {"image": f"ceil(w/{t.patch_size}) * ceil(h/{t.patch_size}) at the stored size; over {t.image_max_tokens} the "
                                    "grid is scaled down to fit (filters.media.image_grid)",
                           "audio": f"{t.audio_tokens_per_s:g} tokens per second",
                           "video": f"{self._cfg.video.n_frames} frames x image tokens + audio tokens of the track",
                           "text": "filters.stats.estimate_tokens of caption / transcript / interleaved text",
                           "patch_size": t.patch_size, "audio_tokens_per_s": t.audio_tokens_per_s,
                           "image_max_tokens": t.image_max_tokens,
                           "video_frames": self._cfg.video.n_frames, "audio_sample_rate": self._cfg.audio.sample_rate},
            "layout": LAYOUT,
        }}


# ------------------------------------------------------------------ the branch
@dataclass
class MediaResult:
    inputs: Any        # PCollection[str]: one source name per input record
    kept: Any          # PCollection[{"source": ...}] for the ledger
    dropped: Any       # DROPPED_SCHEMA rows (stage media / media_dedup)
    dead: Any          # DEAD_LETTER rows
    events: Any        # ((source, stage, name), n)
    summary: Any       # PCollection with one {"media": {...}} dict for manifest.json
    stage_order: list[str]


def add_media(p, cfg, sources, media_files, out: str, *, dry_run: bool = False,
              ops_factory: Callable[[], list[Any]] | None = None) -> MediaResult:
    """Adds the media branch to pipeline ``p`` (``media_files`` from ``split_files``)."""
    mcfg: MediaConfig = cfg.media
    src_map = {s.name: s for s in sources}
    source_rank = {s.name: i for i, s in enumerate(sources)}
    read = (
        p
        | "MediaFiles" >> beam.Create(media_files)
        | "SpreadMediaFiles" >> beam.Reshuffle()
        | "ReadMedia" >> beam.ParDo(ReadMediaFn(src_map, cfg.read, mcfg)).with_outputs("dead", "drop", "input", main="sample")
    )
    proc = (
        read.sample
        | "SpreadSamples" >> beam.Reshuffle()
        | "ProcessMedia" >> beam.ParDo(ProcessMediaFn(ops_factory, mcfg, source_rank, dry_run)).with_outputs(
            "dead_only", "drop", "events", main="kept")
    )
    dead = (read.dead, proc.dead_only) | "MediaDead" >> beam.Flatten()
    dropped_parts = [read.dead | "MediaDeadToDropped" >> beam.Map(dead_to_dropped), read.drop, proc.drop]
    event_parts = [proc.events]
    kept = proc.kept
    if mcfg.dedup.enabled:
        kept, ddrop, dev = kept | MediaDedup(mcfg, dry_run)
        dropped_parts.append(ddrop)
        event_parts.append(dev)

    def count_kept(r):
        Metrics.counter("ledger", f"{r['source']}|kept").inc()
        return r

    kept = kept | "CountKeptMedia" >> beam.Map(count_kept)
    if dry_run:
        shards = p | "NoMediaShards" >> beam.Create([])
    else:
        shards = kept | WriteMediaShards(out, mcfg.shards.target_bytes)
    indexes = (
        shards
        | "IndexKey" >> beam.Map(lambda s: (s["modality"], s))
        | "IndexGroup" >> beam.GroupByKey()
        | "WriteIndex" >> beam.ParDo(_WriteIndexFn(out, mcfg))
    )
    stats = kept | "MediaStat" >> beam.Map(_stat) | "MediaStatSum" >> beam.CombinePerKey(_sum)
    summary = (
        p
        | "MediaSummaryTrigger" >> beam.Create([None])
        | "MediaSummary" >> beam.ParDo(_SummaryFn(mcfg, [s.name for s in sources]), AsList(stats), AsList(shards),
                                       AsList(indexes))
    )
    return MediaResult(
        inputs=read.input,
        kept=kept | "MediaKeptLedger" >> beam.Map(lambda r: {"source": r["source"]}),
        dropped=tuple(dropped_parts) | "MediaDropped" >> beam.Flatten(),
        dead=dead,
        events=tuple(event_parts) | "MediaEvents" >> beam.Flatten(),
        summary=summary,
        stage_order=list(STAGES),
    )
