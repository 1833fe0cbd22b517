"""Loss functions, as small pure functions (inputs in, scalar out; no state, no stop-gradients).

Stop-gradients belong to the method files (where the paper puts them), so each function here
differentiates through everything it is given. Each one cites the equation it implements and is
tested against a hand computation in tests/test_losses.py.

Notation (InstDisc, Wu et al. 2018): v = L2-normalised embedding of the current image, bank rows
v_j = stored embeddings of all n training images, tau = temperature, m = number of noise samples.

Every loss runs in float32, also inside `fit`'s bf16 autocast (`precision="bf16"`): `full_precision`
turns autocast off in it and casts bf16/fp16 inputs to float32. Only the networks run in bf16;
logits divided by a small temperature, softmaxes over many entries and their reductions would
magnify bf16's rounding (8 bits of mantissa: a cosine of 0.9 is stored to within ~0.002).
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

from . import distributed
from .checks import SSLMinimalError


def _float32(value):
    """bf16/fp16 tensors (also inside lists and tuples) as float32; everything else as it is."""
    if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16):
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_float32(v) for v in value)
    return value


def autocast_off() -> contextlib.ExitStack:
    """A context in which no autocast is active (CPU, and CUDA when there is one): ops run in their inputs' dtype."""
    stack = contextlib.ExitStack()
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        stack.enter_context(torch.autocast(device, enabled=False))
    return stack


def full_precision(function):
    """Decorator: run `function` in float32 whatever autocast region it is called from (its bf16/fp16
    tensor arguments are cast to float32, autocast is off inside). A no-op for float32 inputs."""
    @functools.wraps(function)
    def in_float32(*args, **kwargs):
        with autocast_off():
            return function(*_float32(args), **{key: _float32(value) for key, value in kwargs.items()})
    return in_float32


@full_precision
def nonparametric_softmax_loss(embeddings: torch.Tensor, bank: torch.Tensor, indices: torch.Tensor,
                               temperature: float) -> torch.Tensor:
    """InstDisc's exact objective: each image is its own class (Wu et al. 2018, Eq. 2).

        P(i | v) = exp(v_i^T v / tau) / sum_j exp(v_j^T v / tau),   loss = -mean log P(i | v)

    embeddings: [B, D] L2-normalised v; bank: [n, D] memory bank; indices: [B] the images' own rows i.
    Computing the sum over all n rows is affordable for CIFAR-sized n; use `nce_loss` for large n.
    """
    logits = embeddings @ bank.t() / temperature  # [B, n]
    return F.cross_entropy(logits, indices)


@full_precision
def nce_loss(positive_probability: torch.Tensor, noise_probability: torch.Tensor,
             num_samples: int) -> torch.Tensor:
    """Noise-contrastive estimation of the non-parametric softmax (Wu et al. 2018, Eqs. 5-6).

    Data samples are positives, m noise samples per positive come from the uniform noise
    distribution P_n = 1/n. With P(i|v) = exp(v_i^T v / tau) / Z the model probability (Eq. 4;
    the caller estimates Z, Eq. 7),

        h(i, v) = P(i|v) / (P(i|v) + m P_n(i))                                  (Eq. 5)
        loss = -E_data[log h(i, v)] - m E_noise[log(1 - h(i, v'))]             (Eq. 6)

    The second term is estimated with m noise samples, so it is their *sum*; both are averaged
    over the batch (as the official NCECriterion: sums over the batch divided by B).
    positive_probability: [B] P(i|v) of each image's own entry; noise_probability: [B, m].
    """
    num_noise = noise_probability.shape[1]                     # m
    noise_mass = num_noise / num_samples                        # m * P_n(i)
    h_positive = positive_probability / (positive_probability + noise_mass)  # [B]
    one_minus_h_noise = noise_mass / (noise_probability + noise_mass)        # [B, m]
    return -(torch.log(h_positive).mean() + torch.log(one_minus_h_noise).sum(dim=1).mean())


@full_precision
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
@full_precision
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


