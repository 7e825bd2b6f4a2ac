"""Malformed params shared by tests/pipeline/test_params.py, which loads each, and
tests/e2e/test_cli_errors.py, which runs each through the train stage."""

from __future__ import annotations

from typing import Callable

import yaml

from pipeline import params

REAL = yaml.safe_load((params.ROOT / "params.yaml").read_text())


def rename(section: str, old: str, new) -> Callable[[dict], None]:
    """An edit giving the entry `old` of `section` the name `new`, in its place."""
    return lambda p: p.update({section: {(new if name == old else name): spec for name, spec in p[section].items()}})


def mlp(**changes) -> Callable[[dict], None]:
    """An edit of experiments.mlp_digits: `optimizer={...}` updates the optimizer, and so on."""
    def edit(p):
        entry = p["experiments"]["mlp_digits"]
        for key, value in changes.items():
            if isinstance(value, dict):
                entry.setdefault(key, {}).update(value)
            else:
                entry[key] = value
    return edit


NAME_RULE = r"up to 64 letters, digits, '\.', '_' and '-', starting with a letter or digit"

# Malformed params: an edit of the real params.yaml and the pinned message (a regex) it must give.
# tests/e2e/test_cli_errors.py runs each through the train stage too (exit 2, nothing written).
BAD_EDITS = [
        (lambda p: p["experiments"]["mlp_digits"].update(family="mlpp"),
         r"^experiments\.mlp_digits\.family: unknown family 'mlpp'; allowed: autoencoder, cnn, ddpm, dqn, gan, .*gcn, .*least_squares_classifier, .*linear_regression, .*logistic_ovr, .*mlp"),
        (lambda p: p["experiments"]["mlp_digits"].update(dataset="imagenet"),
         r"^experiments\.mlp_digits\.dataset: unknown dataset 'imagenet'; allowed: ar_series, breast_cancer, cartpole, .*, digits, .*, sbm"),
        (lambda p: p["experiments"]["mlp_digits"]["optimizer"].update(name="adamax"),
         r"^experiments\.mlp_digits\.optimizer\.name: unknown value 'adamax'; allowed: sgd, adam, adamw, rmsprop, adagrad, lbfgs$"),
        (lambda p: p["experiments"]["mlp_digits"]["scheduler"].update(name="exponential"),
         r"^experiments\.mlp_digits\.scheduler\.name: unknown value 'exponential'; allowed: none, step, cosine, onecycle$"),
        (lambda p: p["experiments"]["mlp_digits"]["model"].update(activation="swish"),
         r"^experiments\.mlp_digits\.model\.activation: unknown value 'swish'; allowed: relu, tanh, sigmoid, gelu, leaky_relu$"),
        (lambda p: p["experiments"]["mlp_digits"]["model"].update(init="orthogonal"),
         r"^experiments\.mlp_digits\.model\.init: unknown value 'orthogonal'; allowed: xavier, he$"),
        (lambda p: p["experiments"]["mlp_digits"]["optimizer"].update(lerning_rate=0.1),
         r"^experiments\.mlp_digits\.optimizer\.lerning_rate: unknown key; allowed: lr, momentum, name, nesterov, weight_decay$"),
        (lambda p: p["experiments"]["mlp_digits"].update(lerning_rate=0.1),
         r"^experiments\.mlp_digits\.lerning_rate: unknown key; allowed: batch_size, checkpoint, "),
        (lambda p: p["experiments"]["mlp_digits"]["model"].update(widths=[3]),
         r"^experiments\.mlp_digits\.model\.widths: unknown key; allowed: activation, batch_norm, dropout, hidden_sizes, init$"),
        (lambda p: p["defaults"].update(epochs=3),
         r"^experiments\.linear_diabetes\.epochs: unknown key"),
        (lambda p: p.update(trainig={}),
         r"^trainig: unknown key; allowed: data, defaults, examples, experiments, targets, tracking$"),
        (lambda p: p["examples"]["mnist_mlp"]["model"].update(activation="swish"),
         r"^examples\.mnist_mlp\.model\.activation: unknown value 'swish'; allowed: relu, tanh, sigmoid, gelu, leaky_relu$"),
        (lambda p: p["examples"]["mnist_least_squares"].update(family="least_squares"),
         r"^examples\.mnist_least_squares\.family: unknown family 'least_squares'; allowed: "),
        (lambda p: p["examples"]["mnist_logistic_ovr"].update(dataset="breast_cancer"),
         r"^examples\.mnist_logistic_ovr: family 'logistic_ovr' handles multiclass data, but dataset 'breast_cancer' is binary$"),
        (lambda p: p["examples"]["mnist_least_squares"]["model"].update(l2=-1.0),
         r"^examples\.mnist_least_squares\.model\.l2: must be zero or positive, got -1\.0$"),
        (lambda p: p["examples"].update(mlp_digits=p["experiments"]["mlp_digits"]),
         r"^examples\.mlp_digits: also the name of an experiment; an example needs a name of its own$"),
        (lambda p: p.update(examples=["mnist_mlp"]), r"^examples: must be a mapping of experiments \(disabled until enabled\)$"),
        (lambda p: p["targets"].update(mnist_softmax=[{"metric": "test/accuracy", "book": "92 %", "at_least_delta": -0.01}]),
         r"^targets\.mnist_softmax\[0\]\.book: must be a number, got '92 %'$"),
        (lambda p: p["targets"].update(mnist_softmax=[{"metric": "test/accuracy", "book": 0.9221}]),
         r"^targets\.mnist_softmax\[0\]: a target is one of .*\{at_least_delta, book, metric\}"),
        (lambda p: p["experiments"]["mlp_digits"]["optimizer"].update(lr="fast"),
         r"^experiments\.mlp_digits\.optimizer\.lr: must be a number, got 'fast'$"),
        (lambda p: p["experiments"]["mlp_digits"]["optimizer"].update(lr=0),
         r"^experiments\.mlp_digits\.optimizer\.lr: must be positive, got 0\.0$"),
        (lambda p: p["experiments"]["mlp_digits"]["optimizer"].update(lr=-1e-3),
         r"^experiments\.mlp_digits\.optimizer\.lr: must be positive, got -0\.001$"),
        (lambda p: p["experiments"]["mlp_digits"].update(max_epochs=0),
         r"^experiments\.mlp_digits\.max_epochs: must be positive, got 0$"),
        (lambda p: p["experiments"]["mlp_digits"].update(max_epochs=2.5),
         r"^experiments\.mlp_digits\.max_epochs: must be an integer, got 2\.5$"),
        (lambda p: p["experiments"]["mlp_digits"].update(batch_size=-8),
         r"^experiments\.mlp_digits\.batch_size: must be positive, got -8$"),
        (lambda p: p["experiments"]["mlp_digits"].update(batch_size="64"),
         r"^experiments\.mlp_digits\.batch_size: must be an integer, got '64'$"),
        (lambda p: p["experiments"]["mlp_digits"]["model"].update(dropout=1.0),
         r"^experiments\.mlp_digits\.model\.dropout: must be in \[0, 1\), got 1\.0$"),
        (lambda p: p["experiments"]["mlp_digits"]["optimizer"].update(momentum=0.9),
         r"^experiments\.mlp_digits\.optimizer\.momentum: applies to sgd and rmsprop only, not 'adamw'; set it to 0$"),
        (lambda p: p["experiments"]["mlp_digits"].update(early_stopping={"monitor": "val/mse"}),
         r"^experiments\.mlp_digits\.early_stopping\.monitor: unknown metric 'val/mse'; allowed: val/loss, val/accuracy$"),
        (lambda p: p["experiments"]["linear_diabetes"].update(family="softmax_regression"),
         r"^experiments\.linear_diabetes: family 'softmax_regression' handles multiclass data, but dataset 'diabetes' is regression$"),
        (lambda p: p["experiments"]["logistic_breast_cancer"].update(
            family="cnn", model=REAL["experiments"]["cnn_digits"]["model"]),
         r"^experiments\.logistic_breast_cancer\.dataset: family 'cnn' needs image data \(C, H, W\)"),
        (lambda p: p["experiments"]["lstm_seq_digits"].update(dataset="digits"),
         r"^experiments\.lstm_seq_digits\.dataset: family 'rnn' needs sequences \(T steps, D features, or tokens\), "
         r"but dataset 'digits' has samples of shape \(1, 8, 8\)$"),
        (lambda p: p["experiments"]["lstm_seq_digits"].update(dataset="reverse_digits"),
         r"^experiments\.lstm_seq_digits\.model\.bidirectional: must be false on token sequences"),
        (lambda p: p["experiments"]["mlp_digits"].update(dataset="reverse_digits"),
         r"^experiments\.mlp_digits: family 'mlp' handles regression/binary/multiclass data, but dataset 'reverse_digits' is sequence$"),
        (lambda p: p["experiments"]["lstm_seq_digits"]["model"].update(cell="elman"),
         r"^experiments\.lstm_seq_digits\.model\.cell: unknown value 'elman'; allowed: rnn, lstm, gru$"),
        (lambda p: p["experiments"]["transformer_seq_digits"]["model"].update(heads=5),
         r"^experiments\.transformer_seq_digits\.model\.width: must be even and a multiple of heads \(5\), got \d+$"),
        (lambda p: p["experiments"]["transformer_seq_digits"]["model"].update(norm="sandwich"),
         r"^experiments\.transformer_seq_digits\.model\.norm: unknown value 'sandwich'; allowed: pre, post$"),
        (lambda p: p["experiments"]["mlp_digits"]["model"].pop("dropout"),
         r"^experiments\.mlp_digits\.model\.dropout: missing"),
        (lambda p: p["targets"].update(nope=[]), r"^targets\.nope: no such experiment or example; known: linear_diabetes, "),
        (lambda p: p["experiments"]["gan_digits"].update(trainer={"gradient_clip_val": 1.0}),
         r"^experiments\.gan_digits\.trainer\.gradient_clip_val: family 'gan' steps its optimizers itself \(manual optimization\), which Lightning cannot clip; set it to 0$"),
        (lambda p: p["experiments"]["gan_digits"].update(trainer={"accumulate_grad_batches": 2}),
         r"^experiments\.gan_digits\.trainer\.accumulate_grad_batches: family 'gan' steps its optimizers itself \(manual optimization\) every batch; set it to 1$"),
        # Every family with manual optimization, not the GAN alone: Lightning refused these at fit time, after the run existed.
        (lambda p: p["experiments"]["q_learning_frozen_lake"].update(trainer={"gradient_clip_val": 1.0}),
         r"^experiments\.q_learning_frozen_lake\.trainer\.gradient_clip_val: family 'q_learning' steps its optimizers itself \(manual optimization\), which Lightning cannot clip; set it to 0$"),
        (lambda p: p["experiments"]["q_learning_frozen_lake"].update(trainer={"accumulate_grad_batches": 4}),
         r"^experiments\.q_learning_frozen_lake\.trainer\.accumulate_grad_batches: family 'q_learning' steps its optimizers itself \(manual optimization\) every batch; set it to 1$"),
        (lambda p: p["experiments"]["gan_digits"].update(trainer={"strategy": "fsdp"}),
         r"^experiments\.gan_digits\.trainer\.strategy: fsdp cannot train family 'gan', which steps its optimizers itself \(manual optimization\); allowed: auto, ddp, ddp_spawn$"),
        (lambda p: p["experiments"]["gan_digits"].update(trainer={"strategy": "deepspeed"}),
         r"^experiments\.gan_digits\.trainer\.strategy: deepspeed takes one optimizer, family 'gan' has 2; allowed: auto, ddp, ddp_spawn$"),
        (lambda p: p["experiments"]["least_squares_digits"].update(trainer={"precision": "16-mixed"}),
         r"^experiments\.least_squares_digits\.trainer\.precision: 16-mixed scales the loss, which L-BFGS's line search cannot take \(optimizer lbfgs\); allowed with lbfgs: 32-true, 64-true, bf16-mixed, bf16-true$"),
        (lambda p: p["experiments"]["mlp_digits"].update(trainer={"deterministic": 1}),
         r"^experiments\.mlp_digits\.trainer\.deterministic: unknown value 1; allowed: true, false, warn$"),
        (lambda p: p["targets"].update(mlp_digits=[{"metric": "test/accuracy", "lowest_among": ["cnn_digits", "nope"]}]),
         r"^targets\.mlp_digits\[0\]\.lowest_among: must list experiments of params\.yaml; unknown: nope$"),
        (lambda p: p["targets"].update(mlp_digits=[{"metric": "test/accuracy", "lowest_among": "cnn_digits"}]),
         r"^targets\.mlp_digits\[0\]\.lowest_among: must be a list, got 'cnn_digits'$"),
        (lambda p: p["targets"].update(mlp_digits=[{"metric": "test/accuracy", "experiment": "cnn", "at_least_delta": 0}]),
         r"^targets\.mlp_digits\[0\]\.experiment: must name an experiment of params\.yaml; unknown: cnn$"),
        (lambda p: p["targets"].update(mlp_digits=[{"metric": "test/accuracy", "experiment": "cnn_digits", "at_least": 0.9}]),
         r"^targets\.mlp_digits\[0\]: a target is one of .*\{at_least_delta, experiment, metric\}"),
        (lambda p: p["data"].update(test_fraction=1.5), r"^data\.test_fraction: must be between 0 and 1, got 1\.5$"),
        (lambda p: p["experiments"]["mlp_digits"]["trainer"].update(devices=0) if "trainer" in p["experiments"]["mlp_digits"]
         else p["experiments"]["mlp_digits"].update(trainer={"devices": 0}),
         r"^experiments\.mlp_digits\.trainer\.devices: must be positive, got 0$"),
        (lambda p: p["defaults"].update(launcher={"name": "mpirun"}),
         r"^experiments\.linear_diabetes\.launcher\.name: unknown value 'mpirun'; allowed: none, torchrun, srun$"),
        (lambda p: p.update(experiments={}), r"^experiments: at least one experiment is needed$"),
        (lambda p: p.update(defaults=3), r"^defaults: missing or not a mapping$"),
        (lambda p: p["experiments"]["dqn_cartpole"]["model"].update(gamma=1.0),
         r"^experiments\.dqn_cartpole\.model\.gamma: must be in \[0, 1\), got 1\.0$"),
        (lambda p: p["experiments"]["dqn_cartpole"]["model"].update(learning_starts=10),
         r"^experiments\.dqn_cartpole\.model\.learning_starts: must be at least minibatch_size \(\d+\) "),
        (lambda p: p["experiments"]["dqn_cartpole"].update(early_stopping={"monitor": "val/loss"}),
         r"^experiments\.dqn_cartpole\.early_stopping\.monitor: unknown metric 'val/loss'; allowed: val/mean_return$"),
        (lambda p: p["experiments"]["dqn_cartpole"]["early_stopping"].update(mode="min"),
         r"^experiments\.dqn_cartpole\.early_stopping\.mode: val/mean_return is a return to maximise; set it to max$"),
        (lambda p: p["experiments"]["ppo_cartpole"].update(scheduler={"name": "onecycle"}),
         r"^experiments\.ppo_cartpole\.scheduler\.name: onecycle needs the number of steps in advance"),
        (lambda p: p["experiments"]["q_learning_frozen_lake"].update(dataset="cartpole"),
         r"^experiments\.q_learning_frozen_lake\.dataset: a table needs discrete states \(observations of shape \(\)\), "
         r"cartpole has vectors; allowed: cliff_walking, frozen_lake$"),
        (lambda p: p["experiments"]["q_learning_cliff_walking"].update(trainer={"devices": 2}),
         r"^experiments\.q_learning_cliff_walking\.trainer\.devices: one table learns in one process; set devices and num_nodes to 1$"),
        (lambda p: p["experiments"]["ppo_cartpole"]["model"].update(clip=1.5),
         r"^experiments\.ppo_cartpole\.model\.clip: must be in \(0, 1\), got 1\.5$"),
        (lambda p: p["experiments"]["ppo_cartpole"].update(dataset="digits"),
         r"^experiments\.ppo_cartpole: family 'ppo' handles control data, but dataset 'digits' is multiclass$"),
        (lambda p: p["experiments"]["mlp_digits"].update(dataset="cartpole"),
         r"^experiments\.mlp_digits: family 'mlp' handles regression/binary/multiclass data, but dataset 'cartpole' is control$"),
        (lambda p: p["experiments"]["gcn_sbm"].update(dataset="digits"),
         r"^experiments\.gcn_sbm\.dataset: family 'gcn' learns from the nodes of one graph \([a-z0-9_, ]*\bsbm\b[a-z0-9_, ]*\), "
         r"but dataset 'digits' holds independent samples$"),
        (lambda p: p["experiments"]["mlp_digits"].update(dataset="sbm"),
         r"^experiments\.mlp_digits\.dataset: family 'mlp' learns from independent samples \([a-z0-9_, ]*\bdigits\b[a-z0-9_, ]*\), "
         r"but dataset 'sbm' holds the nodes of one graph$"),
        (lambda p: p["experiments"]["gin_connectivity"].update(dataset="sbm"),
         r"^experiments\.gin_connectivity\.dataset: family 'gin' learns from whole graphs, one label each \([a-z0-9_, ]*\bconnectivity\b[a-z0-9_, ]*\), "
         r"but dataset 'sbm' holds the nodes of one graph$"),
        (lambda p: p["experiments"]["gcn_sbm"]["model"].update(dropout=1.5),
         r"^experiments\.gcn_sbm\.model\.dropout: must be in \[0, 1\), got 1\.5$"),
        (lambda p: p["experiments"]["sage_sbm"]["model"].update(hidden_sizes=[0]),
         r"^experiments\.sage_sbm\.model\.hidden_sizes: widths must be positive integers, got \[0\]$"),
        (lambda p: p["experiments"]["gcn_sbm"].update(dataset="cora"),
         r"^experiments\.gcn_sbm\.dataset: 'cora' is downloaded from the network; opt in with data\.download: \[cora\]$"),
        (lambda p: p["tracking"].update(sweep="lr width"),
         r"^tracking\.sweep: 'lr width' is not a sweep name; allowed: up to 64 letters, digits, '\.', '_' and '-', "
         r"starting with a letter or digit \(or empty: no sweep\)$"),
        (lambda p: p["tracking"].update(sweeps="a"), r"^tracking\.sweeps: unknown key; allowed: experiment_name, sweep, system_metrics$"),
        (lambda p: p["tracking"].update(system_metrics="yes"), r"^tracking\.system_metrics: must be true or false, got 'yes'$"),
        (lambda p: p["tracking"].pop("system_metrics"), r"^tracking\.system_metrics: must be true or false, got None$"),
        (lambda p: p["data"].update(download=["karate"]), r"^data\.download\[0\]: unknown value 'karate'; allowed: cifar10, cora, fashion_mnist, mnist$"),
        (lambda p: p["experiments"]["gcn_sbm"].update(trainer={"devices": 2}),
         r"^experiments\.gcn_sbm\.trainer\.devices: full-batch training on one graph runs in one process; set it to 1$"),
        # Names: folders (models/NAME), MLflow tags, words of dvc.yaml's shell commands (issue 20, item 1).
        (rename("experiments", "mlp_digits", "../models"),
         rf"^experiments: '\.\./models' is not an experiment name; allowed: {NAME_RULE}$"),
        (rename("experiments", "mlp_digits", "a;touch PWNED"),
         rf"^experiments: 'a;touch PWNED' is not an experiment name; allowed: {NAME_RULE}$"),
        (rename("experiments", "mlp_digits", ".."), r"^experiments: '\.\.' is not an experiment name; "),
        (rename("experiments", "mlp_digits", "-rf"), r"^experiments: '-rf' is not an experiment name; "),
        (rename("experiments", "mlp_digits", "mlp digits"), r"^experiments: 'mlp digits' is not an experiment name; "),
        (rename("experiments", "mlp_digits", "$(id)"), r"^experiments: '\$\(id\)' is not an experiment name; "),
        (rename("experiments", "mlp_digits", "m" * 65), r"^experiments: 'm{56}\.\.\. is not an experiment name; "),
        (rename("experiments", "mlp_digits", 7), r"^experiments: 7 is not an experiment name; "),
        (rename("experiments", "mlp_digits", "mlp.v2"),
         r"^experiments: 'mlp\.v2' is not an experiment name: DVC splits the params path experiments\.NAME at each '\.'; "
         r"use '_' or '-' instead$"),
        (lambda p: p["experiments"].update(MLP_digits=p["experiments"]["mlp_digits"]),
         r"^experiments\.MLP_digits: differs from experiments\.mlp_digits only in case, and a case-insensitive file "
         r"system \(macOS, Windows\) has one folder for both; rename one$"),
        (rename("examples", "mnist_mlp", "mnist/mlp"), r"^examples: 'mnist/mlp' is not an example name; "),
        (lambda p: p["tracking"].update(sweep="s" * 65), rf"^tracking\.sweep: 's{{56}}\.\.\. is not a sweep name; allowed: {NAME_RULE} "),
        (lambda p: p["tracking"].update(experiment_name="runs\x1b[2J"),
         r"^tracking\.experiment_name: must be at most 256 printable characters \(no control characters\), got 'runs\\x1b\[2J'$"),
        (lambda p: p["tracking"].update(experiment_name="e" * 257), r"^tracking\.experiment_name: must be at most 256 printable "),
        (mlp(launcher={"args": ["--rdzv-endpoint=h:1\x00"]}),
         r"^experiments\.mlp_digits\.launcher\.args\[0\]: must be at most 256 printable characters"),
        (lambda p: p["targets"].update(mlp_digits=[{"metric": 5, "at_least": 0.9}]),
         r"^targets\.mlp_digits\[0\]\.metric: must be a non-empty string, got 5$"),
        (mlp(dataset=["digits"]), r"^experiments\.mlp_digits\.dataset: unknown dataset \['digits'\]; allowed: "),
        # Non-finite numbers and bounds (item 8).
        (mlp(optimizer={"weight_decay": float("nan")}),
         r"^experiments\.mlp_digits\.optimizer\.weight_decay: must be a finite number, got nan$"),
        (mlp(optimizer={"name": "sgd", "momentum": float("nan")}),
         r"^experiments\.mlp_digits\.optimizer\.momentum: must be a finite number, got nan$"),
        (mlp(trainer={"gradient_clip_val": float("nan")}),
         r"^experiments\.mlp_digits\.trainer\.gradient_clip_val: must be a finite number, got nan$"),
        (mlp(optimizer={"lr": float("inf")}), r"^experiments\.mlp_digits\.optimizer\.lr: must be a finite number, got inf$"),
        (mlp(optimizer={"lr": "1e999"}), r"^experiments\.mlp_digits\.optimizer\.lr: must be a finite number, got '1e999'$"),
        (mlp(optimizer={"lr": 10**400}), r"^experiments\.mlp_digits\.optimizer\.lr: must be a finite number, got 10{56}\.\.\.$"),
        (mlp(model={"dropout": float("nan")}), r"^experiments\.mlp_digits\.model\.dropout: must be a finite number, got nan$"),
        (lambda p: p["examples"]["mnist_cnn"]["optimizer"].update(lr=float("-inf")),
         r"^examples\.mnist_cnn\.optimizer\.lr: must be a finite number, got -inf$"),
        (lambda p: p["targets"].update(mlp_digits=[{"metric": "test/accuracy", "at_least": float("nan")}]),
         r"^targets\.mlp_digits\[0\]\.at_least: must be a finite number, got nan$"),
        (lambda p: p["data"].update(val_fraction=float("nan")), r"^data\.val_fraction: must be a finite number, got nan$"),
        (mlp(seed=-1), r"^experiments\.mlp_digits\.seed: must be between 0 and 2\*\*32 - 1 \(a seed numpy and Lightning accept\), got -1$"),
        (mlp(seed=2**40), r"^experiments\.mlp_digits\.seed: must be between 0 and 2\*\*32 - 1 .*, got 1099511627776$"),
        (lambda p: p["data"].update(split_seed=2**32), r"^data\.split_seed: must be between 0 and 2\*\*32 - 1 .*, got 4294967296$"),
        (mlp(max_epochs=10**9),
         r"^experiments\.mlp_digits\.max_epochs: must be at most 100000 \(this project's bound on epochs\), got 1000000000$"),
        (mlp(batch_size=2**20 + 1),
         r"^experiments\.mlp_digits\.batch_size: must be at most 1048576 \(2\*\*20\) samples per device, got 1048577$"),
        (mlp(early_stopping={"patience": 2**53 + 1}),
         r"^experiments\.mlp_digits\.early_stopping\.patience: must be an integer between -2\*\*53 and 2\*\*53, got 9007199254740993$"),
        (mlp(model={"hidden_sizes": [-(2**60)]}),
         r"^experiments\.mlp_digits\.model\.hidden_sizes\[0\]: must be an integer between -2\*\*53 and 2\*\*53, got "),
        (mlp(trainer={"threads": 0}), r"^experiments\.mlp_digits\.trainer\.threads: must be positive, got 0$"),
        (mlp(trainer={"threads": 1025}), r"^experiments\.mlp_digits\.trainer\.threads: must be at most 1024, got 1025$"),
        (mlp(trainer={"threads": "2"}), r"^experiments\.mlp_digits\.trainer\.threads: must be an integer, got '2'$"),
        (lambda p: p["defaults"]["trainer"].pop("threads"), r"^experiments\.linear_diabetes\.trainer\.threads: missing$"),
        # A message quotes a value cut short, whatever its length (item 7).
        (mlp(optimizer={"lr": "fast" * 10_000}), r"^experiments\.mlp_digits\.optimizer\.lr: must be a number, got '(fast){14}\.\.\.$"),
        (lambda p: p["defaults"].update({"k" * 10_000: 1}), r"^experiments\.linear_diabetes\.'k{56}\.\.\.: unknown key; allowed: "),
]
