"""The language models' reference: an interpolated Kneser-Ney character n-gram model (Kneser and Ney
1995; Chen and Goodman 1998), fitted on the same training text, its order n chosen on the validation text.

For a history h of n - 1 characters and a next character w,
    P_n(w | h) = max(c(h w) - D, 0) / c(h) + D · N₁₊(h •) / c(h) · P_{n-1}(w | h'),
with h' the history less its first character, c(h) = Σ_w c(h w), N₁₊(h •) the number of distinct w
with c(h w) > 0, and P_{k}(w | h) = P_{k-1}(w | h') where c(h) = 0. At the top order c counts the
n-grams of the text; below it c(h w) is the continuation count N₁₊(• h w), the number of distinct
characters seen before h w: a lower order is consulted only for what the higher one has not seen, so
it should say in how many contexts a string appears, not how often. The recursion ends in the uniform
distribution over the V characters, P_0(w) = 1 / V, so every character has a probability. Each order's
discount is Ney's estimate D = n₁ / (n₁ + 2 n₂), n₁ and n₂ the number of its counts equal to 1 and 2.
Since Σ_w max(c(h w) - D, 0) = c(h) - D · N₁₊(h •) when every seen count is at least 1 ≥ D, each
P_k(· | h) sums to 1.

The test perplexity is the models': exp of the mean negative log-likelihood of every test character
the models predict (all but the first in windows that are all targets, all from position T - L + 1 in
windows of T whose last L are targets), here given up to n - 1 characters before it (which may lie
before the model's window). The order is chosen the same way on the validation text.
"""

from __future__ import annotations

import math
from collections import Counter

MAX_ORDER = 12  # the orders tried on the validation text: 1 .. MAX_ORDER (a repetitive text rewards long ones)


def ngram_counts(text: str, max_order: int) -> tuple[list[Counter], list[Counter]]:
    """raw[k] (c of each k-gram) and continuation[k] (N₁₊(• g) of each k-gram g, the distinct characters
    seen before it) for k = 1 .. max_order (index 0 unused)."""
    raw = [Counter()] + [Counter(text[i : i + k] for i in range(len(text) - k + 1)) for k in range(1, max_order + 1)]
    continuation = [Counter()] + [Counter(gram[1:] for gram in raw[k + 1]) for k in range(1, max_order)] + [Counter()]
    return raw, continuation


def discount(counts: Counter) -> float:
    """Ney's D = n₁ / (n₁ + 2 n₂) over the counts of one order (0.5 where none is 1)."""
    of = Counter(counts.values())
    return of[1] / (of[1] + 2 * of[2]) if of[1] else 0.5


class KneserNey:
    """An interpolated Kneser-Ney model of order n over a vocabulary of V characters."""

    def __init__(self, raw: list[Counter], continuation: list[Counter], order: int, vocabulary_size: int):
        self.order, self.vocabulary_size = order, vocabulary_size
        self.levels = [None]  # per order k: (D, {h: ({w: c(h w)}, c(h), N₁₊(h •))})
        for k in range(1, order + 1):
            counts = raw[k] if k == order else continuation[k]
            table: dict[str, tuple[dict, int, int]] = {}
            for gram, count in counts.items():
                followers = table.setdefault(gram[:-1], ({}, 0, 0))[0]
                followers[gram[-1]] = count
            table = {h: (followers, sum(followers.values()), len(followers)) for h, (followers, _, _) in table.items()}
            self.levels.append((discount(counts), table))

    def probability(self, history: str, character: str) -> float:
        """P_n(character | the last n - 1 characters of history), fewer where history is shorter."""
        p = 1.0 / self.vocabulary_size
        for k in range(1, min(self.order, len(history) + 1) + 1):
            d, table = self.levels[k]
            entry = table.get(history[len(history) - k + 1 :] if k > 1 else "")
            if entry is not None:
                followers, total, distinct = entry
                p = max(followers.get(character, 0) - d, 0.0) / total + d * distinct / total * p
        return p

    def perplexity(self, text: str, start: int = 1) -> float:
        """exp(-(1 / (N - s)) Σ_{t ≥ s} log P(c_t | c_{t-n+1} … c_{t-1})) over text c_0 … c_{N-1}, s = start."""
        context = self.order - 1
        total = sum(math.log(self.probability(text[max(0, t - context) : t], text[t])) for t in range(start, len(text)))
        return math.exp(-total / (len(text) - start))


def fit(train: str, val: str, vocabulary_size: int, max_order: int = MAX_ORDER, start: int = 1) -> KneserNey:
    """The model of the order 1 .. max_order with the lowest validation perplexity (val's characters from start on)."""
    raw, continuation = ngram_counts(train, max_order)
    models = [KneserNey(raw, continuation, order, vocabulary_size) for order in range(1, max_order + 1)]
    return min(models, key=lambda model: model.perplexity(val, start))


def split_text(dataset: str, name: str) -> str:
    """A split's text, from its windows (T characters, the last L targets, stride L): the first window's
    characters before its first target's, then every target in order."""
    from pipeline import data
    from pipeline.datasets import DATASETS, docstrings

    x, y = data.load_split(dataset, name)
    if DATASETS[dataset].spec.vocab_size != len(docstrings.VOCABULARY):
        raise ValueError(f"{dataset}: not a text over the docstrings vocabulary")
    return docstrings.decode(x[0, : x.shape[1] - y.shape[1] + 1].tolist() + y.flatten().tolist())


def reference_rows(dataset: str) -> list[dict]:
    """kneser_ney, the baseline to beat (its order chosen on the validation text), and kneser_ney_bigram,
    what one character of context gives."""
    from pipeline.datasets import DATASETS, docstrings

    spec = DATASETS[dataset].spec
    start = spec.input_shape[0] - spec.target_length + 1  # the first character the models predict
    train, val, test = (split_text(dataset, name) for name in ("train", "val", "test"))
    best = fit(train, val, len(docstrings.VOCABULARY), start=start)
    bigram = KneserNey(*ngram_counts(train, 2), 2, len(docstrings.VOCABULARY))
    return [{"name": "kneser_ney", "family": f"interpolated Kneser-Ney {best.order}-gram (order chosen on val)",
             "test/perplexity": round(best.perplexity(test, start), 6)},
            {"name": "kneser_ney_bigram", "family": "interpolated Kneser-Ney bigram",
             "test/perplexity": round(bigram.perplexity(test, start), 6)}]
