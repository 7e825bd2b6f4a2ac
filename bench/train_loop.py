"""Benchmark: our LightningModule + Trainer against a plain PyTorch loop, in one process.

    python bench/train_loop.py [--experiment mlp_digits] [--out bench/results/train_loop.md]

Both paths train the same model class (same init seed) on the same tensors, with the same batch
size, optimizer (pipeline.core.family.build_optimizer) and shuffled batch indexing, whole batches
indexed at once (ours: the DataModule's seeded EpochBatches; the plain loop: a seeded BatchSampler
over a RandomSampler, which gives the same order).

* Time per training step: the training split replicated --replicate times so one epoch has a few
  hundred steps; one epoch per measurement; the first --warmup steps of it are not timed. Our path
  is timed by a callback from the end of step `warmup` to the end of the last step (so every timed
  step includes its batch fetch, hooks, progress bar and callbacks); the plain loop the same way.
  Measurements alternate between the two paths and the median of --repeats is reported.
* Time per epoch with validation, on the real (unreplicated) split: our path from one
  on_train_epoch_start to the next (so training, validation, checkpoint, logging, scheduler); the
  plain loop trains an epoch, runs a validation forward on the val split (loss and accuracy) and
  steps the scheduler. The first epoch of each fit is not counted.

A third path, a bare Lightning Trainer (no logger, callbacks, progress bar or checkpointing) over
the same module and DataModule, measures Lightning's own per-step floor on the machine. With
--floors, one more bare-Trainer path locates that floor (optimization_variant): the module on manual
optimization with the raw torch optimizer. The per-step target is ours / bare Trainer <= 1.03: what
the pipeline adds to stock Lightning on the same model, data, batches and optimizer.

Our path is `pipeline.core.trainer.build_trainer` (the Trainer `python -m pipeline.train` uses: progress
bar, checkpoint and learning-curve callbacks, deterministic flag, MLflow logger) with
`pipeline.datamodules.make_datamodule`, logging to a throwaway SQLite MLflow store in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline import files  # noqa: E402

import torch  # noqa: E402

from pipeline import data as datasets  # noqa: E402
from pipeline import datamodules  # noqa: E402
from pipeline.params import family_class, load_experiment  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Shared set-up


def build_model(experiment):
    """The module `pipeline.train` builds, after the same seeding."""
    import lightning as L

    L.seed_everything(experiment.seed, workers=True, verbose=False)
    model_cls = family_class(experiment.family)
    return model_cls(
        data=datasets.DATASETS[experiment.dataset].spec,
        optimizer=experiment.optimizer,
        scheduler=experiment.scheduler,
        **experiment.model,
    )


def replicate(x: torch.Tensor, y: torch.Tensor, times: int):
    return (x.repeat(times, *[1] * (x.dim() - 1)), y.repeat(times)) if times > 1 else (x, y)


def set_threads(threads: int, deterministic: bool) -> None:
    """The same global torch state for both paths (the Trainer sets the deterministic flag globally)."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def clocks() -> tuple[float, float]:
    """Wall time, and this process's CPU time (less disturbed by other load on a shared machine)."""
    return time.perf_counter(), time.process_time()


def per_step(start: tuple[float, float], end: tuple[float, float], steps: int) -> tuple[float, float]:
    return (end[0] - start[0]) / steps, (end[1] - start[1]) / steps


# ---------------------------------------------------------------------------------------------
# Our path: pipeline.core.trainer.build_trainer + pipeline.datamodules.make_datamodule


