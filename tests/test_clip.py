"""CLIP: Figure 3's symmetric loss, the learnable and clipped temperature, the word-level tokeniser,
the causal text transformer read at <end>, and a training step on (image, caption) pairs."""

import math

import pytest
import torch
import torch.nn.functional as F

import ssl_minimal
from ssl_minimal import data, evaluate, losses
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.data import ImageDataset
from ssl_minimal.text import TextTransformer, Tokenizer

WORDS = ["a red star", "a blue circle on a green background", "the star is red"]


def _tokenizer() -> Tokenizer:
    return Tokenizer.from_texts(WORDS)


def _captioned(n: int = 16, k: int = 2) -> ImageDataset:
    """n random images, each with k captions drawn from WORDS."""
    tokenizer = _tokenizer()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=generator)
    choice = torch.randint(len(WORDS), (n, k), generator=generator)
    captions = tokenizer(WORDS)[choice]                                     # [n, k, L]
    return ImageDataset("tiny", "train", images, torch.arange(n) % 2, ["x", "y"], (0.5,) * 3, (0.29,) * 3,
                        captions=captions, tokenizer=tokenizer)


def _model(**options):
    torch.manual_seed(0)
    return ssl_minimal.build("clip", dataset=_captioned(), backbone_options={"width": 8}, **options)


# ----------------------------------------------------------------------------------------------
# The loss
def test_clip_loss_matches_a_hand_computation_on_two_pairs():
    images = torch.tensor([[3.0, 0.0], [0.0, 2.0]])            # normalised: (1, 0), (0, 1)
    texts = torch.tensor([[5.0, 0.0], [3.0, 4.0]])             # normalised: (1, 0), (0.6, 0.8)
    # cosines: image 0 with texts (1, 0.6), image 1 with texts (0, 0.8); scale 2 -> logits [[2, 1.2], [0, 1.6]]
    image_to_text = (-math.log(math.exp(2) / (math.exp(2) + math.exp(1.2)))
                     - math.log(math.exp(1.6) / (math.exp(0) + math.exp(1.6)))) / 2
    text_to_image = (-math.log(math.exp(2) / (math.exp(2) + math.exp(0)))
                     - math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))) / 2
    loss = losses.clip_loss(images, texts, torch.tensor(2.0))
    assert loss.item() == pytest.approx((image_to_text + text_to_image) / 2, rel=1e-6)


def test_clip_loss_is_symmetric_in_images_and_texts():
    generator = torch.Generator().manual_seed(1)
    images, texts = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    forward = losses.clip_loss(images, texts, 7.0)
    assert forward.item() == pytest.approx(losses.clip_loss(texts, images, 7.0).item(), rel=1e-6)
    # and it is not the one-directional loss: both directions differ on this batch
    logits = 7.0 * F.normalize(images, dim=1) @ F.normalize(texts, dim=1).t()
    one_way = F.cross_entropy(logits, torch.arange(6))
    assert abs(one_way.item() - forward.item()) > 1e-3


def test_clip_loss_rejects_mismatched_embeddings():
    with pytest.raises(SSLMinimalError, match="same shape"):
        losses.clip_loss(torch.randn(4, 3), torch.randn(5, 3), 1.0)


def test_logit_scale_starts_at_one_over_0_07_and_is_clipped_at_100():
    model = _model()
    assert model.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.log_logit_scale.fill_(math.log(1000.0))
    assert model.logit_scale().item() == pytest.approx(100.0)
    model.after_optimizer_step(0.5)                           # t itself is brought back to log(100)
    assert model.log_logit_scale.item() == pytest.approx(math.log(100.0))
    with pytest.raises(SSLMinimalError, match="initial_temperature"):
        _model(initial_temperature=0.001)                     # 1 / 0.001 = 1000 > 100


# ----------------------------------------------------------------------------------------------
# Text
def test_tokenizer_round_trip_and_layout():
    tokenizer = _tokenizer()
    assert tokenizer.vocabulary[:3] == ["<pad>", "<start>", "<end>"]
    tokens = tokenizer(["A blue star", "the circle"])          # upper case is lowered
    assert tokens.dtype == torch.int64 and tokens.shape == (2, tokenizer.context_length)
    assert tokens[0, :5].tolist() == [1, tokenizer.ids["a"], tokenizer.ids["blue"], tokenizer.ids["star"], 2]
    assert (tokens[0, 5:] == 0).all()                         # <pad> after <end>
    assert [tokenizer.decode(row) for row in tokens] == ["a blue star", "the circle"]
    assert tokenizer.context_length == 9                       # the longest text (7 words) + <start> + <end>


