"""Command line: `python -m ssl_minimal train METHOD [options]` and `python -m ssl_minimal list`.

    python -m ssl_minimal train instdisc                      # embedded dataset, budget from SSL_BUDGET/auto
    python -m ssl_minimal train instdisc --budget smoke       # < 2 minutes on 2 CPU cores, offline
    python -m ssl_minimal train invaspread --dataset cifar10 --data-dir ../shared/data --budget cpu
    python -m ssl_minimal train instdisc --resume             # continue runs/instdisc-shapes-cpu/

Each run writes to --output (default runs/METHOD-DATASET-BUDGET/): checkpoint.pt (every
`checkpoint_every_steps` steps and at the end), history.json and training_curves.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .checks import SSLMinimalError


def _parser() -> argparse.ArgumentParser:
    from . import METHODS
    from .data import DATASETS
    from .training import BUDGETS, PRECISIONS
    parser = argparse.ArgumentParser(prog="python -m ssl_minimal", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list methods, datasets and budgets")
    train = commands.add_parser("train", help="train a method and report kNN accuracy before and after")
    train.add_argument("method", help=f"one of: {', '.join(METHODS)}")
    train.add_argument("--dataset", default="shapes", help=f"one of: {', '.join(DATASETS)} (default: shapes, "
                       "embedded, no download)")
    train.add_argument("--data-dir", default=None, help="folder with the datasets (default: $SSL_DATA_DIR)")
    train.add_argument("--budget", default=None, help=f"one of: {', '.join(BUDGETS)}, auto "
                       "(default: $SSL_BUDGET or auto)")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--learning-rate", type=float, default=None)
    train.add_argument("--backbone", default=None,
                       help="small_convnet, resnet18, small_vit or vit_tiny (default: the budget's for the method)")
    train.add_argument("--train-samples", type=int, default=None, help="train on a class-balanced subset")
    train.add_argument("--output", default=None, help="run folder (default: runs/METHOD-DATASET-BUDGET)")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    train.add_argument("--compile", action="store_true", help="torch.compile the training step")
    train.add_argument("--precision", default=None, choices=PRECISIONS,
                       help="auto (default): bf16 autocast for the ConvNets on a CPU or GPU with native bf16, "
                       "else fp32; fp32; bf16")
    train.add_argument("--sync-batch-norm", action="store_true", help="under torchrun: BatchNorm statistics "
                       "over all processes (torch.nn.SyncBatchNorm; CUDA only)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check_numbers(args) -> None:
    """Numeric options, checked before anything starts: one sentence naming the option and what it takes."""
    for option in ("epochs", "batch_size", "train_samples", "max_steps"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise SSLMinimalError(f"--{option.replace('_', '-')} must be a whole number >= 1, got {value}")
    rate = args.learning_rate
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise SSLMinimalError(f"--learning-rate must be a finite number > 0 (e.g. 0.03), got {rate}")


def _train(args) -> None:
    _check_numbers(args)
    import matplotlib
    matplotlib.use("Agg")
    from . import distributed, train, visualize
    from .backbones import BACKBONES
    from .checks import unknown_name
    from .data import DATASETS
    from .methods import METHODS
    from .training import get_budget, resolve_device, resolve_precision
    if args.method not in METHODS:
        raise unknown_name("method", args.method, METHODS)
    if args.dataset not in DATASETS:                   # names checked before the "training ... on ..." line
        raise unknown_name("dataset", args.dataset, DATASETS)
    if args.backbone is not None and args.backbone not in BACKBONES:
        raise unknown_name("backbone", args.backbone, BACKBONES)
    budget = get_budget(args.budget, epochs=args.epochs, batch_size=args.batch_size,
                        learning_rate=args.learning_rate, backbone=args.backbone, vit_backbone=args.backbone,
                        train_samples=args.train_samples, compile=args.compile or None,
                        sync_batch_norm=args.sync_batch_norm or None, precision=args.precision)
    output = Path(args.output or f"runs/{args.method}-{args.dataset}-{budget.name}")
    backbone = budget.backbone_for(METHODS[args.method])
    precision, why = resolve_precision(budget.precision, resolve_device(args.device), [backbone])
    speed = "bf16 autocast + channels_last" if precision == "bf16" else "fp32"
    if os.environ.get("RANK", "0") == "0":              # torchrun sets RANK; the group is joined later, in fit
        print(f"training {args.method} on {args.dataset} with budget {budget.name!r} "
              f"({budget.epochs} epochs, batch {budget.batch_size}, {backbone}, {speed}: {why}); "
              f"output in {output}/")
    model, history = train(args.method, args.dataset, budget, data_dir=args.data_dir, seed=args.seed,
                           checkpoint_path=output / "checkpoint.pt", resume=args.resume,
                           max_steps=args.max_steps, device=args.device, progress=not args.no_progress)
    if not distributed.is_main_process():              # under torchrun, rank 0 reports and writes files
        return
    output.mkdir(parents=True, exist_ok=True)
    (output / "history.json").write_text(json.dumps(history.to_dict(), indent=1))
    visualize.save_figure(visualize.plot_history(history), output / "training_curves.png")
    if history.baseline_knn_accuracy is not None:
        print(f"kNN top-1 (k=200) before training (random init): {history.baseline_knn_accuracy:.2%}")
    if history.knn_accuracy and history.knn_step[-1] == history.step[-1]:
        print(f"kNN top-1 (k=200) after training:                {history.final_knn_accuracy:.2%}")
    zero_shot = history.monitors.get("zero_shot/accuracy")
    if zero_shot:                                      # CLIP: class names as prompts, no labelled image used
        print(f"zero-shot top-1 before training (random init):  {zero_shot[0]:.2%}")
        if history.monitor_step[-1] == history.step[-1]:
            print(f"zero-shot top-1 after training:                 {zero_shot[-1]:.2%}" + "".join(
                f"  ({part}: {history.monitors[f'zero_shot/{part}'][-1]:.2%})" for part in ("seen", "unseen")
                if f"zero_shot/{part}" in history.monitors))
    print(f"wall time {history.wall_seconds:.0f} s; saved {output / 'checkpoint.pt'}, history.json, "
          f"training_curves.png")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            from . import METHODS
            from .data import DATASETS
            from .training import BUDGETS
            print("methods: ", ", ".join(METHODS))
            print("datasets:", ", ".join(DATASETS))
            print("budgets: ", ", ".join(f"{name} ({b.epochs} epochs, batch {b.batch_size}, {b.backbone} / {b.vit_backbone})"
                                         for name, b in BUDGETS.items()))
        elif args.command == "train":
            _train(args)
    except SSLMinimalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume (continues from the last checkpoint)", file=sys.stderr)
        return 130
    return 0
