"""Several processes (GPUs or machines) through torch.distributed — and nothing at all in one process.

Start a run with PyTorch's own launcher, one process per GPU:

    torchrun --nproc_per_node=4 -m ssl_minimal train simclr_v1 --dataset cifar10

`fit` then calls `setup()` (which reads the RANK / WORLD_SIZE / LOCAL_RANK variables torchrun sets),
wraps the method in DistributedDataParallel (gradients averaged over processes) and gives each
process its slice of every global batch: the budget's `batch_size` is the *global* batch, so the
learning-rate scaling rule (lr = base_lr * batch_size / 256) and every result mean the same thing
whatever the number of processes. Checkpoints are written by rank 0 only (with every process's
random generator, so a resumed run continues exactly).

BatchNorm normalises each process's slice with that slice's own statistics. `fit(...,
sync_batch_norm=True)` (CLI `--sync-batch-norm`) converts every BatchNorm to torch.nn.SyncBatchNorm,
whose statistics span the global batch; torch runs it on CUDA only (NCCL), not with gloo on CPU.

The helpers below are what a method needs when its loss spans the whole global batch. In a single
process every one of them returns its input unchanged, so method files call them unconditionally:

- `gather_with_gradient(x)`: the embeddings of every process, concatenated in rank order, with the
  gradient flowing back to the process that computed each row (SimCLR's negatives, CLIP).
- `gather(x)`: the same without gradient (MoCo's and SwAV's queue, a memory bank's rows, the key
  images of MoCo's shuffling BN, MoCo v3's keys).
- `all_reduce_sum(x)`, `all_reduce_max(x)`: sums / maxima over processes (SwAV's Sinkhorn
  normalisation over the global batch, DINO's centre).
- `broadcast(x)`: rank 0's tensor on every process (MoCo's shuffling-BN permutation).

Why computing the *global* loss on every process gives the right gradient: each process's loss is
the same L(z_all). Backward through all_gather sums the W identical gradients for the local rows,
W * dL/dz_local, and DDP divides by W: the parameters get exactly dL/dtheta.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .checks import SSLMinimalError


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """Rank 0: the process that prints, writes checkpoints and saves figures."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group that torchrun describes in the environment (no-op without WORLD_SIZE > 1).

    Backend: NCCL for CUDA, gloo for CPU. Returns the device of this process (cuda:LOCAL_RANK on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def local_slice(global_batch: torch.Tensor) -> torch.Tensor:
    """This process's contiguous share of a global batch (rank r gets rows r*B/W .. (r+1)*B/W)."""
    if global_batch.shape[0] % world_size():
        raise SSLMinimalError(f"cannot split {global_batch.shape[0]} rows evenly over {world_size()} processes: "
                              f"use a batch (or queue) size divisible by the number of processes")
    share = global_batch.shape[0] // world_size()
    return global_batch[rank() * share:(rank() + 1) * share]


class _GatherWithGradient(torch.autograd.Function):
    """all_gather whose backward sends each process the summed gradient of its own rows."""

    @staticmethod
    def forward(context, tensor: torch.Tensor) -> torch.Tensor:
        pieces = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(pieces, tensor.contiguous())
        return torch.cat(pieces, dim=0)                                  # [B_local * W, ...]

    @staticmethod
    def backward(context, gradient: torch.Tensor) -> torch.Tensor:
        gradient = gradient.contiguous().clone()
        dist.all_reduce(gradient, op=dist.ReduceOp.SUM)                  # every process's dL/dz_all, summed
        return local_slice(gradient)                                     # the rows this process computed


def gather_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """[B_local, ...] -> [B_local * W, ...] in rank order; gradients flow back to each row's process.
    Every process must pass the same number of rows."""
    if not is_distributed():
        return tensor
    return _GatherWithGradient.apply(tensor)


@torch.no_grad()
def gather(tensor: torch.Tensor) -> torch.Tensor:
    """[B_local, ...] -> [B_local * W, ...] in rank order, without gradient."""
    if not is_distributed():
        return tensor
    pieces = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(pieces, tensor.contiguous())
    return torch.cat(pieces, dim=0)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over all processes (a new tensor; the input is not changed).
    For statistics and normalisations (under torch.no_grad): no gradient crosses processes."""
    if not is_distributed():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of `tensor` over all processes (a new tensor; the input is not changed)."""
    if not is_distributed():
        return tensor
    maximum = tensor.clone()
    dist.all_reduce(maximum, op=dist.ReduceOp.MAX)
    return maximum


def broadcast(tensor: torch.Tensor, source: int = 0) -> torch.Tensor:
    """Rank `source`'s `tensor` on every process (a new tensor; every process passes one of the same shape)."""
    if not is_distributed():
        return tensor
    shared = tensor.clone()
    dist.broadcast(shared, src=source)
    return shared
