"""torch.distributed on CPU (gloo, 2 processes): the same global batch gives the same update as one process.

Two processes start once, the way torchrun would (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
environment), join a gloo group and run every scenario below (most of them call `fit`). Each
scenario returns what it found on its process, and the tests compare the processes with each other
and with a run in this process on the whole global batch. The last test runs the real launcher.

BatchNorm: with several processes every BatchNorm normalises its own process's slice with the
statistics of that slice (as in the papers' multi-GPU runs; SyncBatchNorm, which would share them,
runs only on CUDA), so with BatchNorm 2 processes x 8 images are *meant* to differ from 1 process
x 16 images. The tests that compare with one process therefore take BatchNorm out of the model
(encoder and heads: every BatchNorm becomes Identity): what they check is everything else - the
gathers, Sinkhorn's sums over processes and DDP's gradient averaging - which must then agree to
rounding. The MoCo tests keep BatchNorm, because shuffling BN is what they check.
"""

import contextlib
import datetime
import functools
import io
import json
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as multiprocessing
import torch.nn.functional as F
from torch import nn

import ssl_minimal
from ssl_minimal import augmentations, cli, distributed, losses, training
from ssl_minimal.data import ImageDataset
from ssl_minimal.methods.moco import MoCoV1
from ssl_minimal.text import Tokenizer

BATCH = 16            # the global batch: 8 images per process
WORLD = 2
SWAV_OPTIONS = dict(hidden_dim=32, projection_dim=16, num_prototypes=10, num_local_crops=2, image_size=16,
                    queue_size=16, freeze_prototypes_epochs=0)   # queue used from step 2; prototypes train
SMALL_VIT = {"dim": 16, "depth": 1, "heads": 2, "patch_size": 4}
VIT_OPTIONS = {"moco_v3": dict(backbone_options=SMALL_VIT, hidden_dim=32, projection_dim=16),
               "dino": dict(backbone_options=SMALL_VIT, hidden_dim=32, bottleneck_dim=16, output_dim=64,
                            num_local_crops=2)}


CAPTIONS = ["a red star", "a blue circle", "a star on green", "the circle is red"]


def _dataset() -> ImageDataset:
    """32 random images in 4 classes, with one caption each (only CLIP reads them)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=generator)
    tokenizer = Tokenizer.from_texts(CAPTIONS)
    captions = tokenizer(CAPTIONS)[torch.arange(32) % 4][:, None]           # [32, 1, L]: one caption per image
    return ImageDataset("tiny", "train", images, torch.arange(32) % 4, list("abcd"), (0.5,) * 3, (0.29,) * 3,
                        captions=captions, tokenizer=tokenizer)


class ToFloat(nn.Module):
    """A deterministic stand-in for the random augmentation: uint8 -> float in [0, 1]."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255