def _timer_callback(warmup: int):
    from lightning.pytorch.callbacks import Callback

    class Timer(Callback):
        """Wall and CPU clocks at the end of step `warmup` and of the last step (first epoch); at each
        epoch start and at train end."""

        def __init__(self):
            self.step_start = self.step_end = None
            self.steps = 0
            self.epoch_starts: list[tuple[float, float]] = []
            self.train_end = None

        def on_train_epoch_start(self, trainer, pl_module):
            self.epoch_starts.append(clocks())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            now = clocks()
            if trainer.current_epoch == 0:
                if batch_idx == warmup - 1:
                    self.step_start = now
                elif batch_idx >= warmup:
                    self.step_end, self.steps = now, batch_idx - warmup + 1

        def on_train_end(self, trainer, pl_module):
            self.train_end = clocks()

        def step_seconds(self) -> tuple[float, float]:
            """(wall, CPU) seconds per step."""
            return per_step(self.step_start, self.step_end, self.steps)

        def epoch_seconds(self) -> list[tuple[float, float]]:
            marks = [*self.epoch_starts, self.train_end]
            return [per_step(a, b, 1) for a, b in zip(marks[:-1], marks[1:])]

    return Timer()


def make_trainer(experiment, checkpoint_dir: Path, uri: str, run_id: str):
    """The pipeline's Trainer construction; a benchmark variant may replace this function."""
    from pipeline.core.trainer import LearningCurve, build_trainer

    return build_trainer(experiment, checkpoint_dir, uri, run_id, LearningCurve())


def make_bare_trainer(experiment, checkpoint_dir: Path, uri: str, run_id: str):
    """Lightning's floor: a Trainer with no logger, callbacks, progress bar or checkpointing, same
    module, DataModule, precision and deterministic flag."""
    import lightning as L

    t = experiment.trainer
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, precision=t.precision, max_epochs=experiment.max_epochs,
        deterministic=t.deterministic, logger=False, callbacks=[], enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=checkpoint_dir,
    )


def optimization_variant(model, kind: str):
    """The same module with another training step, to locate Lightning's per-step floor: "raw",
    manual optimization with the torch optimizer and `loss.backward()` directly (no Lightning hooks
    around backward and step, no global step counted: not usable, only where the cost lies)."""
    base = type(model)

    class Variant(base):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = self.loss(self(x), y) + self.penalty()
            optimizer = self.optimizers(use_pl_optimizer=False)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

    Variant.__name__ = Variant.__qualname__ = f"{kind.capitalize()}{base.__name__}"
    model.__class__ = Variant
    model.automatic_optimization = False
    return model


def fit_ours(experiment, *, times: int, epochs: int, warmup: int, env: dict, threads: int, trainer_factory=None,
             variant: str | None = None):
    """One fit of our path (variant: None or "raw", see optimization_variant); returns the
    timer callback."""
    model = build_model(experiment)
    if variant:
        model = optimization_variant(model, variant)
    datamodule = datamodules.make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed)
    if times > 1:  # the pipeline's DataModule, its training split replicated
        setup = datamodule.setup

        def setup_replicated(stage: str) -> None:
            setup(stage)
            train = datamodule.splits["train"]
            datamodule.splits["train"] = datamodules.BatchIndexDataset(*replicate(train.x, train.y, times))

        datamodule.setup = setup_replicated
    env["fits"] += 1
    checkpoint_dir = Path(env["tmp"]) / f"ckpt{env['fits']}"
    trainer = (trainer_factory or make_trainer)(
        dataclasses.replace(experiment, max_epochs=epochs), checkpoint_dir, env["uri"], env["run_id"]
    )
    timer = _timer_callback(warmup)
    trainer.callbacks.append(timer)
    torch.set_num_threads(threads)  # the deterministic flag is the one the Trainer set
    # The progress bar writes to stdout as under `dvc repro` (a pipe); here to a file, off the table.
    with open(Path(env["tmp"]) / "fit.log", "a") as log, contextlib.redirect_stdout(log):
        trainer.fit(model, datamodule=datamodule)
    env["deterministic_after_fit"] = torch.are_deterministic_algorithms_enabled()
    return timer


# ---------------------------------------------------------------------------------------------
# The plain PyTorch loop


