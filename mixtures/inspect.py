"""Inspect a mixture: the lineage of any batch, and planned vs actual tokens.

    # which documents make up global step 120 (at batch size 16)
    python -m mixtures.inspect configs/mixtures/demo.yaml --step 120 --batch-size 16 [--tokenizer DIR]

    # planned vs actual tokens per source and stage: from a saved loader state (a JSON
    # file, or a trainer checkpoint directory holding one), or by replaying the
    # mixture's index up to a step (no record reads)
    python -m mixtures.inspect configs/mixtures/demo.yaml --report --state runs/x/checkpoints/100
    python -m mixtures.inspect configs/mixtures/demo.yaml --report --step 120 --batch-size 16

    # the plan only (same as python -m mixtures.config)
    python -m mixtures.inspect configs/mixtures/demo.yaml --plan

``--split validation`` inspects the held-out stream; ``--seed``, ``--seq-len``,
``--tokens-dir``, ``--corpus`` and ``--set`` must match the run being inspected
(the fingerprint printed at the top is the loader's).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from mixtures.config import MixtureError, _fmt_table
from mixtures.loader import STATE_FORMAT, LoaderError, MixtureSource


# ----------------------------------------------------------------- lineage
def format_lineage(src: MixtureSource, step: int, batch_size: int, tokenizer=None, max_pieces: int = 6) -> str:
    rows = src.lineage(step, batch_size)
    e0 = step * batch_size
    S = src.tokens_per_example
    head = (f"batch {step:,} = examples [{e0:,}, {e0 + batch_size:,}) = tokens [{e0 * S:,}, {(e0 + batch_size) * S:,}) "
            f"at batch size {batch_size}; split {src.split}; mixture {src.plan.cfg.name} "
            f"(loader fingerprint {src.fingerprint})")
    table_rows = []
    for r in rows:
        pieces = r["pieces"]
        docs = []
        for p in pieces[:max_pieces]:
            mark = ("" if p.starts_doc else "...") + f"{p.doc_id}[{p.doc_token_offset}:{p.doc_token_offset + p.length})" \
                   + ("" if p.ends_doc else "...") + f"/{p.doc_num_tokens}"
            docs.append(mark)
        if len(pieces) > max_pieces:
            docs.append(f"+{len(pieces) - max_pieces} more")
        table_rows.append([str(r["row"]), f"{r['example']:,}", r["stage"], r["source"], f"{r['sequence']:,}",
                           str(r["epoch"]), " ".join(docs)])
    out = [head, _fmt_table(["row", "example", "stage", "source", "sequence", "epoch",
                             "document pieces: id[start:end)/doc tokens (... = continues)"], table_rows, right={1, 4, 5})]
    if tokenizer is not None:
        out.append("")
        batch = src.examples(e0, batch_size)[0]
        for r in rows:
            ids = batch["inputs"][r["row"]][:48].tolist()
            out.append(f"row {r['row']:>3}: {tokenizer.decode(ids)[:100]!r}")
    return "\n".join(out)


# ----------------------------------------------------------------- planned vs actual
def find_state(path: str) -> dict[str, Any]:
    """A loader state from a JSON file, or from the JSON files under a directory (a
    trainer checkpoint: ``{"train": {"state": ...}}``)."""
    def pick(obj):
        if isinstance(obj, dict):
            if obj.get("format") == STATE_FORMAT:
                return obj
            for v in obj.values():
                got = pick(v)
                if got is not None:
                    return got
        return None

    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs) if os.path.isdir(path) else []
    if not files:
        raise LoaderError(f"{path}: no such file or directory")
    for f in files:
        try:
            if os.path.getsize(f) > (16 << 20):        # checkpoint tensors, not a JSON state
                continue
            with open(f, "rb") as fh:
                head = fh.read(1)
                if head not in (b"{", b"["):
                    continue
                got = pick(json.loads(head + fh.read()))
        except (ValueError, UnicodeDecodeError, OSError):
            continue
        if got is not None:
            return got
    raise LoaderError(f"{path}: no mixture loader state (format {STATE_FORMAT}) found")


def planned_vs_actual(src: MixtureSource, consumed: dict[str, dict[str, list[int]]], upto: int) -> str:
    plan = src.plan
    S = plan.seq_len
    rows: list[list[str] | str] = []
    for st in plan.stages:
        done = min(max(upto - st.start, 0), st.sequences)
        rows.append(f"stage {st.index + 1} {st.name}: {done:,} of {st.sequences:,} sequences consumed "
                    f"({'complete' if done == st.sequences else 'not started' if done == 0 else 'in progress'})")
        for n in plan.data.sources:
            planned = st.counts[n]
            got = consumed.get(st.name, {}).get(n, [0, 0])
            share = f"{got[0] / done:.3f}" if done else ""
            rows.append(["", n, f"{st.weights[n]:.3f}", share, f"{planned:,}", f"{planned * S:,}", f"{got[0]:,}",
                         f"{got[1]:,}", f"{got[0] - planned:+,}"])
    table = _fmt_table(["", "source", "weight", "actual share", "planned seq", "planned tokens", "actual seq",
                        "actual tokens", "seq diff"], rows, right={2, 3, 4, 5, 6, 7, 8})
    note = ("actual tokens count non-padding tokens (only a source's last packed sequence is padded); "
            "a stage's actual equals its plan once complete")
    return "\n".join([f"mixture {plan.cfg.name}: planned vs actual after {upto:,} examples ({upto * S:,} tokens)",
                      table, note])


# ----------------------------------------------------------------- CLI
def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m mixtures.inspect",
                                description="Batch lineage and planned-vs-actual tokens of a mixture.")
    p.add_argument("mixture", help="mixture YAML")
    p.add_argument("--step", type=int, default=None, help="global step (batch index from the start)")
    p.add_argument("--batch-size", type=int, default=None, help="the run's batch size (rows per step)")
    p.add_argument("--report", action="store_true", help="planned vs actual tokens per source and stage")
    p.add_argument("--plan", action="store_true", help="print the plan table only")
    p.add_argument("--state", default=None, metavar="PATH",
                   help="with --report: loader state JSON or a checkpoint directory holding one")
    p.add_argument("--split", default="train", choices=["train", "validation"])
    p.add_argument("--seq-len", type=int, default=None, help="the trainer's seq_len (default: the packed length)")
    p.add_argument("--seed", type=int, default=None, help="the run's data seed (default: the mixture's)")
    p.add_argument("--tokens-dir", default=None, metavar="DIR")
    p.add_argument("--corpus", default=None, metavar="DIR")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    p.add_argument("--tokenizer", default=None, metavar="DIR", help="also print the start of each row's text")
    return p.parse_args(argv)


def run(args) -> None:
    if args.plan:
        from mixtures.config import plan_mixture

        print(plan_mixture(args.mixture, overrides=args.overrides, tokens_dir=args.tokens_dir, corpus=args.corpus,
                           check=False).table())
        return
    if args.step is not None and args.step < 0:
        raise LoaderError(f"--step must be >= 0, got {args.step}")
    bs = args.batch_size
    if bs is not None and bs < 1:
        raise LoaderError(f"--batch-size must be >= 1, got {bs}")
    src = MixtureSource.from_config(args.mixture, bs or 1, split=args.split, seed=args.seed, seq_len=args.seq_len,
                                    tokens_dir=args.tokens_dir, corpus=args.corpus, overrides=args.overrides)
    if args.report:
        if args.split != "train":
            raise LoaderError("--report compares against the training plan (use --split train)")
        if args.state:
            state = find_state(args.state)
            src.set_state(state)  # checks the fingerprint
            upto, consumed = state["example"], state["consumed"]
            print(f"(from saved state {args.state}, fingerprint {state['fingerprint']})")
        else:
            if args.step is None:
                upto = src.total_examples
            elif bs is None:
                raise LoaderError("--step needs --batch-size")
            else:
                upto = min(args.step * bs, src.total_examples)
            t0 = time.time()

            def progress(e, n):
                print(f"  replaying: {e:,}/{n:,} examples ({e / max(time.time() - t0, 1e-9):,.0f}/s)", file=sys.stderr)

            consumed = src.replay_consumed(upto, progress)
            print(f"(replayed the mixture index over {upto:,} examples)")
        print(planned_vs_actual(src, consumed, upto))
        return
    if args.step is None or bs is None:
        raise LoaderError("give --step and --batch-size (lineage), --report, or --plan")
    tok = None
    if args.tokenizer:
        from tokenizer.sp import Tokenizer

        tok = Tokenizer.load(args.tokenizer)
        if tok.sha256 != src.plan.data.tokenizer_sha256:
            raise LoaderError(f"{args.tokenizer} is not the tokenizer the data were packed with")
    print(format_lineage(src, args.step, bs, tok))


def main(argv=None) -> int:
    from tokenizer.format import FingerprintMismatch, FormatError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except (MixtureError, FormatError, FingerprintMismatch) as e:
        print(f"python -m mixtures.inspect: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
