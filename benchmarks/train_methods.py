"""Train methods at a budget and report kNN top-1 before (random init) and after training.

    SSL_DATA_DIR=/work/shared/data python benchmarks/train_methods.py                 # all methods, cpu, CIFAR-10
    python benchmarks/train_methods.py instdisc invaspread --budget cpu --dataset cifar10
    python benchmarks/train_methods.py instdisc --budget smoke --dataset shapes --output runs/bench
    python benchmarks/train_methods.py swav --option epsilon=0.02 --option optimizer=sgd --learning-rate 0.05
    python benchmarks/train_methods.py simclr_v1 byol --seeds 0 1 --precision fp32 auto   # precision parity

For each method: build it (seeded), measure kNN top-1 (k=200, tau=0.1) of the randomly initialised
encoder, train it with `fit` at the budget on the budget's class-balanced training subset, and
measure again. Both measurements use the *whole* test split (10,000 CIFAR-10 images) as queries
and the whole training subset as the labelled bank, whatever the in-training monitor uses.
Prints one markdown table row per method and writes OUTPUT/results.json and OUTPUT/results.md.
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime
import json
import platform
import time
from pathlib import Path

import torch

import ssl_minimal
from ssl_minimal import evaluate
from ssl_minimal.training import PRECISIONS, fit, get_budget

KNN_K = 200   # kNN protocol of InstDisc (Wu et al. 2018, arXiv 1805.01978): k = 200, tau = 0.1
# lightly's published CIFAR-10 benchmark (docs.lightly.ai/getting_started/benchmarks.html, CIFAR-10: ResNet-18, batch 512,
# 200 epochs, kNN k=200 on the test set, one GPU): kNN top-1 and minutes of the whole run. With the
# gpu budget the kNN monitor reads the same protocol, so `History.seconds_to_accuracy` of these
# accuracies is our time-to-accuracy beside theirs.
LIGHTLY_PUBLISHED = {"simclr_v1": (0.848, 87.1), "byol": (0.868, 108.3), "moco_v2": (0.847, 112.2)}


def full_knn(encoder: torch.nn.Module, train, test) -> float:
    """kNN top-1 with the whole `train` set as bank and every image of `test` as a query."""
    bank = evaluate.extract_features(encoder, train.images)
    queries = evaluate.extract_features(encoder, test.images)
    return evaluate.knn_accuracy(bank, train.labels, queries, test.labels, k=min(KNN_K, len(train)))


def parse_options(pairs: list[str]) -> dict:
    """["epsilon=0.02", "optimizer=sgd"] -> {"epsilon": 0.02, "optimizer": "sgd"} (Python literals, else strings)."""
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--option takes NAME=VALUE (e.g. epsilon=0.02), got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def build_with_options(name: str, train_set, backbone: str, options: dict):
    """Build the method; options its constructor takes go to it, the others must be class-level
    hyper-parameters that fit reads (optimizer, learning_rate, weight_decay, augmentation)."""
    method_class = ssl_minimal.methods.METHODS[name]
    constructor = {k: v for k, v in options.items() if ssl_minimal._accepts(method_class, k)}
    model = ssl_minimal.build(name, dataset=train_set, backbone=backbone, **constructor)
    for key, value in options.items():
        if key not in constructor:
            if not hasattr(type(model), key):
                raise SystemExit(f"{name} has no constructor option or class attribute {key!r}")
            setattr(model, key, value)
    return model


def run_method(name: str, dataset: str, budget, seed: int, data_dir: str | None, options: dict | None = None) -> dict:
    # CLIP trains on image-caption pairs
    uses_captions = getattr(ssl_minimal.methods.METHODS[name], "uses_captions", False)
    load = ssl_minimal.data.load_captioned if uses_captions else ssl_minimal.data.load
    train_set = load(dataset, "train", data_dir=data_dir)
    if budget.train_samples is not None and budget.train_samples < len(train_set):
        train_set = train_set.subset(budget.train_samples, seed=seed)
    test_set = load(dataset, "test", data_dir=data_dir)
    torch.manual_seed(seed)
    backbone = budget.backbone_for(ssl_minimal.methods.METHODS[name])
    model = build_with_options(name, train_set, backbone, options or {})
    before = full_knn(copy.deepcopy(model.encoder), train_set, test_set)
    started = time.perf_counter()
    history = fit(model, train_set, budget, eval_dataset=test_set, seed=seed, progress=False)
    wall = time.perf_counter() - started
    after = full_knn(model.encoder, train_set, test_set)
    images = len(history.step) * budget.batch_size
    return {"method": name, "dataset": dataset, "budget": budget.name, "backbone": backbone,
            "epochs": budget.epochs, "batch_size": budget.batch_size, "train_samples": len(train_set),
            "test_samples": len(test_set), "knn_before": before, "knn_after": after,
            "monitor_knn": history.knn_accuracy, "train_seconds": history.wall_seconds,
            "wall_seconds": wall, "images_per_second": images / history.wall_seconds,
            "final_loss": history.loss[-1], "seed": seed, "precision": history.precision, "threads": torch.get_num_threads(),
            "options": options or {}, "learning_rate": budget.learning_rate,
            "monitor_step": history.knn_step,
            "training_seconds_at_monitor": [history.training_seconds_at(step) for step in history.knn_step],
            **time_to_published(name, history)}


def time_to_published(name: str, history) -> dict:
    """Training minutes until the kNN monitor first reached lightly's published accuracy for `name`."""
    if name not in LIGHTLY_PUBLISHED:
        return {}
    accuracy, minutes = LIGHTLY_PUBLISHED[name]
    seconds = history.seconds_to_accuracy(accuracy)
    return {"lightly_published_knn": accuracy, "lightly_published_minutes": minutes,
            "minutes_to_lightly_knn": None if seconds is None else seconds / 60}


