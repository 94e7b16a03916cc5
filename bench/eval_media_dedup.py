"""Near-duplicate detection of the media branch on the dev corpus's planted copies.

    PYTHONPATH=. .venv/bin/python bench/eval_media_dedup.py [--out DIR] [--reuse] [--synthetic]

Runs the real pipeline (build_corpus.py) on ``../shared/dev_corpus/media/manifest.jsonl``
and scores its ``dropped/`` rows against ``labels.jsonl``:

* detection rate per transformation: a planted copy is found when it ends in the
  same cluster as its original (one dropped with the other, or both with the same survivor);
* false positives: records merged with a survivor outside their true group (groups
  are the connected components of the labels), over the records that are not planted copies.

``--synthetic`` adds a larger check on scikit-image's photos (random 256-px crops,
the same four image transforms plus off-centre crops) with the same signature and
threshold, and the LSH candidate probability of the configured banding.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEV = os.path.join(os.path.dirname(ROOT), "shared", "dev_corpus")


def run_pipeline(out: str, dev: str = DEV) -> None:
    from pipelines import build_corpus

    build_corpus.run(["--input", f"dev={dev}/media/manifest.jsonl", "--media-root", dev, "--output", out, "--no-report"])


def score(out: str, dev: str = DEV) -> dict:
    import pyarrow.parquet as pq

    man = {json.loads(l)["id"]: json.loads(l) for l in open(os.path.join(dev, "media", "manifest.jsonl"))}
    labels = [json.loads(l) for l in open(os.path.join(dev, "media", "labels.jsonl"))]
    parent = {i: i for i in man}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for lab in labels:
        parent[find(lab["media_id"])] = find(lab["of"])
    rows = [r for f in sorted(glob.glob(os.path.join(out, "dropped", "*.parquet"))) for r in pq.read_table(f).to_pylist()]
    survivor = {r["id"]: r["survivor_id"] for r in rows if r["stage"] == "media_dedup"}
    dropped_media = {r["id"]: r["reason"] for r in rows if r["stage"] == "media"}

    def pred(x):
        seen = set()
        while x in survivor and x not in seen:
            seen.add(x)
            x = survivor[x]
        return x

    per = defaultdict(lambda: [0, 0, 0])  # planted, evaluable, detected
    for lab in labels:
        mod = man[lab["media_id"]]["modality"]
        key = (mod, lab["transform"])
        per[key][0] += 1
        if lab["media_id"] in dropped_media or lab["of"] in dropped_media:
            continue
        per[key][1] += 1
        per[key][2] += int(pred(lab["media_id"]) == pred(lab["of"]))
    copies = {lab["media_id"] for lab in labels}
    fp = defaultdict(list)
    negatives = defaultdict(int)
    for i, r in man.items():
        if i in copies or i in dropped_media:
            continue
        negatives[r["modality"]] += 1
        if i in survivor and find(survivor[i]) != find(i):
            fp[r["modality"]].append((i, survivor[i]))
    return {"per_transform": {f"{m}/{t}": {"planted": a, "evaluable": b, "detected": c, "rate": c / b if b else None}
                              for (m, t), (a, b, c) in sorted(per.items())},
            "false_positives": {m: {"negatives": negatives[m], "merged": len(fp[m]), "rate": len(fp[m]) / max(negatives[m], 1),
                                    "pairs": [[a, b, man[a].get("transcript") or man[a].get("origin"),
                                               man[b].get("transcript") or man[b].get("origin")] for a, b in fp[m]]}
                                for m in sorted(negatives)},
            "dropped_at_media_stage": dropped_media}


def synthetic(seed: int = 0) -> list[list]:
    """Signature + threshold on scikit-image photos: detection per transform and false-match rate."""
    import io
    import itertools
    import random

    import skimage
    from PIL import Image, ImageOps

    from filters.media import MediaConfig, image_distance
    from filters.media_image import signature

    cfg = MediaConfig().dedup
    d = os.path.join(os.path.dirname(skimage.__file__), "data")
    rng = random.Random(seed)
    items = []
    for n in sorted(os.listdir(d)):
        if n.endswith((".png", ".jpg")) and os.path.getsize(os.path.join(d, n)) > 20000:
            im = Image.open(os.path.join(d, n)).convert("RGB")
            for _ in range(4):
                s = min(256, *im.size)
                x, y = rng.randrange(im.width - s + 1), rng.randrange(im.height - s + 1)
                items.append((n, im.crop((x, y, x + s, y + s))))

    def jpeg30(im):
        b = io.BytesIO()
        im.save(b, "JPEG", quality=30)
        return Image.open(io.BytesIO(b.getvalue()))

    def crop(im, centred):
        w = im.width
        f = rng.uniform(0.8, 0.95)
        c = round(w * f)
        o = ((w - c) // 2, (w - c) // 2) if centred else (rng.randrange(w - c + 1), rng.randrange(w - c + 1))
        return im.crop((o[0], o[1], o[0] + c, o[1] + c))

    tf = {"jpeg_q30": jpeg30, "resize_half": lambda im: im.resize((im.width // 2, im.height // 2), Image.LANCZOS),
          "hflip": ImageOps.mirror, "centre_crop_80-95%": lambda im: crop(im, True),
          "off_centre_crop_80-95%": lambda im: crop(im, False)}
    sigs = [signature(im, cfg.crop_probes, cfg.mirror) for _, im in items]
    rows = []
    for name, fn in tf.items():
        hits = sum(image_distance(s, signature(fn(im), cfg.crop_probes, cfg.mirror)) <= cfg.image_threshold
                   for s, (_, im) in zip(sigs, items))
        rows.append([name, len(items), hits, hits / len(items)])
    pairs = list(itertools.combinations(range(len(items)), 2))
    fps = sum(image_distance(sigs[i], sigs[j]) <= cfg.image_threshold for i, j in pairs)
    rows.append(["different crops (false matches)", len(pairs), fps, fps / len(pairs)])
    return rows


def lsh_recall(bits: int, tables: int) -> list[list]:
    return [[dd, 1 - (1 - (1 - dd / 64) ** bits) ** tables] for dd in (0, 4, 8, 10, 12, 16, 32)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/corpusforge-media-eval")
    ap.add_argument("--reuse", action="store_true", help="score an existing --out without re-running")
    ap.add_argument("--synthetic", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(DEV, "media", "labels.jsonl")):
        print("../shared/dev_corpus/media is absent: nothing to measure")
        return 0
    if not a.reuse:
        run_pipeline(a.out)
    res = score(a.out)
    print("\nNear-duplicate detection on dev_corpus/media (planted copies)")
    print(f"{'modality/transform':34s} {'planted':>7s} {'evaluable':>9s} {'found':>5s} {'rate':>6s}")
    for k, v in res["per_transform"].items():
        rate = "n/a" if v["rate"] is None else f"{v['rate']:.2f}"
        print(f"{k:34s} {v['planted']:7d} {v['evaluable']:9d} {v['detected']:5d} {rate:>6s}")
    print(f"\n{'false positives':34s} {'records':>7s} {'merged':>9s} {'rate':>6s}")
    for m, v in res["false_positives"].items():
        print(f"{m:34s} {v['negatives']:7d} {v['merged']:9d} {v['rate']:6.3f}")
        for p in v["pairs"]:
            print(f"    {p[0]} -> {p[1]}   ({p[2]!r} / {p[3]!r})")
    if res["dropped_at_media_stage"]:
        print(f"\nnot evaluable (dropped by filters first): {res['dropped_at_media_stage']}")
    if a.synthetic:
        from filters.media import MediaConfig

        print("\nSynthetic (scikit-image photos, random 256-px crops): signature distance <= threshold")
        print(f"{'transform':34s} {'cases':>7s} {'found':>9s} {'rate':>6s}")
        for name, n, hits, rate in synthetic():
            print(f"{name:34s} {n:7d} {hits:9d} {rate:6.3f}")
        c = MediaConfig().dedup
        print(f"\nLSH candidate probability ({c.lsh_tables} tables x {c.lsh_bits} bits) by Hamming distance:")
        for dd, p in lsh_recall(c.lsh_bits, c.lsh_tables):
            print(f"  d={dd:2d}: {p:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
