"""Config validation: every user error is one line naming the key and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conftest import alias_bomb, dump
from params_cases import BAD_EDITS, NAME_RULE, REAL
from pipeline import params
from pipeline.config import Config
from pipeline.params import ConfigError


def load_with(tmp_path: Path, edit) -> Config:
    raw = copy.deepcopy(REAL)
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(dump(raw))
    return params.load(path)


def test_default_params_are_valid_and_name_the_experiments():
    config = params.load()
    assert list(config.experiments) == [
        "linear_diabetes", "logistic_breast_cancer", "softmax_digits",
        "least_squares_digits", "least_squares_ovo_digits", "logistic_ovr_digits", "logistic_ovo_digits", "mlp_digits", "cnn_digits",
        "resnet_digits", "inception_digits", "siamese_digits",
        "rnn_seq_digits", "lstm_seq_digits", "gru_seq_digits", "transformer_seq_digits", "lstm_ar_series",
        "transformer_seq2seq", "gru_seq2seq_reverse", "gru_attention_reverse", "transformer_encdec_reverse",
        "transformer_encdec_every_other", "gru_docstrings", "transformer_docstrings",
        "linear_ae_digits", "ae_digits", "denoising_ae_digits", "vae_digits", "gan_digits", "ddpm_digits",
        "dqn_cartpole", "ppo_cartpole", "reinforce_cartpole", "q_learning_frozen_lake", "q_learning_cliff_walking",
        "gcn_sbm", "gcn_karate", "sage_sbm", "gat_sbm", "gat_karate",
        "gcn_sbm_inductive", "sage_sbm_inductive", "gat_sbm_inductive", "gin_connectivity",
    ]
    assert {config.experiments[f"{cell}_seq_digits"].model["cell"] for cell in ("rnn", "lstm", "gru")} == {"rnn", "lstm", "gru"}
    mlp = config.experiments["mlp_digits"]
    assert mlp.family == "mlp" and mlp.dataset == "digits"
    assert mlp.optimizer.name == "adamw" and isinstance(mlp.optimizer.lr, float)
    assert config.experiments["linear_diabetes"].optimizer.name == "lbfgs"


def test_experiment_overrides_merge_over_defaults():
    softmax = params.load().experiments["softmax_digits"]
    assert softmax.trainer.precision == REAL["defaults"]["trainer"]["precision"]
    assert softmax.optimizer.weight_decay == REAL["experiments"]["softmax_digits"]["optimizer"]["weight_decay"]


@pytest.mark.parametrize(("edit", "message"), BAD_EDITS)
def test_bad_params_give_one_line_naming_the_key(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_with(tmp_path, edit)
    assert "\n" not in str(error.value)


def test_numbers_written_1e_3_are_numbers(tmp_path):
    raw = copy.deepcopy(REAL)
    text = yaml.safe_dump(raw, sort_keys=False).replace("lr: 0.002", "lr: 2e-3")
    assert "lr: 2e-3" in text  # PyYAML (YAML 1.1) reads this as the string '2e-3'
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert params.load(path).experiments["mlp_digits"].optimizer.lr == pytest.approx(2e-3)


def test_examples_are_validated_but_are_not_experiments():
    config = params.load()
    assert list(config.examples) == ["mnist_least_squares", "mnist_least_squares_ovo", "mnist_logistic_ovr",
                                     "mnist_logistic_ovo", "mnist_softmax", "mnist_mlp", "mnist_cnn",
                                     "gru_docstrings_large", "transformer_docstrings_large", "gru_attention_reverse_large"]
    assert not set(config.examples) & set(config.experiments)
    assert [config.examples[name].family for name in config.examples] == [
        "least_squares_classifier", "least_squares_ovo", "logistic_ovr", "logistic_ovo", "softmax_regression", "mlp", "cnn", "rnn", "transformer", "seq2seq_rnn"]
    assert config.examples["mnist_mlp"].optimizer.lr == pytest.approx(2e-3)  # merged over defaults, typed
    with pytest.raises(ConfigError, match=r"^'mnist_cnn' is an example, disabled; enable it first: python -m pipeline\.examples enable mnist_cnn$"):
        params.load_experiment("mnist_cnn")


def test_an_examples_targets_are_validated_and_wait_until_it_is_enabled():
    """The MNIST examples carry the book's Table 3.1 figures as targets, the large language models the
    Kneser-Ney n-gram's; the report checks them once run."""
    config = params.load()
    assert set(config.targets) - set(config.experiments) == {
        "mnist_least_squares", "mnist_least_squares_ovo", "mnist_logistic_ovr", "mnist_logistic_ovo", "mnist_softmax",
        "gru_docstrings_large", "transformer_docstrings_large", "gru_attention_reverse_large"}
    assert config.targets["mnist_least_squares_ovo"] == [{"metric": "test/accuracy", "book": 0.9297, "at_least_delta": -0.01}]


def test_an_example_on_a_downloaded_dataset_needs_no_opt_in_until_enabled(tmp_path):
    def edit(p):
        p["examples"]["gcn_cora"] = {**p["experiments"]["gcn_sbm"], "dataset": "cora"}

    assert "cora" not in REAL["data"]["download"]
    assert load_with(tmp_path, edit).examples["gcn_cora"].dataset == "cora"


