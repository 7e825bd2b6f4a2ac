"""Shared test helpers: a throw-away copy of the project (code, params, DVC files, no outputs)."""

from __future__ import annotations

import contextlib

import os
import signal
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from slurm_cluster import free_port

ROOT = Path(__file__).resolve().parent.parent

# One intra-op thread in every process the tests start (stages, DVC queue workers, SLURM jobs): toy
# models gain nothing from more, pytest's workers run stages side by side, and float sums, hence
# metrics compared digit for digit, depend on the thread count.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The stage commands the tests start use the fork server as a user's would (pipeline/forkserver.py); the servers
# they start leave a minute after the last stage, not ten, so a finished run leaves nothing behind for long.
os.environ.setdefault("MEDL_FORKSERVER_IDLE", "60")
OUTPUTS = ("data", "models", "metrics", "plots", "reports", "scorers", "baselines", "dvc.lock", "mlflow.db", "dvc_plots")


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    """A headless browser's path, or the test skips with how to install one."""
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip(f"no headless browser: none of {', '.join(BROWSERS)} on PATH "
                "(Debian: apt-get install chromium; .ci/run installs it as root)")


def project_files() -> list[str]:
    """The files git would commit (tracked or new, not ignored), minus pipeline outputs."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    return [f for f in listed if f.split("/")[0] not in OUTPUTS and (ROOT / f).is_file()]


def copy_project(dest: Path) -> Path:
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


def env() -> dict[str, str]:
    """The stage commands' `python` must be this interpreter; the store is the copy's own default."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    environ["PYTHONWARNINGS"] = "ignore"
    return environ


def run(args: list[str], cwd: Path, check: bool = True, timeout: float = 900, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def python(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, *args], cwd=cwd, check=check)


def dvc(*args: str, cwd: Path, check: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=check, extra_env=extra_env)


# The experiments the end-to-end pipelines run: every family, dataset and task, both forms of the
# transformer (encoder, decoder) and a graph family (full batch). Left out: the recurrent models on digit
# rows, which differ from lstm_ar_series by their cell and data (tests/modules/test_rnn.py covers each
# cell), and the other graph experiments, which differ from gcn_sbm by their layer or their graph;
# tests/e2e/test_experiments.py trains every experiment of params.yaml, these too, in-process.
# Two halves, one `dvc repro` each, in two test files that pytest-xdist runs at once
# (tests/e2e/test_pipeline_e2e.py, tests/e2e/test_pipeline_e2e_more.py).
E2E_HALVES = (("linear_diabetes", "logistic_breast_cancer", "softmax_digits", "mlp_digits", "cnn_digits",
               "lstm_ar_series", "transformer_seq2seq", "gin_connectivity"),
              ("transformer_seq_digits", "gcn_sbm", "dqn_cartpole", "ppo_cartpole", "siamese_digits", "q_learning_cliff_walking"))
E2E_EXPERIMENTS = E2E_HALVES[0] + E2E_HALVES[1]


def shrink_params(path: Path, epochs: int = 2, keep: tuple[str, ...] | None = None) -> dict:
    """The real params.yaml with every experiment cut to a few epochs and its family's small sizes
    (its MODEL.small_config); only the experiments in `keep`, if given."""
    from pipeline.params import family_class

    params = yaml.safe_load(path.read_text())
    if keep is not None:
        params["experiments"] = {name: params["experiments"][name] for name in keep}
    for experiment in params["experiments"].values():
        experiment["max_epochs"] = min(epochs, experiment.get("max_epochs", epochs))
        if "model" in experiment:
            experiment["model"] = family_class(experiment["family"]).small_config(experiment["model"])
    params["targets"] = {}  # toy epochs do not meet the quality targets
    params["defaults"]["trainer"]["threads"] = 1  # pytest's workers run stages side by side
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


# The outputs DVC caches: git must never commit them, even when a test made one before `git init` (the
# copy has not the .gitignore files DVC writes beside them; they go to .git/info/exclude, outside the tree).
DVC_CACHED = ("/data/prepared/", "/models/", "/scorers/")


