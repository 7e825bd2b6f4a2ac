"""The GPU check: every default experiment trains on a CUDA GPU as the train stage would train it.

    python bench/gpu_check.py [--epochs 2] [--budget 420] [--only EXP1,EXP2] [--skip-cpu-baseline]
                              [--accelerator gpu|cpu] [--out bench/results/gpu.md]

Why: nothing of this project had run on a GPU, and a first GPU run meets the failures that no CPU
test shows (issue 25): cuBLAS and scatter kernels under `deterministic: true`, the GradScaler of
16-mixed with a family that steps its optimizers itself, DDP with a GAN's unused parameters, bf16
on an older GPU, batches left on the CPU. One command, no network, a few minutes, on one GPU or a
node of several. The plan, each row one fit of the experiment's first --epochs epochs (at most its
max_epochs, which stays as configured, so its learning-rate schedule does too):

1. 16-mixed for every experiment whose family steps its optimizers itself (FamilyModule's
   MANUAL_OPTIMIZATION: the GAN, tabular Q-learning) and for SUPERVISED;
2. DDP on every GPU, sync_batchnorm on (GPU only), for SUPERVISED and every experiment whose family leaves
   parameters without gradients (UNUSED_PARAMETERS: the GAN), each in a process of its own, as
   Lightning's DDP launcher starts the other ranks by running this command line again
   (`--single EXPERIMENT --trainer JSON --result RESULT.json`); a hung collective ends at a timeout;
3. `compile: true` for COMPILED;
4. determinism: the first experiment of each kind of family (its base class in pipeline.core:
   supervised, embedding, generative, reinforcement, graph, graph_level) and SUPERVISED, fitted
   twice with `deterministic: true`: the final metrics and every weight must be identical;
5. every experiment of params.yaml's `experiments:` at 32-true and at bf16-mixed: the first of each
   family, then the others.

Each row's experiment is params.yaml's with only the row's trainer keys changed (accelerator gpu
and the row's precision, strategy, compile), and goes through what the train stage checks before
a run: params' validation (pipeline.params.experiment), pipeline.core.launch.check_experiment (this
machine, the launcher, determinism on CUDA) and the model's size (pipeline.train.check_model_size).
A refusal is a row "refused: <its one-line message>", an error in the fit a row "failed: <its
first line>". The fit is the train stage's: the same seeding, model, DataModule
(pipeline.datamodules.make_datamodule), torch.compile and Trainer (pipeline.core.trainer.build_trainer:
strategy, precision, deterministic flag, checkpoints), logging to a throwaway SQLite MLflow store;
the data is prepared from params.yaml's `data:` into the same temporary folder, so nothing of the
workspace is read stale or written (models/, runs/, checkpoints/, mlflow.db stay as they are).

Work per second is FamilyModule.work_done over the fit's wall seconds (samples, training nodes,
training graphs or environment steps; under DDP the whole dataset, every rank's share). The CPU
column is the same experiment at 32-true on the CPU, the same epochs, with its configured threads
(--skip-cpu-baseline leaves it out). --budget stops starting rows once that many seconds have
passed; the rest are "not run (budget)". The table goes to --out (bench/results/gpu.md) with the
GPU, its compute capability, the versions and the date. Without a CUDA GPU the command stops with
one line and exit status 2; `--accelerator cpu` runs the same plan on the CPU instead, a dry run
that proves the script (DDP then with 2 gloo processes), not a GPU figure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline import files  # noqa: E402

SUPERVISED = "cnn_digits"  # 16-mixed, DDP, determinism: convolutions and batch norm, cuDNN's kernels
COMPILED = "mlp_digits"  # compile: true: compiling a small network (train and eval, the last smaller batch) fits the budget
PRECISIONS = ("32-true", "bf16-mixed")  # every experiment
CPU_DDP_PROCESSES = 2  # the dry run's DDP: gloo processes on the CPU, as tests/e2e/test_distributed.py runs
SINGLE_TIMEOUT = 300  # seconds for one DDP row: a collective that never completes ends the row, not the check
STORE_EXPERIMENT = "gpu-check"  # the MLflow experiment of the throwaway store


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass
class Row:
    """One line of the table: what ran, how fast, and how it ended."""

    experiment: str
    family: str
    what: str  # the row's change, as the table shows it: a precision, "ddp × N", "compile", "determinism"
    change: dict  # the trainer keys changed from params.yaml
    epochs: int
    seconds: float | None = None
    rate: float | None = None  # work per second
    unit: str = ""
    cpu_rate: float | None = None
    status: str = "not run (budget)"


def kind(model_cls: type) -> str:
    """The family's kind: the pipeline.core module of its nearest base class there (supervised,
    embedding, generative, reinforcement, graph, graph_level)."""
    for base in model_cls.__mro__[1:]:
        if base.__module__.startswith("pipeline.core.") and base.__module__ != "pipeline.core.family":
            return base.__module__.rsplit(".", 1)[1]
    return "family"


def plan(config, names: list[str], accelerator: str, epochs: int, ddp_devices: int) -> list[Row]:
    """The rows of the docstring's plan, in its order: the pitfalls first, then every family, so that
    a budget cut leaves out the sweep's repeats of a family rather than them."""
    from pipeline.params import family_class

    experiments = {name: config.experiments[name] for name in names}
    classes = {name: family_class(e.family) for name, e in experiments.items()}

    def row(name: str, what: str, **change) -> Row:
        e = experiments[name]
        return Row(name, e.family, what, {"accelerator": accelerator, **change}, min(epochs, e.max_epochs))

    rows = [row(n, "16-mixed", precision="16-mixed") for n in names if classes[n].MANUAL_OPTIMIZATION or n == SUPERVISED]
    synced = accelerator == "gpu"  # PyTorch's SyncBatchNorm runs on CUDA only
    rows += [row(n, f"ddp × {ddp_devices}", strategy="ddp", devices=ddp_devices, sync_batchnorm=synced)
             for n in names if classes[n].UNUSED_PARAMETERS or n == SUPERVISED]
    rows += [row(n, "compile", compile=True) for n in names if n == COMPILED]
    firsts = {}
    for name in names:
        firsts.setdefault(kind(classes[name]), name)
    chosen = [*firsts.values(), *([SUPERVISED] if SUPERVISED in names and SUPERVISED not in firsts.values() else [])]
    rows += [row(n, "determinism", deterministic=True) for n in chosen]
    families = {}
    for name in names:
        families.setdefault(experiments[name].family, name)
    sweep = [*families.values(), *(n for n in names if n not in families.values())]  # every family once, then the rest
    rows += [row(n, precision, precision=precision) for n in sweep for precision in PRECISIONS]
    return rows


