"""What the reinforcement-learning families share (ch. 8): an agent acting in a gymnasium environment
(a dataset of task `control`, pipeline.data), trained on its own experience, judged by the return of
its greedy policy.

A family subclasses `ReinforcementModule` and writes `act_greedy(observations)` (the action it
takes without exploring), `experience()` (a generator that acts in the environment with the current
network, exploration included, and yields the training batches of one epoch; an epoch is
`steps_per_epoch` environment steps), `training_step(batch)` (the loss of one batch), and
`rollout_state()` / `load_rollout_state(state)` (what a resumed training needs besides the weights:
replay buffer, step counters, random generator).

The data path is Lightning's own: `train_dataloader` is a DataLoader over `Experience`, an
IterableDataset whose iterator is `experience()`, in the training process (no workers), so the
rollouts see the weights as they train; checkpoints, logging, strategies and resume work as for
every family. Under DDP each process acts in its own environment, seeded apart by its rank.

Validation: `val_episodes` greedy episodes from fixed seeds (VAL_SEED + i), run side by side;
val/mean_return (torchmetrics) is what early stopping and the best checkpoint monitor. Training
stops once it reaches `solved_return` (0: never). The learning curve, logged once an epoch:
train/episode_return, the mean return of the training episodes (exploration included) that ended in
the epoch, and train/env_steps, the environment steps taken so far; both go to MLflow and to
plots/validation/EXPERIMENT.csv (pipeline.core.trainer.LearningCurve), whose figure draws them against
train/env_steps (pipeline.core.figures.learning_curve).

Test (the evaluate stage, pipeline.core.evaluation): TEST_EPISODES greedy episodes from fixed seeds TEST_SEED + i, disjoint from
the validation seeds; test/mean_return, test/std_return, test/min_return, test/max_return.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset
from torchmetrics import MeanMetric

from pipeline.spec import DataSpec
from pipeline.core.episodes import greedy_returns
from pipeline.core.family import FamilyModule
from pipeline.config import OptimizerConfig, SchedulerConfig

VAL_SEED = 1_000  # validation episode i starts from seed VAL_SEED + i


class Experience(IterableDataset):
    """One epoch of training batches: the family's `experience()` generator, run in the training process."""

    def __init__(self, module: ReinforcementModule):
        super().__init__()
        self.module = module

    def __iter__(self) -> Iterator:
        return self.module.experience()


