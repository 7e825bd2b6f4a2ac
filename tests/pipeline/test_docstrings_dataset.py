"""The docstrings text (pipeline/datasets/docstrings.py): a fixed alphabet, windows whose targets are
their inputs shifted by one character, and a split by position that keeps the text's order."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets import docstrings
from pipeline.references.docstrings import KneserNey


def test_characters_outside_the_alphabet_are_the_one_unknown_token():
    tokens = docstrings.encode("Ab 1\n\té")
    assert tokens.tolist()[:5] == [docstrings.ALPHABET.index(c) for c in "Ab 1\n"]
    assert tokens.tolist()[5:] == [len(docstrings.ALPHABET)] * 2
    assert docstrings.decode(tokens) == "Ab 1\n" + docstrings.UNKNOWN * 2


def test_windows_predict_each_character_of_a_part_but_the_first_exactly_once():
    tokens = np.arange(23)
    x, y = docstrings.windows(tokens, 5)
    assert x.shape == y.shape == (4, 5)
    np.testing.assert_array_equal(y, x + 1)  # the target is the next character
    np.testing.assert_array_equal(y.flatten(), tokens[1:21])


def test_windows_with_fewer_targets_overlap_and_predict_each_character_from_position_t_minus_l_plus_1_once():
    tokens = np.arange(23)
    x, y = docstrings.windows(tokens, 5, 2)  # T = 5, L = 2: stride 2, at least 3 characters of context
    assert x.shape == (9, 5) and y.shape == (9, 2)
    np.testing.assert_array_equal(x[:, 0], np.arange(0, 18, 2))
    np.testing.assert_array_equal(y, x[:, -2:] + 1)  # the next character of the input's last L positions
    np.testing.assert_array_equal(y.flatten(), tokens[4:22])
    same = docstrings.windows(tokens, 5, 5)
    np.testing.assert_array_equal(same[0], docstrings.windows(tokens, 5)[0])


def test_docstrings_long_cuts_the_same_parts_into_longer_windows():
    from pipeline.datasets import docstrings_long

    config = types.SimpleNamespace(val_fraction=0.1, test_fraction=0.2)
    short, _ = docstrings.make_splits(config)
    long, _ = docstrings_long.make_splits(config)
    T, L = docstrings_long.WINDOW, docstrings_long.TARGETS
    for name, (x, y) in long.items():
        assert x.shape[1] == T and y.shape[1] == L
        text = x[0, : T - L + 1].tolist() + y.flatten().tolist()  # what the reference's split_text decodes
        part = short[name][0].flatten().tolist()
        assert text[: len(part)] == part[: len(text)], name  # the same characters, in order
        assert len(text) > len(part) - T, name  # at most one window's worth of the part is cut off


def test_the_split_cuts_the_text_by_position_in_order():
    config = types.SimpleNamespace(val_fraction=0.1, test_fraction=0.2)
    parts, facts = docstrings.make_splits(config)
    text = docstrings.corpus()
    assert facts["characters"] == len(text) and facts["vocabulary"] == docstrings.VOCABULARY
    n_test, n_val = int(len(text) * 0.2), int(len(text) * 0.1)
    starts = {"train": 0, "val": len(text) - n_val - n_test, "test": len(text) - n_test}
    for name, (x, y) in parts.items():
        shown = docstrings.decode(x.flatten().tolist() + y[-1, -1:].tolist())
        assert shown == docstrings.decode(docstrings.encode(text[starts[name] : starts[name] + len(shown)])), name
        assert x.shape[1] == docstrings.WINDOW


def test_the_docstrings_are_english_text():
    text = docstrings.corpus()
    assert text.count(" the ") > 1000
    assert (docstrings.encode(text) == len(docstrings.ALPHABET)).mean() < 1e-3  # the alphabet covers nearly all of it
    assert text == docstrings.corpus()  # the same text each time


def test_the_kneser_ney_model_is_a_distribution_over_the_docstrings_vocabulary():
    from pipeline.references.docstrings import ngram_counts

    train = docstrings.corpus()[:20_000]
    model = KneserNey(*ngram_counts(train, 4), 4, len(docstrings.VOCABULARY))
    for history in ("the", "xq#", "\n\n "):
        assert sum(model.probability(history, c) for c in docstrings.VOCABULARY) == pytest.approx(1.0)


def test_the_text_does_not_depend_on_what_the_process_imported_before():
    """A library may replace a standard module's function when imported (one replaces a warnings hook):
    the text read from the imported modules then depended on whether the stage ran cold or in a fork
    server's child that had preloaded it (pipeline/forkserver.py). Read from the sources, it cannot."""
    import subprocess
    import sys

    script = ("import hashlib; from pipeline.datasets import docstrings as d; "
              "print(hashlib.sha256(d.corpus().encode()).hexdigest()); "
              "import torch, lightning, torchmetrics, mlflow, sklearn, scipy.signal, matplotlib.pyplot, networkx, gymnasium; "
              "print(hashlib.sha256(d.corpus().encode()).hexdigest())")
    cold, preloaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                     cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert cold == preloaded
