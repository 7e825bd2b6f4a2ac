"""Every experiment of the real params.yaml, at its configured size, trains a few batches through
Lightning in-process; so does every example (disabled experiment) whose dataset ships with the project. The end-to-end pipelines run a covering subset (conftest.E2E_EXPERIMENTS) at toy
size; this catches an experiment whose own settings break at run time.

The same fits check, on the CPU, what a family declares for GPUs and DDP (pipeline.core.family): its
optimizers, whether a backward pass leaves a trainable parameter without a gradient (DDP then fails
unless it looks for them), and whether it calls an operation that has no deterministic CUDA kernel
(deterministic: true would then raise mid-training on a GPU)."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.overrides import TorchFunctionMode

from pipeline import data, datamodules
from pipeline.params import family_class, load
from pipeline.prepare import prepare

from conftest import quiet_trainer

CONFIG = load()
RUNNABLE = {**CONFIG.experiments, **{name: example for name, example in CONFIG.examples.items()
                                      if not data.DATASETS[example.dataset].download}}


class CountBatches(Callback):
    """The training batches a fit ran, through Lightning's public batch hook."""

    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.batches += 1


class UnusedParameters(Callback):
    """The trainable parameters some backward pass of the fit left without a gradient (manual backward
    passes too): each parameter's post-accumulate hook records it, per pass."""

    def __init__(self):
        self.unused: set[str] = set()
        self.reached: set[str] = set()

    def on_fit_start(self, trainer, module) -> None:
        for name, parameter in module.named_parameters():
            if parameter.requires_grad:  # a frozen one never gets a gradient, and DDP leaves it out
                parameter.register_post_accumulate_grad_hook(lambda p, name=name: self.reached.add(name))

    def on_before_backward(self, trainer, module, loss) -> None:
        self.reached = set()

    def on_after_backward(self, trainer, module) -> None:
        trainable = {name for name, parameter in module.named_parameters() if parameter.requires_grad}
        self.unused |= trainable - self.reached


def _floating(tensor) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.is_floating_point()


# PyTorch's list of operations with no deterministic CUDA kernel (torch.use_deterministic_algorithms,
# "will throw a RuntimeError"), as the torch functions that reach them, each with when it does.
NONDETERMINISTIC_ON_CUDA = {
    "adaptive_avg_pool2d": None, "adaptive_avg_pool3d": None, "adaptive_max_pool2d": None, "avg_pool3d": None,
    "fractional_max_pool2d": None, "fractional_max_pool3d": None,
    "max_unpool1d": None, "max_unpool2d": None, "max_unpool3d": None, "grid_sample": None, "ctc_loss": None,
    "histc": None, "put_": None, "put": None,
    "interpolate": lambda a, k: k.get("mode", a[3] if len(a) > 3 else "nearest") in ("linear", "bilinear", "bicubic", "trilinear"),
    "pad": lambda a, k: k.get("mode", a[2] if len(a) > 2 else "constant") == "reflect",
    "nll_loss": lambda a, k: a[0].dim() > 2 and k.get("reduction", "mean") != "none",  # the 2-d kernel
    "cross_entropy": lambda a, k: a[0].dim() > 2 and k.get("reduction", "mean") != "none",
    "embedding_bag": lambda a, k: k.get("mode", "mean") == "max",
    "bincount": lambda a, k: k.get("weights", a[1] if len(a) > 1 else None) is not None,
    "median": lambda a, k: len(a) > 1 or "dim" in k, "nanmedian": lambda a, k: len(a) > 1 or "dim" in k,
    "cumsum": lambda a, k: _floating(a[0]), "scatter_reduce": lambda a, k: k.get("reduce", a[3] if len(a) > 3 else "") == "prod",
}


class NondeterministicOnCuda(TorchFunctionMode):
    """The torch functions called while active that reach an operation of NONDETERMINISTIC_ON_CUDA."""

    def __init__(self):
        super().__init__()
        self.found: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in NONDETERMINISTIC_ON_CUDA:
            when = NONDETERMINISTIC_ON_CUDA[name]
            if when is None or when(args, kwargs):
                self.found.add(name)
        return func(*args, **kwargs)


