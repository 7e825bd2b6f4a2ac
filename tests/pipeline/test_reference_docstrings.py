"""The character language models' reference (pipeline/references/docstrings.py): interpolated Kneser-Ney,
checked on a corpus small enough to compute by hand, and for being a distribution in every context."""

from __future__ import annotations

import math
from itertools import product

import pytest

from pipeline.references.docstrings import KneserNey, discount, fit, ngram_counts


def model(text: str, order: int, vocabulary_size: int, max_order: int | None = None) -> KneserNey:
    raw, continuation = ngram_counts(text, max_order or order)
    return KneserNey(raw, continuation, order, vocabulary_size)


def test_counts_are_raw_at_the_top_order_and_distinct_predecessors_below():
    raw, continuation = ngram_counts("abab", 2)
    assert raw[1] == {"a": 2, "b": 2} and raw[2] == {"ab": 2, "ba": 1}
    assert continuation[1] == {"a": 1, "b": 1}  # b follows a twice, but only a: one distinct predecessor


def test_discount_is_n1_over_n1_plus_2_n2():
    assert discount({"x": 1, "y": 1, "z": 2, "w": 5}) == pytest.approx(2 / (2 + 2 * 1))
    assert discount({"x": 2, "y": 3}) == 0.5  # no count of 1: the fallback


def test_a_bigram_model_of_abab_matches_the_hand_computation():
    # Vocabulary {a, b, c}. Unigram level (continuation counts a: 1, b: 1, so n₁ = 2, n₂ = 0, D = 1):
    # P₁(w) = max(1 - 1, 0) / 2 + 1 · 2 / 2 · 1/3 = 1/3 for every w, c included.
    # Bigram level (raw counts ab: 2, ba: 1, so D = 1 / (1 + 2) = 1/3):
    # P(b | a) = (2 - 1/3) / 2 + (1/3) · 1 / 2 · 1/3 = 8/9,  P(a | a) = P(c | a) = 1/18;
    # P(a | b) = (1 - 1/3) / 1 + (1/3) · 1 / 1 · 1/3 = 7/9,  P(b | b) = P(c | b) = 1/9.
    bigram = model("abab", 2, 3)
    expected = {("a", "b"): 8 / 9, ("a", "a"): 1 / 18, ("a", "c"): 1 / 18,
                ("b", "a"): 7 / 9, ("b", "b"): 1 / 9, ("b", "c"): 1 / 9}
    for (history, character), p in expected.items():
        assert bigram.probability(history, character) == pytest.approx(p)
    assert bigram.probability("c", "a") == pytest.approx(1 / 3)  # an unseen history: the unigram level alone
    # "aba": P(b | a) P(a | b) over its 2 predicted characters
    assert bigram.perplexity("aba") == pytest.approx(math.sqrt(1 / (8 / 9 * 7 / 9)))


def test_perplexity_from_a_start_averages_over_the_characters_from_there_on():
    bigram = model("abab", 2, 3)
    # "caba" from position 2: P(b | a) P(a | b), the first two characters context only
    assert bigram.perplexity("caba", start=2) == pytest.approx(math.sqrt(1 / (8 / 9 * 7 / 9)))
    assert bigram.perplexity("aba", start=1) == bigram.perplexity("aba")


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_probabilities_sum_to_one_over_the_vocabulary_in_every_context(order):
    vocabulary = "abcd"
    text = "abcabcaabbccabdabca"
    kneser_ney = model(text, order, len(vocabulary), max_order=5)
    for length in range(order):
        for history in map("".join, product(vocabulary, repeat=length)):  # seen and unseen histories
            total = sum(kneser_ney.probability(history, character) for character in vocabulary)
            assert total == pytest.approx(1.0), history
            assert all(kneser_ney.probability(history, character) > 0 for character in vocabulary)


def test_fit_chooses_the_order_with_the_lowest_validation_perplexity():
    train = "the cat sat on the mat. the cat ate the rat. " * 20
    val = "the rat sat on the cat. "
    chosen = fit(train, val, vocabulary_size=27, max_order=6)
    raw, continuation = ngram_counts(train, 6)
    perplexities = [KneserNey(raw, continuation, order, 27).perplexity(val) for order in range(1, 7)]
    assert chosen.order == 1 + perplexities.index(min(perplexities))
    assert chosen.order > 1  # a repetitive text rewards context
