"""Loss functions, as small pure functions (inputs in, scalar out; no state, no stop-gradients).

Stop-gradients belong to the method files (where the paper puts them), so each function here
differentiates through everything it is given. Each one cites the equation it implements and is
tested against a hand computation in tests/test_losses.py.

Notation (InstDisc, Wu et al. 2018): v = L2-normalised embedding of the current image, bank rows
v_j = stored embeddings of all n training images, tau = temperature, m = number of noise samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nonparametric_softmax_loss(embeddings: torch.Tensor, bank: torch.Tensor, indices: torch.Tensor,
                               temperature: float) -> torch.Tensor:
    """InstDisc's exact objective: each image is its own class (Wu et al. 2018, Eq. 2).

        P(i | v) = exp(v_i^T v / tau) / sum_j exp(v_j^T v / tau),   loss = -mean log P(i | v)

    embeddings: [B, D] L2-normalised v; bank: [n, D] memory bank; indices: [B] the images' own rows i.
    Computing the sum over all n rows is affordable for CIFAR-sized n; use `nce_loss` for large n.
    """
    logits = embeddings @ bank.t() / temperature  # [B, n]
    return F.cross_entropy(logits, indices)


def nce_loss(positive_probability: torch.Tensor, noise_probability: torch.Tensor,
             num_samples: int) -> torch.Tensor:
    """Noise-contrastive estimation of the non-parametric softmax (Wu et al. 2018, Eqs. 5-7).

    Data samples are positives, m noise samples per positive come from the uniform noise
    distribution P_n = 1/n. With P(i|v) = exp(v_i^T v / tau) / Z the model probability,

        h(i, v) = P(i|v) / (P(i|v) + m P_n(i))                                  (Eq. 5)
        loss = -E_data[log h(i, v)] - m E_noise[log(1 - h(i, v'))]             (Eq. 6)

    The second term is estimated with m noise samples, so it is their *sum*; both are averaged
    over the batch.
    positive_probability: [B] P(i|v) of each image's own entry; noise_probability: [B, m].
    """
    num_noise = noise_probability.shape[1]                     # m
    noise_mass = num_noise / num_samples                        # m * P_n(i)
    h_positive = positive_probability / (positive_probability + noise_mass)  # [B]
    one_minus_h_noise = noise_mass / (noise_probability + noise_mass)        # [B, m]
    return -(torch.log(h_positive).mean() + torch.log(one_minus_h_noise).sum(dim=1).mean())


def invariance_spreading_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InvaSpread's in-batch instance loss (Ye et al. 2019, Eqs. 2-5), over both views.

    The 2B embeddings x = [z1; z2] are L2-normalised. For an anchor a, the probability that it is
    recognised as instance b uses all other 2B - 1 embeddings of the batch as the classes:

        P(b | a) = exp(x_b^T x_a / tau) / sum_{c != a} exp(x_c^T x_a / tau)
        loss = -1/(2B) sum_a [ log P(pos(a) | a) + sum_{b != a, pos(a)} log(1 - P(b | a)) ]

    where pos(a) is the other view of the same image (the "invariance" term) and every other
    sample is a negative pushed away (the "spreading" term), treated as independent binary
    decisions as in the paper's Eq. 5. The official code does the same over both views.
    z1, z2: [B, D] embeddings of two views of the same B images (any scale).
    """
    batch_size = z1.shape[0]
    x = F.normalize(torch.cat([z1, z2]), dim=1)                           # [2B, D]
    similarities = x @ x.t() / temperature                                 # [2B, 2B]
    self_mask = torch.eye(2 * batch_size, dtype=torch.bool, device=x.device)
    similarities = similarities.masked_fill(self_mask, float("-inf"))      # c != a
    probabilities = similarities.softmax(dim=1)                            # P(b | a), row a
    positives = torch.cat([torch.arange(batch_size, 2 * batch_size), torch.arange(batch_size)]).to(x.device)
    rows = torch.arange(2 * batch_size, device=x.device)
    positive_term = torch.log(probabilities[rows, positives])              # [2B]
    negative_mask = ~self_mask
    negative_mask[rows, positives] = False
    # log(1 - P) with P < 1; clamp guards the log against rounding to exactly 1.
    negative_term = (torch.log1p(-probabilities.clamp(max=1 - 1e-6)) * negative_mask).sum(dim=1)  # [2B]
    return -(positive_term + negative_term).mean()


# ----------------------------------------------------------------------------------------------
# The contrastive era: InfoNCE in its forms (CPC, CMC, MoCo, SimCLR) and SimCLR v2's distillation
def info_nce(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE (He et al. 2019, arXiv 1911.05722, Eq. 1), one positive key per query:

        L_q = -log [ exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k- in queue} exp(q.k- / tau)) ]

    query, key: [N, C]; queue: [K, C] negatives. Inputs are used as given: MoCo's code normalises
    q and k (and so the queue) before the loss, and so do our callers. The logits are
    [q.k+, q.queue] / tau with the positive first, then cross-entropy with label 0 (Algorithm 1).
    """
    positive = (query * key).sum(dim=1, keepdim=True)                # [N, 1]
    negative = query @ queue.t()                                       # [N, K]
    logits = torch.cat([positive, negative], dim=1) / temperature      # [N, 1 + K]
    labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, labels)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, arXiv 2002.05709, Eq. 1 and Algorithm 1).

    The 2N projections [z1; z2] are L2-normalised here (sim(u, v) = u.v / |u||v|). For the pair
    (i, j) of two views of one image:

        l(i, j) = -log [ exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) ]

    and the loss is the mean of l over all 2N anchors (both l(i, j) and l(j, i)). z1, z2: [N, D].
    """
    batch_size = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)                            # [2N, D]
    logits = z @ z.t() / temperature                                        # [2N, 2N]
    self_mask = torch.eye(2 * batch_size, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))                   # k != i
    positives = torch.cat([torch.arange(batch_size, 2 * batch_size), torch.arange(batch_size)]).to(z.device)
    return F.cross_entropy(logits, positives)


