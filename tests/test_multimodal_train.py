"""The trainer on a staged mixture with image, audio, video and interleaved sources:
it trains (media encoders from the data's settings, one program per media budget,
gradient accumulation over media fields), and a run interrupted after a checkpoint
resumes bit for bit; the caption probe sees the images."""
from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax
import numpy as np
import pytest

from tests.multimodal_data import SEQ, mixture, mm_data  # noqa: F401  (fixture)
from train.config import resolve
from train.metrics import read_jsonl
from train.trainer import Hook, Trainer, with_media_encoders

WEIGHTS = {"en": 1, "de": 1, "fr": 1, "img": 2, "pairs": 1, "aud": 1, "vid": 1, "doc": 1}
KEEP = ("kind", "step", "loss", "grad_norm", "lr", "tokens")


class Crash(Exception):
    pass


class CrashAt(Hook):
    def __init__(self, step):
        self.step = step

    def on_step(self, trainer, step, record):
        if step == self.step:
            raise Crash(step)


def _config(mm_data, tmp_path, run_dir, **extra):
    path = mixture(mm_data, str(tmp_path / "mix.yaml"), WEIGHTS, tokens=SEQ * 8 * 8)
    sets = ["data.kind=mixture", f"data.options.config={path}", "steps=8", f"seq_len={SEQ - 1}", "grad_accum=2",
            "checkpoint.every=4", "checkpoint.async_save=false", "eval.every=4", "eval.batches=1",
            "probes.enabled=false", "log.tensorboard=false", "log.plots=false", "log.peak_flops=1e11",
            f"run_dir={run_dir}", f"model.vocab_size={mm_data['tok'].vocab_size}", "optim.lr=3e-3",
            "optim.warmup_steps=2"] + [f"{k}={v}" for k, v in extra.items()]
    return resolve(None, sets, {"preset": "tiny"})[:2]


def _records(run_dir):
    return [{k: v for k, v in r.items() if k in KEEP or k.startswith("loss")}
            for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if r.get("kind") in ("train", "eval")]


def test_trains_and_resumes_bitwise(mm_data, tmp_path, capsys):
    cfg, model = _config(mm_data, tmp_path, tmp_path / "ref")
    tr = Trainer(cfg, model)
    assert tr.model_cfg.multimodal.patch_size == 16 and tr.model_cfg.multimodal.frames_per_token == 8
    tr.run()
    out = capsys.readouterr().out
    ref = _records(tmp_path / "ref")
    train = [r for r in ref if r["kind"] == "train"]
    assert len(train) == 8 and all(np.isfinite(r["loss"]) for r in train)
    assert any(k.startswith("loss/") and k[5:] in ("img", "aud", "vid", "doc", "pairs") for r in train for k in r)
    assert 1 <= out.count("compiled the train step for media budget") <= 3        # buckets, not batches
    # the loss counts text tokens only: the per-step token count is the text positions of the batch
    src = Trainer(cfg, model).train_source
    b0 = src.next_batch()
    assert train[0]["tokens"] == int(b0["loss_mask"].sum()) < int((b0["segment_ids"] > 0).sum())
    assert int((b0["media_index"] > 0).sum()) > 0

    # interrupted after the step-4 checkpoint (an exception at step 6), then the same command again
    cfg2, model2 = _config(mm_data, tmp_path, tmp_path / "crash")
    with pytest.raises(Crash):
        Trainer(cfg2, model2, hooks=[CrashAt(6)]).run()
    Trainer(cfg2, model2).run()
    assert "resumed from checkpoint step 4" in capsys.readouterr().out
    assert _records(tmp_path / "crash") == ref


def test_model_settings_must_match_the_data(mm_data, tmp_path):
    from model.config import ConfigError, load_preset

    spec = {"patch_size": 16, "channels": 3, "n_mels": 80, "frames_per_token": 8}
    m = with_media_encoders(load_preset("tiny", {"multimodal": {"vit_layers": 1, "image_encoder": "vit"}}).model, spec)
    assert m.multimodal.vit_layers == 1 and m.multimodal.frames_per_token == 8
    with pytest.raises(ConfigError, match=r"patch_size=8 \(the data needs 16\)"):
        with_media_encoders(load_preset("tiny", {"multimodal": {"patch_size": 8}}).model, spec)


def test_caption_probe_sees_the_images(mm_data):
    """Untrained model: the caption NLL changes with the image (the encoders feed the
    sequence) and is identical when the 'shuffled' images are the right ones."""
    from mixtures.multimodal import caption_rows
    from model.config import load_preset
    from model.transformer import init_params, sequence_nll
    from tests.test_multimodal_packing import _source
    from train.probes import caption_gap

    src = _source(mm_data, "img")
    model = with_media_encoders(load_preset("tiny", {"vocab_size": mm_data["tok"].vocab_size}).model,
                                src.cost.spec())
    params = init_params(model, jax.random.PRNGKey(0))
    docs = [(r.shard, r.key) for r in src.docs][:4]
    right, _ = caption_rows(src, docs, [0, 1, 2, 3], SEQ - 1, 0)
    shuffled, _ = caption_rows(src, [docs[1], docs[0], docs[3], docs[2]] + docs, [4, 5, 6, 7], SEQ - 1, 0)
    media_keys = ("media_patches", "media_kind", "media_positions", "media_group", "media_index")
    nll = jax.jit(lambda b: sequence_nll(params, model, b["inputs"], b["segment_ids"], b["positions"], b["targets"],
                                         media={k: b[k] for k in media_keys}))
    same = caption_gap(nll, [right], [right])
    assert same["gap"] == 0.0 and same["captions"] == 4
    res = caption_gap(nll, [right], [shuffled])
    assert res["gap"] != 0.0 and np.isfinite(res["nll_right"]) and res["gap_ci95"][0] <= res["gap"] <= res["gap_ci95"][1]
