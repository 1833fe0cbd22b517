"""SimCLR v2: 3-layer head, fine-tuning from the first head layer, distillation into a student."""

import pytest
import torch

import ssl_minimal
from ssl_minimal import fit
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.methods.simclr_v2 import Distill, FineTune


def test_head_has_three_layers():
    model = ssl_minimal.build("simclr_v2")
    assert sum(isinstance(m, torch.nn.Linear) for m in model.head.modules()) == 3
    assert sum(isinstance(m, torch.nn.Linear) for m in ssl_minimal.build("simclr_v1").head.modules()) == 2


def test_fine_tuned_network_includes_the_first_head_layer(tiny_dataset):
    pretrained = ssl_minimal.build("simclr_v2")
    tuned = FineTune(pretrained, tiny_dataset.labels, num_classes=4)
    first_linear = pretrained.head[0]
    assert tuned.classifier.head_layer[0] is first_linear               # same layer, weights kept
    assert tuned.encoder is pretrained.encoder
    loss = tuned.training_step(tiny_dataset.images[:8], torch.arange(8))
    loss.backward()
    assert first_linear.weight.grad is not None and first_linear.weight.grad.abs().sum() > 0
    assert pretrained.head[-1].weight.grad is None                     # the rest of the head is dropped


def test_distillation_gradient_only_reaches_the_student(tiny_dataset):
    tuned = FineTune(ssl_minimal.build("simclr_v2"), tiny_dataset.labels, num_classes=4)
    student = Distill(tuned, num_classes=4)
    loss = student.training_step(tiny_dataset.images[:8], torch.arange(8))
    loss.backward()
    assert all(p.grad is None for p in tuned.classifier.parameters())
    assert all(p.grad is not None for p in student.classifier.parameters())
    assert not ({id(p) for p in student.encoder.parameters()} & {id(p) for p in tuned.encoder.parameters()})


def test_fine_tune_and_distill_run_with_fit(tiny_dataset):
    tuned = FineTune(ssl_minimal.build("simclr_v2"), tiny_dataset.labels, num_classes=4)
    history = fit(tuned, tiny_dataset, "smoke", epochs=1, batch_size=32, progress=False)
    student = Distill(tuned, num_classes=4)
    teacher_before = [p.clone() for p in tuned.classifier.parameters()]
    fit(student, tiny_dataset, "smoke", epochs=1, batch_size=32, progress=False)
    assert len(history.loss) == 2
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, tuned.classifier.parameters()))


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_fine_tuning_from_head_layer_k_keeps_exactly_the_first_k_head_layers(tiny_dataset, layer):
    pretrained = ssl_minimal.build("simclr_v2")
    head_linears = [m for m in pretrained.head if isinstance(m, torch.nn.Linear)]         # 3 layers
    tuned = FineTune(pretrained, tiny_dataset.labels, num_classes=4, from_head_layer=layer)
    kept = [m for m in tuned.classifier.head_layer if isinstance(m, torch.nn.Linear)]
    assert len(kept) == layer and all(a is b for a, b in zip(kept, head_linears))
    assert tuned.classifier.linear.in_features == (pretrained.encoder.output_dim if layer == 0 else
                                                   head_linears[layer - 1].out_features)
    tuned.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
    assert [linear.weight.grad is not None for linear in head_linears] == [i < layer for i in range(3)]
    student = Distill(tuned, num_classes=4)                       # the student mirrors the teacher's depth
    assert sum(isinstance(m, torch.nn.Linear) for m in student.classifier.head_layer) == layer
    assert student.classifier(torch.rand(4, 3, 32, 32)).shape == (4, 4)


def test_fine_tuning_layer_out_of_range_is_reported(tiny_dataset):
    with pytest.raises(SSLMinimalError, match=r"head layer 0 \(the encoder output\) up to 2 .* got 3"):
        FineTune(ssl_minimal.build("simclr_v2"), tiny_dataset.labels, num_classes=4, from_head_layer=3)
    with pytest.raises(SSLMinimalError, match=r"up to 0 .*'linear' head"):
        FineTune(ssl_minimal.build("simclr_v1", projection="linear"), tiny_dataset.labels, 4, from_head_layer=1)