def fit_plain(experiment, *, times: int, epochs: int, warmup: int, threads: int, validate: bool):
    """Forward + loss + backward + step over seeded shuffled batches; per epoch optionally a
    validation forward on the val split and the scheduler step. Returns (step seconds, epoch seconds)."""
    from torch.utils.data import BatchSampler, RandomSampler

    from pipeline.core.family import build_optimizer, build_scheduler
    from pipeline.core.supervised import task_prediction

    model = build_model(experiment)
    x, y = replicate(*datasets.load_split(experiment.dataset, "train"), times)
    x_val, y_val = datasets.load_split(experiment.dataset, "val")
    train = datamodules.BatchIndexDataset(x, y)
    generator = torch.Generator().manual_seed(experiment.seed)
    sampler = BatchSampler(RandomSampler(train, generator=generator), experiment.batch_size, drop_last=False)
    optimizer = build_optimizer(model.parameters(), experiment.optimizer)
    scheduler = None
    if validate:
        steps = len(sampler) * epochs
        scheduler = build_scheduler(optimizer, experiment.scheduler, epochs, steps)
    task = datasets.DATASETS[experiment.dataset].spec.task
    set_threads(threads, experiment.trainer.deterministic)

    step_seconds, epoch_marks = None, [clocks()]
    model.train()
    for epoch in range(epochs):
        start = None
        for i, indices in enumerate(sampler):
            xb, yb = train[indices]
            loss = model.loss(model(xb), yb) + model.penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None and scheduler["interval"] == "step":
                scheduler["scheduler"].step()
            if epoch == 0:
                if i == warmup - 1:
                    start = clocks()
                elif i >= warmup:
                    step_seconds = per_step(start, clocks(), i - warmup + 1)
        if validate:
            model.eval()
            with torch.no_grad():
                scores = model(x_val)
                val_loss = float(model.loss(scores, y_val))
                prediction = task_prediction(task, scores)
                if task == "multiclass":
                    val_metric = float((prediction.argmax(-1) == y_val).float().mean())
                elif task == "binary":
                    val_metric = float(((prediction > 0.5).float() == y_val).float().mean())
                else:
                    val_metric = float(((prediction - y_val) ** 2).mean())
            del val_loss, val_metric
            model.train()
            if scheduler is not None and scheduler["interval"] == "epoch":
                scheduler["scheduler"].step()
        epoch_marks.append(clocks())
    epoch_seconds = [per_step(a, b, 1) for a, b in zip(epoch_marks[:-1], epoch_marks[1:])]
    return step_seconds, epoch_seconds


# ---------------------------------------------------------------------------------------------
# Measurement


def measure(experiment, args, env, trainer_factory=None) -> dict:
    """Alternating repeats of both paths. Each entry a list of (wall, CPU) seconds."""
    runs = {"ours_step": [], "plain_step": [], "bare_step": [], "ours_epoch": [], "plain_epoch": []}
    floors = ("raw",) if args.floors else ()
    for key in floors:
        runs[f"{key}_step"] = []
    common = dict(warmup=args.warmup, threads=args.threads)

    def ours(times, epochs):
        return fit_ours(experiment, times=times, epochs=epochs, env=env, trainer_factory=trainer_factory, **common)

    # Untimed warm-up of both paths (first-call costs: lazy imports, allocator, MLflow connection).
    ours(1, 1)
    fit_plain(experiment, times=1, epochs=1, validate=True, **common)
    for r in range(args.repeats):
        pair = [
            lambda: runs["ours_step"].append(ours(args.replicate, 1).step_seconds()),
            lambda: runs["bare_step"].append(
                fit_ours(experiment, times=args.replicate, epochs=1, env=env, trainer_factory=make_bare_trainer,
                         **common).step_seconds()
            ),
            lambda: runs["plain_step"].append(
                fit_plain(experiment, times=args.replicate, epochs=1, validate=False, **common)[0]
            ),
            *(
                (lambda key=key: runs[f"{key}_step"].append(
                    fit_ours(experiment, times=args.replicate, epochs=1, env=env, trainer_factory=make_bare_trainer,
                             variant=key, **common).step_seconds()
                ))
                for key in floors
            ),
        ]
        for run in pair if r % 2 == 0 else pair[::-1]:
            run()
    for r in range(args.epoch_repeats):
        pair = [
            lambda: runs["ours_epoch"].extend(ours(1, args.epochs).epoch_seconds()[1:]),
            lambda: runs["plain_epoch"].extend(
                fit_plain(experiment, times=1, epochs=args.epochs, validate=True, **common)[1][1:]
            ),
        ]
        for run in pair if r % 2 == 0 else pair[::-1]:
            run()
    return runs


