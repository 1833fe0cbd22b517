"""ssl_minimal: self-supervised visual representation learning, one readable file per method.

    import ssl_minimal
    ssl_minimal.METHODS                         # ('instdisc', 'invaspread', ...) in course order
    train = ssl_minimal.data.load("cifar10", "train")
    model = ssl_minimal.build("instdisc", dataset=train)
    history = ssl_minimal.fit(model, train, budget="cpu", eval_dataset=ssl_minimal.data.load("cifar10", "test"))

or everything at once: `model, history = ssl_minimal.train("instdisc", dataset="cifar10", budget="cpu")`.
"""

from __future__ import annotations

import functools
import inspect

import torch

from . import allocator, augmentations, data, distributed, evaluate, losses, visualize
from .checks import SSLMinimalError, unknown_name
from .methods import METHODS as _METHOD_CLASSES
from .training import BUDGETS, Budget, GradientNorms, History, fit, get_budget

__version__ = "0.1.0"

if allocator.malloc_tuning_wanted():      # CPU speed: reuse freed memory (see ssl_minimal/allocator.py)
    allocator.keep_freed_memory()

METHODS: tuple[str, ...] = tuple(_METHOD_CLASSES)   # lower-case names in course order


def _accepts(method_class: type, option: str) -> bool:
    """Whether `option` is a constructor parameter of the class or of a parent it passes **options to
    (MoCoV2(**options) -> MoCoV1(num_samples=...))."""
    return any(option in inspect.signature(klass.__init__).parameters
               for klass in method_class.__mro__ if "__init__" in vars(klass))


def build(name: str, dataset=None, **options):
    """Build method `name` (see METHODS). Options go to the method's constructor (temperature,
    backbone, ...). Passing the training `dataset` fills in what the method needs to know about it:
    its size (memory bank rows), image size and per-channel mean/std."""
    if name not in _METHOD_CLASSES:
        raise unknown_name("method", name, METHODS)
    method_class = _METHOD_CLASSES[name]
    if dataset is not None:
        options.setdefault("image_size", dataset.images.shape[-1])
        options.setdefault("mean", dataset.mean)
        options.setdefault("std", dataset.std)
        if _accepts(method_class, "num_samples"):
            options.setdefault("num_samples", len(dataset))
        if _accepts(method_class, "tokenizer") and getattr(dataset, "tokenizer", None) is not None:
            options.setdefault("tokenizer", dataset.tokenizer)     # CLIP: the words of the captions
    try:
        return method_class(**options)
    except TypeError as error:
        raise SSLMinimalError(f"cannot build {name!r} with options {sorted(options)}: {error}") from None


def train(method: str, dataset: str = "shapes", budget: str | Budget | None = None, *, data_dir=None,
          seed: int = 0, method_options: dict | None = None, **fit_options):
    """Load data, build `method` and fit it under `budget`; returns (model, history).

    The budget's `train_samples` picks a class-balanced subset of the training split; the kNN
    monitor uses the test split. Other keyword arguments go to `fit` (checkpoint_path, resume,
    epochs=..., batch_size=..., learning_rate=...).
    """
    if method not in _METHOD_CLASSES:
        raise unknown_name("method", method, METHODS)
    budget_fields = {key: fit_options.pop(key) for key in list(fit_options) if key in Budget.__dataclass_fields__}
    resolved = get_budget(budget, **budget_fields)
    # a method that reads text (CLIP) trains on image-caption pairs (for shapes without the held-out combinations)
    load = data.load_captioned if getattr(_METHOD_CLASSES[method], "uses_captions", False) else data.load
    train_set = load(dataset, "train", data_dir=data_dir)
    if resolved.train_samples is not None and resolved.train_samples < len(train_set):
        train_set = train_set.subset(resolved.train_samples, seed=seed)
    test_set = load(dataset, "test", data_dir=data_dir)
    options = dict(method_options or {})
    options.setdefault("backbone", resolved.backbone_for(_METHOD_CLASSES[method]))
    if getattr(_METHOD_CLASSES[method], "uses_captions", False):      # CLIP: zero-shot top-1 before, during, after
        queries = test_set.subset(min(resolved.knn_test_samples, len(test_set)), seed=seed)
        fit_options["monitors"] = {"zero_shot": functools.partial(evaluate.zero_shot_report, dataset=queries),
                                   **(fit_options.get("monitors") or {})}
    torch.manual_seed(seed)                                 # the same initial weights for the same seed
    model = build(method, dataset=train_set, **options)
    history = fit(model, train_set, resolved, eval_dataset=test_set, seed=seed, **fit_options)
    return model, history


__all__ = ["METHODS", "BUDGETS", "Budget", "GradientNorms", "History", "SSLMinimalError", "augmentations", "build", "data",
           "distributed", "evaluate", "fit", "get_budget", "losses", "train", "visualize"]
