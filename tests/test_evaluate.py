"""Evaluation against hand computations, brute-force loops, scikit-learn and statistics."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_minimal import evaluate
from ssl_minimal.checks import SSLMinimalError


def clustered_features(num_classes=10, per_class=50, dim=32, spread=0.3, seed=0):
    """Well-separated Gaussian clusters: features [C * per_class, dim], labels [C * per_class]."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=generator)
    return features, labels


# ----------------------------------------------------------------------------------------------
# Weighted kNN
def test_knn_scores_match_hand_computation():
    # Bank vectors of different lengths: only their directions matter (cosine similarity).
    train = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-5.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 1.0]])                  # cos = 1/sqrt2, 1/sqrt2, -1/sqrt2
    tau = 0.5
    s = 1 / math.sqrt(2)
    predictions, scores = evaluate.knn_predict(train, labels, query, k=3, temperature=tau)
    expected = torch.tensor([[math.exp(s / tau), math.exp(s / tau) + math.exp(-s / tau)]])
    assert torch.allclose(scores, expected, rtol=1e-5)
    assert predictions.tolist() == [1]
    # k = 2 keeps the two nearest (the vectors at 45 degrees), a tie broken towards class 0
    predictions, scores = evaluate.knn_predict(train, labels, query, k=2, temperature=tau)
    assert torch.allclose(scores, torch.tensor([[math.exp(s / tau), math.exp(s / tau)]]), rtol=1e-5)
    assert predictions.tolist() == [0]


def test_weighting_overrules_the_majority_vote():
    # One class-0 image right on the query, two class-1 images at 60 degrees (cosine 0.5).
    train = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.5, -math.sqrt(3) / 2]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.0]])
    # tau = 0.1: class 0 gets e^10 ~ 22026, class 1 gets 2 e^5 ~ 297 -> class 0, against the majority
    predictions, scores = evaluate.knn_predict(train, labels, query, k=3, temperature=0.1)
    assert predictions.tolist() == [0]
    assert scores[0, 0].item() == pytest.approx(math.exp(10), rel=1e-4)
    assert scores[0, 1].item() == pytest.approx(2 * math.exp(5), rel=1e-4)
    # a huge tau makes every weight ~1: a plain majority vote, 2 against 1
    predictions, _ = evaluate.knn_predict(train, labels, query, k=3, temperature=1000.0)
    assert predictions.tolist() == [1]
    assert evaluate.knn_accuracy(train, labels, query, torch.tensor([0]), k=3) == 1.0
    assert evaluate.knn_accuracy(train, labels, query, torch.tensor([0]), k=3, temperature=1000.0) == 0.0


def brute_force_knn(train, labels, queries, k, tau, num_classes):
    """The InstDisc vote written as a loop over queries, for comparison."""
    predictions = []
    for query in queries:
        similarities = [F.cosine_similarity(query, row, dim=0).item() for row in train]
        nearest = sorted(range(len(train)), key=lambda i: -similarities[i])[:k]
        votes = [0.0] * num_classes
        for i in nearest:
            votes[labels[i]] += math.exp(similarities[i] / tau)
        predictions.append(max(range(num_classes), key=lambda c: votes[c]))
    return predictions


def test_knn_matches_brute_force_and_chunking_changes_nothing():
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(60, 8, generator=generator)
    labels = torch.randint(0, 4, (60,), generator=generator)
    queries = torch.randn(25, 8, generator=generator)
    predictions, scores = evaluate.knn_predict(train, labels, queries, k=7, temperature=0.2)
    assert predictions.tolist() == brute_force_knn(train, labels, queries, 7, 0.2, 4)
    chunked_predictions, chunked_scores = evaluate.knn_predict(train, labels, queries, k=7, temperature=0.2,
                                                               chunk_size=4)
    assert torch.equal(chunked_predictions, predictions)
    assert torch.allclose(chunked_scores, scores)