def time_to_accuracy_line(r: dict) -> str | None:
    if "lightly_published_knn" not in r:
        return None
    reached = (f"after {r['minutes_to_lightly_knn']:.1f} training minutes" if r["minutes_to_lightly_knn"] is not None
               else "not reached")
    return (f"time to accuracy, {r['method']}: lightly's published kNN {r['lightly_published_knn']:.1%} "
            f"({r['lightly_published_minutes']} min on their GPU) {reached}; final monitor "
            f"{r['monitor_knn'][-1]:.1%}, full kNN {r['knn_after']:.1%}")


def markdown_row(r: dict) -> str:
    return (f"| {r['method']} | {r['dataset']} | {r['budget']} ({r['epochs']} ep x {r['train_samples']} img, "
            f"batch {r['batch_size']}, {r['backbone']}) | {r['seed']} | {r['precision']} | {r['knn_before']:.1%} | **{r['knn_after']:.1%}** | "
            f"{r['knn_after'] - r['knn_before']:+.1%} | {r['wall_seconds'] / 60:.1f} min | "
            f"{r['images_per_second']:.0f} |")


HEADER = ("| method | dataset | budget | seed | precision | kNN random init | kNN trained | gain | "
          "wall time (incl. monitor) | train img/s |\n|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", default=list(ssl_minimal.METHODS))
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", default=None, help="default: $SSL_DATA_DIR")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="the learning rate for the budget's batch size, instead of each method's own scaled by batch / 256")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a constructor option or class hyper-parameter of the methods, e.g. epsilon=0.02")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed (default: 0)")
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=PRECISIONS,
                        help="fit's precision; several: each seed runs in each, one after the other")
    parser.add_argument("--output", default="runs/benchmarks")
    args = parser.parse_args()
    budgets = {precision: get_budget(args.budget, epochs=args.epochs, train_samples=args.train_samples,
                                     learning_rate=args.learning_rate, precision=precision)
               for precision in args.precision}
    options = parse_options(args.option)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n{HEADER}", flush=True)
    results = []
    runs = [(name, seed, precision) for name in args.methods for seed in args.seeds for precision in args.precision]
    for name, seed, precision in runs:
        results.append(run_method(name, args.dataset, budgets[precision], seed, args.data_dir, options))
        print(markdown_row(results[-1]), flush=True)
        line = time_to_accuracy_line(results[-1])
        if line:
            print(line, flush=True)
        (output / "results.json").write_text(json.dumps(results, indent=1))
        (output / "results.md").write_text("\n".join([HEADER] + [markdown_row(r) for r in results]) + "\n")


if __name__ == "__main__":
    main()
