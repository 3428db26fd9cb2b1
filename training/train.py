"""Train DiffuX2CT (or the regression baseline) from a YAML config.

    python -m training.train --config demo [--set train.max_steps=500 ...] [--run-dir DIR] [--no-resume]
    torchrun --nproc_per_node 4 -m training.train --config paper         # several GPUs (DDP)
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m training.train --config paper                                 # several nodes

``--config`` takes a YAML file or the name of a bundled config (``paper``, ``clinical``,
``demo``). A run folder that already holds checkpoints is resumed from the newest one (exactly:
weights, EMA, optimiser, data order, RNG). SIGTERM or Ctrl-C saves a checkpoint and exits 0;
running the same command again continues. Exit 2 with one line for a bad config or data.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from DiffuX2CTLib.errors import DiffuX2CTError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="YAML file, or a bundled config: paper, clinical, demo")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-4 (repeatable; value read as YAML)")
    p.add_argument("--run-dir", default=None, help="run folder (overrides run_dir)")
    p.add_argument("--cache", default=None, help="prepared data cache (overrides data.cache)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if the run folder has checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import load_config

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    if args.cache:
        overrides.append(f"data.cache={args.cache}")
    try:
        config = load_config(args.config, overrides)
        from .trainer import train

        result = train(config, resume=not args.no_resume, progress=not args.no_progress)
    except DiffuX2CTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.finished:
        print(f"[train] done: {result.step} steps in {result.seconds:.1f} s; last checkpoint {result.last_checkpoint}"
              + (f"; best {result.best}" if result.best else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