# ---------------------------------------------------------------------------------------------
# One fit, as the train stage makes it


def configure(raw: dict, name: str, change: dict):
    """params.yaml's experiment `name` with the trainer keys of `change`, through the checks the train
    stage makes before a run; a refusal raises pipeline.base.ConfigError with its one-line message."""
    from pipeline import params, train
    from pipeline.core import launch

    spec = dict(raw["experiments"][name])
    spec["trainer"] = {**(spec.get("trainer") or {}), **change}
    experiment = params.experiment(name, raw["defaults"], spec)
    launch.check_experiment(experiment)
    train.check_model_size(experiment, params.family_class(experiment.family))
    return experiment


@dataclass
class Fit:
    seconds: float
    work: float
    unit: str
    world_size: int
    metrics: dict[str, float] = field(default_factory=dict)
    weights: dict = field(default_factory=dict)  # name -> tensor, on the CPU
    synced: int = 0  # SyncBatchNorm layers in the trained model


def stop_after(epochs: int):
    """A callback that ends the fit after `epochs` epochs; max_epochs, hence the schedule, stays the experiment's."""
    from lightning.pytorch.callbacks import Callback

    class StopAfter(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.current_epoch + 1 >= epochs:
                trainer.should_stop = True

    return StopAfter()


def fit(experiment, epochs: int, folder: Path, callbacks: tuple = ()) -> Fit:
    """One training as pipeline.train fits it (seed, model, DataModule, torch.compile, build_trainer),
    its first `epochs` epochs, with checkpoints in `folder` and an MLflow run in the store that
    MLFLOW_TRACKING_URI names (use_store); `callbacks` are added to the Trainer's (the GPU tests')."""
    import lightning as L
    import torch
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from pipeline import cli, data
    from pipeline.core import tracking
    from pipeline.core.trainer import LearningCurve, build_trainer
    from pipeline.datamodules import make_datamodule
    from pipeline.params import family_class

    cli.set_threads(experiment.trainer.threads)
    model_cls = family_class(experiment.family)
    L.seed_everything(experiment.seed, workers=True, verbose=False)
    model = model_cls(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                      scheduler=experiment.scheduler, **experiment.model)
    datamodule = make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed)
    fitted = torch.compile(model) if experiment.trainer.compile else model
    leader = rank_zero_only.rank == 0  # under DDP every rank runs this; rank 0 alone has the run
    run_id = tracking.start_run(STORE_EXPERIMENT, experiment, model_cls.CHAPTER) if leader else None
    trainer = build_trainer(experiment, folder, tracking.tracking_uri(), run_id, LearningCurve(), [stop_after(epochs), *callbacks])
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the progress bar: this script prints one line a row
        trainer.fit(fitted, datamodule=datamodule)
    seconds = time.perf_counter() - start
    if leader:
        tracking.client().set_terminated(run_id, "FINISHED")
    work, unit = model.work_done(model.epochs_run)
    return Fit(seconds, work, unit, trainer.world_size,
               metrics={key: float(value) for key, value in trainer.callback_metrics.items()},
               weights={key: value.detach().cpu().clone() for key, value in model.state_dict().items()},
               synced=sum(isinstance(module, torch.nn.SyncBatchNorm) for module in model.modules()))


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def differences(first: Fit, second: Fit) -> str:
    """'' when two fits ended with identical metrics and weights, else the first difference."""
    import torch

    for key in sorted(set(first.metrics) | set(second.metrics)):
        a, b = first.metrics.get(key), second.metrics.get(key)
        if not (a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))):
            return f"{key} {a!r} then {b!r}"
    for key, value in first.weights.items():
        if not torch.equal(value, second.weights[key]):
            return f"weights {key} differ (largest difference {(value.double() - second.weights[key].double()).abs().max().item():.3g})"
    return ""