# Where an epoch with validation goes on our path: cProfile's cumulative seconds of the parts (a
# profile inflates Python-heavy code, so these are shares, not timings).
EPOCH_PARTS = (
    ("training steps (fetch, forward, backward, optimizer, Lightning's per-step hooks)",
     "loops/training_epoch_loop.py", "advance"),
    ("… of which the optimizer step with its closure", "torch/optim/adam.py", "step"),
    ("… … of which the module's training_step (forward and loss)", "pipeline/core/supervised.py", "training_step"),
    ("… … of which backward", "torch/autograd/__init__.py", "backward"),
    ("… … of which Adam's parameter update", "torch/optim/adam.py", "adam"),
    ("validation loop (forward on the split, torchmetrics update)", "loops/evaluation_loop.py", "run"),
    ("validation metrics computed and logged (on_validation_epoch_end)", "pipeline/core/family.py", "on_validation_epoch_end"),
    ("checkpoint written (ModelCheckpoint, torch.save)", "callbacks/model_checkpoint.py", "on_train_epoch_end"),
    ("MLflow logging (MLFlowLogger.log_metrics, SQLite)", "loggers/mlflow.py", "log_metrics"),
    ("progress bar", "callbacks/progress/tqdm_progress.py", "on_train_epoch_end"),
)