def test_params_without_examples_are_valid(tmp_path):
    def without_examples(p, value):  # and without the examples' targets, which would name nothing
        p["targets"] = {name: targets for name, targets in p["targets"].items() if name not in p["examples"]}
        p["examples"] = value

    assert load_with(tmp_path, lambda p: without_examples(p, {})).examples == {}
    assert load_with(tmp_path, lambda p: without_examples(p, None)).examples == {}
    with pytest.raises(ConfigError, match=r"^targets\.mnist_least_squares: no such experiment or example; known: "):
        load_with(tmp_path, lambda p: p.pop("examples"))


def test_dvc_stages_come_from_experiments_only():
    """dvc.yaml's train and evaluate stages are `foreach: ${experiments}`: an example never becomes a stage."""
    stages = yaml.safe_load((params.ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["train"]["foreach"] == stages["evaluate"]["foreach"] == "${experiments}"


def test_unknown_experiment_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"^unknown experiment 'nope'; params.yaml defines: linear_diabetes, "):
        params.load_experiment("nope")


def test_flat_config_holds_every_resolved_value():
    flat = params.load().experiments["cnn_digits"].flat()
    assert flat["optimizer.name"] == "adamw"
    assert flat["model.channels"] == REAL["experiments"]["cnn_digits"]["model"]["channels"]
    assert flat["trainer.precision"] == "32-true"
    assert "name" in flat and "family" in flat


def test_store_root_inside_a_dvc_experiment_copy_is_the_outer_repository():
    from pipeline.core.tracking import store_root

    assert store_root(Path("/home/u/proj/.dvc/tmp/exps/tmpab12/")) == Path("/home/u/proj")
    assert store_root(Path("/home/u/proj")) == Path("/home/u/proj")


def imported_after(code: str) -> set[str]:
    """The heavy top-level packages in sys.modules after `code` runs in a fresh interpreter (this one has
    imported them all)."""
    import subprocess
    import sys

    from pipeline.stagestats import HEAVY

    probe = f"{code}\nimport sys\nprint(' '.join(name for name in {list(HEAVY)!r} if name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=params.ROOT, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_loading_params_imports_every_family_but_no_environment_graph_or_tracking_library():
    """Every stage loads the whole params file, which imports every family: a family or its pipeline
    module importing gymnasium, PyTorch Geometric or MLflow at the top would put it in every stage."""
    imported = imported_after("from pipeline.params import load\nload()")
    assert "lightning" in imported  # the families were imported, so the check below means something
    assert not imported & {"mlflow", "sklearn", "networkx", "gymnasium", "torch_geometric", "torchvision"}


def test_prepare_loads_params_without_torch_or_lightning():
    """prepare needs torch only to write tensors, when it prepares a dataset, and never Lightning."""
    imported = imported_after("import pipeline.prepare\nfrom pipeline.params import load\nload(family_checks=False)")
    assert not imported & {"torch", "lightning", "torchmetrics", "mlflow", "gymnasium", "torch_geometric"}


def test_the_params_file_is_read_within_bounds(tmp_path):
    """No anchors or aliases (an alias bomb would take minutes and gigabytes), a bounded size, number
    of YAML events and nesting: each refused in one line naming the file and, where there is one, the place."""
    real = (params.ROOT / "params.yaml").read_text()
    last = real.count("\n") + 1  # the line after the real file's last
    path = tmp_path / "params.yaml"
    for text, message in [
        (real + alias_bomb(), rf"^{path}: YAML anchor \(&\) at line {last}, column 5; params take no anchors or aliases: "
                              r"write the values out$"),
        (real.replace("  seed: 0\n", "  seed: &seed 0\n", 1), r": YAML anchor \(&\) at line \d+, column 9; "),
        ("a: *nowhere\n", rf"^{path}: YAML alias \(\*\) at line 1, column 4; params take no anchors or aliases: write the values out$"),
        ("a: [" + "1, " * 100_001 + "1]\n", rf"^{path}: more than 100000 YAML values, keys, lists and mappings \(at line 1, "
                                           r"column \d+\); a params file holds a few thousand$"),
        ("a: " + "[" * 40 + "]" * 40 + "\n", rf"^{path}: lists and mappings nested more than 32 deep at line 1, column 35; "
                                              r"params nest a few levels$"),
        ("# " + "x" * (1 << 20) + "\n", rf"^{path}: larger than 1 MiB; a params file holds a few KiB of settings$"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            params.load(path)
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: unreadable \(Is a directory\)$"):
        params.load(tmp_path)


def test_the_bounds_leave_a_file_within_them_as_it_was(tmp_path):
    """The checks before composing change nothing for a file within the bounds: a merge key (<<) with an
    inline mapping is plain YAML, and the real file loads as before, threads included."""
    config = params.load()
    assert config.threads == REAL["defaults"]["trainer"]["threads"] == 2
    text = (params.ROOT / "params.yaml").read_text().replace("  seed: 0\n", "  <<: {seed: 3}\n", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert params.load(path).experiments["mlp_digits"].seed == 3


@pytest.mark.parametrize("name", ["../models", "a;touch PWNED", "-x", "..", "a/b", "", "m" * 65, "a\nb"])
def test_a_name_typed_on_the_command_line_is_checked_before_params_are_read(tmp_path, name):
    """load_experiment is what train and evaluate call with the name they were given: a bad name is
    refused before the params file is even read (here there is none)."""
    with pytest.raises(ConfigError, match=rf"^experiment name: .+ is not an experiment name; allowed: {NAME_RULE}$"):
        params.load_experiment(name, tmp_path / "missing.yaml")
