"""``python -m train.quantize``: export a trained checkpoint to group-wise int4 and measure it.

    python -m train.quantize --checkpoint runs/tiny --output runs/tiny/int4
    python -m train.quantize --checkpoint runs/tiny --output /tmp/q --set group_size=32 --set scheme=asymmetric

Writes ``OUTPUT/model.safetensors`` + ``OUTPUT/config.json`` (format: ``model/quant.py``)
and ``OUTPUT/report.json``, and prints a table: bytes of the quantized matrices and of
the whole model in fp32 / bf16 (what a float export of the same tensors takes) against
the int4 file, and the held-out validation loss of the float and the int4 model on the
run's own validation split (the data config recorded in the checkpoint; ``--mixture`` /
``--tokens`` to pick another; ``--eval-batches 0`` to skip).  ``train.generate`` runs
the export.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from model.config import ConfigError, human


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.quantize", description="Export a checkpoint to int4.")
    p.add_argument("--checkpoint", required=True, help="run dir or its checkpoints/ dir")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--output", required=True, help="export directory (created)")
    p.add_argument("--config", default=None, help="quantization YAML (default configs/quant/int4.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a quantization key")
    p.add_argument("--eval-batches", type=int, default=None,
                   help="validation batches for the loss before/after (default: the run's eval.batches; 0 = skip)")
    p.add_argument("--mixture", default=None, help="evaluate on this mixture's validation split instead")
    p.add_argument("--tokens", default=None, help="evaluate on this token file's held-out windows instead")
    return p


def default_config() -> str:
    from train.config import ROOT
    return os.path.join(ROOT, "configs", "quant", "int4.yaml")


def validation_source(meta: dict, *, vocab_size: int, mixture: str | None = None, tokens: str | None = None):
    """The run's validation split (or the one named by --mixture / --tokens)."""
    from train.data import DataError, build_source
    data = dict(meta.get("data") or {})
    if mixture:
        data = {"kind": "mixture", "options": {"config": mixture}, "seed": data.get("seed", 0)}
    elif tokens:
        data = {"kind": "tokens", "options": {"path": tokens}, "seed": data.get("seed", 0)}
    if not data.get("kind"):
        raise DataError("the checkpoint does not record its data config; pass --mixture or --tokens (or --eval-batches 0)")
    if "seq_len" not in meta or "batch_size" not in meta:
        raise DataError("the checkpoint does not record seq_len/batch_size; pass --eval-batches 0")
    return build_source(data["kind"], batch_size=int(meta["batch_size"]), seq_len=int(meta["seq_len"]),
                        seed=int(data.get("seed", 0)), split="validation", vocab_size=vocab_size,
                        options=data.get("options") or {})


def validation_losses(fns: dict, src, batches: int) -> tuple[dict[str, float], int]:
    """Mean token NLL of each ``fns[name](batch) -> (sum, count)`` over the same batches."""
    import numpy as np
    sums = {k: 0.0 for k in fns}
    count = 0.0
    for _ in range(batches):
        b = src.next_batch()
        b = {k: b[k] for k in ("inputs", "targets", "segment_ids", "positions", "loss_mask")}
        for k, fn in fns.items():
            s, c = fn(b)
            sums[k] += float(np.asarray(s))
        count += float(b["loss_mask"].sum())
    return {k: v / max(count, 1.0) for k, v in sums.items()}, int(count)


def nll_fn(cfg, dequantize=None):
    import jax
    from model.transformer import sequence_nll

    @jax.jit
    def fn(params, batch):
        w = dequantize(params) if dequantize is not None else params
        nll = sequence_nll(w, cfg, batch["inputs"], batch["segment_ids"], batch["positions"], batch["targets"])
        return (nll * batch["loss_mask"]).sum(), batch["loss_mask"].sum()
    return fn


def size_table(qm) -> tuple[list[list[str]], dict]:
    """Rows of the size table and the numbers (bytes)."""
    import numpy as np
    groups: dict[str, dict[str, float]] = {}
    for name, sp in qm.spec.items():
        n = int(np.prod(sp.shape))
        v = qm.arrays[name]
        stored = sum(a.nbytes for a in v.values()) if isinstance(v, dict) else v.nbytes
        g = ("int4 matrices" if sp.kind == "int4" else
             "embedding/head (" + sp.kind + ")" if name in ("embed", "lm_head") else "norm scales (float32)")
        e = groups.setdefault(g, {"params": 0, "stored": 0})
        e["params"] += n
        e["stored"] += stored
    total = {"params": sum(e["params"] for e in groups.values()), "stored": sum(e["stored"] for e in groups.values())}
    rows = []
    for g, e in list(groups.items()) + [("all parameters", total)]:
        fp32, bf16 = 4 * e["params"], 2 * e["params"]
        rows.append([g, human(e["params"]), f"{fp32:,}", f"{bf16:,}", f"{int(e['stored']):,}",
                     f"{fp32 / e['stored']:.2f}x", f"{bf16 / e['stored']:.2f}x",
                     f"{8 * e['stored'] / e['params']:.2f}"])
    numbers = {g: {"params": int(e["params"]), "fp32_bytes": int(4 * e["params"]), "bf16_bytes": int(2 * e["params"]),
                   "stored_bytes": int(e["stored"])} for g, e in list(groups.items()) + [("all parameters", total)]}
    return rows, numbers