def test_the_detector_finds_the_operations_without_a_deterministic_cuda_kernel_and_only_those():
    images, scores, labels = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 7), torch.zeros(2, 7, dtype=torch.long)
    with NondeterministicOnCuda() as found:
        torch.nn.AdaptiveAvgPool2d(1)(images)
        torch.nn.functional.cross_entropy(scores, labels)  # (B, C, T): the 2-d kernel
        torch.cumsum(scores, dim=0)
    assert found.found == {"adaptive_avg_pool2d", "cross_entropy", "cumsum"}
    with NondeterministicOnCuda() as fine:
        torch.nn.functional.cross_entropy(scores[:, :, 0], labels[:, 0])
        torch.cumsum(labels, dim=0)
        torch.nn.functional.interpolate(images, scale_factor=2.0)  # nearest
    assert fine.found == set()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    for dataset in sorted({experiment.dataset for experiment in RUNNABLE.values()}):  # environments: meta.json
        prepare(dataset, CONFIG.data, root / dataset)
    return root


@pytest.mark.parametrize("name", list(RUNNABLE))
def test_every_experiment_trains_a_few_batches_as_configured(name, prepared, monkeypatch):
    monkeypatch.setattr(data, "PREPARED", prepared)
    experiment = RUNNABLE[name]
    torch.manual_seed(experiment.seed)
    model = family_class(experiment.family)(
        data=data.DATASETS[experiment.dataset].spec,
        optimizer=experiment.optimizer,
        scheduler=experiment.scheduler,
        **experiment.model,
    )
    t = experiment.trainer
    trained, unused = CountBatches(), UnusedParameters()
    trainer = quiet_trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=1, precision=t.precision,
        gradient_clip_val=t.gradient_clip_val or None, accumulate_grad_batches=t.accumulate_grad_batches,
        use_distributed_sampler=False, callbacks=[trained, unused],
    )
    datamodule = datamodules.make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed)
    operations = NondeterministicOnCuda()
    with operations:
        trainer.fit(model, datamodule=datamodule)
    metrics = trainer.callback_metrics
    if data.DATASETS[experiment.dataset].is_environment:  # rollouts: as many batches as the limit allows
        batches = 3
    else:  # a graph dataset: one full batch an epoch
        batches = min(3, len(datamodule.train_dataloader()))
    assert trained.batches == 2 * batches
    if model.automatic_optimization:
        assert trainer.global_step == 2 * batches // t.accumulate_grad_batches
    # the metrics early stopping may monitor: val/loss, and val/<primary metric> for supervised families;
    # val/mean_return for reinforcement learning
    monitors = model.monitors(data.DATASETS[experiment.dataset].spec)
    assert set(monitors) <= set(metrics)
    assert all(math.isfinite(float(metrics[key])) for key in ("train/loss", *monitors))
    # What the family declares for GPUs and DDP (pipeline.core.family), against what the fit did.
    family = type(model)
    assert model.automatic_optimization is not family.MANUAL_OPTIMIZATION
    assert len(trainer.optimizers) == family.OPTIMIZERS, "OPTIMIZERS: configure_optimizers returned another count"
    assert family.UNUSED_PARAMETERS or not unused.unused, (
        f"a backward pass left {sorted(unused.unused)[:5]} without a gradient: set UNUSED_PARAMETERS = True "
        "(DDP fails without it)")
    assert family.NONDETERMINISTIC_ON_CUDA or not operations.found, (
        f"{sorted(operations.found)} have no deterministic CUDA kernel: use a deterministic formulation, or "
        "name them in NONDETERMINISTIC_ON_CUDA so that deterministic: true is refused on a GPU")


# One experiment per family: the first in params.yaml.
FIRST_OF_FAMILY = {}
for _name, _experiment in CONFIG.experiments.items():
    FIRST_OF_FAMILY.setdefault(_experiment.family, _name)


@pytest.mark.parametrize("name", sorted(FIRST_OF_FAMILY.values()))
def test_every_family_trains_at_bf16_mixed(name, prepared, monkeypatch):
    # bf16-mixed is what a user's first GPU run is likely to ask for; on the CPU, Lightning's autocast
    # runs the same bfloat16 casts, so a dtype the family mixes up fails here, not on the GPU.
    monkeypatch.setattr(data, "PREPARED", prepared)
    experiment = CONFIG.experiments[name]
    cls = family_class(experiment.family)
    torch.manual_seed(experiment.seed)
    model = cls(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                scheduler=experiment.scheduler, **cls.small_config(experiment.model))
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, precision="bf16-mixed",
                            use_distributed_sampler=False)
    trainer.fit(model, datamodule=datamodules.make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed))
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
