"""Multimodal experiment: train the CPU preset on a staged mixture of text, images,
audio and video, then measure whether the model uses the images.

    PYTHONPATH=. python bench/mm_probe.py [--steps 200] [--out out/mm_probe] [--quick]

Steps (each prints progress; the outputs go under ``--out``):

1. **Captioned images.**  16 CC0 / public-domain photos bundled with scikit-image
   (``skimage.data``: astronaut, brick, camera, cell, chelsea, clock, coffee, coins,
   grass, gravel, horse, hubble_deep_field, immunohistochemistry, retina, rocket, text;
   licences in their docstrings) are cut into random crops (40-100% of the short side,
   aspect 3:4-4:3, random position, 50% mirrored) stored at a random size (long side
   64-176 px, so the images cost a variable number of tokens).  Each crop gets a
   caption "<template> <description of its photo>.": 4 templates for training, a 5th,
   never trained on, for the probe.  ``captions``: 48 crops per photo (768 pairs);
   ``probe``: 6 other crops per photo (96 pairs, own random seed), in the corpus but
   weight 0 in the mixture, so never trained on.
2. **Corpus** (``pipelines/build_corpus.py``): the sample's web / wiki / code text,
   the sample's media (images, audio clips, a video with sound, an interleaved
   document) and the two caption sources.  Token costs are set for 256-token
   sequences: 16-px patches, at most 40 patches per image or video frame, 12.5 audio
   tokens per second, 4 frames per video.  Media dedup is off (the crops are
   near-duplicates of each other by design).
3. **Tokenizer** (SentencePiece, 4,096 pieces, on the corpus) and packed text (257).
4. **Mixture**: text 40%, captioned images 45%, sample images / audio / video /
   interleaved 3-4% each (their repetition caps raised: the sample has 3 audio clips).
5. **Train** ``python -m train --preset cpu`` for ``--steps`` steps (batch 8 x 256).
6. **Probe**: for each held-out pair, the mean NLL per caption token of
   ``<boi> image <eoi> caption <eod>`` with its own image, and with an image of a
   *different* photo (a seeded derangement across photos); the gap (shuffled - right)
   with a 95% paired-bootstrap interval and the fraction of captions the right image
   wins.  The same probe on the untrained model (step 0) is the control: it must
   show no gap.

Prints a table and writes ``<out>/probe.json``.  ``--quick``: 60 steps (a smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PHOTOS = {
    "astronaut": "an astronaut in front of a flag",
    "brick": "a brick wall",
    "camera": "a man with a camera on a tripod",
    "cell": "a cell floating in saline",
    "chelsea": "a tabby cat",
    "clock": "a blurred clock",
    "coffee": "a cup of coffee",
    "coins": "old Greek coins",
    "grass": "a patch of grass",
    "gravel": "a heap of gravel",
    "horse": "the silhouette of a horse",
    "hubble_deep_field": "distant galaxies in deep space",
    "immunohistochemistry": "stained tissue under a microscope",
    "retina": "the retina of a human eye",
    "rocket": "a rocket on the launch pad",
    "text": "printed letters on paper",
}
TRAIN_TEMPLATES = ["A photo of {}.", "An image of {}.", "This picture shows {}.", "Here is {}."]
PROBE_TEMPLATE = "We can see {}."
MEDIA_SETTINGS = ["--set=media.tokens.patch_size=16", "--set=media.tokens.image_max_tokens=40",
                  "--set=media.tokens.audio_tokens_per_s=12.5", "--set=media.video.n_frames=4",
                  "--set=media.dedup.enabled=false"]


def say(msg: str) -> None:
    print(f"[mm_probe {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], log: str) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONHASHSEED": "0"}
    t = time.time()
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode:
        print(open(log).read()[-4000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    say(f"  done in {time.time() - t:.0f}s (log {log})")


# ----------------------------------------------------------------- 1. captioned images
def make_pairs(out: str, per_photo: int, seed: int, templates: list[str]) -> int:
    import skimage.data
    import skimage.util
    from PIL import Image

    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for name, desc in PHOTOS.items():
        img = skimage.util.img_as_ubyte(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = img[..., :3]
        h, w = img.shape[:2]
        for k in range(per_photo):
            side = min(h, w) * rng.uniform(0.4, 1.0)
            aspect = rng.uniform(0.75, 4 / 3)
            ch, cw = int(min(h, side / np.sqrt(aspect))), int(min(w, side * np.sqrt(aspect)))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = Image.fromarray(np.ascontiguousarray(img[y:y + ch, x:x + cw]))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            long_side = int(rng.integers(64, 177))
            s = long_side / max(crop.size)
            crop = crop.resize((max(32, round(crop.size[0] * s)), max(32, round(crop.size[1] * s))),
                               Image.Resampling.BICUBIC)
            rel = f"images/{name}-{k:03d}.png"
            crop.save(os.path.join(out, rel))
            caption = templates[int(rng.integers(len(templates)))].format(desc)
            lines.append({"id": f"{name}-{k:03d}", "modality": "image", "path": rel, "caption": caption,
                          "meta": {"photo": name}})
    with open(os.path.join(out, "manifest.jsonl"), "w") as f:
        for d in lines:
            f.write(json.dumps(d) + "\n")
    return len(lines)


# ----------------------------------------------------------------- 6. the probe
def probe(run_dir: str, mixture: str, train_args: list[str], steps_ckpt: int | None, seed: int = 0) -> dict:
    """Caption NLL with the right vs a shuffled image, on the ``probe`` source, for the
    checkpoint of ``run_dir`` (or the initial parameters when ``steps_ckpt`` is 0)."""
    import jax

    from mixtures.multimodal import MediaPackedSource, caption_rows
    from tokenizer.sp import Tokenizer
    from train.config import resolve
    from train.probes import caption_gap
    from train.sharding import put_batch
    from train.trainer import Trainer

    cfg, model, _, _ = resolve(None, train_args, {"preset": "cpu"})
    tr = Trainer(cfg, model)
    if steps_ckpt:
        tr.init_or_restore()
    else:
        tr.state = jax.jit(tr._init_state)(jax.random.PRNGKey(cfg.seed))
    params = tr.state["params"]
    corpus = os.path.join(os.path.dirname(run_dir), "corpus")
    tok = Tokenizer.load(os.path.join(os.path.dirname(run_dir), "tokenizer"))
    media = json.load(open(os.path.join(corpus, "manifest.json")))["media"]
    src = MediaPackedSource(corpus, media, "image", "probe", tok, cfg.seq_len + 1)
    refs = sorted(src.docs, key=lambda r: r.id)
    docs = [(r.shard, r.key) for r in refs]
    photo = [r.id.rsplit("-", 1)[0] for r in refs]
    rng = np.random.default_rng(seed)
    n = len(docs)
    while True:                       # a derangement across photos: never an image of the same photo
        perm = rng.permutation(n)
        if all(photo[perm[i]] != photo[i] for i in range(n)):
            break
    nll = jax.jit(tr._nll)
    right, shuffled = [], []
    B = 8                             # the training batch (XLA:CPU runs 16 x 256 rows ~20x slower than 8 x 256)
    for a in range(0, n, B):
        idx = list(range(a, min(a + B, n)))
        # row j: the caption of docs[idx[j]] after its own image / after the image of docs[perm[idx[j]]]
        rb, _ = caption_rows(src, [docs[i] for i in idx], list(range(len(idx))), cfg.seq_len, tok.pad_id)
        sb, _ = caption_rows(src, [docs[perm[i]] for i in idx] + [docs[i] for i in idx],
                             [len(idx) + j for j in range(len(idx))], cfg.seq_len, tok.pad_id)
        right.append(rb)
        shuffled.append(sb)

    def nll_fn(b):
        return nll(params, put_batch(b, tr.batch_sharding))

    return caption_gap(nll_fn, right, shuffled, seed=seed)


# ----------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "mm_probe"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="60 steps (smoke run)")
    ap.add_argument("--keep", action="store_true", help="reuse the corpus / tokenizer of a previous run in --out")
    args = ap.parse_args()
    steps = 60 if args.quick else args.steps
    out = os.path.abspath(args.out)
    py = sys.executable
    t0 = time.time()
    corpus, tok, tokens = (os.path.join(out, x) for x in ("corpus", "tokenizer", "tokens"))
    if not (args.keep and os.path.exists(os.path.join(tokens, "token_manifest.json"))):
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(out)
        say("1. captioned image crops of 16 scikit-image photos")
        n_train = make_pairs(os.path.join(out, "pairs", "train"), 48, 1, TRAIN_TEMPLATES)
        n_probe = make_pairs(os.path.join(out, "pairs", "probe"), 6, 2, [PROBE_TEMPLATE])
        say(f"  {n_train} training pairs, {n_probe} held-out probe pairs")
        say("2. corpus (text + media through pipelines/build_corpus.py)")
        run([py, "pipelines/build_corpus.py", "--input", "web=data/sample/web", "--input", "wiki=data/sample/multilingual",
             "--input", "code=data/sample/code", "--input", "media=data/sample/media/manifest.jsonl",
             "--input", f"captions={out}/pairs/train/manifest.jsonl", "--input", f"probe={out}/pairs/probe/manifest.jsonl",
             "--output", corpus, *MEDIA_SETTINGS], os.path.join(out, "corpus.log"))
        say("3. tokenizer (4,096 pieces) and packed text (257 tokens)")
        run([py, "-m", "tokenizer.train", "--corpus", corpus, "--output", tok, "--set", "train.vocab_size=4096"],
            os.path.join(out, "tokenizer.log"))
        run([py, "-m", "tokenizer.pack", "--corpus", corpus, "--tokenizer", tok, "--output", tokens, "--seq-len", "257"],
            os.path.join(out, "pack.log"))
    vocab = json.load(open(os.path.join(tok, "tokenizer.json")))["vocab_size"]
    budget = steps * 8 * 257
    mixture = os.path.join(out, "mixture.yaml")
    with open(mixture, "w") as f:
        f.write(f"""# written by bench/mm_probe.py
