"""Item text for text-based models (``calrec``): the words of an item's attributes and a
tokenizer dwrec builds from the catalogue itself (no pretrained vocabulary).

An item's text is its title and its domains (items.parquet): MovieLens title + genres,
Last.fm artist name + tags, Amazon title + categories, Yelp name + categories; a dataset
whose attributes are ids (S3-Rec style) gives those ids as words. An item with neither
title nor domains is described by its raw id (the documented fallback).

Tokens of one item, in this order, each kept once: the title's words (``w:word``), the
domains (``d:domain``, whole), then the character ``n``-grams of every title word wrapped
as ``<word>`` (``g:...``, fastText style; words shorter than ``n`` give none beyond the
word itself). The vocabulary keeps the ``vocab_size - 2`` tokens found in the most items
(ties broken by the token's text, so it is deterministic); id 0 is padding and id 1 is
``<unk>``, given to an item none of whose tokens made the vocabulary.
"""

from __future__ import annotations

import re
from collections import Counter

import torch

PAD_ID = 0
UNK_ID = 1
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def item_texts(dataset) -> list[tuple[str, list[str]]]:
    """``(title, domains)`` of every item of a :class:`dwrec.data.dataset.Dataset`, in item id
    order; an item with no title and no domain gets its raw id as its title."""
    indptr, indices = dataset.item_domain_indptr, dataset.item_domain_indices
    texts = []
    for item in range(dataset.n_items):
        title = dataset.item_titles[item] or ""
        domains = [dataset.domain_names[d] for d in indices[indptr[item] : indptr[item + 1]]]
        if not title.strip() and not domains:
            title = str(dataset.item_raw_ids[item])
        texts.append((title, domains))
    return texts


def item_token_strings(title: str, domains: list[str], ngram: int) -> list[str]:
    """The token strings of one item (see the module docstring), duplicates removed."""
    words = [w.lower() for w in _WORD.findall(title or "")]
    tokens = [f"w:{w}" for w in words]
    tokens += [f"d:{d.strip().lower()}" for d in domains if d and d.strip()]
    if ngram > 0:
        for word in words:
            wrapped = f"<{word}>"
            tokens += [f"g:{wrapped[i : i + ngram]}" for i in range(len(wrapped) - ngram + 1)]
    return list(dict.fromkeys(tokens))


def build_vocabulary(token_lists: list[list[str]], vocab_size: int) -> dict[str, int]:
    """Token string -> id (2, 3, ...) for the ``vocab_size - 2`` tokens found in the most
    items, ties by the token string; ids 0 and 1 are padding and ``<unk>``."""
    if vocab_size < 3:
        raise ValueError(f"vocab_size {vocab_size} must be at least 3")
    counts = Counter(token for tokens in token_lists for token in set(tokens))
    ranked = sorted(counts, key=lambda token: (-counts[token], token))[: vocab_size - 2]
    return {token: index + 2 for index, token in enumerate(ranked)}


def encode_items(
    token_lists: list[list[str]], vocabulary: dict[str, int], length: int
) -> torch.Tensor:
    """``[n_items, length]`` token ids, each row its first ``length`` known tokens,
    left-padded with 0 (``<unk>`` alone when none is known)."""
    rows = torch.zeros(len(token_lists), length, dtype=torch.long)
    for item, tokens in enumerate(token_lists):
        ids = [vocabulary[t] for t in tokens if t in vocabulary][:length] or [UNK_ID]
        rows[item, length - len(ids) :] = torch.tensor(ids)
    return rows


def tokenize_catalogue(
    texts: list[tuple[str, list[str]]], vocab_size: int, length: int, ngram: int
) -> tuple[torch.Tensor, dict[str, int]]:
    """Item texts -> (``[n_items, length]`` left-padded token ids, the vocabulary)."""
    token_lists = [item_token_strings(title, domains, ngram) for title, domains in texts]
    vocabulary = build_vocabulary(token_lists, vocab_size)
    return encode_items(token_lists, vocabulary, length), vocabulary
