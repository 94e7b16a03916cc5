"""The packed shards as a tensorflow-datasets dataset (ArrayRecord files).

    python -m tokenizer.tfds_builder --packed artifacts/tokens --data-dir artifacts/tokens/tfds

then, with or without TensorFlow installed (JAX users, as in MaxText's Grain path)::

    import tensorflow_datasets as tfds, grain
    src = tfds.data_source("corpusforge_packed", data_dir="artifacts/tokens/tfds")["web"]
    ds = grain.MapDataset.source(src).batch(8)

One split per source (names with characters other than letters, digits and
``_`` get ``_``).  Examples are in packed order (``disable_shuffling``), with
``tokens``, ``segment_ids``, ``positions`` (int32[seq_len]), ``sequence_index``,
``doc_ids`` and ``doc_token_offsets``.  This is a copy in TFDS's own record
encoding; ``tokenizer.format.PackedSource`` reads the packed shards directly.
The token manifest's fingerprint, seq_len, tokenizer sha256 and corpus manifest
hash are stored in the dataset's metadata; ``load`` checks them.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
from typing import Any

import numpy as np

from tokenizer.cli import main_wrapper, setup_logging
from tokenizer.format import FingerprintMismatch, FormatError, PackedSource, load_token_manifest

log = logging.getLogger("tokenizer.tfds")

NAME = "corpusforge_packed"
VERSION = "1.0.0"


def split_name(source: str) -> str:
    return re.sub(r"\W", "_", source)


def split_names(sources) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in sorted(sources):
        n = split_name(s)
        if n in out.values():
            raise FormatError(f"sources {s!r} and {[k for k, v in out.items() if v == n][0]!r} both become "
                              f"TFDS split {n!r}; rename one")
        out[s] = n
    return out


_CLASS = None


def _builder_class():
    """The builder class, defined once (TFDS registers builders by name)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import tensorflow_datasets as tfds

    class CorpusforgePacked(tfds.core.GeneratorBasedBuilder):
        """Packed training sequences of a corpusforge corpus (one split per source)."""

        VERSION = tfds.core.Version(VERSION)
        MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the packed directory (python -m tokenizer.pack --output DIR) as manual_dir."

        _cf_metadata: dict = {}  # set by prepare() before the builder is made

        def _info(self):
            meta = dict(self._cf_metadata)
            return tfds.core.DatasetInfo(
                builder=self,
                description="Packed token sequences (corpusforge tokenizer.pack), one split per source.",
                features=tfds.features.FeaturesDict({
                    "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "segment_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "positions": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "sequence_index": np.int64,
                    "doc_ids": tfds.features.Sequence(tfds.features.Text()),
                    "doc_token_offsets": tfds.features.Sequence(np.int64),
                }),
                disable_shuffling=True,
                metadata=tfds.core.MetadataDict(meta),
            )

        def _split_generators(self, dl_manager):
            packed = str(dl_manager.manual_dir)
            m = load_token_manifest(packed)
            return {split: self._generate_examples(packed, src) for src, split in split_names(m["sources"]).items()}

        def _generate_examples(self, packed: str, source: str):
            src = PackedSource(packed, source, fields=("tokens", "segment_ids", "positions", "doc_ids",
                                                      "doc_token_offsets"))
            for i in range(len(src)):
                r = src[i]
                yield i, {"tokens": r["tokens"], "segment_ids": r["segment_ids"], "positions": r["positions"],
                          "sequence_index": i, "doc_ids": r["doc_ids"], "doc_token_offsets": r["doc_token_offsets"]}

    _CLASS = CorpusforgePacked
    return _CLASS


def _metadata(m: dict[str, Any]) -> dict[str, Any]:
    return {"fingerprint": m["fingerprint"], "seq_len": m["seq_len"],
            "tokenizer_sha256": m["tokenizer"]["model_sha256"], "corpus_manifest_hash": m["corpus"]["manifest_hash"],
            "splits": split_names(m["sources"])}


def prepare(packed_dir: str, data_dir: str):
    """Prepares (or reuses, when the fingerprint matches) the TFDS copy; returns the builder."""
    import tensorflow_datasets as tfds

    m = load_token_manifest(packed_dir)
    meta = _metadata(m)
    version_dir = os.path.join(data_dir, NAME, VERSION)
    if os.path.isdir(version_dir):
        try:
            old = tfds.builder_from_directory(version_dir).info.metadata or {}
        except Exception:  # noqa: BLE001 - unreadable leftovers are rebuilt
            old = {}
        if old.get("fingerprint") != meta["fingerprint"]:
            log.info("tfds: %s holds another pack (fingerprint %s); rebuilding", version_dir, old.get("fingerprint"))
            shutil.rmtree(version_dir)
    cls = _builder_class()
    cls._cf_metadata = meta  # noqa: SLF001 - read by _info while the builder is made
    builder = cls(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=packed_dir))
    log.info("tfds: %s prepared in %s (splits %s)", NAME, data_dir, ", ".join(meta["splits"].values()))
    return builder


def load(data_dir: str, *, fingerprint: str | None = None, tokenizer_sha256: str | None = None) -> dict[str, Any]:
    """``tfds.data_source`` of the prepared copy, checked against the expected fingerprints."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(os.path.join(data_dir, NAME, VERSION))
    meta = builder.info.metadata or {}
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise FingerprintMismatch(f"{data_dir}: TFDS copy has pack fingerprint {meta.get('fingerprint')}, "
                                  f"expected {fingerprint} (re-run tokenizer.tfds_builder)")
    if tokenizer_sha256 is not None and meta.get("tokenizer_sha256") != tokenizer_sha256:
        raise FingerprintMismatch(f"{data_dir}: TFDS copy was tokenized with {str(meta.get('tokenizer_sha256'))[:12]}, "
                                  f"not {tokenizer_sha256[:12]}")
    return tfds.data_source(NAME, data_dir=data_dir)


def run(argv=None):
    p = argparse.ArgumentParser(prog="python -m tokenizer.tfds_builder",
                                description="Prepare the packed shards as the TFDS dataset 'corpusforge_packed'.")
    p.add_argument("--packed", required=True, metavar="DIR", help="output of python -m tokenizer.pack")
    p.add_argument("--data-dir", required=True, metavar="DIR", help="TFDS data_dir to write")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)
    prepare(args.packed, args.data_dir)
    print(f"tfds.data_source('{NAME}', data_dir='{args.data_dir}')")


def main(argv=None) -> int:
    return main_wrapper(run, "tokenizer.tfds_builder", argv)


if __name__ == "__main__":
    sys.exit(main())
