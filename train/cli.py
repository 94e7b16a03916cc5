"""``python -m train`` (what ``make train-pro`` runs).

    python -m train                         # preset picked for this hardware, resumes if it can
    python -m train --preset nano-1 --steps 2000
    python -m train --preset depth:12       # the scaling dial
    python -m train --tokens corpus.npy --set data.options.eos_id=256
    python -m train --mixture configs/mixtures/X.yaml   # staged mixtures (issue 8)
    python -m train --set optim.schedule=wsd --set mesh.tensor=2
    python -m train --dry-run               # print the model, parameter and FLOP counts
    python -m train --mixture two_stage.yaml --init-from runs/stage1   # warm start (staged ablations)

Rerunning the same command after an interruption (even kill -9) resumes from the last
checkpoint and continues bit for bit; ``--fresh`` starts over in the same run dir.
"""
from __future__ import annotations

import argparse
import os
import sys

from model.config import ConfigError, count_params, describe, human, list_presets, load_preset

# Auto-selection order, largest first: (preset, bytes of accelerator memory it needs in total).
# Training memory ~ 16 bytes/param (fp32 master weights, Adam moments, gradients) x 1.5 for
# activations and workspace; FSDP spreads it over all devices.
AUTO_ORDER = ("pro", "nano-2", "nano-1", "base-1b")


def pick_preset() -> tuple[str, str]:
    import jax
    devs = jax.devices()
    backend = jax.default_backend()
    if backend == "cpu":
        return "cpu", f"auto: no accelerator found ({len(devs)} CPU device(s), {os.cpu_count()} cores)"
    per_dev = 0
    try:
        per_dev = int((devs[0].memory_stats() or {}).get("bytes_limit", 0))
    except Exception:  # some backends do not report memory
        per_dev = 0
    total = per_dev * len(devs)
    what = f"{len(devs)} x {devs[0].device_kind}" + (f" ({per_dev / 2 ** 30:.0f} GiB each)" if per_dev else "")
    if not total:
        return "base-1b", f"auto: {what}, memory unknown -> the smallest accelerator preset"
    for name in AUTO_ORDER:
        need = count_params(load_preset(name).model)["total"] * 16 * 1.5
        if need <= total:
            return name, f"auto: {what} = {total / 2 ** 30:.0f} GiB; {name} needs ~{need / 2 ** 30:.0f} GiB to train"
    return "base-1b", f"auto: {what}; nothing larger fits"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description="Train the decoder-only Transformer.")
    p.add_argument("--config", default=None, help="training config YAML (default configs/train/default.yaml)")
    p.add_argument("--preset", default=None, help=f"auto | {' | '.join(list_presets())} | depth:N | path.yaml")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--run-dir", default=None, help="where checkpoints, metrics and plots go (default runs/<preset>)")
    p.add_argument("--tokens", default=None, help="train on a flat .npy token array (data.kind=tokens)")
    p.add_argument("--mixture", default=None, help="staged-mixture YAML (data.kind=mixture; issue 8)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config value")
    p.add_argument("--fresh", action="store_true", help="discard checkpoints/metrics in the run dir first")
    p.add_argument("--init-from", default=None, metavar="RUN_DIR",
                   help="warm start: begin from another run's latest checkpoint (params, optimizer state, step, "
                        "data position) under this run's config and mixture; ignored once this run has checkpoints")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and model and exit")
    p.add_argument("--list-presets", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for name in list_presets():
            pr = load_preset(name)
            print(f"{name:10s} {human(count_params(pr.model)['total']):>8s}  {pr.description}")
        return 0
    from train.config import resolve
    from train.data import DataError

    flags = {"preset": args.preset, "steps": args.steps, "run_dir": args.run_dir}
    overrides = list(args.set)
    if args.tokens and args.mixture:
        print("error: --tokens and --mixture are exclusive", file=sys.stderr)
        return 2
    if args.tokens:
        overrides += ["data.kind=tokens", f"data.options.path={args.tokens}"]
    if args.mixture:
        overrides += ["data.kind=mixture", f"data.options.config={args.mixture}"]
    try:
        cfg, model_cfg, preset, why = resolve(args.config, overrides, flags, pick_auto=pick_preset)
        if "auto" in why:
            print(f"preset {cfg.preset}: {why}", flush=True)
        if args.dry_run:
            print(describe(model_cfg, cfg.seq_len))
            print(cfg.model_dump_json(indent=2))
            return 0
        from train.resilience import build_hooks
        from train.trainer import Trainer, fresh_run_dir
        if args.fresh:
            fresh_run_dir(cfg.run_dir)
        Trainer(cfg, model_cfg, why=why, hooks=build_hooks(cfg), init_from=args.init_from).run()
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0
