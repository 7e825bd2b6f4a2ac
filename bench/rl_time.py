"""Benchmark: environment steps and wall seconds until an RL experiment's training return reaches
CartPole's "solved" level, through the pipeline's own Trainer.

    python bench/rl_time.py [--experiment dqn_cartpole] [--threshold 475] [--out bench/results/rl_time.md]

The experiment trains as `python -m pipeline.train` trains it (pipeline.core.trainer.build_trainer, its
MLflow logger on a throwaway SQLite store, the same seed), with its own stopping rule switched off
(solved_return 0, patience 0) and max_epochs as in params.yaml. Every finished training episode
(exploration included, as CleanRL counts its episodic return) is recorded with the environment
steps and wall seconds since fit start; the script reports when the mean of the last 100 episodes
first reaches the threshold, when the greedy policy's validation mean (10 fixed-seed episodes, what
the pipeline's early stop watches) first does, and each epoch's figures. Wall time
includes the validation episodes Lightning runs at each epoch's end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline import files  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="dqn_cartpole")
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--window", type=int, default=100, help="episodes in the moving mean")
    parser.add_argument("--out", type=files.bench_report, default=ROOT / "bench" / "results" / "rl_time.md")
    args = parser.parse_args(argv)

    import lightning as L
    import torch

    from pipeline import data, datamodules
    from pipeline.core import tracking
    from pipeline.params import family_class, load_experiment
    from pipeline.core.trainer import LearningCurve, build_trainer

    config, experiment = load_experiment(args.experiment)
    experiment = dataclasses.replace(
        experiment, model={**experiment.model, "solved_return": 0},
        early_stopping=dataclasses.replace(experiment.early_stopping, patience=0),
    )
    with tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        model_cls = family_class(experiment.family)
        run_id = tracking.start_run("bench-rl-time", experiment, model_cls.CHAPTER)
        L.seed_everything(experiment.seed, workers=True, verbose=False)
        model = model_cls(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                          scheduler=experiment.scheduler, **experiment.model)
        episodes: list[tuple[float, int, float]] = []  # (seconds, env steps, return)
        window: deque[float] = deque(maxlen=args.window)
        reached: dict = {}
        start = [0.0]
        finished = model.episode_finished

        def record(episode_return: float) -> None:
            finished(episode_return)
            seconds = time.perf_counter() - start[0]
            episodes.append((seconds, model.env_steps, episode_return))
            window.append(episode_return)
            if not reached and len(window) == args.window and statistics.fmean(window) >= args.threshold:
                reached.update(seconds=seconds, steps=model.env_steps, episodes=len(episodes))

        model.episode_finished = record
        curve = LearningCurve()
        epoch_seconds: list[float] = []

        class EpochClock(L.Callback):
            def on_train_epoch_end(self, trainer, pl_module):  # after the epoch's validation episodes
                epoch_seconds.append(time.perf_counter() - start[0])

        trainer = build_trainer(experiment, Path(tmp) / "checkpoints", tracking.tracking_uri(), run_id, curve, [EpochClock()])
        torch.set_num_threads(1)
        start[0] = time.perf_counter()
        trainer.fit(model, datamodule=datamodules.make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed))
        total = time.perf_counter() - start[0]

    lines = [
        f"## `{args.experiment}`: time to a {args.window}-episode mean training return of {args.threshold:g}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}, torch {torch.__version__}, lightning {L.__version__}; one torch thread; "
        f"seed {experiment.seed}; {experiment.max_epochs} epochs of {experiment.model.get('steps_per_epoch')} "
        "environment steps, the experiment's own early stop off.",
        "",
    ]
    if reached:
        lines.append(f"- reached after **{reached['steps']} environment steps, {reached['seconds']:.1f} s** "
                     f"({reached['episodes']} episodes)")
    else:
        best = max((statistics.fmean([r for _, _, r in episodes[i - args.window:i]])
                    for i in range(args.window, len(episodes) + 1)), default=float("nan"))
        lines.append(f"- not reached in {model.env_steps} environment steps, {total:.1f} s (best {args.window}-episode mean {best:.1f})")
    greedy = next(((row, sec) for row, sec in zip(curve.rows, epoch_seconds)
                   if row.get("val/mean_return", 0) >= args.threshold), None)
    if greedy:
        lines.append(f"- the greedy policy's validation mean (the pipeline's stopping rule) first reached {args.threshold:g} "
                     f"after epoch {greedy[0]['epoch']}: {int(greedy[0]['train/env_steps'])} environment steps, {greedy[1]:.1f} s")
    lines += [f"- whole fit: {model.env_steps} environment steps in {total:.1f} s, {len(episodes)} episodes",
              "", "| epoch | greedy val/mean_return | mean training return | env steps | seconds |", "|---:|---:|---:|---:|---:|"]
    for row, sec in zip(curve.rows, epoch_seconds):
        lines.append(f"| {row['epoch']} | {row.get('val/mean_return', float('nan')):.1f} | "
                     f"{row.get('train/episode_return', float('nan')):.1f} | {int(row.get('train/env_steps', 0))} | {sec:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    files.write_report(args.out, text)
    return reached


if __name__ == "__main__":
    main()
