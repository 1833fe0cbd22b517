"""Assignment 3: learning without negatives — SimSiam's stop-gradient, BYOL's loss and target schedule,
SwAV's Sinkhorn-Knopp codes and the Barlow Twins loss.

Fill in every function marked TODO. Use only torch (no ssl_minimal inside your answers: the grader
compares your functions with the library's). Run the grader with

    python course/assignments/03_no_negatives/grade.py          # a score and a hint per check
    pytest course/assignments/03_no_negatives                   # the same checks as tests

Read first: notebooks/08_swav.ipynb, 09_byol_simsiam_barlow_twins.ipynb and 10_collapse.ipynb, and the
papers (Chen & He 2021, arXiv 2011.10566, Algorithm 1; Grill et al. 2020, arXiv 2006.07733, Eq. 2 and
Sec. 3.2; Caron et al. 2020, arXiv 2006.09882, Eq. 3 and Algorithm 1; Zbontar et al. 2021,
arXiv 2103.03230, Eq. 1).
"""

import torch


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam Algorithm 1: L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2 with
    D(p, z) = -cosine(p, z) averaged over the batch. All inputs [B, D]. The gradient must reach p1 and p2
    only: NONE may flow into z1 or z2 through this loss."""
    raise NotImplementedError("TODO: symmetric negative cosine with stop-gradient")


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL Eq. 2: || p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z), averaged over the batch. p, z: [B, D]."""
    raise NotImplementedError("TODO: normalised mean squared error")


def byol_momentum(base_momentum: float, step: int, total_steps: int) -> float:
    """BYOL Sec. 3.2: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 at step k of K
    (tau_base at the start, 1 at the end)."""
    raise NotImplementedError("TODO: the cosine schedule of the target's momentum")


def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """SwAV Eq. 3 / Algorithm 1: codes Q [B, K] from prototype scores [B, K]. Start from exp(scores / epsilon)
    (subtract the maximum first so exp stays finite), divide by its total, then `iterations` times:
    make every prototype (column) sum to 1/K, then every sample (row) sum to 1/B. Return Q * B, so that
    each row (a sample's code) sums to 1."""
    raise NotImplementedError("TODO: Sinkhorn-Knopp equal-partition codes")


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """Barlow Twins Eq. 1: normalise each dimension of z1 and z2 [B, D] over the batch (mean 0, std 1 with the
    biased variance + 1e-5, as BatchNorm), C = z1n^T z2n / B [D, D], and
    loss = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2."""
    raise NotImplementedError("TODO: the redundancy-reduction loss")
