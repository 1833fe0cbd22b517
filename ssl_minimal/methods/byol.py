"""BYOL — "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning".

Jean-Bastien Grill, Florian Strub, Florent Altché, Corentin Tallec, Pierre H. Richemond, et al.
NeurIPS 2020. arXiv:2006.07733.

The idea: an online network (encoder -> projector -> predictor) learns to predict the projection
that a *target* network gives for another view of the same image. The target is not trained: it is
an exponential moving average of the online network, so it changes slowly and provides stable,
ever-improving targets. No negatives; the predictor plus the slow target avoid collapse.

Code follows the paper's Fig. 2 and Sec. 3.1:
    online:  y = f_theta(v), z = g_theta(y), p = q_theta(z);   target: z'_xi = g_xi(f_xi(v'))
    L = ||p/|p| - z'/|z'|||^2 = 2 - 2 cos(p, z'), symmetrised: L_total = L + L~           (Eq. 2)
    xi <- tau xi + (1 - tau) theta,  tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2      (Sec. 3.2)
Paper values (Sec. 3.3, Appendix B/C): projector and predictor = Linear(4096) -> BN -> ReLU ->
Linear(256); tau_base = 0.996; LARS, lr 0.2 x B/256, weight decay 1.5e-6; view 1 / view 2
augmentations of Table 6 (recipes byol_view1, byol_view2).
Collapse lesson: `projector_batch_norm=False, predictor_batch_norm=False` removes the BatchNorm of
the heads (Fetterman & Albrecht, "Understanding self-supervised and contrastive learning with
BYOL", Untitled AI blog, 2020, found it then collapses). `norm="group_ws"` uses no batch statistics
anywhere, as in Richemond et al. 2020, "BYOL works even without batch statistics", arXiv 2010.10241:
GroupNorm instead of every BatchNorm and weight standardisation in every conv and linear layer,
a data-dependent initialisation on the first batch that gives every channel the statistics
BatchNorm would give at step 0 (Richemond et al. also train a BN-free BYOL from such an
initialisation), and LARS adaptation for every parameter. All three are needed in our small runs
(notebook 10): without any one of them the network collapses through its shifts (biases, betas).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import augmentations, distributed, losses
from ..checks import SSLMinimalError
from ..heads import mlp
from ..method import Method
from ..momentum import cosine_momentum, momentum_copy, momentum_update

HIDDEN_DIM = 4096         # Sec. 3.3: MLP hidden size 4096
PROJECTION_DIM = 256      # Sec. 3.3: output size 256
BASE_MOMENTUM = 0.996     # Sec. 3.3: tau_base = 0.996


class BYOL(Method):
    name = "byol"
    optimizer = "lars"
    learning_rate = 0.2    # Sec. 3.3: lr = 0.2 x BatchSize / 256
    weight_decay = 1.5e-6  # Sec. 3.3
    augmentation = "byol_view1"

    def __init__(self, hidden_dim: int = HIDDEN_DIM, projection_dim: int = PROJECTION_DIM,
                 base_momentum: float = BASE_MOMENTUM, projector_batch_norm: bool = True,
                 predictor_batch_norm: bool = True, norm: str = "batch", image_size: int = 32,
                 **encoder_options):
        if norm not in ("batch", "group_ws"):
            raise SSLMinimalError(f"BYOL norm must be 'batch' or 'group_ws', got {norm!r}")
        if norm == "group_ws":   # no batch statistics anywhere (Richemond et al. 2020)
            encoder_options["backbone_options"] = {**encoder_options.get("backbone_options", {}), "norm": "group_ws"}
        super().__init__(image_size=image_size, **encoder_options)
        self.norm = norm
        self.augment_prime = augmentations.recipe("byol_view2", image_size)   # T' (Table 6)
        self.base_momentum = base_momentum
        self.tau = base_momentum

        def head_norm(batch_norm: bool) -> str:
            return "group_ws" if norm == "group_ws" else ("batch" if batch_norm else "none")

        # online network: f_theta = self.encoder, g_theta = projector, q_theta = predictor
        self.projector = mlp([self.encoder.output_dim, hidden_dim, projection_dim], norm=head_norm(projector_batch_norm))
        self.predictor = mlp([projection_dim, hidden_dim, projection_dim], norm=head_norm(predictor_batch_norm))
        # target network: f_xi, g_xi start as copies of the online ones and get no gradients
        self.target_encoder = momentum_copy(self.encoder)
        self.target_projector = momentum_copy(self.projector)
        # group_ws: the data-dependent initialisation still has to happen (on the first training batch).
        self.register_buffer("needs_initialisation", torch.tensor(norm == "group_ws"))

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        v1, v2 = self.augment(images), self.augment_prime(images)        # v ~ T, v' ~ T'
        if self.needs_initialisation:
            self.initialise_like_batch_norm(distributed.gather(v1))      # the same global batch everywhere
        p1 = self.predictor(self.projector(self.encoder(v1)))            # q_theta(z_theta), [B, 256]
        p2 = self.predictor(self.projector(self.encoder(v2)))
        with torch.no_grad():                                            # sg(z'_xi): targets only
            z1 = self.target_projector(self.target_encoder(v1))          # [B, 256]
            z2 = self.target_projector(self.target_encoder(v2))
        return losses.byol_loss(p1, z2) + losses.byol_loss(p2, z1)       # L + L~ (Eq. 2)

    @torch.no_grad()
    def initialise_like_batch_norm(self, views: torch.Tensor) -> None:
        """Data-dependent init of a network without batch statistics (as in Richemond et al. 2020):
        rescale and shift every GroupNorm so that on `views` each of its channels has mean 0 and std 1
        over the batch, as BatchNorm would give; then the target starts as a copy again."""
        standardise_channels(nn.Sequential(self.encoder, self.projector), views)
        standardise_channels(self.predictor, self.projector(self.encoder(views)))
        self.target_encoder.load_state_dict(self.encoder.state_dict())
        self.target_projector.load_state_dict(self.projector.state_dict())
        self.needs_initialisation.fill_(False)

    def parameter_groups(self) -> list[dict]:
        if self.norm != "group_ws":
            return super().parameter_groups()
        # Without batch statistics, a shift (bias, GroupNorm beta) that takes plain SGD steps is the
        # quickest way to a constant output. In one group, LARS scales every update to lr * eta * ||w||.
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lars_adapt_all": True}]

    def after_optimizer_step(self, progress: float) -> None:
        # xi <- tau xi + (1 - tau) theta, with tau rising from tau_base to 1 (Sec. 3.2)
        self.tau = cosine_momentum(self.base_momentum, progress)
        momentum_update(self.target_encoder, self.encoder, self.tau)
        momentum_update(self.target_projector, self.projector, self.tau)


@torch.no_grad()
def standardise_channels(network: nn.Module, inputs: torch.Tensor) -> None:
    """One forward pass of `inputs` through `network`; each GroupNorm on the way gets the scale and
    shift that make its output channels mean 0, std 1 over the batch (later layers see the result)."""
    def standardise(norm: nn.GroupNorm, _, output: torch.Tensor) -> torch.Tensor:   # [B, C] or [B, C, H, W]
        dims = [0] + list(range(2, output.dim()))
        mean, std = output.mean(dim=dims), output.std(dim=dims) + 1e-5           # [C]
        norm.weight.div_(std)                                  # gamma' = gamma / std
        norm.bias.sub_(mean).div_(std)                         # beta' = (beta - mean) / std
        shape = [1, -1] + [1] * (output.dim() - 2)
        return (output - mean.view(shape)) / std.view(shape)

    hooks = [m.register_forward_hook(standardise) for m in network.modules() if isinstance(m, nn.GroupNorm)]
    try:
        network(inputs)
    finally:
        for hook in hooks:
            hook.remove()
