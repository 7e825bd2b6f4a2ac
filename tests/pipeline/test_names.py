"""Names typed on the command line: every entry point that takes one checks it against params.NAME
before it looks it up, prints it, or makes a path of it, and says so in one line."""

from __future__ import annotations

import pytest

from pipeline import evaluate, examples, sweep, train
from pipeline.params import NAME, ConfigError

RULE = r"allowed: up to 64 letters, digits, '\.', '_' and '-', starting with a letter or digit$"
BAD = ["../models", "a;touch PWNED", "..", "a/b", "a b", "$(id)", "-rf", "x" * 65, "a\x1bb"]


@pytest.mark.parametrize("name", BAD)
def test_the_pattern_refuses_paths_shell_words_and_options(name):
    assert not NAME.fullmatch(name)


@pytest.mark.parametrize("name", ["mlp_digits", "cnn-v2", "lr0.01", "A", "9" * 64])
def test_the_pattern_takes_plain_names(name):
    assert NAME.fullmatch(name)


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize(("main", "argv", "message"), [
    (train.main, [], r"^experiment name: .+ is not an experiment name; "),
    (evaluate.main, [], r"^experiment name: .+ is not an experiment name; "),
    (examples.main, ["--params", "missing.yaml", "enable"], r"^example name: .+ is not an example name; "),
    (sweep.main, [], r"^sweep name: .+ is not a sweep name; "),
])
def test_each_entry_point_checks_the_name_it_is_given_first(main, argv, message, name):
    """Before the params file is read (examples is given a missing one, which would say so); the name is
    quoted cut short. `--` makes argparse take "-rf" as the name rather than as an option."""
    with pytest.raises(ConfigError, match=message + RULE) as error:
        main([*argv, "--", name])
    assert "\n" not in str(error.value) and len(str(error.value)) < 200