def cpc_info_nce(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CPC's InfoNCE (van den Oord et al. 2018, arXiv 1807.03748, Eq. 4) with in-batch negatives.

    Row i of `predictions` [M, D] is W_k c_t for one position, row i of `targets` [M, D] is the
    true z_{t+k} there; every other target row is a negative. The score is the log-bilinear
    f_k = exp(z^T W_k c_t) (Eq. 3): no normalisation, no temperature. Loss = mean over rows of

        -log [ exp(p_i . z_i) / sum_j exp(p_i . z_j) ]
    """
    logits = predictions @ targets.t()                                              # [M, M]
    return F.cross_entropy(logits, torch.arange(predictions.shape[0], device=predictions.device))


def cmc_loss(z_view1: torch.Tensor, z_view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """CMC's two-view contrastive loss (Tian et al. 2019, arXiv 1906.05849, Eqs. 2-3), in-batch form.

    Embeddings are L2-normalised here; h(v1, v2) = exp(v1.v2 / tau). The anchor view 1 of image i
    must pick its own view 2 among the views 2 of the batch, and the other way round:

        L(V1, V2) = L_contrast^{V1,V2} + L_contrast^{V2,V1}                      (Eq. 3)
        L_contrast^{V1,V2} = -mean_i log [ h(v1_i, v2_i) / sum_j h(v1_i, v2_j) ]  (Eq. 2)

    z_view1, z_view2: [N, D] embeddings of the two views of the same N images.
    """
    v1, v2 = F.normalize(z_view1, dim=1), F.normalize(z_view2, dim=1)
    logits = v1 @ v2.t() / temperature                                      # [N, N], row i: anchor v1_i
    labels = torch.arange(v1.shape[0], device=v1.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """SimCLR v2's distillation loss (Chen et al. 2020, arXiv 2006.10029, Eq. 2):

        L = -sum_x sum_y P^T(y | x; tau) log P^S(y | x; tau),   P(y | x; tau) = softmax(logits / tau)

    averaged (not summed) over the batch. Both logits: [B, num_classes]. The teacher's
    stop-gradient belongs to the caller (the method file detaches the teacher's logits).
    """
    teacher = (teacher_logits / temperature).softmax(dim=1)
    student = (student_logits / temperature).log_softmax(dim=1)
    return -(teacher * student).sum(dim=1).mean()