def git_init(path: Path) -> None:
    run(["git", "init", "-q"], cwd=path)
    with (path / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("".join(f"{pattern}\n" for pattern in DVC_CACHED))
    for args in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        run(["git", *args], cwd=path)


def fit_batch(model, x, y, steps: int) -> None:
    """Plain optimization of one batch with the module's own optimizer config (overfitting tests)."""
    from pipeline.core.family import build_optimizer

    optimizer = build_optimizer(model.parameters(), model.optimizer_config)
    for step in range(steps):
        optimizer.zero_grad()
        model.training_step((x, y), step).backward()
        optimizer.step()


def quiet_trainer(**kwargs):
    """A CPU Lightning Trainer with no logger, checkpoints, progress bar or summary."""
    import lightning as L

    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kwargs)


# Test files whose tests share one machine-wide resource or a costly session fixture: the SLURM cluster
# (munged's socket is machine-wide: two clusters at once break each other) and the uninterrupted
# reference training that the kill -9 and preemption tests compare with.
ONE_WORKER = ("tests/cluster/", "tests/pipeline/core/test_resume.py")


# The files that take longest, longest first (--durations): with --dist loadfile, xdist hands out
# files in collection order, so a long file collected last would end the run alone. The rest keep
# their order after these.
SLOWEST_FIRST = ("tests/e2e/test_pipeline_e2e.py", "tests/e2e/test_pipeline_e2e_more.py", ONE_WORKER, "tests/e2e/test_generative_e2e.py", "tests/e2e/test_distributed.py", "tests/e2e/test_team.py",
                 "tests/pipeline/core/test_launch.py", "tests/e2e/test_concurrency.py", "tests/e2e/test_cli_errors.py", "tests/e2e/test_non_finite.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        return next((i for i, prefix in enumerate(SLOWEST_FIRST) if item.nodeid.startswith(prefix)), len(SLOWEST_FIRST))

    items.sort(key=rank)  # stable: the tests of a file keep their order


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker more than the cores (at most 4, --maxprocesses). The slow tests wait on
    subprocesses, DVC's queue, a SLURM cluster or a server for part of their time; on 2 cores a third
    worker fills those gaps."""
    return (os.cpu_count() or 1) + 1


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist sends each test file to one worker (as --dist loadfile), and the ONE_WORKER files
    all to the same worker, in the order collected (SLOWEST_FIRST), not xdist's default of the files
    with the most tests first. (--dist loadgroup with xdist_group marks does not group under pytest
    9.2: pytest-dev/pytest-xdist#1386.)"""
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "one-worker" if nodeid.startswith(ONE_WORKER) else super()._split_scope(nodeid)

    return SharedFixtureScheduling(config, log)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and a busy 2-core runner stalls on them."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project with shrunk params, not yet a git repository."""
    copy = copy_project(tmp_path / "project")
    shrink_params(copy / "params.yaml")
    return copy


# ---------------------------------------------------------------------------------------------
# Interrupted trainings (tests/pipeline/core/test_resume.py, tests/cluster/test_slurm_preemption.py)

RESUME_EPOCHS = 120  # long enough that a signal sent after epoch 2 arrives before training ends on a loaded runner (40 raced once the loop got faster)


def make_resume_project(path: Path, launcher: str = "none") -> Path:
    """A prepared git copy whose only experiment is mlp_digits for RESUME_EPOCHS epochs, with dropout,
    batch norm and a cosine schedule: resuming it exactly needs the random state, data order,
    optimizer and scheduler states."""
    project = copy_project(path)
    raw = shrink_params(project / "params.yaml", epochs=RESUME_EPOCHS, keep=("mlp_digits",))
    raw["experiments"]["mlp_digits"]["model"]["hidden_sizes"] = [256, 256]
    raw["experiments"]["mlp_digits"]["max_epochs"] = RESUME_EPOCHS  # above the experiment's own 60
    raw["experiments"]["mlp_digits"]["launcher"] = {"name": launcher}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git_init(project)
    dvc("repro", "prepare", cwd=project)
    return project


def checkpoint_epoch(path: Path) -> int:
    """The epoch a Lightning checkpoint was saved in; -1 if it is absent or being written."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)["epoch"]
    except Exception:
        return -1


@pytest.fixture(scope="session")
def uninterrupted_metrics(tmp_path_factory) -> dict:
    """The test metrics of make_resume_project's experiment trained without interruption."""
    import json

    reference = make_resume_project(tmp_path_factory.mktemp("uninterrupted") / "project")
    dvc("repro", cwd=reference)
    return json.loads((reference / "metrics" / "mlp_digits.json").read_text())


# ---------------------------------------------------------------------------------------------
# A real MLflow tracking server (tests/e2e/test_concurrency.py, tests/e2e/test_pipeline_e2e.py); `serving` also starts
# the team's (team/tracking_server.py, tests/e2e/test_team.py)

@contextlib.contextmanager
def serving(command: list[str], port: int, log: Path, cwd: Path, extra_env: dict | None = None):
    """`command`, a server that answers /health on loopback's `port`, in a session of its own, its output in
    `log`; yields once /health answers, and ends the session with SIGTERM (SIGKILL after a minute)."""
    with log.open("w") as output:
        proc = subprocess.Popen(command, cwd=cwd, env={**env(), **(extra_env or {})}, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"{command[0]} did not answer within 120 s"
                time.sleep(0.5)
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def running_mlflow_server(root: Path, *args: str, extra_env: dict | None = None):
    """A real `mlflow server` (with `args`, e.g. --app-name) on loopback, its SQLite store and artifacts under
    `root`; yields its address once /health answers."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "server", *args, "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root / 'store.db'}", "--artifacts-destination", str(root / "artifacts")]
    with serving(command, port, root / "server.log", root, extra_env):
        yield f"127.0.0.1:{port}"


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on loopback with its own SQLite store and artifact folder."""
    with running_mlflow_server(tmp_path / "server", "--workers", "2") as address:
        yield f"http://{address}"


class _Written(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True  # an edit that reuses a mapping is written out twice, as a user writes it


def dump(raw: dict) -> str:
    """params as YAML text without anchors or aliases, which params.yaml may not hold."""
    return yaml.dump(raw, Dumper=_Written, sort_keys=False)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """`levels` mappings of nested aliases, `width` each: a few hundred bytes standing for width**levels
    values once expanded (PyYAML expands them, and a message quoting one prints them all)."""
    lines = [f"l0: &l0 [{', '.join(['boom'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# A registered toy multiclass dataset, prepared into a temporary folder on request: tests of the data
# layers need no download and no data/prepared (tests/pipeline/test_data.py, test_datamodules.py).
TOY_CONFIG = {"split_seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}


def toy_load():
    """200 samples, classes 0/1/2 in proportion 60/30/10, a constant column, features far from 0."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [120, 60, 20])
    x = rng.normal(loc=[5.0, -3.0, 0.0], scale=[2.0, 0.5, 1.0], size=(200, 3)) + y[:, None]
    x[:, 2] = 7.0
    return x, y


@pytest.fixture
def toy(monkeypatch):
    """A registered toy multiclass dataset, so tests need no download and no data/prepared."""
    from pipeline import data
    from pipeline.spec import Dataset, DataSpec

    monkeypatch.setitem(data.DATASETS, "toy", Dataset(DataSpec("multiclass", (3,), 3), toy_load, "toy"))
    return "toy"


@pytest.fixture
def prepared_toy(tmp_path, monkeypatch, toy):
    from pipeline import data
    from pipeline.config import DataConfig
    from pipeline.prepare import prepare

    monkeypatch.setattr(data, "ROOT", tmp_path)
    monkeypatch.setattr(data, "PREPARED", tmp_path / "prepared")
    prepare(toy, DataConfig(**TOY_CONFIG), tmp_path / "prepared" / toy)
    return toy
