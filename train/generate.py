"""``python -m train.generate``: load a trained model and generate text.

    python -m train.generate --checkpoint runs/tiny --prompt "The history of"
    python -m train.generate --checkpoint runs/tiny/int4 --prompt "def main(" --temperature 0.8 --top-p 0.95
    python -m train.generate --checkpoint runs/tiny --prompt "a" --prompt "b" --max-new-tokens 32   # a batch
    python -m train.generate --checkpoint runs/synthetic --prompt "1 40 41 42"                      # raw ids

``--checkpoint`` is a run dir, its ``checkpoints/`` dir or an int4 export
(``python -m train.quantize``).  Decoding: greedy by default (``--temperature 0``);
``--temperature T`` samples, optionally restricted by ``--top-k`` / ``--top-p``;
``--seed`` makes sampling reproducible.  The KV cache is on (``--no-cache`` recomputes
the whole prefix every step: same tokens, slower; for checking).  Several ``--prompt``
(or ``--prompts-file``, one per line) run as one left-padded batch.

Text or ids: a run trained on a staged mixture (``data.kind: mixture``, recorded in the
checkpoint) was trained on the ids of the tokenizer its token manifest names;
``artifacts/tokenizer`` (or ``--tokenizer DIR``) must be that tokenizer (its sha256 is
checked).  Prompts are encoded as the packer encoded documents (no BOS unless the
packing added one) and generation stops at ``<eod>``.  A synthetic run (or ``--ids``)
takes prompts as space-separated token ids and prints ids.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from model.config import ConfigError

DEFAULT_TOKENIZER = "artifacts/tokenizer"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.generate", description="Generate with a trained model.")
    p.add_argument("--checkpoint", required=True, help="run dir, its checkpoints/ dir, or an int4 export dir")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--prompt", action="append", default=[], help="prompt text (repeat for a batch)")
    p.add_argument("--prompts-file", default=None, help="one prompt per line (added to --prompt)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="recompute the full prefix each step (no KV cache)")
    p.add_argument("--tokenizer", default=None, help=f"tokenizer dir (default {DEFAULT_TOKENIZER} for text runs)")
    p.add_argument("--ids", action="store_true", help="prompts are space-separated token ids; print ids")
    p.add_argument("--eos-id", type=int, default=None, help="stop token for --ids (default: <eod> of text runs)")
    p.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt on stdout")
    return p


# ---- the tokenizer of a run ---------------------------------------------------------------

class IdCodec:
    """Raw ids: ``"1 5 9"`` <-> [1, 5, 9]."""
    eod_id = None
    add_bos = False
    bos_id = None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        try:
            ids = [int(t) for t in text.replace(",", " ").split()]
        except ValueError:
            raise ConfigError(f"prompt {text[:40]!r}: this run takes token ids (space-separated integers), not text; "
                              "pass --tokenizer DIR for a text run") from None
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ConfigError(f"prompt ids {bad[:5]} are outside the model's vocabulary [0, {self.vocab_size})")
        return ids

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


class TextCodec:
    def __init__(self, tok, add_bos: bool):
        self.tok, self.add_bos = tok, add_bos
        self.eod_id, self.bos_id, self.vocab_size = tok.eod_id, tok.bos_id, tok.vocab_size

    def encode(self, text: str) -> list[int]:
        return ([self.bos_id] if self.add_bos else []) + self.tok.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def run_tokenizer(data: dict | None) -> tuple[str | None, bool, str]:
    """(tokenizer sha256 the run was trained with or None, add_bos, why) from the run's data config."""
    kind = (data or {}).get("kind")
    if kind == "synthetic":
        return None, False, "synthetic"
    if kind == "mixture":      # the token manifest(s) of its text sources name the tokenizer
        from mixtures.config import load_mixture
        from tokenizer.format import load_token_manifest
        path = (data.get("options") or {}).get("config")
        mcfg = load_mixture(path)
        dirs = {s.tokens_dir or mcfg.tokens_dir for s in mcfg.sources.values() if s.kind == "text"}
        manifests = [load_token_manifest(d) for d in sorted(d for d in dirs if d)]
        shas = {m["tokenizer"]["model_sha256"] for m in manifests}
        if len(shas) != 1:
            raise ConfigError(f"mixture {path}: {len(shas)} tokenizers in its token manifests")
        return shas.pop(), any(bool(m.get("add_bos")) for m in manifests), f"mixture {path}"
    return None, False, kind or "unknown"


