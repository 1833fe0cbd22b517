"""Assignment 1: instance discrimination — write the three rules that make InstDisc and InvaSpread work.

Fill in every function marked TODO. Use only torch (no ssl_minimal inside your answers: the grader
compares your functions with the library's). Run the grader with

    python course/assignments/01_instance_discrimination/grade.py          # a score and a hint per check
    pytest course/assignments/01_instance_discrimination                   # the same checks as tests

Read first: notebooks/01_instdisc.ipynb and notebooks/02_invaspread.ipynb, and the papers
(Wu et al. 2018, arXiv 1805.01978, Eqs. 2 and 5-7; Ye et al. 2019, arXiv 1904.03436, Eqs. 2-5).
"""

import torch


def memory_bank_update(bank: torch.Tensor, indices: torch.Tensor, features: torch.Tensor,
                       momentum: float) -> torch.Tensor:
    """Return a NEW bank [n, D] in which rows `indices` [B] become normalize(m * v_i + (1 - m) * f_i)
    (features [B, D], L2-normalised) and every other row is unchanged. Do not modify `bank` in place,
    and do not let gradients flow into the bank."""
    raise NotImplementedError("TODO: the memory-bank update rule")


def nonparametric_softmax_loss(embeddings: torch.Tensor, bank: torch.Tensor, indices: torch.Tensor,
                               temperature: float) -> torch.Tensor:
    """InstDisc Eq. 2: P(i | v) = exp(v_i^T v / tau) / sum_j exp(v_j^T v / tau); return -mean log P(i | v).

    embeddings: [B, D] unit vectors v; bank: [n, D] rows v_j; indices: [B] the row i of each image."""
    raise NotImplementedError("TODO: the non-parametric softmax")


def nce_loss(positive_probability: torch.Tensor, noise_probability: torch.Tensor,
             num_samples: int) -> torch.Tensor:
    """InstDisc Eqs. 5-6 with uniform noise P_n = 1 / n and m = noise_probability.shape[1] noise samples:
    h = P / (P + m P_n); loss = -mean_batch[ log h(positive) + sum over the m noise samples of log(1 - h(noise)) ].

    positive_probability: [B]; noise_probability: [B, m]; num_samples: n."""
    raise NotImplementedError("TODO: noise-contrastive estimation")


def invariance_spreading_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InvaSpread Eqs. 2-5 over both views: L2-normalise x = [z1; z2] ([2B, D]); for every anchor a,
    P(b | a) = softmax over all c != a of x_c^T x_a / tau; loss = -mean_a[ log P(pos(a) | a)
    + sum over b != a, pos(a) of log(1 - P(b | a)) ], where pos(a) is the other view of the same image."""
    raise NotImplementedError("TODO: the invariance + spreading loss")
