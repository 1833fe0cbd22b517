"""The command line: one clear line for user mistakes, files written by a run, --resume continues it."""

import json

import pytest
import torch

import ssl_minimal
from ssl_minimal.cli import main


def test_list_names_methods_datasets_and_budgets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ssl_minimal.METHODS)
    assert "shapes" in out and "cifar10" in out and "smoke" in out and "cpu" in out and "gpu" in out


@pytest.mark.parametrize("arguments, expected", [
    (["train", "nosuchmethod"], "unknown method 'nosuchmethod'; valid methods are: instdisc, invaspread"),
    (["train", "instdisc", "--budget", "huge"], "unknown budget 'huge'; valid budgets are: smoke, cpu, gpu, auto"),
    (["train", "instdisc", "--dataset", "imagenet"], "unknown dataset 'imagenet'; valid datasets are: shapes"),
    (["train", "instdisc", "--backbone", "vgg"], "unknown backbone 'vgg'; valid backbones are: small_convnet"),
    (["train", "simclr_v1", "--batch-size", "0"], "--batch-size must be a whole number >= 1, got 0"),
    (["train", "simclr_v1", "--epochs", "-3"], "--epochs must be a whole number >= 1, got -3"),
    (["train", "simclr_v1", "--train-samples", "0"], "--train-samples must be a whole number >= 1, got 0"),
    (["train", "simclr_v1", "--max-steps", "-1"], "--max-steps must be a whole number >= 1, got -1"),
    (["train", "simclr_v1", "--learning-rate", "nan"], "--learning-rate must be a finite number > 0"),
    (["train", "simclr_v1", "--learning-rate", "inf"], "--learning-rate must be a finite number > 0"),
    (["train", "simclr_v1", "--learning-rate", "-0.1"], "--learning-rate must be a finite number > 0"),
])
def test_user_mistakes_are_one_line_without_traceback(capsys, arguments, expected):
    assert main(arguments + ["--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert out == ""                                  # checked before anything is announced or started


def test_an_unknown_dataset_is_reported_before_training_is_announced(capsys):
    assert main(["train", "instdisc", "--dataset", "imagenet", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "training" not in out and "unknown dataset 'imagenet'" in err


def test_missing_data_offline_says_how_to_get_it(capsys, monkeypatch, tmp_path):
    import torchvision.datasets.utils

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", no_network)
    assert main(["train", "instdisc", "--dataset", "cifar100", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "SSL_DATA_DIR" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_run_writes_its_files_and_resume_continues_it(capsys, tmp_path):
    common = ["train", "invaspread", "--budget", "smoke", "--epochs", "2", "--train-samples", "256",
              "--batch-size", "64", "--output", str(tmp_path), "--no-progress"]
    assert main(common + ["--max-steps", "5"]) == 0                 # "crash" after 5 of 8 steps
    assert json.loads((tmp_path / "history.json").read_text())["step"][-1] == 5
    assert main(common + ["--resume"]) == 0
    out = capsys.readouterr().out
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["step"] == list(range(1, 9))                    # steps 1-5, then 6-8 after resuming
    assert "kNN top-1 (k=200) before training (random init)" in out and "after training" in out
    assert (tmp_path / "training_curves.png").stat().st_size > 10_000
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 8


def test_clip_trains_on_captioned_shapes_and_reports_zero_shot_before_and_after(capsys, tmp_path):
    assert main(["train", "clip", "--budget", "smoke", "--epochs", "1", "--train-samples", "128", "--batch-size", "64",
                 "--output", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "zero-shot top-1 before training (random init)" in out
    assert "zero-shot top-1 after training" in out and "(unseen: " in out
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["monitors"]["zero_shot/accuracy"]) == 2                  # before and after