# ---------------------------------------------------------------------------------------------
# Running the plan


class Runner:
    """Runs rows in this process (DDP rows in a child process), each in its own checkpoint folder,
    keeping the CPU figure of each experiment and the distinct warnings the fits raised."""

    def __init__(self, raw: dict, workdir: Path, args, prefix: str = ""):
        self.raw, self.workdir, self.args, self.prefix = raw, workdir, args, prefix
        self.cpu_rates: dict[str, float | None] = {}
        self.warnings: dict[str, str] = {}  # message -> the row that first raised it
        self.count = 0

    def folder(self) -> Path:
        self.count += 1
        return self.workdir / "checkpoints" / f"{self.prefix}{self.count}"

    def fit(self, experiment, epochs: int, label: str) -> Fit:
        with warnings.catch_warnings(record=True) as caught:  # the filters stay: cli.quiet's, Python's once per place
            try:
                return fit(experiment, epochs, self.folder())
            finally:
                for warning in caught:
                    lines = str(warning.message).strip().splitlines() or [""]
                    self.warnings.setdefault(f"{warning.category.__name__}: {lines[0][:200]}", label)

    def run(self, row: Row) -> None:
        from pipeline.base import ConfigError

        label = f"{row.experiment} {row.what}"
        try:
            if row.change.get("strategy") == "ddp":
                self.run_single(row)
            else:
                experiment = configure(self.raw, row.experiment, row.change)
                if row.what == "determinism":
                    self.run_twice(row, experiment, label)
                else:
                    self.record(row, self.fit(experiment, row.epochs, label))
        except ConfigError as error:
            row.status = f"refused: {error}"
        except Exception as error:  # the row's failure is the finding; the next row still runs
            row.status = f"failed: {first_line(error)}"
        if row.seconds is not None and not self.args.skip_cpu_baseline:
            row.cpu_rate = self.cpu_rate(row.experiment, row.epochs)

    def record(self, row: Row, result: Fit, status: str = "ok") -> None:
        row.seconds, row.rate, row.unit, row.status = result.seconds, result.work / result.seconds, result.unit, status

    def run_twice(self, row: Row, experiment, label: str) -> None:
        first = self.fit(experiment, row.epochs, label)
        second = self.fit(experiment, row.epochs, label)
        difference = differences(first, second)
        self.record(row, first, f"failed: two runs differ: {difference}" if difference else
                    f"ok: identical metrics ({len(first.metrics)}) and weights ({len(first.weights)} tensors)")

    def run_single(self, row: Row) -> None:
        """A DDP row in a process (group) of its own: Lightning's launcher runs its command line once
        more for each other rank; whatever is left of the group afterwards is killed."""
        out = self.workdir / f"single-{self.count + 1}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--single", row.experiment, "--trainer",
                   json.dumps(row.change), "--epochs", str(row.epochs), "--result", str(out), "--workdir", str(self.workdir)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=SINGLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            output = f"timed out after {SINGLE_TIMEOUT} s"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.count += 1
        if not out.exists():
            lines = [line for line in output.strip().splitlines() if line.strip()]
            row.status = f"failed: {lines[-1][:300] if lines else f'exit status {process.returncode}, no output'}"
            return
        result = json.loads(out.read_text())
        if "seconds" in result:
            row.seconds, row.rate, row.unit = result["seconds"], result["work"] / result["seconds"], result["unit"]
        row.status = result["status"]
        for message in result.get("warnings", {}):
            self.warnings.setdefault(message, f"{row.experiment} {row.what}")

    def warm_up(self, name: str, accelerator: str) -> None:
        """One epoch of `name`, not counted: the first fit of a process also pays for the imports of
        the libraries it loads lazily and, on a GPU, the creation of cuBLAS's and cuDNN's handles."""
        with contextlib.suppress(Exception):  # a failure shows in the rows
            self.fit(configure(self.raw, name, {"accelerator": accelerator}), 1, f"{name} warm-up")

    def cpu_rate(self, name: str, epochs: int) -> float | None:
        """The experiment's work per second at 32-true on the CPU, the same epochs (once per experiment)."""
        if name not in self.cpu_rates:
            try:
                experiment = configure(self.raw, name, {"accelerator": "cpu", "precision": "32-true"})
                result = self.fit(experiment, epochs, f"{name} CPU 32-true")
                self.cpu_rates[name] = result.work / result.seconds
            except Exception as error:
                log(f"  {name}: the CPU baseline failed: {first_line(error)}")
                self.cpu_rates[name] = None
        return self.cpu_rates[name]