def make_codec(args, loaded):
    cfg = loaded.model_cfg
    if args.ids:
        return IdCodec(cfg.vocab_size)
    sha, add_bos, why = (None, False, "unknown")
    try:
        sha, add_bos, why = run_tokenizer(loaded.data)
    except Exception as e:  # the mixture or its manifests moved: say so, but an explicit --tokenizer still works
        if not args.tokenizer:
            raise ConfigError(f"cannot find the run's tokenizer from its data config ({e}); pass --tokenizer DIR "
                              "or --ids") from None
    if why == "synthetic" and not args.tokenizer:
        return IdCodec(cfg.vocab_size)
    path = args.tokenizer or (DEFAULT_TOKENIZER if sha else None)
    if path is None:
        raise ConfigError(f"the checkpoint's data ({why}) does not say which tokenizer it used: pass --tokenizer DIR, "
                          "or --ids to give token ids")
    if not os.path.exists(path):
        raise ConfigError(f"{path}: tokenizer not found (the run was trained on a tokenizer's ids; pass --tokenizer "
                          "DIR, or --ids)")
    from tokenizer.sp import Tokenizer
    tok = Tokenizer.load(path)
    if sha and tok.sha256 != sha:
        raise ConfigError(f"{path}: tokenizer sha256 {tok.sha256[:12]} is not the one the run was trained with "
                          f"({sha[:12]}, from {why}); pass --tokenizer DIR")
    if tok.vocab_size > cfg.vocab_size:
        raise ConfigError(f"{path}: tokenizer vocabulary {tok.vocab_size} is larger than the model's {cfg.vocab_size}")
    return TextCodec(tok, add_bos)


# ---- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mixtures.config import MixtureError
    from tokenizer.cli import UsageError
    from tokenizer.format import FormatError
    from train.data import DataError
    try:
        return _run(args)
    except (ConfigError, DataError, MixtureError, FormatError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    prompts = list(args.prompt)
    if args.prompts_file:
        if not os.path.exists(args.prompts_file):
            raise ConfigError(f"{args.prompts_file}: prompts file not found")
        with open(args.prompts_file, encoding="utf-8") as f:
            prompts += [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        raise ConfigError("no prompt: pass --prompt TEXT (repeatable) or --prompts-file FILE")
    if args.max_new_tokens < 1:
        raise ConfigError("--max-new-tokens must be >= 1")
    from model.decode import Sampling, generate
    try:
        sampling = Sampling(args.temperature, args.top_k, args.top_p)
    except ValueError as e:
        raise ConfigError(f"--{str(e).split()[0].replace('_', '-')}: {e}") from None
    if args.temperature == 0 and (args.top_k or args.top_p < 1):
        print("note: --top-k/--top-p apply to sampling; with --temperature 0 decoding is greedy", file=sys.stderr)

    import jax.numpy as jnp
    from train import model_io
    dtype = jnp.dtype(args.compute_dtype)
    t0 = time.perf_counter()
    loaded = model_io.load_any(args.checkpoint, args.step)
    cfg = loaded.model_cfg
    codec = make_codec(args, loaded)
    ids = []
    for p in prompts:
        x = codec.encode(p)
        if not x:
            raise ConfigError(f"prompt {p!r} encodes to no tokens")
        ids.append(x)
    eos = args.eos_id if args.eos_id is not None else codec.eod_id
    if isinstance(codec, TextCodec):    # never emit ids the tokenizer cannot decode
        sampling = Sampling(sampling.temperature, sampling.top_k, sampling.top_p, vocab_limit=codec.vocab_size)
    kw = {}
    if loaded.kind == "int4":
        params = loaded.quantized.device_arrays()
        up, ul, dq = loaded.quantized.unpackers(dtype)
        kw = dict(unpack=up, unpack_layer=ul, dequantize=dq)
    else:
        params = loaded.params
    load_s = time.perf_counter() - t0
    try:
        res = generate(params, cfg, ids, max_new_tokens=args.max_new_tokens, sampling=sampling, seed=args.seed,
                       eos_id=eos, use_cache=not args.no_cache, compute_dtype=dtype, **kw)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for p, x, out in zip(prompts, ids, res.tokens):
        if args.json:
            print(json.dumps({"prompt": p, "prompt_ids": x, "completion": codec.decode(out), "ids": out},
                             ensure_ascii=False))
        else:
            print(f"{p}\033[1m{codec.decode(out)}\033[0m" if sys.stdout.isatty() else
                  f"--- prompt: {p}\n{codec.decode(out)}")
    secs = res.prefill_s + res.decode_s
    cache = res.stats.get("cache_bytes")
    print(f"{loaded.kind} {cfg.name} from {loaded.path}{f' step {loaded.step}' if loaded.step is not None else ''}: "
          f"{len(ids)} prompt(s), {res.new_tokens} new tokens in {secs:.2f}s (compilation included; "
          f"{res.new_tokens / max(secs, 1e-9):.1f} tok/s), load {load_s:.1f}s"
          + (f"; KV cache {cache / 1024:.1f} KiB ({cfg.attention_kind})" if cache else "; no KV cache"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