def profile_epochs(experiment, env, epochs: int, threads: int) -> list[tuple[str, float, float]]:
    """(part, seconds per epoch under cProfile, share of the epoch) for `epochs` epochs of our path."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    timer = fit_ours(experiment, times=1, epochs=epochs, warmup=0, env=env, threads=threads)
    profiler.disable()
    epoch = statistics.median(wall for wall, _ in timer.epoch_seconds()[1:])
    stats = pstats.Stats(profiler).stats  # {(file, line, function): (calls, ncalls, tottime, cumtime, callers)}
    parts = []
    for label, file_part, function in EPOCH_PARTS:
        cumulative = sum(v[3] for (f, _, fn), v in stats.items() if fn == function and f.endswith(file_part))
        parts.append((label, cumulative / epochs, cumulative / epochs / epoch))
    return [("one epoch with validation, under cProfile", epoch, 1.0), *parts]


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def summary(runs: dict) -> dict:
    """Medians (wall, CPU) of each path and the ratios ours / plain."""
    out = {key: medians(value) for key, value in runs.items()}
    for kind in ("step", "epoch"):
        ours, plain = out[f"ours_{kind}"], out[f"plain_{kind}"]
        out[f"{kind}_ratio"] = (ours[0] / plain[0], ours[1] / plain[1])
    # Each per-step run of ours beside the plain run next to it: drift of the machine's speed over the
    # measurement (frequent on shared machines) cancels out of these ratios.
    for path in ("ours", "bare", "raw"):
        if f"{path}_step" not in runs:
            continue
        pairs = list(zip(runs[f"{path}_step"], runs["plain_step"]))
        out[f"{path}_paired_ratio"] = tuple(statistics.median(o[i] / p[i] for o, p in pairs) for i in (0, 1))
    plain = out["plain_step"]
    out["ours_bare_ratio"] = (out["ours_step"][0] / out["bare_step"][0], out["ours_step"][1] / out["bare_step"][1])
    pairs = list(zip(runs["ours_step"], runs["bare_step"]))
    out["ours_bare_paired_ratio"] = tuple(statistics.median(o[i] / b[i] for o, b in pairs) for i in (0, 1))
    for path in ("bare", "raw"):
        if f"{path}_step" in out:
            floor = out[f"{path}_step"]
            out[f"{path}_ratio"] = (floor[0] / plain[0], floor[1] / plain[1])
    return out


def machine() -> str:
    import lightning

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"CPU {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
        f"lightning {lightning.__version__}"
    )


def table(experiment, args, runs: dict, env: dict) -> str:
    result = summary(runs)
    train_size = env["train_size"]
    steps_rep = -(-train_size * args.replicate // experiment.batch_size)
    steps_real = -(-train_size // experiment.batch_size)

    def ms(key, i):
        return f"{result[key][i] * 1e3:.3f}"

    def spread(key):
        walls = [s[0] for s in runs[key]]
        return f"{min(walls) * 1e3:.2f}-{max(walls) * 1e3:.2f}"

    def ratio(kind, i):
        return f"{result[f'{kind}_ratio'][i]:.3f}"

    lines = [
        f"## Training loop: `{experiment.name}` ({experiment.family} on {experiment.dataset}, batch "
        f"{experiment.batch_size}, {experiment.optimizer.name})",
        "",
        f"Machine: {machine()}; load average before the run {env['load']}; torch threads {args.threads} in both "
        f"paths; deterministic {experiment.trainer.deterministic} in both.",
        "",
        f"- Per training step: training split {train_size} x {args.replicate} = {steps_rep} steps in one epoch, the "
        f"first {args.warmup} untimed; median of {args.repeats} rounds, each running the {3 + args.floors} paths in alternating order.",
        f"- Per epoch with validation: the real split ({steps_real} steps, then validation on {env['val_size']} "
        f"samples); epochs 2-{args.epochs} of {args.epoch_repeats} alternating fits of each path, median.",
        "- wall = perf_counter; CPU = this process's CPU time (process_time), which other load on the machine "
        "disturbs far less.",
        "",
        "| path | ms / step, wall | wall range | ms / step, CPU | ms / epoch with val, wall | ms / epoch with val, CPU |",
        "|---|---:|---:|---:|---:|---:|",
        f"| ours: Lightning Trainer (pipeline.core.trainer.build_trainer) + DataModule | {ms('ours_step', 0)} | "
        f"{spread('ours_step')} | {ms('ours_step', 1)} | {ms('ours_epoch', 0)} | {ms('ours_epoch', 1)} |",
        f"| plain PyTorch loop | {ms('plain_step', 0)} | {spread('plain_step')} | {ms('plain_step', 1)} | "
        f"{ms('plain_epoch', 0)} | {ms('plain_epoch', 1)} |",
        f"| bare Lightning Trainer (no logger, callbacks, bar or checkpoint) + DataModule | {ms('bare_step', 0)} | "
        f"{spread('bare_step')} | {ms('bare_step', 1)} | | |",
        f"| **ratio ours / bare Trainer** (target per step <= 1.03) | **{result['ours_bare_ratio'][0]:.3f}** | | "
        f"**{result['ours_bare_ratio'][1]:.3f}** | | |",
        f"| median of per-run ratios ours / bare (each run beside the bare run of its round) | "
        f"{result['ours_bare_paired_ratio'][0]:.3f} | | {result['ours_bare_paired_ratio'][1]:.3f} | | |",
        f"| ratio ours / plain | **{ratio('step', 0)}** | | **{ratio('step', 1)}** | "
        f"{ratio('epoch', 0)} | {ratio('epoch', 1)} |",
        f"| ratio bare Trainer / plain (Lightning's floor) | {result['bare_ratio'][0]:.3f} | | "
        f"{result['bare_ratio'][1]:.3f} | | |",
        f"| median of per-run ratios ours / plain (each run beside the plain run of its round) | "
        f"{result['ours_paired_ratio'][0]:.3f} | | {result['ours_paired_ratio'][1]:.3f} | | |",
        f"| median of per-run ratios bare / plain | {result['bare_paired_ratio'][0]:.3f} | | "
        f"{result['bare_paired_ratio'][1]:.3f} | | |",
    ]
    for path, label in FLOOR_LABELS.items():
        if f"{path}_step" in runs:
            lines.append(
                f"| {label} | {ms(f'{path}_step', 0)} ({result[f'{path}_ratio'][0]:.3f} x plain; paired "
                f"{result[f'{path}_paired_ratio'][0]:.3f}) | {spread(f'{path}_step')} | {ms(f'{path}_step', 1)} | | |"
            )
    lines.append("")
    return "\n".join(lines)


FLOOR_LABELS = {
    "raw": "bare Trainer, manual optimization with the raw torch optimizer and loss.backward() (skips Lightning's "
           "backward and step hooks and step counting: not usable, shows where the cost is)",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="mlp_digits", help="an experiment name from params.yaml")
    parser.add_argument("--replicate", type=int, default=16, help="copies of the training split for the per-step timing")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps at the start of each per-step epoch")
    parser.add_argument("--repeats", type=int, default=7, help="alternating per-step measurements of each path")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each fit for the per-epoch timing (first not counted)")
    parser.add_argument("--epoch-repeats", type=int, default=3, help="alternating per-epoch fits of each path")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch.set_num_threads for both paths (default 1: on a shared 2-core machine two intra-op threads "
        "per process turn other load into 10-30x slower steps)",
    )
    parser.add_argument("--out", type=files.bench_report, default=ROOT / "bench" / "results" / "train_loop.md")
    parser.add_argument("--profile-epochs", type=int, default=0,
                        help="also profile this many epochs of our path on the real split (where an epoch goes)")
    parser.add_argument("--floors", action="store_true",
                        help="also time the bare Trainer on Lightning's automatic optimization, and with the raw torch optimizer")
    parser.add_argument("--json", type=files.bench_report, help="also write the summary (ratios, seconds per step) as JSON here")
    return parser.parse_args(argv)


def quiet() -> None:
    warnings.filterwarnings("ignore", message=".*(does not have many workers|smaller than the logging interval).*")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


def setup_env(experiment, tmp: str) -> dict:
    """A throwaway SQLite MLflow store and one run for all fits, as `pipeline.train` creates it."""
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    from pipeline.core import tracking

    config_name = "bench-train-loop"
    run_id = tracking.start_run(config_name, experiment, family_class(experiment.family).CHAPTER)
    x, _ = datasets.load_split(experiment.dataset, "train")
    x_val, _ = datasets.load_split(experiment.dataset, "val")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return {"tmp": tmp, "uri": tracking.tracking_uri(), "run_id": run_id, "fits": 0,
            "train_size": len(x), "val_size": len(x_val), "load": load}


def main(argv=None, trainer_factory=None) -> dict:
    args = parse_args(argv)
    quiet()
    _, experiment = load_experiment(args.experiment)
    for split in datasets.SPLITS:
        datasets.load_split(experiment.dataset, split)  # a clear error if prepared data is missing
    set_threads(args.threads, experiment.trainer.deterministic)
    with tempfile.TemporaryDirectory(prefix="bench-train-loop-") as tmp:
        env = setup_env(experiment, tmp)
        start = time.perf_counter()
        runs = measure(experiment, args, env, trainer_factory)
        text = table(experiment, args, runs, env)
        profile = profile_epochs(experiment, env, args.profile_epochs, args.threads) if args.profile_epochs else []
        if profile:
            text += "\n| where our path's epoch goes (cProfile, cumulative) | ms / epoch | share |\n|---|---:|---:|\n"
            text += "".join(f"| {label} | {seconds * 1e3:.1f} | {share:.0%} |\n" for label, seconds, share in profile)
        if env.get("deterministic_after_fit") != experiment.trainer.deterministic:
            text += "\nNote: the Trainer left torch's deterministic flag different from the config.\n"
        text += f"\n(measured in {time.perf_counter() - start:.0f} s)\n"
    print(text)
    files.write_report(args.out, text)
    if args.json:
        files.write_report(args.json, json.dumps({**summary(runs), "epoch_profile": profile}, indent=2) + "\n")
    return summary(runs)


if __name__ == "__main__":
    main()