def single(args) -> int:
    """`--single`: one row's fit in this process (and, under DDP, the ranks Lightning starts);
    global rank 0 writes the result as JSON to --result, a file in --workdir (the parent's temporary folder)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from pipeline.base import ConfigError

    raw = read_params()
    use_store(args.workdir)
    use_prepared(args.workdir)
    runner = Runner(raw, args.workdir, args, prefix=f"{args.result.stem}-")  # the same folder on every rank
    change = json.loads(args.trainer)
    try:
        experiment = configure(raw, args.single, change)
        result = runner.fit(experiment, args.epochs, f"{args.single} single")
        extra = f", {result.synced} SyncBatchNorm layers" if change.get("sync_batchnorm") else ""
        status = {"status": f"ok: world size {result.world_size}{extra}", "seconds": result.seconds,
                  "work": result.work, "unit": result.unit, "world_size": result.world_size, "synced": result.synced}
    except ConfigError as error:
        status = {"status": f"refused: {error}"}
    except Exception as error:
        status = {"status": f"failed: {first_line(error)}"}
    if rank_zero_only.rank == 0:
        args.result.write_text(json.dumps({**status, "warnings": runner.warnings}))
    return 0


# ---------------------------------------------------------------------------------------------
# Set-up: params, the throwaway store, the prepared data


def read_params() -> dict:
    from pipeline import params

    return params.read_yaml(params.PARAMS_FILE, "params.yaml")


def use_store(workdir: Path) -> None:
    """The throwaway SQLite MLflow store in `workdir` (the child processes inherit it)."""
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ.pop("MLFLOW_RUN_ID", None)


def use_prepared(workdir: Path) -> None:
    from pipeline import data

    data.PREPARED = workdir / "prepared"  # pipeline.data reads every split from here


def prepare(config, names: list[str], workdir: Path) -> None:
    """The datasets of `names`, prepared from params.yaml's `data:` into `workdir`."""
    from pipeline import prepare as stage

    for dataset in sorted({config.experiments[name].dataset for name in names}):
        stage.prepare(dataset, config.data, workdir / "prepared" / dataset)
    use_prepared(workdir)


# ---------------------------------------------------------------------------------------------
# The table


def header(args, accelerator: str) -> list[str]:
    import lightning
    import torch

    command = " ".join(["python bench/gpu_check.py", *sys.argv[1:]])
    if accelerator == "gpu":
        major, minor = torch.cuda.get_device_capability()
        machine = (f"{torch.cuda.device_count()} × {torch.cuda.get_device_name()} (compute capability {major}.{minor}), "
                   f"CUDA {torch.version.cuda}")
    else:
        machine = "**no GPU: a CPU dry run (--accelerator cpu) that proves the script; no figure here is a GPU's**"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return [
        "# The GPU check",
        "",
        f"`{command}` at commit {commit or 'unknown'}, {time.strftime('%Y-%m-%d')}: {machine}; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, Lightning {lightning.__version__}, Python {platform.python_version()}.",
        "Each row: the experiment as params.yaml configures it with only the row's change, its first epochs "
        "(bench/gpu_check.py says how). Work per second: samples, training nodes or graphs, or environment "
        "steps; the CPU's: the same experiment at 32-true on the CPU, the same epochs, its configured threads.",
        "",
    ]