class Mirror(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flip(3)


class Shrink(nn.Module):
    """A deterministic stand-in for DINO's local crops: the image at half its size."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(images.float() / 255, scale_factor=0.5, mode="bilinear", align_corners=False)


def _fixed_multi_crop(images, global_size, local_size, num_global=2, num_local=6, **_):
    """A deterministic stand-in for SwAV's multi-crop: the image and its mirror image, then shrunk copies."""
    x = images.float() / 255
    small = F.interpolate(x, size=local_size, mode="bilinear", align_corners=False)
    return [x, x.flip(3)][:num_global] + [small, small.flip(3)] * (num_local // 2)


def _model(name: str, batch_norm: bool = False, random_views: bool = False, **options) -> nn.Module:
    torch.manual_seed(0)
    options = {**(SWAV_OPTIONS if name == "swav" else {}), **({"projection_dim": 16} if name == "barlow_twins" else {}), **({"num_noise": 8, "bank_init": "random"} if name == "instdisc" else {}),
               **(VIT_OPTIONS.get(name, {})), **options}
    options.setdefault("backbone_options", {"width": 8})
    model = ssl_minimal.build(name, dataset=_dataset(), **options)
    if not batch_norm:                                       # see the module docstring
        for module_name, module in list(model.named_modules()):
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                parent, _, child = module_name.rpartition(".")
                setattr(model.get_submodule(parent), child, nn.Identity())
    if name in VIT_OPTIONS or name == "clip":   # CLIP's text encoder is a transformer too
        # Plain SGD instead of the paper's AdamW: attention's key bias has an exactly-zero gradient
        # (adding q.b to every logit of a row leaves its softmax unchanged), so it only gets rounding
        # noise (~1e-10), different in 1 and 2 processes, and Adam, dividing each gradient by its own
        # size, turns that noise into full-size steps. SGD keeps noise noise.
        model.optimizer = "sgd"
    if not random_views:
        model.augment = ToFloat()                            # the same views in every process
        if hasattr(model, "augment_prime"):                  # Barlow Twins' second view: the mirror image
            model.augment_prime = nn.Sequential(ToFloat(), Mirror())
        if hasattr(model, "augment_local"):                  # DINO's local crops: shrunk copies
            model.augment_local = Shrink()
    return model


def _fit(model: nn.Module, steps: int, **options) -> training.History:
    # fp32: these tests compare 1 process with 2 to 1e-5, and bf16 rounds a batch of 8 unlike one of 16.
    return ssl_minimal.fit(model, _dataset(), "smoke", epochs=steps * BATCH // len(_dataset()), batch_size=BATCH,
                           learning_rate=0.5, warmup_epochs=0, progress=False, device="cpu", precision="fp32",
                           **options)


# ----------------------------------------------------------------------------------------------
# What the two processes do. Each scenario runs in both and returns what the tests compare.
def _train(folder: Path, name: str) -> dict:
    model = _model(name)
    history = _fit(model, steps=2)
    return {"state": model.state_dict(), "loss": history.loss}


def _sinkhorn(folder: Path) -> torch.Tensor:
    return losses.sinkhorn(distributed.local_slice(SINKHORN_SCORES), epsilon=0.05, iterations=3)


def _moco_keys(folder: Path) -> torch.Tensor:
    torch.manual_seed(0)
    model = MoCoV1(queue_size=16, backbone_options={"width": 8})
    torch.manual_seed(100 + distributed.rank())       # rank 1's own permutation would differ from rank 0's
    return model.key(distributed.local_slice(MOCO_IMAGES))


def _moco_queue(folder: Path) -> dict:
    model = _model("moco_v2", batch_norm=True, queue_size=48, num_samples=None)
    keys, original_key = [], model.key

    def recording_key(x):
        k = original_key(x)
        keys.append(k.clone())
        return k

    model.key = recording_key
    _fit(model, steps=2)
    return {"state": model.state_dict(), "keys": keys}


def _checkpoint_and_resume(folder: Path) -> dict:
    """4 steps stopped after 2, resumed; then the same 4 steps uninterrupted. Records who wrote."""
    writers, original = [], training.save_checkpoint

    def recording_save(path, state):
        writers.append(distributed.rank())
        original(path, state)

    def run(path: str, **options) -> dict:
        model = _model("simclr_v1", random_views=True)       # each process draws its own augmentations
        history = _fit(model, steps=4, checkpoint_path=folder / path, **options)
        torch.distributed.barrier()                          # rank 0 has written the checkpoint
        return {"state": model.state_dict(), "steps": history.step}

    training.save_checkpoint = recording_save
    try:
        run("resumed.pt", max_steps=2)
        halfway = torch.load(folder / "resumed.pt", weights_only=False)
        return {"writers": writers, "halfway_step": halfway["step"], "halfway_rng": halfway["cpu_rng"],
                "resumed": run("resumed.pt", resume=True), "uninterrupted": run("uninterrupted.pt")}
    finally:
        training.save_checkpoint = original


def _cli_with_sync_batch_norm(folder: Path) -> tuple[int, str]:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        code = cli.main(["train", "simclr_v1", "--budget", "smoke", "--epochs", "1", "--batch-size", "16",
                         "--train-samples", "32", "--device", "cpu", "--no-progress", "--sync-batch-norm",
                         "--output", str(folder / "run")])
    return code, errors.getvalue()


SINKHORN_SCORES = torch.randn(12, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.3
SINKHORN_SCORES[9, 2] = 1.0             # the largest score is in process 1's rows
MOCO_IMAGES = torch.rand(BATCH, 3, 16, 16, generator=torch.Generator().manual_seed(1))
TRAINED = ["invaspread", "simclr_v1", "simclr_v2", "swav", "instdisc", "barlow_twins", "moco_v3", "dino", "clip"]
SCENARIOS = {**{name: functools.partial(_train, name=name) for name in TRAINED},
             "sinkhorn": _sinkhorn, "moco_keys": _moco_keys, "moco_queue": _moco_queue,
             "checkpoint": _checkpoint_and_resume, "sync_batch_norm": _cli_with_sync_batch_norm}


class ScenarioFailed(str):
    """What a scenario that raised returns instead of its result: the traceback."""


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    augmentations.multi_crop = _fixed_multi_crop             # this process only (SwAV's crops)
    # The group fit would join (distributed.setup), with a timeout: a broken collective fails in minutes, not 30.
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    try:
        assert distributed.world_size() == WORLD and distributed.rank() == rank
        for name, scenario in SCENARIOS.items():
            (Path(folder) / name).mkdir(exist_ok=True)
            try:
                result = scenario(Path(folder) / name)
            except Exception:                                 # fails that scenario's test only
                result = ScenarioFailed(traceback.format_exc())
            torch.save(result, Path(folder) / f"{name}-rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Starting two processes costs seconds (each imports torch and ssl_minimal), so they start once
    and run every scenario. two_processes(name) -> [what rank 0 returned, what rank 1 returned]."""
    folder = tmp_path_factory.mktemp("two_processes")
    multiprocessing.spawn(_worker, args=(_free_port(), str(folder)), nprocs=WORLD, join=True)

    def results(name: str) -> list:
        found = [torch.load(folder / f"{name}-rank{rank}.pt", weights_only=False) for rank in range(WORLD)]
        for rank, result in enumerate(found):
            if isinstance(result, ScenarioFailed):
                pytest.fail(f"scenario {name!r} raised on rank {rank}:\n{result}")
        return found
    return results


@pytest.fixture
def fixed_multi_crop(monkeypatch):
    monkeypatch.setattr(augmentations, "multi_crop", _fixed_multi_crop)


# ----------------------------------------------------------------------------------------------
# 2 processes = 1 process on the global batch
@pytest.mark.slow
@pytest.mark.parametrize("name", ["invaspread", "simclr_v1", "simclr_v2", "swav", "barlow_twins", "moco_v3", "dino",
                                  "clip"])
def test_two_processes_take_the_same_steps_as_one_on_the_global_batch(two_processes, fixed_multi_crop, name):
    """2 processes x 8 images must give the loss and parameters of 1 process x 16 images: InvaSpread's
    and SimCLR's negatives and Barlow Twins' cross-correlation span the global batch (gather_with_gradient), SwAV's Sinkhorn partitions
    the global batch and its queue (queue_size 16: used at step 2), MoCo v3's queries meet the keys of
    the global batch (gather: keys have no gradient), DINO's centre is the mean over the global batch
    (all_reduce_sum), CLIP's N x N image-text matrix spans the global batch (gather_with_gradient on
    both embeddings), and DDP averages the gradients.
    Two LARS/SGD steps, so the second step also checks that the first left every process the same."""
    rank0, rank1 = two_processes(name)
    single = _model(name)
    history = _fit(single, steps=2)
    for key, value in single.state_dict().items():
        assert torch.equal(rank0["state"][key], rank1["state"][key]), f"{key} differs between the two processes"
        assert torch.allclose(rank0["state"][key], value, atol=1e-5), f"{key}: 2 processes != 1 process"
    # SwAV's, MoCo v3's and DINO's losses are each process's mean over its own rows; the other
    # contrastive losses are global on every process.
    mean_loss = [(a + b) / 2 for a, b in zip(rank0["loss"], rank1["loss"])]
    assert mean_loss == pytest.approx(history.loss, abs=1e-5)
    if name not in ("swav", "moco_v3", "dino"):
        assert rank0["loss"] == pytest.approx(rank1["loss"], abs=1e-6)
    first_layer = "encoder.backbone.blocks.0.attention.qkv.weight" if name in VIT_OPTIONS else "encoder.backbone.layers.0.0.weight"
    assert not torch.allclose(single.state_dict()[first_layer], _model(name).state_dict()[first_layer])   # it trained


@pytest.mark.slow
def test_sinkhorn_over_two_processes_is_sinkhorn_of_the_global_batch(two_processes):
    """Each process passes its 6 rows and gets its 6 rows of the codes of all 12 (column sums, total
    mass, B and the max-subtraction are all global). The largest score is in process 1's rows, so a
    per-process maximum would change process 0's codes."""
    codes = torch.cat(two_processes("sinkhorn"))
    assert torch.allclose(codes, losses.sinkhorn(SINKHORN_SCORES, epsilon=0.05, iterations=3), atol=1e-12)


# ----------------------------------------------------------------------------------------------
# MoCo: shuffling BN across processes, the queue
@pytest.mark.slow
def test_moco_shuffling_bn_across_processes_is_the_one_process_shuffle_with_one_bn_batch_per_process(two_processes):
    """Sec. 3.3: the key images of both processes are shuffled with rank 0's permutation, each process
    encodes its half with its own BN statistics, and the keys come back to their images. That is
    exactly one process's key() with bn_groups=2 and the same permutation - and not the keys of each
    process's own, unshuffled images."""
    keys = torch.cat(two_processes("moco_keys"))                          # [16, 128], rank order
    torch.manual_seed(0)
    model = MoCoV1(queue_size=16, bn_groups=WORLD, backbone_options={"width": 8})
    torch.manual_seed(100)
    assert torch.allclose(keys, model.key(MOCO_IMAGES), atol=1e-5)
    with torch.no_grad():
        unshuffled = torch.cat([F.normalize(model.key_head(model.key_encoder(half)), dim=1)
                                for half in MOCO_IMAGES.chunk(WORLD)])
    assert not torch.allclose(keys, unshuffled, atol=1e-3)


@pytest.mark.slow
def test_moco_queue_holds_the_keys_of_the_whole_global_batch_in_rank_order_on_every_process(two_processes):
    rank0, rank1 = two_processes("moco_queue")
    queue0, queue1 = rank0["state"]["queue.keys"], rank1["state"]["queue.keys"]
    assert torch.equal(queue0, queue1), "the processes hold different queues"
    expected = torch.cat([torch.cat([k0, k1]) for k0, k1 in zip(rank0["keys"], rank1["keys"])])   # [32, 128]
    assert torch.allclose(queue0[:2 * BATCH], expected), "queue rows are not step 1 (rank 0, rank 1), step 2 (...)"
    assert rank0["state"]["queue.ptr"].item() == 2 * BATCH
    # Parameters (query and key encoders, heads) agree; BN running statistics are per process.
    for key in rank0["state"]:
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.allclose(rank0["state"][key], rank1["state"][key], atol=1e-6), f"{key} differs"
    initial = _model("moco_v2", batch_norm=True, queue_size=48, num_samples=None).state_dict()
    assert not torch.allclose(rank0["state"]["key_encoder.backbone.layers.0.0.weight"],
                              initial["key_encoder.backbone.layers.0.0.weight"])     # the key encoder moved


# ----------------------------------------------------------------------------------------------
# Other methods' state, checkpoints, SyncBatchNorm
@pytest.mark.slow
def test_memory_bank_gets_the_rows_of_the_whole_global_batch_on_every_process(two_processes):
    """InstDisc draws its own noise per process (so no equality with one process), but parameters
    stay identical across processes and every process's bank holds the same updated rows."""
    rank0, rank1 = [result["state"] for result in two_processes("instdisc")]
    for key in rank0:
        assert torch.allclose(rank0[key], rank1[key], atol=1e-6), f"{key} differs between the processes"
    initial = _model("instdisc").memory_bank.bank
    changed = (rank0["memory_bank.bank"] - initial).abs().sum(dim=1) > 0
    assert changed.all(), "rows of images seen by the other process were not updated"


@pytest.mark.slow
def test_rank_0_alone_writes_the_checkpoint_and_a_resumed_run_continues_exactly(two_processes):
    """Stopped after 2 of 4 steps and resumed, a 2-process run ends where the uninterrupted one does:
    the checkpoint holds every process's random generator, so the augmentations continue too."""
    rank0, rank1 = two_processes("checkpoint")
    assert rank0["writers"] == [0, 0, 0] and rank1["writers"] == []       # halfway, end, end of the other run
    assert rank0["halfway_step"] == 2 and rank0["halfway_rng"].shape[0] == WORLD
    assert not torch.equal(rank0["halfway_rng"][0], rank0["halfway_rng"][1])
    assert rank0["resumed"]["steps"] == [1, 2, 3, 4]
    for key, value in rank0["uninterrupted"]["state"].items():
        if "running" not in key and "num_batches" not in key:           # BN statistics are per process
            assert torch.equal(rank0["resumed"]["state"][key], rank1["resumed"]["state"][key]), key
        assert torch.equal(rank0["resumed"]["state"][key], value), f"{key}: resumed run != uninterrupted run"


@pytest.mark.slow
def test_sync_batch_norm_on_cpu_is_a_clear_error(two_processes):
    """torch 2.14 refuses SyncBatchNorm on CPU twice: DDP's constructor ("SyncBatchNorm layers only work
    with GPU modules") and SyncBatchNorm.forward ("expected input tensor to be on GPU"). So
    --sync-batch-norm under gloo stops before training, with a one-line error that says why."""
    for code, message in two_processes("sync_batch_norm"):
        assert code == 2 and "sync_batch_norm needs CUDA devices" in message and "Traceback" not in message


def test_sync_batch_norm_changes_nothing_in_one_process(tiny_dataset):
    model = ssl_minimal.build("simclr_v1", backbone_options={"width": 8})
    ssl_minimal.fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, max_steps=1, sync_batch_norm=True,
                    progress=False, device="cpu")
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.slow
def test_torchrun_cli_run_writes_its_files_and_resume_continues_it(tmp_path):
    """The real launcher: `torchrun --nproc_per_node=2 -m ssl_minimal train ...`, stopped after 2 of
    4 steps, then `--resume`d to the end."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               "-m", "ssl_minimal", "train", "simclr_v1", "--budget", "smoke", "--epochs", "2",
               "--batch-size", "16", "--train-samples", "32", "--backbone", "small_convnet", "--device", "cpu",
               "--no-progress", "--output", str(tmp_path / "run")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    first = subprocess.run(command + ["--max-steps", "2"], env=environment, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count("training simclr_v1") == 1 and first.stdout.count("saved ") == 1   # rank 0 reports
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 2
    second = subprocess.run(command + ["--resume"], env=environment, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["step"] == [1, 2, 3, 4] and len(history["knn_accuracy"]) == 3   # baseline, epoch 1, epoch 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "history.json",
                                                                    "training_curves.png"]


def test_helpers_are_no_ops_in_one_process():
    x = torch.randn(4, 2, requires_grad=True)
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main_process()
    assert distributed.gather_with_gradient(x) is x and distributed.all_reduce_sum(x) is x
    assert distributed.all_reduce_max(x) is x and distributed.broadcast(x) is x
    assert torch.equal(distributed.gather(x), x) and torch.equal(distributed.local_slice(x), x)
