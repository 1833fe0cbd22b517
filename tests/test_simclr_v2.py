"""SimCLR v2: 3-layer head, fine-tuning from the first head layer, distillation into a student."""

import torch

import ssl_minimal
from ssl_minimal import fit
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
