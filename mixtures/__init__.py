"""Staged data mixtures: the contract between the packed corpus and the trainer.

* ``mixtures.config``  — mixture YAML (sources, stages, budgets, weights, repetition
  caps), validated against the token manifest(s); ``python -m mixtures.config`` prints the plan.
* ``mixtures.budget``  — Chinchilla token budgets and smaller-model alternatives
  (``python -m mixtures.budget``).
* ``mixtures.loader``  — ``MixtureSource``: the deterministic, token-exact staged
  loader (Grain) implementing the trainer's ``BatchSource`` protocol.
* ``mixtures.inspect`` — batch lineage and planned-vs-actual tokens (``python -m mixtures.inspect``).
* ``mixtures.multimodal`` — media shards (images, audio, video, interleaved) packed into
  sequences for the loader: documents with begin/end control tokens, host-side patches and
  log-mel features, media budgets for the trainer's batches.

Reads what ``tokenizer/`` writes; never imports ``train/`` (the trainer imports us).
"""
from __future__ import annotations


def build_batch_source(config_path: str, *, batch_size: int, seq_len: int, seed: int, split: str):
    """The trainer's ``build_source(kind="mixture")`` seam: a ``MixtureSource``."""
    from mixtures.loader import build_batch_source as _build

    return _build(config_path, batch_size=batch_size, seq_len=seq_len, seed=seed, split=split)