def table(rows: list[Row]) -> list[str]:
    def number(value: float | None, digits: int = 0) -> str:
        return "" if value is None else f"{value:,.{digits}f}"

    lines = ["| experiment | family | what | epochs | fit s | work per s | CPU work per s | speed-up | status |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        speedup = f"× {row.rate / row.cpu_rate:.1f}" if row.rate and row.cpu_rate else ""
        rate = f"{number(row.rate)} {row.unit}" if row.rate is not None else ""
        status = row.status.replace("|", "/")
        lines.append(f"| {row.experiment} | {row.family} | {row.what} | {row.epochs} | {number(row.seconds, 2)} | {rate} "
                     f"| {number(row.cpu_rate)} | {speedup} | {status} |")
    return lines


def warning_lines(collected: dict[str, str]) -> list[str]:
    if not collected:
        return []
    return ["", "Warnings the fits raised, each with the row where it first appeared:", "",
            *(f"- `{message}` ({row})" for message, row in collected.items())]


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (at most each experiment's max_epochs)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which no new row starts")
    parser.add_argument("--only", help="comma-separated experiments (default: every experiment of params.yaml)")
    parser.add_argument("--skip-cpu-baseline", action="store_true", help="leave out the CPU column")
    parser.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu",
                        help="cpu: the same plan on the CPU, a dry run of the script")
    parser.add_argument("--out", type=files.bench_report, default=ROOT / "bench" / "results" / "gpu.md")
    parser.add_argument("--single", metavar="EXPERIMENT", help=argparse.SUPPRESS)  # one DDP row's process
    parser.add_argument("--trainer", help=argparse.SUPPRESS)  # its trainer keys, as JSON
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)  # the parent's temporary folder
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)  # a --single row's JSON, in --workdir
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs: must be at least 1")
    if args.single and not (args.workdir and args.result and args.result.parent.resolve() == args.workdir.resolve()):
        parser.error("--single: needs --workdir and a --result file directly inside it")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from pipeline import cli

    cli.quiet()
    if args.single:
        return single(args)
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print("error: no CUDA GPU here (torch.cuda.is_available() is False): the GPU check needs one; "
              "`--accelerator cpu` runs its plan on the CPU as a dry run", file=sys.stderr)
        return 2
    from pipeline import params

    config = params.load()
    names = list(config.experiments) if not args.only else [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in config.experiments]
    if unknown:
        print(f"error: --only: unknown experiment {', '.join(unknown)}; params.yaml defines: {', '.join(config.experiments)}",
              file=sys.stderr)
        return 2
    devices = torch.cuda.device_count() if args.accelerator == "gpu" else CPU_DDP_PROCESSES
    rows = plan(config, names, args.accelerator, args.epochs, devices)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        workdir = Path(tmp)
        log(f"{len(rows)} rows; preparing the data of {len(names)} experiments into {workdir}")
        prepare(config, names, workdir)
        use_store(workdir)
        if args.accelerator == "gpu":
            torch.zeros(1, device="cuda")  # the CUDA context, created once before the first row's clock
        runner = Runner(read_params(), workdir, args)
        runner.warm_up(rows[0].experiment, args.accelerator)
        for index, row in enumerate(rows, 1):
            elapsed = time.perf_counter() - start
            if elapsed > args.budget:
                log(f"budget of {args.budget:g} s spent: {len(rows) - index + 1} rows not run")
                break
            runner.run(row)
            rate = f", {row.rate:,.0f} {row.unit}/s" if row.rate else ""
            cpu = f" (CPU {row.cpu_rate:,.0f})" if row.cpu_rate else ""
            seconds = f" in {row.seconds:.2f} s" if row.seconds is not None else ""
            log(f"{index}/{len(rows)} {row.experiment} {row.what}: {row.status}{seconds}{rate}{cpu}")
        collected = runner.warnings
    lines = [*header(args, args.accelerator), *table(rows), *warning_lines(collected), "",
             f"(the whole check: {time.perf_counter() - start:.0f} s)", ""]
    files.write_report(args.out, "\n".join(lines))
    counts = {}
    for row in rows:
        counts[row.status.split(":")[0]] = counts.get(row.status.split(":")[0], 0) + 1
    log(f"wrote {args.out}: " + ", ".join(f"{count} {status}" for status, count in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