class ReinforcementModule(FamilyModule):
    """An agent for a discrete-action environment; val/mean_return is its greedy policy's return."""

    TASKS = ("control",)
    CHAPTER = 8
    EVALUATION = "reinforcement"  # pipeline.core.evaluation.reinforcement
    STEP_METRIC = "train/env_steps"  # MLflow's charts against environment steps, as the learning curve's figure

    @classmethod
    def monitors(cls, data: DataSpec) -> tuple[str, ...]:
        return ("val/mean_return",)

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        for key in ("steps_per_epoch", "val_episodes"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")
        if model["solved_return"] < 0:
            raise ValueError(f"solved_return: must be 0 (never stop early) or a positive return, got {model['solved_return']}")

    @classmethod
    def check_experiment(cls, experiment) -> None:
        if experiment.early_stopping.mode != "max":
            raise ValueError("early_stopping.mode: val/mean_return is a return to maximise; set it to max")
        if experiment.scheduler.name == "onecycle":
            raise ValueError("scheduler.name: onecycle needs the number of steps in advance, which rollouts do not have; "
                             "allowed: none, step, cosine")
        if experiment.optimizer.name == "lbfgs":
            raise ValueError("optimizer.name: lbfgs re-evaluates a batch, but every rollout batch is new; "
                             "allowed: sgd, adam, adamw, rmsprop, adagrad")

    def __init__(self, *, data: DataSpec, optimizer: OptimizerConfig, scheduler: SchedulerConfig,
                 steps_per_epoch: int, val_episodes: int, solved_return: float):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.steps_per_epoch = steps_per_epoch
        self.val_episodes = val_episodes
        self.solved_return = solved_return
        self.val_return = MeanMetric()
        self.train_return = MeanMetric()  # the training episodes that ended this epoch
        self.env_steps = 0  # environment steps taken so far (this process)
        self._restored: dict | None = None  # rollout state from a checkpoint, applied when rollouts start

    # --- what a family writes -------------------------------------------------------------------

    def act_greedy(self, observations: torch.Tensor) -> torch.Tensor:
        """The actions (B,) the policy takes in observations (B, *obs) when it does not explore."""
        raise NotImplementedError

    def experience(self) -> Iterator:
        """Act for `steps_per_epoch` environment steps, yielding the training batches."""
        raise NotImplementedError

    def exact_test_metrics(self) -> dict[str, float]:
        """Test metrics computed exactly rather than from episodes (`test/...`), where the family can: a
        tabular policy's value from the environment's transition model. None by default."""
        return {}

    def rollout_state(self) -> dict:
        """Tensors and numbers that let a resumed training go on (buffer, counters, generator state)."""
        return {}

    def load_rollout_state(self, state: dict) -> None:
        """Restore `rollout_state()`; called when the rollouts of a resumed training start."""

    # --- shared helpers -------------------------------------------------------------------------

    @property
    def environment(self) -> str:
        return self.data_spec.environment

    def attached(self) -> bool:
        """Whether a Trainer runs this module (its `trainer` property raises otherwise)."""
        try:
            self.trainer
        except RuntimeError:
            return False
        return True

    def rollout_seed(self) -> int:
        """The seed of this process's environment and exploration: drawn from torch's global generator
        (seeded by the experiment's seed), apart for each rank."""
        rank = self.trainer.global_rank if self.attached() else 0
        return int(torch.randint(2**31 - 1, ())) + 7919 * rank

    def episode_finished(self, episode_return: float) -> None:
        self.train_return.update(torch.tensor(episode_return, dtype=torch.float64))

    def restored_state(self) -> dict | None:
        """The rollout state of the checkpoint training resumed from, once; None otherwise."""
        state, self._restored = self._restored, None
        return state

    @torch.no_grad()
    def _greedy(self, observations: torch.Tensor) -> torch.Tensor:
        return self.act_greedy(observations.to(self.device)).cpu()

    # --- the loop -------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Experience(self), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        seeds = torch.arange(self.val_episodes) + VAL_SEED
        return DataLoader(seeds, batch_size=self.val_episodes)  # one batch: the episodes run side by side

    def validation_step(self, batch, batch_idx):
        self.val_return.update(greedy_returns(self._greedy, self.environment, batch.tolist()))

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.train_return.reset()

    def validation_metrics(self) -> dict[str, torch.Tensor]:
        metrics = {"val/mean_return": self.val_return.compute().float()}
        self.val_return.reset()
        if self.training_started and self.train_return.update_count:
            metrics["train/episode_return"] = self.train_return.compute().float()
        if self.training_started:
            metrics["train/env_steps"] = torch.tensor(float(self.env_steps), device=self.device)  # NCCL reduces device tensors only
        self._val_mean_return = float(metrics["val/mean_return"])
        return metrics

    @property
    def training_started(self) -> bool:
        """Within trainer.fit (its validation too), not a lone validate."""
        return self.attached() and self.trainer.state.fn == "fit"

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.solved_return and self.training_started and self._val_mean_return >= self.solved_return:
            self.trainer.should_stop = True  # the same value on every process: MeanMetric syncs it

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["rollouts"] = {"env_steps": self.env_steps, **self.rollout_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if "rollouts" in checkpoint:
            self.env_steps = checkpoint["rollouts"]["env_steps"]
            self._restored = checkpoint["rollouts"]

    # --- the work a fit did (the run summary's throughput) ---------------------------------------

    def work_done(self, epochs: int) -> tuple[float, str]:
        return self.env_steps, "environment steps"