@full_precision
def info_nce_in_batch(query: torch.Tensor, key: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE (Eq. 1) with the end-to-end dictionary of v1 Fig. 2a: the negatives of query i
    are the keys of the *other* images of the batch, so it equals `info_nce(q_i, k_i, keys without
    row i, tau)` averaged over i (K = N - 1 negatives). query, key: [N, C], normalised by the caller.
    The logits are q k^T / tau [N, N]; the positive of row i is column i.
    """
    logits = query @ key.t() / temperature                             # [N, N]
    labels = torch.arange(query.shape[0], device=query.device)
    return F.cross_entropy(logits, labels)


@full_precision
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


@full_precision
def cpc_info_nce(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CPC's InfoNCE (van den Oord et al. 2018, arXiv 1807.03748, Eq. 4) with in-batch negatives.

    Row i of `predictions` [M, D] is W_k c_t for one position, row i of `targets` [M, D] is the
    true z_{t+k} there; every other target row is a negative. The score is the log-bilinear
    f_k = exp(z^T W_k c_t) (Eq. 3): no normalisation, no temperature. Loss = mean over rows of

        -log [ exp(p_i . z_i) / sum_j exp(p_i . z_j) ]
    """
    logits = predictions @ targets.t()                                              # [M, M]
    return F.cross_entropy(logits, torch.arange(predictions.shape[0], device=predictions.device))


@full_precision
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


@full_precision
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


# Without negatives: SwAV, BYOL, SimSiam, Barlow Twins
@full_precision
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's codes: an equal-partition soft assignment of B samples to K prototypes (Caron et al.
    2020, "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", arXiv
    2006.09882, Eq. 3 and Algorithm 1: Sinkhorn-Knopp iterations on exp(scores / epsilon)).

        Q = exp(C^T Z / epsilon), then alternately rescale
            rows of Q^T (prototypes) so each prototype gets 1/K of the mass   (equal partition)
            columns of Q^T (samples) so each sample has 1/B of the mass
        and finally multiply by B, so that each sample's code sums to 1.

    scores: [B, K] prototype scores z^T c. Returns Q [B, K]: every row sums to 1 (each sample's code
    is a distribution over prototypes) and every column sums to about B / K (each prototype gets an
    equal share of the batch; exactly so as iterations -> infinity).
    Several processes: the batch is the *global* one, as in the official code's distributed
    Sinkhorn. Each process passes its own rows; B, the total mass and the prototype (column) sums
    are summed over processes, and each process gets its own rows of the global Q back. In one
    process the all-reduces are identities and this is a plain function.
    Differentiable in one process, but SwAV calls it under torch.no_grad(): the codes are targets.
    """
    num_prototypes = scores.shape[1]
    batch_size = distributed.all_reduce_sum(torch.tensor(scores.shape[0], device=scores.device))   # global B
    # Subtracting the (global) maximum does not change Q after normalisation and keeps exp() finite.
    q = torch.exp((scores - distributed.all_reduce_max(scores.max())) / epsilon)   # [B, K]
    q = q / distributed.all_reduce_sum(q.sum())
    for _ in range(iterations):
        prototype_mass = distributed.all_reduce_sum(q.sum(dim=0, keepdim=True))    # [1, K], over all processes
        q = q / prototype_mass / num_prototypes               # each prototype (column) sums to 1/K
        q = q / q.sum(dim=1, keepdim=True) / batch_size       # each sample (row) sums to 1/B
    return q * batch_size                                     # rows sum to 1


@full_precision
def swav_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """SwAV's swapped prediction (Caron et al. 2020, arXiv 2006.09882, Eqs. 1-2): predict the code of
    one view from the scores of another view.

        l(z_t, q_s) = -sum_k q_s^(k) log p_t^(k),   p_t^(k) = softmax_k(z_t^T c_k / temperature)   (Eq. 2)
        loss = mean over pairs (s, t), s != t, of the batch mean of l(z_t, q_s)                   (Eq. 1)

    scores: one [B, K] tensor z_t^T C per view (with multi-crop: the global views first, then the
    local ones); codes: the [B, K] codes q_s of the first len(codes) views (the global views; SwAV
    computes codes only for those). Temperature 0.1 as in the paper (Sec. 4 / Appendix A).
    """
    total, pairs = 0.0, 0
    for s, q in enumerate(codes):
        for t, z in enumerate(scores):
            if t != s:
                total = total - (q * F.log_softmax(z / temperature, dim=1)).sum(dim=1).mean()
                pairs += 1
    return total / pairs


@full_precision
def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL (Grill et al. 2020, "Bootstrap Your Own Latent", arXiv 2006.07733, Eq. 2): the mean
    squared error between L2-normalised prediction and target, ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z),
    averaged over the batch. p: online prediction [B, D]; z: target projection [B, D]. The
    target's stop-gradient is in the method file."""
    return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()


@full_precision
def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -p/|p| . z/|z| (Chen & He 2021, "Exploring Simple Siamese Representation
    Learning", arXiv 2011.10566, Eq. 1), averaged over the batch. p, z: [B, D]. The paper's
    stop-gradient on z is in the method file."""
    return -F.cosine_similarity(p, z, dim=1).mean()


@full_precision
def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", arXiv 2103.03230, Eq. 1):

        C_ij = sum_b z1n_bi z2n_bj / B   (z1n, z2n: each dimension normalised over the batch to
                                          mean 0 and std 1, as the paper's BatchNorm without affine)
        loss = sum_i (1 - C_ii)^2  +  lambd * sum_i sum_{j != i} C_ij^2
                invariance term          redundancy-reduction term

    z1, z2: [B, D] projections of two views. lambd = 5e-3 in the paper (D = 8192). The std is the
    biased one (divide by B) with eps added to the variance, as BatchNorm1d does.
    """
    def batch_normalise(z):
        return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)

    batch_size, dimension = z1.shape
    c = batch_normalise(z1).t() @ batch_normalise(z2) / batch_size     # [D, D]
    on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
    off_diagonal = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diagonal + lambd * off_diagonal


