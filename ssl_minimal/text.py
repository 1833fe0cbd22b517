"""Text for CLIP: a word-level tokeniser built from the captions, and a small causal text transformer.

CLIP (Radford et al. 2021, arXiv 2103.00020, Sec. 2.4) encodes text with a GPT-2-style Transformer:
a lower-cased byte-pair encoding of 49,152 tokens, sequences bracketed by [SOS] and [EOS], masked
(causal) self-attention, and "the activations of the highest layer of the transformer at the [EOS]
token are treated as the feature representation of the text", layer-normalised, then linearly
projected into the joint space (the projection lives in the method, methods/clip.py).

Our captions are made by the library from a few dozen words, so the tokeniser is a plain word list:

    tokenizer = Tokenizer.from_texts(["a red star", "a blue circle on a green background"])
    tokens = tokenizer(["a red circle"])        # int64 [1, context_length]: <start> a red circle <end> <pad>...
    tokenizer.decode(tokens[0])                 # "a red circle"

A word that is not in the list is an error that names it (a byte-pair encoding never has unknown
words; a word list has, and silently dropping one would change what a prompt says).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch
from torch import nn

from .backbones import TransformerBlock
from .checks import SSLMinimalError

PAD, START, END = "<pad>", "<start>", "<end>"       # ids 0, 1, 2; words follow in alphabetical order
WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")          # a word, or one punctuation mark


def with_articles(text: str) -> str:
    """"a" before a vowel becomes "an": "a ellipse" -> "an ellipse" (for captions and prompts made from templates)."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def words_of(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: "A red star." -> ["a", "red", "star", "."]."""
    return WORD.findall(text.lower())


class Tokenizer:
    """Word-level tokeniser: text -> int64 [context_length] = <start> words <end>, then <pad> (id 0)."""

    def __init__(self, vocabulary: Sequence[str], context_length: int):
        self.vocabulary = list(vocabulary)
        if self.vocabulary[:3] != [PAD, START, END] or len(set(self.vocabulary)) != len(self.vocabulary):
            raise SSLMinimalError(f"a vocabulary starts with {PAD}, {START}, {END} and lists each word once")
        self.ids = {word: index for index, word in enumerate(self.vocabulary)}
        self.context_length = context_length

    @classmethod
    def from_texts(cls, texts: Iterable[str], context_length: int | None = None) -> Tokenizer:
        """Every word of `texts`; context_length: the longest text + 2 unless given."""
        split = [words_of(text) for text in texts]
        words = sorted({word for text in split for word in text})
        longest = max((len(text) for text in split), default=0) + 2
        return cls([PAD, START, END] + words, context_length or longest)

    @property
    def end_id(self) -> int:
        return self.ids[END]

    def __len__(self) -> int:
        return len(self.vocabulary)

    def encode(self, text: str) -> list[int]:
        words = words_of(text)
        unknown = [word for word in words if word not in self.ids]
        if unknown:
            raise SSLMinimalError(f"unknown word(s) {', '.join(map(repr, unknown))} in {text!r}: this tokeniser knows "
                                  f"the {len(self) - 3} words of its captions ({', '.join(self.vocabulary[3:])})")
        if len(words) + 2 > self.context_length:
            raise SSLMinimalError(f"{text!r} has {len(words)} words; at most {self.context_length - 2} fit in the "
                                  f"context of {self.context_length} tokens (with <start> and <end>)")
        ids = [self.ids[START]] + [self.ids[word] for word in words] + [self.ids[END]]
        return ids + [self.ids[PAD]] * (self.context_length - len(ids))

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Texts -> int64 [n, context_length] (one text -> [1, context_length])."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return torch.tensor([self.encode(text) for text in texts], dtype=torch.int64).view(len(texts), -1)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Token ids -> text, without <start>, <end> and <pad>."""
        return " ".join(self.vocabulary[i] for i in map(int, ids) if i > 2)

    def __repr__(self) -> str:
        return f"Tokenizer({len(self)} tokens, context_length={self.context_length})"


class TextTransformer(nn.Module):
    """tokens int64 [B, L] -> token + position embeddings -> causal blocks -> LayerNorm -> state at <end>, [B, D].

    Each token attends only to itself and the tokens before it (CLIP Sec. 2.4, "masked self-attention"),
    so the state at <end> has read the whole text and the <pad> tokens after it change nothing.
    """

    def __init__(self, vocabulary_size: int, context_length: int, end_id: int = 2, dim: int = 64, depth: int = 2,
                 heads: int = 4):
        super().__init__()
        self.context_length, self.end_id, self.output_dim = context_length, end_id, dim
        self.token_embedding = nn.Embedding(vocabulary_size, dim)
        self.position = nn.Parameter(torch.zeros(1, context_length, dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, causal=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)      # the official model.py's initialisation
        nn.init.normal_(self.position, std=0.01)

    def states(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final state of every token, [B, L, D]."""
        if (not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.int64 or tokens.dim() != 2
                or tokens.shape[1] != self.context_length):
            given = f"{tokens.dtype} {list(tokens.shape)}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise SSLMinimalError(f"the text encoder takes token ids int64 [B, {self.context_length}] (from the "
                                  f"tokenizer), got {given}")
        x = self.token_embedding(tokens) + self.position                  # [B, L, D]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states = self.states(tokens)                                      # [B, L, D]
        is_end = tokens == self.end_id
        if not is_end.any(dim=1).all():
            raise SSLMinimalError(f"every text needs its <end> token (id {self.end_id}); encode texts with the tokenizer")
        ends = is_end.int().argmax(dim=1)                                 # [B] position of the first <end>
        return states[torch.arange(len(tokens), device=tokens.device), ends]   # [B, D]
