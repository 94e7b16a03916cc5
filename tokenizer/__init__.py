"""The tokenizer step: a SentencePiece model trained on a balanced sample of a
built corpus (``tokenizer.train``), and the corpus encoded and packed into
fixed-length sequences in ArrayRecord shards (``tokenizer.pack``), read back with
``tokenizer.format.PackedSource`` (Grain) or ``tokenizer.tfds_builder`` (TFDS).
See ``tokenizer/FORMAT.md``.  Reads what ``pipelines/`` writes; never imports
``train/`` or ``model/``."""