# Vision Transformers: MoCo v3
@full_precision
def moco_v3_contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """MoCo v3's ctr(q, k) (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision
    Transformers", arXiv 2104.02057, Algorithm 1): InfoNCE against the keys of the same batch, times 2 tau.

        logits = q k^T / tau                     # [N, M], row i: query i against every key
        labels = offset + range(N)               # the positive of query i is key offset + i
        ctr(q, k) = 2 tau * CrossEntropy(logits, labels)

    q: [N, C] queries (this process's rows); k: [M, C] keys of the whole global batch (M = N in one
    process, W N over W processes, whose rank r passes offset r N). Both L2-normalised by the caller,
    as for `info_nce`. With offset 0 and M = N it is 2 tau * info_nce_in_batch(q, k, tau). The factor
    2 tau is the paper's (Algorithm 1; official code moco/builder.py): it cancels the 1/tau that the
    logits put into the gradient, so the size of a step depends less on the choice of tau.
    """
    logits = q @ k.t() / temperature                                          # [N, M]
    labels = offset + torch.arange(q.shape[0], device=q.device)               # [N]
    return 2 * temperature * F.cross_entropy(logits, labels)


# Self-distillation: DINO
@full_precision
def dino_loss(student_logits: list[torch.Tensor], teacher_logits: list[torch.Tensor], center: torch.Tensor,
              student_temperature: float = 0.1, teacher_temperature: float = 0.04) -> torch.Tensor:
    """DINO's cross-entropy between teacher and student (Caron et al. 2021, "Emerging Properties in
    Self-Supervised Vision Transformers", arXiv 2104.14294, Eq. 3 and Algorithm 1):

        P_t = softmax((t - C) / tau_t)      the teacher's output, centred and sharpened
        P_s = softmax(s / tau_s)            the student's output (no centre)
        H(P_t, P_s) = -sum_k P_t^(k) log P_s^(k),  averaged over the batch
        loss = mean over pairs (a, b), a != b, of H(P_t(crop a), P_s(crop b))          (Eq. 3)

    (Eq. 3 sums over the pairs; main_dino.py's DINOLoss averages, as here.)

    student_logits: one [B, K] tensor per crop (the global crops first, then the local ones);
    teacher_logits: one [B, K] tensor per global crop; center: C [K]. A teacher crop is never
    compared with the student's output for the same crop. The teacher's stop-gradient belongs to
    the caller. With P_t in place of SwAV's codes this is SwAV's swapped prediction, so it reuses it.
    """
    targets = [torch.softmax((t.float() - center) / teacher_temperature, dim=1) for t in teacher_logits]
    return swav_loss([s.float() for s in student_logits], targets, student_temperature)


# Masked image modelling: MAE
@full_precision
def mae_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalize_target: bool = True,
             eps: float = 1e-6) -> torch.Tensor:
    """MAE's reconstruction loss (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners",
    arXiv 2111.06377, Sec. 3 "Reconstruction target"): the mean squared error of each patch's
    pixels, averaged over the masked patches only (like BERT, visible patches carry no loss):

        L = sum_i m_i * mean_j (prediction_ij - target_ij)^2 / sum_i m_i

    prediction, target: [B, N, P] (P = p*p*3 pixel values per patch); mask: [B, N], 1 = masked.
    normalize_target: each target patch becomes (x - mean) / sqrt(var + eps) over its own P values
    (Table 1d "w/ norm"; unbiased variance and eps 1e-6 as the official models_mae.py).
    """
    if normalize_target:
        target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + eps).sqrt()
    per_patch = (prediction - target).pow(2).mean(dim=-1)                   # [B, N]
    return (per_patch * mask).sum() / mask.sum()


@full_precision
def clip_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor,
              logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the N x N image-text similarities (Radford et al. 2021,
    arXiv 2103.00020, Figure 3):

        I_e = l2_normalize(I_f @ W_i);  T_e = l2_normalize(T_f @ W_t)     # here: normalised inside
        logits = I_e @ T_e^T * exp(t)                                      # [N, N]
        labels = arange(n)
        loss_i = cross_entropy(logits, labels, axis=0)                     # each text: which image?
        loss_t = cross_entropy(logits, labels, axis=1)                     # each image: which text?
        loss = (loss_i + loss_t) / 2

    image_embeddings, text_embeddings: [N, D] projected, not yet normalised; pair i is row i of both.
    logit_scale: exp(t), already exponentiated and clamped (the method clamps it at 100).
    """
    if image_embeddings.shape != text_embeddings.shape or image_embeddings.dim() != 2:
        raise SSLMinimalError(f"clip_loss needs image and text embeddings of the same shape [N, D], got "
                              f"{list(image_embeddings.shape)} and {list(text_embeddings.shape)}")
    image_embeddings = F.normalize(image_embeddings, dim=1)                 # I_e [N, D]
    text_embeddings = F.normalize(text_embeddings, dim=1)                   # T_e [N, D]
    logits = logit_scale * image_embeddings @ text_embeddings.t()          # [N, N]: row = image, column = text
    labels = torch.arange(len(logits), device=logits.device)
    image_to_text = F.cross_entropy(logits, labels)                         # softmax over the texts of each image
    text_to_image = F.cross_entropy(logits.t(), labels)                     # softmax over the images of each text
    return (image_to_text + text_to_image) / 2