def fmt_table(headers: list[str], rows: list[list[str]]) -> str:
    w = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = lambda r: "  ".join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r))
    return "\n".join([line(headers), line(["-" * x for x in w])] + [line(r) for r in rows])


def quantize_checkpoint(checkpoint: str, output: str, *, step: int | None = None, config: str | None = None,
                        overrides: list[str] | None = None, eval_batches: int | None = None,
                        mixture: str | None = None, tokens: str | None = None, log=print) -> dict:
    import jax
    import yaml

    from model.quant import QuantizedModel, load_quant_config
    from train import model_io

    over = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        over[k.strip()] = yaml.safe_load(v)
    qcfg = load_quant_config(config or default_config(), over)
    t0 = time.perf_counter()
    loaded = model_io.load_params(checkpoint, step)
    cfg, meta = loaded.model_cfg, loaded.meta
    qm = QuantizedModel.from_params(loaded.params, cfg, qcfg)
    log(f"quantized {cfg.name} ({human(qm.nbytes()['params'])} params) from {loaded.path} step {loaded.step} in "
        f"{time.perf_counter() - t0:.1f}s: group {qcfg.group_size}, {qcfg.scheme}, {qcfg.scale_dtype} scales, "
        f"embedding {qcfg.embedding}")

    report: dict = {"checkpoint": loaded.path, "step": loaded.step, "quantization": qcfg.model_dump(mode="json")}
    n_eval = meta.get("eval_batches", 8) if eval_batches is None else eval_batches
    n_eval = n_eval or 0
    if n_eval > 0:
        src = validation_source(meta, vocab_size=cfg.vocab_size, mixture=mixture, tokens=tokens)
        f_fp = nll_fn(cfg)
        f_q = nll_fn(cfg, qm.unpackers()[2])
        qparams = qm.device_arrays()
        losses, n_tok = validation_losses({"float": lambda b: f_fp(loaded.params, b),
                                           "int4": lambda b: f_q(qparams, b)}, src, n_eval)
        report["validation"] = {"batches": n_eval, "tokens": n_tok, "float_loss": losses["float"],
                                "int4_loss": losses["int4"], "increase": losses["int4"] - losses["float"],
                                "data": meta.get("data") if not (mixture or tokens) else (mixture or tokens)}
    extra = {"source": {"checkpoint": loaded.path, "step": loaded.step, "preset": meta.get("preset"),
                        "config_fingerprint": meta.get("config_fingerprint"), "data": meta.get("data"),
                        "seq_len": meta.get("seq_len"), "batch_size": meta.get("batch_size"),
                        "eval_batches": meta.get("eval_batches")}}
    saved = qm.save(output, extra=extra)
    rows, numbers = size_table(qm)
    report["sizes"] = numbers
    report["file_bytes"] = {"model.safetensors": saved["weights_bytes"],
                            "config.json": os.path.getsize(os.path.join(output, "config.json"))}
    with open(os.path.join(output, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)

    log(fmt_table(["tensors", "params", "fp32 bytes", "bf16 bytes", "stored bytes", "vs fp32", "vs bf16", "bits/param"],
                  rows))
    log(f"on disk: {output}/model.safetensors {saved['weights_bytes']:,} bytes (header included) + config.json "
        f"{report['file_bytes']['config.json']:,} bytes")
    if "validation" in report:
        v = report["validation"]
        log(f"validation loss over {v['tokens']:,} held-out tokens ({v['batches']} batches): float {v['float_loss']:.4f}"
            f" -> int4 {v['int4_loss']:.4f} ({v['increase']:+.4f}, {100 * v['increase'] / v['float_loss']:+.2f}%)")
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from train.data import DataError
    try:
        quantize_checkpoint(args.checkpoint, args.output, step=args.step, config=args.config, overrides=args.set,
                            eval_batches=args.eval_batches, mixture=args.mixture, tokens=args.tokens)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
