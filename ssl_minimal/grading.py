"""What the course's nbgrader assignments (course/assignments/) share: a check that compares a student's
function with a reference on several random inputs, values and gradients, failing with a hint; and a
toy problem small enough to train a self-supervised encoder on in a second.

    from ssl_minimal.grading import check_function, ToyViews
    check_function(student_loss, reference_loss, make_inputs, name="my_loss",
                   hint="divide the logits by the temperature")       # AssertionError with the hint if wrong

The toy problem (ToyViews) is the one idea of the whole course in 32 numbers: each point has 4 "content"
coordinates that say its class, and 28 "nuisance" coordinates that are large and carry no information.
An augmented view keeps the content (plus a little noise) and draws the nuisance anew, as a random crop or
a colour jitter would. A random encoder sees mostly nuisance (kNN accuracy near chance); an encoder trained
to match two views of the same point learns to ignore it (kNN accuracy near 100%), without labels.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from . import evaluate


def _flat(output) -> list:
    return list(output) if isinstance(output, (tuple, list)) else [output]


def _describe(tensor: torch.Tensor) -> str:
    values = tensor.detach().double().flatten()[:3].tolist()
    return "[" + ", ".join(f"{value:.4g}" for value in values) + (", ...]" if tensor.numel() > 3 else "]")


def check_function(answer: Callable, reference: Callable, make_inputs: Callable[[torch.Generator], Sequence],
                   *, name: str, hint: str = "", gradient_hint: str = "", seeds: Sequence[int] = (0, 1, 2),
                   rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Call `answer` and `reference` on the inputs `make_inputs(generator)` builds for each seed (a tuple of
    arguments; float tensors that require grad are the ones whose gradients are compared), and raise
    AssertionError with a one-line hint at the first difference: a wrong type, shape, value or gradient.
    Each function gets its own copy of the inputs, so an answer that changes them in place is caught too."""
    for seed in seeds:
        inputs = tuple(make_inputs(torch.Generator().manual_seed(seed)))
        where = f"{name} on random input #{seed}"

        def copy():
            return [x.detach().clone().requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor) else x
                    for x in inputs]
        mine, theirs = copy(), copy()
        untouched = [x.detach().clone() if isinstance(x, torch.Tensor) else None for x in mine]
        got, expected = _flat(answer(*mine)), _flat(reference(*theirs))
        assert len(got) == len(expected), f"{where}: expected {len(expected)} output(s), got {len(got)}"
        for index, (g, e) in enumerate(zip(got, expected)):
            what = f"{where}, output {index}" if len(expected) > 1 else where
            if not isinstance(e, torch.Tensor):
                assert g == e, f"{what}: expected {e!r}, got {g!r}. Hint: {hint}"
                continue
            assert isinstance(g, torch.Tensor), f"{what}: expected a tensor, got {type(g).__name__}"
            assert not (g.requires_grad and not e.requires_grad), \
                f"{what}: a gradient flows through this output, and it should not. Hint: {gradient_hint or hint}"
            assert g.shape == e.shape, f"{what}: expected shape {list(e.shape)}, got {list(g.shape)}. Hint: {hint}"
            assert torch.allclose(g.detach().double(), e.detach().double(), rtol=rtol, atol=atol), \
                f"{what}: expected values {_describe(e)}, got {_describe(g)}. Hint: {hint}"
        for index, (x, before) in enumerate(zip(mine, untouched)):
            if before is not None:
                assert torch.equal(x.detach(), before), \
                    f"{where}: argument {index} was changed in place; work on a copy (or build a new tensor)"
        # Gradients: backpropagate a fixed random weighting of every differentiable output.
        weights = torch.Generator().manual_seed(1000 + seed)
        wanted = [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.requires_grad]
        pairs = [(g, e) for g, e in zip(got, expected) if isinstance(e, torch.Tensor) and e.requires_grad]
        if not wanted or not pairs:
            continue
        total_got = total_expected = 0
        for g, e in pairs:
            w = torch.randn(e.shape, generator=weights, dtype=torch.float64)
            total_expected = total_expected + (e.double() * w).sum()
            if isinstance(g, torch.Tensor) and g.requires_grad:
                total_got = total_got + (g.double() * w).sum()
        gradients_expected = torch.autograd.grad(total_expected, [theirs[i] for i in wanted], allow_unused=True)
        if isinstance(total_got, torch.Tensor):
            gradients_got = torch.autograd.grad(total_got, [mine[i] for i in wanted], allow_unused=True)
        else:
            gradients_got = [None] * len(wanted)
        for i, g, e in zip(wanted, gradients_got, gradients_expected):
            g = torch.zeros_like(mine[i]) if g is None else g
            e = torch.zeros_like(theirs[i]) if e is None else e
            assert torch.allclose(g.double(), e.double(), rtol=rtol, atol=atol), \
                (f"{where}: the gradient with respect to argument {i} differs (expected {_describe(e)}, got "
                 f"{_describe(g)}). Hint: {gradient_hint or hint}")


class ToyViews:
    """A labelled toy data set of `num_classes * per_class` points in `content_dim + nuisance_dim` numbers.

    points[i] = (class centre + per-point offset, nuisance); views(indices) keeps the content, adds noise of
    std `view_noise`, and draws every nuisance coordinate anew from N(0, nuisance_std^2).
    """

    def __init__(self, num_classes: int = 10, per_class: int = 60, content_dim: int = 4, nuisance_dim: int = 28,
                 nuisance_std: float = 3.0, view_noise: float = 0.1, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        centres = torch.randn(num_classes, content_dim, generator=generator) * 2.0
        self.labels = torch.arange(num_classes).repeat_interleave(per_class)                     # [N]
        content = centres[self.labels] + 0.5 * torch.randn(len(self.labels), content_dim, generator=generator)
        self.content, self.nuisance_dim = content, nuisance_dim                                  # [N, c]
        self.nuisance_std, self.view_noise = nuisance_std, view_noise
        self.dim = content_dim + nuisance_dim
        self.points = self.views(torch.arange(len(self.labels)), generator)                     # [N, dim]

    def __len__(self) -> int:
        return len(self.labels)

    def views(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """An augmented view [len(indices), dim] of each point: same content, fresh nuisance."""
        content = self.content[indices]
        content = content + self.view_noise * torch.randn(content.shape, generator=generator)
        nuisance = self.nuisance_std * torch.randn(len(indices), self.nuisance_dim, generator=generator)
        return torch.cat([content, nuisance], dim=1)

    def encoder(self, output_dim: int = 16, hidden: int = 64, seed: int = 0) -> nn.Module:
        """A small MLP from the toy points to `output_dim` numbers, its initial weights fixed by `seed`."""
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(self.dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                             nn.Linear(hidden, output_dim))

    @torch.no_grad()
    def knn_accuracy(self, encoder: nn.Module, k: int = 10) -> float:
        """kNN accuracy of encoder's features: even points are the bank, odd points the queries."""
        was_training = encoder.training
        encoder.eval()
        features = encoder(self.points)
        encoder.train(was_training)
        even, odd = slice(0, None, 2), slice(1, None, 2)
        return evaluate.knn_accuracy(features[even], self.labels[even], features[odd], self.labels[odd], k=k)
