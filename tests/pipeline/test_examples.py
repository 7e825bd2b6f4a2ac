"""`python -m pipeline.examples enable`: an example moves, line for line, from examples: to experiments:,
its downloaded dataset is opted in, and then (only then) DVC has stages for it."""

from __future__ import annotations

import difflib

import pytest

from pipeline import cli, examples, params
from pipeline.params import ConfigError

from conftest import copy_project, dvc, git_init

REAL = (params.ROOT / "params.yaml").read_text()

# An example on a dataset that comes from the network, as the params file would hold it.
CORA_EXAMPLE = """
  gcn_cora:  # the public split
    family: gcn
    dataset: cora
    max_epochs: 200
    model: {hidden_sizes: [16], activation: relu, dropout: 0.5}
"""


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(REAL)
    return path


def entry_lines(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {name}:"))
    return lines[start:examples._entry_end(lines, start)]


def test_enable_moves_the_entry_with_its_comments_and_changes_nothing_else(params_file):
    before = entry_lines(REAL, "mnist_cnn")
    assert any("# cnn_digits' settings" in line for line in before)  # comments move with the entry
    assert examples.enable(["mnist_cnn"], params_file) == [
        "enabled mnist_cnn: moved from examples to experiments",
        "data.download: added mnist (prepare downloads it: needs network)",
    ]

    after = params_file.read_text()
    config = params.load(params_file)
    assert list(config.experiments)[-1] == "mnist_cnn" and "mnist_cnn" not in config.examples
    assert config.experiments["mnist_cnn"] == params.load().examples["mnist_cnn"]
    assert config.data.download == ["mnist"]
    assert entry_lines(after, "mnist_cnn") == before
    is_download = lambda line: line.strip().startswith("download:")  # noqa: E731
    assert [line for line in after.splitlines() if is_download(line)] == [
        line.replace("[]", "[mnist]") for line in REAL.splitlines() if is_download(line)
    ]
    rest = lambda text: sorted(line for line in text.splitlines() if not is_download(line))  # noqa: E731
    assert rest(after) == rest(REAL)  # the same lines, moved
    changed = [line for line in difflib.ndiff(REAL.splitlines(), after.splitlines())
               if line[:1] in "+-" and not is_download(line[2:])]
    assert all(line[2:] in before or not line[2:].strip() for line in changed)


def test_enable_appends_several_in_the_order_given_and_keeps_the_rest_valid(params_file):
    examples.enable(["mnist_softmax", "mnist_least_squares"], params_file)
    config = params.load(params_file)
    assert list(config.experiments)[-2:] == ["mnist_softmax", "mnist_least_squares"]
    assert list(config.examples) == ["mnist_least_squares_ovo", "mnist_logistic_ovr", "mnist_logistic_ovo", "mnist_mlp", "mnist_cnn",
                                     "gru_docstrings_large", "transformer_docstrings_large", "gru_attention_reverse_large"]
    examples.enable(list(config.examples), params_file)
    assert params.load(params_file).examples == {}


def test_enable_opts_a_downloaded_dataset_in_and_keeps_the_download_line_as_written(params_file):
    text = REAL.replace("\nexamples:\n", "\nexamples:\n" + CORA_EXAMPLE.lstrip("\n") + "\n")
    params_file.write_text(text)
    assert "cora" not in params.load(params_file).data.download  # valid before it is enabled

    done = examples.enable(["gcn_cora"], params_file)
    assert done[-1] == "data.download: added cora (prepare downloads it: needs network)"
    config = params.load(params_file)
    assert config.data.download == ["cora"] and config.experiments["gcn_cora"].dataset == "cora"
    download_line = next(line for line in params_file.read_text().splitlines() if "download:" in line)
    assert download_line == next(line for line in text.splitlines() if "download:" in line).replace("[]", "[cora]")


@pytest.mark.parametrize(("names", "message"), [
    (["nope"], r"^unknown example 'nope'; params.yaml's examples: mnist_least_squares, mnist_least_squares_ovo, mnist_logistic_ovr, mnist_logistic_ovo, mnist_softmax, mnist_mlp, mnist_cnn, gru_docstrings_large, transformer_docstrings_large, gru_attention_reverse_large$"),
    (["mnist_mlp", "mlp_digits"], r"^mlp_digits: already an experiment \(enabled\)$"),
])
def test_enable_rejects_a_name_that_is_not_an_example_and_writes_nothing(params_file, names, message):
    with pytest.raises(ConfigError, match=message):
        examples.enable(names, params_file)
    assert params_file.read_text() == REAL


def test_enable_rejects_examples_written_as_one_flow_mapping():
    text = REAL[:REAL.index("\nexamples:")] + "\nexamples: {mnist_mlp: {family: mlp}}\n"
    with pytest.raises(ConfigError, match=r"^examples: enable moves entries written one key a line \(block style\)"):
        examples.move_to_experiments(text, "mnist_mlp")


def test_the_command_reports_an_unknown_name_in_one_line_with_exit_code_2(params_file, capsys):
    assert cli.run(examples.main, ["--params", str(params_file), "enable", "nope"]) == 2
    assert capsys.readouterr().err == (
        "error: unknown example 'nope'; params.yaml's examples: "
        "mnist_least_squares, mnist_least_squares_ovo, mnist_logistic_ovr, mnist_logistic_ovo, mnist_softmax, mnist_mlp, mnist_cnn, gru_docstrings_large, transformer_docstrings_large, gru_attention_reverse_large\n")
    assert cli.run(examples.main, ["--params", str(params_file), "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["example", "mnist_least_squares", "least_squares_classifier", "mnist", "(downloaded)"]


def test_dvc_has_stages_for_an_example_only_once_it_is_enabled(tmp_path):
    project = copy_project(tmp_path / "project")
    git_init(project)
    stages = lambda: set(dvc("stage", "list", "--name-only", cwd=project).stdout.split())  # noqa: E731
    assert not any("mnist" in stage for stage in stages())
    examples.enable(["mnist_softmax"], project / "params.yaml")
    assert {stage for stage in stages() if "mnist" in stage} == {"train@mnist_softmax", "evaluate@mnist_softmax"}