def test_knn_accuracy_on_clusters_and_with_flipped_test_labels():
    train, train_labels = clustered_features(num_classes=4, per_class=30, seed=0)
    test, test_labels = clustered_features(num_classes=4, per_class=5, seed=0)
    test = test + 0.05 * torch.randn(test.shape, generator=torch.Generator().manual_seed(1))
    assert evaluate.knn_accuracy(train, train_labels, test, test_labels, k=20) == 1.0
    wrong = test_labels.clone()
    wrong[:5] = (wrong[:5] + 1) % 4                                 # 5 of 20 test labels are wrong
    assert evaluate.knn_accuracy(train, train_labels, test, wrong, k=20) == pytest.approx(0.75)


def test_knn_errors():
    train, labels = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 0])
    test, test_labels = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(SSLMinimalError, match=r"k = 6 .* training samples \(5\)"):
        evaluate.knn_accuracy(train, labels, test, test_labels, k=6)
    with pytest.raises(SSLMinimalError, match=r"\[5, 3\].*\[2, 4\]"):
        evaluate.knn_accuracy(train, labels, torch.randn(2, 4), test_labels, k=2)
    with pytest.raises(SSLMinimalError, match=r"test_labels has 3 entries but there are 2"):
        evaluate.knn_accuracy(train, labels, test, torch.tensor([0, 1, 0]), k=2)
    with pytest.raises(SSLMinimalError, match=r"train_labels must be an integer tensor of shape \[N\]"):
        evaluate.knn_accuracy(train, labels.float(), test, test_labels, k=2)
    with pytest.raises(SSLMinimalError, match=r"train_features must be a float tensor of shape \[N, D\], got \[5\]"):
        evaluate.knn_accuracy(torch.randn(5), labels, test, test_labels, k=2)
    with pytest.raises(SSLMinimalError, match=r"float tensor"):
        evaluate.knn_accuracy(train.long(), labels, test, test_labels, k=2)
    for temperature in (0.0, -0.1):
        with pytest.raises(SSLMinimalError, match="temperature must be > 0"):
            evaluate.knn_accuracy(train, labels, test, test_labels, k=2, temperature=temperature)
    with pytest.raises(SSLMinimalError, match="labelled samples"):
        evaluate.knn_accuracy(train, torch.tensor([0, 1, -1, 1, 0]), test, test_labels, k=2)
    with pytest.raises(SSLMinimalError, match="k must be a positive integer"):
        evaluate.knn_accuracy(train, labels, test, test_labels, k=0)


# ----------------------------------------------------------------------------------------------
# Linear probe
def test_linear_probe_separates_separable_features():
    train, train_labels = clustered_features(num_classes=5, per_class=40, dim=16, spread=0.3, seed=0)
    test, test_labels = clustered_features(num_classes=5, per_class=10, dim=16, spread=0.3, seed=0)
    assert evaluate.linear_probe(train, train_labels, test, test_labels) == 1.0


def test_linear_probe_is_at_chance_on_random_labels_and_deterministic():
    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(1000, 32, generator=generator), torch.randn(2000, 32, generator=generator)
    train_labels = torch.randint(0, 10, (1000,), generator=generator)
    test_labels = torch.randint(0, 10, (2000,), generator=generator)
    accuracy = evaluate.linear_probe(train, train_labels, test, test_labels)
    assert 0.05 < accuracy < 0.15                            # chance = 0.1, std of the estimate ~ 0.007
    assert evaluate.linear_probe(train, train_labels, test, test_labels) == accuracy


def test_linear_probe_matches_scikit_learn_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(300, 6, generator=generator) * torch.tensor([1.0, 2, 3, 4, 5, 6]) + 3
    train_labels = (train[:, 0] + 0.5 * train[:, 1] + torch.randn(300, generator=generator) > 3).long()
    train_labels[train[:, 2] > 5] = 2
    test = torch.randn(50, 6, generator=generator)
    _, probe = evaluate.linear_probe(train, train_labels, test, torch.zeros(50, dtype=torch.long),
                                     return_model=True)
    # scikit-learn on the same standardised features, default C = 1 (= our default weight_decay 1/N)
    standardise = lambda x: ((x - train.mean(0)) / train.std(0)).double().numpy()  # noqa: E731
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(standardise(train), train_labels.numpy())
    expected = torch.from_numpy(reference.predict_proba(standardise(test))).float()
    with torch.no_grad():
        probabilities = probe(test).softmax(dim=1)
    assert torch.allclose(probabilities, expected, atol=2e-3)