name: mm_probe
seed: 0
tokens_dir: {tokens}
corpus: {corpus}
tokenizer: {tok}
validation_sequences: 2
default_max_epochs: 16
sources:
  web: {{}}
  wiki: {{}}
  code: {{}}
  captions: {{kind: media, modality: image, media_source: captions}}
  probe: {{kind: media, modality: image, media_source: probe}}     # held out: weight 0
  images: {{kind: media, modality: image, media_source: media, max_epochs: 200}}
  audio: {{kind: media, modality: audio, media_source: media, max_epochs: 200}}
  video: {{kind: media, modality: video, media_source: media, max_epochs: 200}}
  interleaved: {{kind: media, modality: interleaved, media_source: media, max_epochs: 200}}
stages:
  - name: main
    tokens: {budget}
    weights: {{web: 0.10, wiki: 0.25, code: 0.05, captions: 0.45, images: 0.03, audio: 0.04, video: 0.04,
              interleaved: 0.04}}
""")
    run_dir = os.path.join(out, "run")
    train_args = ["data.kind=mixture", f"data.options.config={mixture}", f"steps={steps}", f"model.vocab_size={vocab}",
                  f"run_dir={run_dir}", "probes.enabled=false", "log.plots=false", "log.tensorboard=false",
                  f"checkpoint.every={steps}", f"eval.every={max(steps // 4, 1)}", "optim.warmup_steps=20"]
    from mixtures.loader import MixtureSource
    ms = MixtureSource.from_config(mixture, 8, seq_len=256)
    say("4. mixture: media sources packed (one epoch each):")
    for n, st in ms.media_stats().items():
        say(f"  {n:12s} {st['samples']:4d} samples -> {st['sequences']:4d} sequences; tokens: media {st['media_tokens']:,}, "
            f"text {st['text_tokens']:,}, begin/end/eod {st['structure_tokens']:,}, padding {st['pad_tokens']:,}")
    say(f"5. training the CPU preset for {steps} steps (log {out}/train.log)")
    os.makedirs(run_dir, exist_ok=True)
    run([py, "-m", "train", "--preset", "cpu", "--fresh", *sum((["--set", a] for a in train_args), [])],
        os.path.join(out, "train.log"))
    say("6. probe: caption NLL with the right vs a shuffled image (held-out pairs)")
    res = {"untrained": probe(run_dir, mixture, train_args, 0), "trained": probe(run_dir, mixture, train_args, steps)}
    evals = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl")) if '"kind": "eval"' in x]
    trains = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl")) if '"kind": "train"' in x]
    res.update(steps=steps, seconds=round(time.time() - t0), eval=evals[-1] if evals else None,
               train_loss_first=trains[0]["loss"], train_loss_last=float(np.mean([r["loss"] for r in trains[-10:]])),
               media_stats=ms.media_stats())
    json.dump(res, open(os.path.join(out, "probe.json"), "w"), indent=1)
    print()
    print(f"caption likelihood probe: {res['trained']['captions']} held-out image-caption pairs, CPU preset, "
          f"{steps} steps")
    print(f"{'model':10s} {'NLL right':>10s} {'NLL shuffled':>13s} {'gap (nats/token)':>17s} {'95% CI':>17s} "
          f"{'right wins':>11s}")
    for k in ("untrained", "trained"):
        r = res[k]
        print(f"{k:10s} {r['nll_right']:10.3f} {r['nll_shuffled']:13.3f} {r['gap']:17.3f} "
              f"{'[%.3f, %.3f]' % tuple(r['gap_ci95']):>17s} {100 * r['right_wins']:10.0f}%")
    print(f"train loss {res['train_loss_first']:.3f} -> {res['train_loss_last']:.3f} (mean of the last 10 steps); "
          f"{res['seconds']}s in all; {out}/probe.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
