"""Assignment 2: the contrastive era — InfoNCE with a queue (MoCo), NT-Xent (SimCLR), and MoCo's two
update rules (the momentum encoder and the first-in first-out queue).

Fill in every function marked TODO. Use only torch (no ssl_minimal inside your answers: the grader
compares your functions with the library's). Run the grader with

    python course/assignments/02_contrastive/grade.py          # a score and a hint per check
    pytest course/assignments/02_contrastive                   # the same checks as tests

Read first: notebooks/05_moco.ipynb and notebooks/06_simclr.ipynb, and the papers
(He et al. 2019, arXiv 1911.05722, Eqs. 1-2 and Algorithm 1; Chen et al. 2020, arXiv 2002.05709, Eq. 1
and Algorithm 1).
"""

import torch


def info_nce(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo Eq. 1 for N queries at once: query [N, C] and its positive key [N, C] (both already
    L2-normalised), queue [K, C] of negative keys. Logits = [q.k+, q.k-_1, ..., q.k-_K] / tau with the
    positive FIRST; return the mean cross-entropy with label 0 (a scalar)."""
    raise NotImplementedError("TODO: InfoNCE with a queue of negatives")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR Eq. 1 over 2N views: z1, z2 [N, D] are projections of two views of the same N images
    (not normalised: normalise them here). For each of the 2N anchors, the positive is the other view
    of its image and the other 2N - 2 views are negatives; an anchor is never compared with itself.
    Return the mean loss over all 2N anchors."""
    raise NotImplementedError("TODO: the NT-Xent loss")


def momentum_update(key_parameters: list[torch.Tensor], query_parameters: list[torch.Tensor],
                    m: float) -> list[torch.Tensor]:
    """MoCo Eq. 2, theta_k <- m theta_k + (1 - m) theta_q, for each pair of tensors. Return the NEW key
    parameters as a list; do not change the query parameters, and let no gradient reach the result."""
    raise NotImplementedError("TODO: the momentum (EMA) update")


def enqueue(queue: torch.Tensor, pointer: int, keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """MoCo's queue [K, C] as a ring buffer: write the B new keys [B, C] into rows pointer, pointer + 1, ...
    (wrapping around the end of the queue), so they replace the oldest keys. Return (new queue, new pointer),
    where the new pointer is where the next batch goes. Do not modify `queue` in place."""
    raise NotImplementedError("TODO: first-in first-out queue update")
