"""English text for a character-level language model (ch. 7): the standard library's documentation strings.

The text is the docstrings of a fixed list of pure-Python standard-library modules, in a fixed order,
read from their source files: each module's docstring, then in definition order its top-level public
classes (the class's docstring, then its undecorated public methods') and undecorated public functions,
each docstring cleaned of indentation (inspect.cleandoc), the
first occurrence of a repeated one kept, joined by blank lines. The docstrings change between Python
releases, so the text (and every number measured on it) belongs to the Python version that prepared
it: meta.json records that version and the text's sha256.

Characters are tokens over a fixed alphabet: newline and printable ASCII; any other character is the
one unknown token. The text is cut by position, never shuffled across a boundary: the first part
trains, the next validates, the last tests (fractions from params.yaml's data section). Each part is
cut into windows of T characters with stride T; a window's input is c_i … c_{i+T-1} and its target
c_{i+1} … c_{i+T}, so every character of a part but its first is a target exactly once, predicted from
the characters of its window before it.

`make_splits(config, window, targets)` also cuts windows of T characters whose last L < T positions
alone are targets, with stride L: each target then has at least T - L characters of context, and
every character of a part from position T - L + 1 on is a target exactly once
(docstrings_long.py uses it).
"""

from __future__ import annotations

import numpy as np

from pipeline.spec import Dataset, DataSpec

MODULES = (
    "argparse", "collections", "csv", "dataclasses", "difflib", "fractions", "functools", "heapq", "json", "logging",
    "pathlib", "pprint", "random", "shlex", "statistics", "string", "textwrap", "unittest", "zipfile", "tarfile",
    "calendar", "configparser", "contextlib", "copy", "datetime", "enum", "fnmatch", "gettext", "glob", "gzip",
    "ipaddress", "mailbox", "numbers", "operator", "optparse", "pickle", "queue", "sched", "shutil", "tempfile",
    "threading", "timeit", "tokenize", "traceback", "uuid", "warnings", "weakref",
)
ALPHABET = "\n" + "".join(chr(code) for code in range(32, 127))  # tokens 0 .. 95; token 96 is any other character
UNKNOWN = "\N{CURRENCY SIGN}"  # how the unknown token is shown
VOCABULARY = ALPHABET + UNKNOWN
WINDOW = 64  # T, characters per window


def docstrings(source: str) -> list[str]:
    """The docstrings of a module's source: the module's, then, in definition order, its top-level public
    classes' (each followed by its undecorated public methods') and undecorated public functions'.

    Read from the source file, not from the imported module: a library imported earlier in the same
    process may have replaced a module's function (a warnings hook, say), and the text must not depend
    on what else the process imported (a stage run cold, or forked from a server that preloaded them)."""
    import ast

    tree = ast.parse(source)
    found = [ast.get_docstring(tree, clean=False)]
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)) or node.name.startswith("_"):
            continue
        if isinstance(node, ast.ClassDef):
            found.append(ast.get_docstring(node, clean=False))
            found += [ast.get_docstring(item, clean=False) for item in node.body
                      if isinstance(item, ast.FunctionDef) and not item.name.startswith("_") and not item.decorator_list]
        elif isinstance(node, ast.FunctionDef) and not node.decorator_list:
            found.append(ast.get_docstring(node, clean=False))
    return found


def corpus(modules: tuple[str, ...] = MODULES) -> str:
    """The modules' docstrings, cleaned, each once, joined by blank lines."""
    import importlib.util
    import inspect
    from pathlib import Path

    kept = {}
    for name in modules:
        source = Path(importlib.util.find_spec(name).origin).read_text(encoding="utf-8")
        for doc in docstrings(source):
            if doc and doc.strip():
                kept.setdefault(inspect.cleandoc(doc), None)
    return "\n\n".join(kept)


def encode(text: str) -> np.ndarray:
    """Characters -> token ids (n,): a character's index in ALPHABET, or len(ALPHABET) for any other."""
    index = {character: token for token, character in enumerate(ALPHABET)}
    return np.array([index.get(character, len(ALPHABET)) for character in text], dtype=np.int64)


def decode(tokens) -> str:
    return "".join(VOCABULARY[token] for token in tokens)


def windows(tokens: np.ndarray, window: int, targets: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n, T) = c_i … c_{i+T-1} and targets (n, L) = c_{i+T-L+1} … c_{i+T}, the next character of
    each of the input's last L positions, for i = 0, L, 2L, … (L = T unless given)."""
    step = window if targets is None else targets
    starts = step * np.arange((len(tokens) - window - 1) // step + 1)[:, None]  # the last target is c_{n-1} at most
    return tokens[starts + np.arange(window)], tokens[starts + np.arange(window - step + 1, window + 1)]


def make_splits(config, window: int = WINDOW, targets: int | None = None) -> tuple[dict, dict]:
    """The text cut by position (train, then val, then test), windows inside each part only."""
    import hashlib
    import platform

    text = corpus()
    tokens = encode(text)
    n_test, n_val = int(len(tokens) * config.test_fraction), int(len(tokens) * config.val_fraction)
    cuts = {"train": tokens[: -n_val - n_test], "val": tokens[-n_val - n_test : -n_test], "test": tokens[-n_test:]}
    facts = {
        "python_version": platform.python_version(),
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "characters": len(text),
        "unknown_characters": int((tokens == len(ALPHABET)).sum()),
        "vocabulary": VOCABULARY,
        "modules": list(MODULES),
    }
    return {name: windows(part, window, targets) for name, part in cuts.items()}, facts


DATASET = Dataset(
    DataSpec("sequence", (WINDOW,), len(VOCABULARY), vocab_size=len(VOCABULARY), target_length=WINDOW), None,
    f"the docstrings of {len(MODULES)} standard-library modules, characters in windows of {WINDOW}, split by position",
    "none", make_splits,
)