def test_tokenizer_names_an_unknown_word_and_a_too_long_text():
    tokenizer = _tokenizer()
    with pytest.raises(SSLMinimalError, match="unknown word.*'purple'"):
        tokenizer("a purple star")
    with pytest.raises(SSLMinimalError, match="at most 7 fit"):
        tokenizer("a red star a red star a red star")


def test_text_transformer_is_causal_a_later_token_never_changes_an_earlier_state():
    torch.manual_seed(0)
    encoder = TextTransformer(vocabulary_size=20, context_length=8, dim=16, depth=2, heads=2)
    first = torch.tensor([[1, 5, 6, 7, 2, 0, 0, 0]])
    second = torch.tensor([[1, 5, 6, 9, 11, 12, 2, 0]])       # the same first 3 tokens
    states_first, states_second = encoder.states(first), encoder.states(second)
    assert torch.allclose(states_first[:, :3], states_second[:, :3], atol=1e-6)
    assert not torch.allclose(states_first[:, 3], states_second[:, 3], atol=1e-3)


def test_text_embedding_is_the_state_at_end_and_ignores_padding():
    torch.manual_seed(0)
    encoder = TextTransformer(vocabulary_size=20, context_length=8, dim=16, depth=1, heads=2)
    tokens = torch.tensor([[1, 5, 6, 2, 0, 0, 0, 0], [1, 5, 6, 7, 8, 2, 0, 0]])
    assert torch.equal(encoder(tokens), encoder.states(tokens)[[0, 1], [3, 5]])
    junk_after_end = tokens.clone()
    junk_after_end[0, 4:] = 9
    assert torch.allclose(encoder(junk_after_end)[0], encoder(tokens)[0], atol=1e-6)


def test_text_transformer_rejects_tokens_of_the_wrong_dtype_length_or_without_end():
    encoder = TextTransformer(vocabulary_size=20, context_length=8, dim=16, depth=1, heads=2)
    with pytest.raises(SSLMinimalError, match=r"int64 \[B, 8\]"):
        encoder(torch.ones(2, 8, dtype=torch.int32))
    with pytest.raises(SSLMinimalError, match=r"int64 \[B, 8\]"):
        encoder(torch.ones(2, 6, dtype=torch.int64))
    with pytest.raises(SSLMinimalError, match="<end>"):
        encoder(torch.ones(2, 8, dtype=torch.int64))


# ----------------------------------------------------------------------------------------------
# The method
def test_training_step_is_figure_3_on_the_chosen_captions():
    model, dataset = _model(), _captioned()
    torch.manual_seed(3)
    loss = model.training_step(dataset.images, torch.arange(16), dataset.captions)
    torch.manual_seed(3)
    texts = model.pick_captions(dataset.captions, 16)
    expected = losses.clip_loss(model.encode_image(model.augment(dataset.images)), model.encode_text(texts),
                                model.logit_scale())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # each text is one of its own image's captions
    assert all(any(torch.equal(texts[i], caption) for caption in dataset.captions[i]) for i in range(16))
    loss.backward()                                            # both towers and the temperature learn
    for part in (model.encoder, model.text_encoder, model.image_projection, model.text_projection):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters() if p.requires_grad)
    assert model.log_logit_scale.grad.abs() > 0


def test_fit_passes_each_batch_its_own_captions_and_learns_which_caption_goes_with_which_image():
    dataset = _captioned(64, k=1)
    red = dataset.labels == 0                                  # label 0: reddish images, "a red star"
    images = dataset.images.clone()
    images[red, 0], images[~red, 2] = 255, 255
    captions = dataset.tokenizer(WORDS[:2])[dataset.labels][:, None]    # [64, 1, L]: the caption follows the image
    dataset = ImageDataset("tiny", "train", images, dataset.labels, ["red", "blue"], (0.5,) * 3, (0.29,) * 3,
                           captions=captions, tokenizer=dataset.tokenizer)
    model, seen = _model(), []
    original = model.training_step

    def recording_step(images, indices, captions=None):
        seen.append(torch.equal(captions, dataset.captions[indices]))
        return original(images, indices, captions)

    model.training_step = recording_step
    history = ssl_minimal.fit(model, dataset, "smoke", epochs=8, batch_size=16, learning_rate=3e-3,
                              warmup_epochs=0, progress=False, device="cpu")
    assert len(seen) == 32 and all(seen)
    # 8 pairs of each caption in a batch of 16: chance is log 16 = 2.77, a perfect model reaches log 8 = 2.08
    assert sum(history.loss[-4:]) / 4 < 2.3 < sum(history.loss[:2]) / 2