def test_linear_probe_returns_a_probe_for_raw_features():
    train, train_labels = clustered_features(num_classes=3, per_class=20, dim=8, seed=0)
    test, test_labels = clustered_features(num_classes=3, per_class=5, dim=8, seed=0)
    accuracy, probe = evaluate.linear_probe(train * 100 + 7, train_labels, test * 100 + 7, test_labels,
                                            return_model=True)
    logits = probe(test * 100 + 7)
    assert logits.shape == (15, 3)
    assert (logits.argmax(1) == test_labels).float().mean().item() == accuracy == 1.0


def test_linear_probe_errors():
    train, labels = torch.randn(10, 4), torch.arange(10) % 2
    with pytest.raises(SSLMinimalError, match=r"\[10, 4\].*\[3, 5\]"):
        evaluate.linear_probe(train, labels, torch.randn(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(SSLMinimalError, match="labelled samples"):
        evaluate.linear_probe(train, labels, train, torch.full((10,), -1))
    with pytest.raises(SSLMinimalError, match="weight_decay must be >= 0"):
        evaluate.linear_probe(train, labels, train, labels, weight_decay=-1.0)
    with pytest.raises(SSLMinimalError, match="max_iterations must be a positive integer"):
        evaluate.linear_probe(train, labels, train, labels, max_iterations=0)


# ----------------------------------------------------------------------------------------------
# Retrieval and label noise
def test_nearest_neighbours_sorted_and_equal_to_brute_force():
    generator = torch.Generator().manual_seed(0)
    gallery = torch.randn(40, 5, generator=generator)
    queries = torch.randn(7, 5, generator=generator)
    indices, similarities = evaluate.nearest_neighbours(queries, gallery, k=6, chunk_size=3)
    cosine = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T            # [7, 40]
    expected = cosine.sort(dim=1, descending=True)
    assert torch.equal(indices, expected.indices[:, :6])
    assert torch.allclose(similarities, expected.values[:, :6])
    assert (similarities[:, :-1] >= similarities[:, 1:]).all()


def test_nearest_neighbours_exclude_self():
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    indices, _ = evaluate.nearest_neighbours(features, features, k=1)
    assert indices[:, 0].tolist() == [0, 1, 2, 3]                 # everyone is their own nearest neighbour
    indices, similarities = evaluate.nearest_neighbours(features, features, k=3, exclude_self=True, chunk_size=3)
    assert indices[:, 0].tolist() == [1, 0, 1, 2]
    for row in range(4):
        assert row not in indices[row].tolist()
    assert (similarities[:, :-1] >= similarities[:, 1:]).all()
    with pytest.raises(SSLMinimalError, match="other than the query"):
        evaluate.nearest_neighbours(features, features, k=4, exclude_self=True)
    with pytest.raises(SSLMinimalError, match="same number of rows"):
        evaluate.nearest_neighbours(features[:2], features, k=1, exclude_self=True)


def test_find_label_noise_hand_example():
    # Two groups on a line-like arrangement; sample 2 carries the wrong label.
    features = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [0.0, 1.0], [0.1, 1.0], [-0.1, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    suspicion, predicted = evaluate.find_label_noise(features, labels, k=2)
    # sample 2's two neighbours (0, 1) both say 0; samples 0 and 1 each have sample 2 among their two
    assert suspicion.tolist() == pytest.approx([0.5, 0.5, 1.0, 0.0, 0.0, 0.0])
    assert predicted[2].item() == 0


def test_find_label_noise_ranks_flipped_labels_first():
    features, labels = clustered_features(num_classes=10, per_class=50, dim=32, spread=0.5, seed=0)
    generator = torch.Generator().manual_seed(1)
    flipped = torch.randperm(len(labels), generator=generator)[:25]
    noisy = labels.clone()
    noisy[flipped] = (labels[flipped] + torch.randint(1, 10, (25,), generator=generator)) % 10
    suspicion, predicted = evaluate.find_label_noise(features, noisy, k=20)
    most_suspicious = suspicion.argsort(descending=True)[:25]
    precision = len(set(most_suspicious.tolist()) & set(flipped.tolist())) / 25
    assert precision >= 0.95
    assert (predicted[flipped] == labels[flipped]).float().mean() >= 0.95


# ----------------------------------------------------------------------------------------------
# Collapse
def test_collapse_diagnostics_on_collapsed_embeddings():
    vector = torch.randn(16)
    identical = vector.repeat(100, 1)                                        # complete collapse
    result = evaluate.collapse_diagnostics(identical)
    assert result["std"] == pytest.approx(0.0, abs=1e-6)
    assert result["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert result["expected_std"] == pytest.approx(0.25)
    scaled = torch.rand(100, 1) * 5 + 0.1                                    # rank 1: one direction, many lengths
    result = evaluate.collapse_diagnostics(scaled * vector)
    assert result["std"] == pytest.approx(0.0, abs=1e-6)
    assert result["effective_rank"] == pytest.approx(1.0, abs=1e-3)


def test_collapse_diagnostics_on_isotropic_gaussian():
    generator = torch.Generator().manual_seed(0)
    result = evaluate.collapse_diagnostics(torch.randn(4000, 16, generator=generator))
    assert result["std"] == pytest.approx(1 / 4, rel=0.03)              # 1 / sqrt(D)
    assert 15.5 < result["effective_rank"] <= 16.0
    # dimensional collapse: only 4 of the 16 dimensions are used
    partly = torch.zeros(4000, 16)
    partly[:, :4] = torch.randn(4000, 4, generator=generator)
    assert 3.8 < evaluate.collapse_diagnostics(partly)["effective_rank"] <= 4.0


def test_effective_rank_hand_computation():
    # singular values 3 and 1: p = (3/4, 1/4), rank = exp(-(3/4 log 3/4 + 1/4 log 1/4))
    embeddings = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert evaluate.collapse_diagnostics(embeddings)["effective_rank"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(SSLMinimalError, match="at least 2 embeddings"):
        evaluate.collapse_diagnostics(torch.randn(1, 3))


# ----------------------------------------------------------------------------------------------
# Feature extraction
class ModeRecorder(nn.Module):
    """Flattens images and records the train/eval flag and grad mode it saw."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.inner = nn.Dropout(0.5)
        self.seen = []

    def forward(self, images):
        self.seen.append((self.training, self.inner.training, torch.is_grad_enabled(), images.dtype, len(images)))
        return self.inner(images.flatten(1)) * self.scale


def test_extract_features_uint8_batches_eval_mode_and_restore():
    images = torch.randint(0, 256, (7, 3, 2, 2), dtype=torch.uint8)
    encoder = ModeRecorder()
    encoder.train()
    features = evaluate.extract_features(encoder, images, batch_size=3)
    assert torch.equal(features, images.float().flatten(1) / 255)          # dropout off, /255 applied
    assert not features.requires_grad
    assert [seen[4] for seen in encoder.seen] == [3, 3, 1]
    assert all(seen[:4] == (False, False, False, torch.float32) for seen in encoder.seen)
    assert encoder.training and encoder.inner.training                   # train mode is back
    # a submodule that was in eval mode on purpose stays in eval mode
    encoder.inner.eval()
    evaluate.extract_features(encoder, images, device="cpu")
    assert encoder.training and not encoder.inner.training


def test_extract_features_plain_function_and_errors():
    images = torch.rand(4, 3, 2, 2)
    features = evaluate.extract_features(lambda x: x.mean(dim=(2, 3)), images)
    assert torch.allclose(features, images.mean(dim=(2, 3)))
    with pytest.raises(SSLMinimalError, match=r"shape \[B, D\], got \[4, 3, 2, 2\]"):
        evaluate.extract_features(lambda x: x, images)
    with pytest.raises(SSLMinimalError, match=r"\[B, 3, H, W\]"):
        evaluate.extract_features(lambda x: x.flatten(1), torch.rand(4, 2, 2))
    with pytest.raises(SSLMinimalError, match=r"in \[0, 1\]"):
        evaluate.extract_features(lambda x: x.flatten(1), images * 255)
    with pytest.raises(SSLMinimalError, match="batch_size"):
        evaluate.extract_features(lambda x: x.flatten(1), images, batch_size=0)


# ----------------------------------------------------------------------------------------------
# attention maps against ground-truth masks (DINO Sec. 4.2.1)
def test_attention_mask_keeps_the_patches_holding_60_percent_of_the_mass_by_hand():
    maps = torch.tensor([[[0.1, 0.2], [0.3, 0.4]],      # sorted cumulative 0.1, 0.3, 0.6, 1.0: keep 0.3 and 0.4
                         [[0.7, 0.1], [0.1, 0.1]],      # 0.7 alone holds 60%: one patch, not 60% of the patches
                         [[0.05, 0.5], [0.05, 0.4]]])   # 0.5 + 0.4 (0.5 alone is too little)
    expected = torch.tensor([[[False, False], [True, True]], [[True, False], [False, False]],
                             [[False, True], [False, True]]])
    assert torch.equal(evaluate.attention_mask(maps), expected)
    assert torch.equal(evaluate.attention_mask(10 * maps), expected)                 # any scale: mass, not values
    assert evaluate.attention_mask(maps, mass=1.0).all()
    with pytest.raises(SSLMinimalError, match="mass must be in"):
        evaluate.attention_mask(maps, mass=60)


def test_mask_jaccard_by_hand_and_the_best_head_over_a_test_set():
    top_row = torch.tensor([[0.5, 0.4], [0.05, 0.05]])                      # keeps the top two patches
    left_column = torch.tensor([[0.5, 0.05], [0.4, 0.05]])                  # keeps the left two patches
    truth = torch.zeros(2, 4, 4, dtype=torch.bool)
    truth[0, :, :2] = True                                                  # image 0: the left half
    truth[1, :2, :] = True                                                  # image 1: the top half
    maps = torch.stack([torch.stack([top_row, left_column]), torch.stack([top_row, top_row])])   # [2, 2, 2, 2]
    jaccard = evaluate.mask_jaccard(maps, truth)
    # image 0: head 0 keeps the top half (8 px) against the left half (8 px): 4 shared of 12 -> 1/3; head 1: exact
    # image 1: both heads keep the top half, which is the ground truth: 1
    assert jaccard.flatten().tolist() == pytest.approx([1 / 3, 1.0, 1.0, 1.0])
    scores = evaluate.attention_jaccard(maps, truth)
    assert scores["per_head"] == pytest.approx([2 / 3, 1.0])
    assert scores["best_head"] == pytest.approx(1.0) and scores["mean_over_heads"] == pytest.approx(5 / 6)
    # the best head is one head for the whole set, not each image's best
    swapped = torch.stack([torch.stack([top_row, left_column]), torch.stack([top_row, left_column])])
    assert evaluate.attention_jaccard(swapped, truth)["best_head"] == pytest.approx(2 / 3)   # per-image max: 1
    with pytest.raises(SSLMinimalError, match="masks must be bool"):
        evaluate.mask_jaccard(maps, truth.float())
    with pytest.raises(SSLMinimalError, match="masks must be bool"):
        evaluate.mask_jaccard(maps, torch.zeros(2, 5, 5, dtype=torch.bool))
