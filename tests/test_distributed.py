"""torch.distributed on CPU (gloo, 2 processes): the same global batch gives the same update as one process.

Each test starts two processes the way torchrun would (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
environment) and lets `fit` join the group. BatchNorm is replaced by Identity in these models: on CPU
there is no SyncBatchNorm, and per-process BN statistics would (rightly) differ from one process's.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as multiprocessing
from torch import nn

import ssl_minimal
from ssl_minimal import distributed
from ssl_minimal.data import ImageDataset

BATCH = 16


def _dataset() -> ImageDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=generator)
    return ImageDataset("tiny", "train", images, torch.arange(32) % 4, list("abcd"), (0.5,) * 3, (0.29,) * 3)


def _model(name: str, dataset: ImageDataset) -> nn.Module:
    torch.manual_seed(0)
    model = ssl_minimal.build(name, dataset=dataset, backbone_options={"width": 8},
                              **({"num_noise": 8, "bank_init": "random"} if name == "instdisc" else {}))
    for module_name, module in list(model.encoder.named_modules()):
        if isinstance(module, nn.BatchNorm2d):                       # no SyncBatchNorm on CPU
            parent = model.encoder.get_submodule(module_name.rsplit(".", 1)[0])
            setattr(parent, module_name.rsplit(".", 1)[1], nn.Identity())
    model.augment = ToFloat()                                        # the same views in every process
    return model


class ToFloat(nn.Module):
    """A deterministic stand-in for the random augmentation: uint8 -> float in [0, 1]."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255


def _train(name: str, steps: int):
    dataset = _dataset()
    model = _model(name, dataset)
    ssl_minimal.fit(model, dataset, "smoke", epochs=steps * BATCH // len(dataset), batch_size=BATCH,
                    learning_rate=0.5, warmup_epochs=0, progress=False, device="cpu")
    return model


def _worker(rank: int, port: int, folder: str, name: str, steps: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        model = _train(name, steps)
        assert distributed.world_size() == 2 and distributed.rank() == rank
        torch.save(model.state_dict(), os.path.join(folder, f"rank{rank}.pt"))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_two_processes(tmp_path, name: str, steps: int):
    multiprocessing.spawn(_worker, args=(_free_port(), str(tmp_path), name, steps), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.slow
def test_two_processes_take_the_same_steps_as_one_on_the_global_batch(tmp_path):
    """InvaSpread's negatives span the global batch (gather_with_gradient) and DDP averages gradients:
    2 processes x 8 images must give the parameters of 1 process x 16 images."""
    rank0, rank1 = _run_two_processes(tmp_path, "invaspread", steps=2)
    single = _train("invaspread", steps=2).state_dict()
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between the two processes"
        assert torch.allclose(rank0[key], value, atol=1e-5), f"{key}: 2 processes != 1 process"
    initial = _model("invaspread", _dataset()).state_dict()
    assert not torch.allclose(rank0["head.weight"], initial["head.weight"])      # it did train


@pytest.mark.slow
def test_memory_bank_gets_the_rows_of_the_whole_global_batch_on_every_process(tmp_path):
    """InstDisc draws its own noise per process (so no equality with one process), but parameters
    stay identical across processes and every process's bank holds the same updated rows. (The paper's
    random initial bank here, so that every row written by an update is seen to change.)"""
    rank0, rank1 = _run_two_processes(tmp_path, "instdisc", steps=2)
    for key in rank0:
        assert torch.allclose(rank0[key], rank1[key], atol=1e-6), f"{key} differs between the processes"
    initial = _model("instdisc", _dataset()).memory_bank.bank
    changed = (rank0["memory_bank.bank"] - initial).abs().sum(dim=1) > 0
    assert changed.all(), "rows of images seen by the other process were not updated"


def test_helpers_are_no_ops_in_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main_process()
    assert distributed.gather_with_gradient(x) is x and distributed.all_reduce_sum(x) is x
    assert torch.equal(distributed.gather(x), x) and torch.equal(distributed.local_slice(x), x)