def test_bad_captions_are_clear_errors(tiny_dataset):
    model, dataset = _model(), _captioned()
    with pytest.raises(SSLMinimalError, match="no captions"):
        ssl_minimal.fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, progress=False, device="cpu")
    with pytest.raises(SSLMinimalError, match=r"int64 \[16, K, 9\]"):
        model.training_step(dataset.images, torch.arange(16), dataset.captions.int())          # wrong dtype
    with pytest.raises(SSLMinimalError, match=r"int64 \[16, K, 9\]"):
        model.training_step(dataset.images, torch.arange(16), dataset.captions[..., :5])       # wrong length
    with pytest.raises(SSLMinimalError, match=r"int64 \[16, K, 9\]"):
        model.training_step(dataset.images, torch.arange(16), dataset.captions[:8])            # wrong count
    with pytest.raises(SSLMinimalError, match="image, caption"):
        model.training_step(dataset.images, torch.arange(16))
    with pytest.raises(SSLMinimalError, match="tokenizer"):
        ssl_minimal.build("clip")


# ----------------------------------------------------------------------------------------------
# Zero-shot classification and retrieval (ssl_minimal.evaluate)
def test_zero_shot_classifier_is_the_renormalised_mean_of_normalised_prompt_embeddings():
    model, dataset = _model(), _captioned()
    templates = ["a {}", "the {} is red"]
    classifier = evaluate.zero_shot_classifier(model, ["star", "circle"], templates)
    model.eval()
    with torch.no_grad():
        direct = []
        for name in ["star", "circle"]:
            prompts = model.tokenizer([template.format(name) for template in templates])
            embeddings = F.normalize(model.encode_text(prompts), dim=1)            # [T, D]
            direct.append(F.normalize(embeddings.mean(dim=0), dim=0))
        direct = torch.stack(direct)                                             # [C, D]
        images = F.normalize(model.encode_image(dataset.images), dim=1)
    assert torch.allclose(classifier, direct, atol=1e-6)
    predictions = evaluate.zero_shot_predict(model, dataset.images, classifier)
    assert torch.equal(predictions, (images @ direct.t()).argmax(dim=1))
    labels = predictions.clone()
    labels[:4] = 1 - labels[:4]                                                  # 4 of 16 wrong
    assert evaluate.zero_shot_accuracy(model, dataset.images, labels, ["star", "circle"], templates) == 0.75
    assert evaluate.text_embeddings(model, ["a star"]).shape == (1, model.text_projection.out_features)


def test_retrieval_recall_against_a_hand_count():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])   # text 2 is far from image 2
    recall = evaluate.retrieval_recall(images, texts, ks=(1, 2))
    # image -> text: 0 finds text 0; 1 finds text 1 or 2 (a tie; topk keeps the first); 2 finds text 0, then 1/2
    assert recall["image_to_text@1"] == pytest.approx(2 / 3)
    # text -> image: text 0 -> image 0; text 1 -> image 1; text 2 -> image 1, then image 2 (cos 0.0995 > 0)
    assert recall["text_to_image@1"] == pytest.approx(2 / 3) and recall["text_to_image@2"] == 1.0
    with pytest.raises(SSLMinimalError, match="one text per image"):
        evaluate.retrieval_recall(images, texts[:2])


def test_zero_shot_bad_input_is_a_clear_error():
    model, dataset = _model(), _captioned()
    with pytest.raises(SSLMinimalError, match="at least one class name"):
        evaluate.zero_shot_classifier(model, [], ["a {}"])
    with pytest.raises(SSLMinimalError, match="with a \\{\\}"):
        evaluate.zero_shot_classifier(model, ["star"], ["a star"])
    with pytest.raises(SSLMinimalError, match="unknown word.*'dog'"):
        evaluate.zero_shot_classifier(model, ["dog"], ["a {}"])
    with pytest.raises(SSLMinimalError, match="only 2 class names"):
        evaluate.zero_shot_accuracy(model, dataset.images, torch.arange(16) % 3, ["star", "circle"], ["a {}"])


def test_a_short_run_on_shapes_beats_chance_at_zero_shot_clearly():
    """124 steps on 2,000 captioned shapes (about 30 s on one core): the 10 shape names as prompts, no
    labelled image, classify the 2,000 test images; random init is at chance (10%)."""
    train = data.load_captioned("shapes", "train").subset(2000, seed=0)
    test = data.load_captioned("shapes", "test")
    torch.manual_seed(0)
    model = ssl_minimal.build("clip", dataset=train, backbone_options={"width": 16})
    before = evaluate.zero_shot_report(model, test)["accuracy"]
    ssl_minimal.fit(model, train, "smoke", epochs=4, batch_size=64, learning_rate=1e-3, warmup_epochs=1,
                    progress=False, device="cpu")
    after = evaluate.zero_shot_report(model, test)
    assert before < 0.13 and after["accuracy"] > 0.18, (before, after)
    assert set(after) == {"accuracy", "seen", "unseen"}
