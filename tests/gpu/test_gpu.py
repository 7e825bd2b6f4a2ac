"""On a CUDA GPU, what no CPU test shows (issue 25): fits twice identical under `deterministic: true`
(cuBLAS, cuDNN, the graph families' index_add and scatter), the GAN's manual optimization under
16-mixed's GradScaler, bf16-mixed, batches on the GPU when training_step sees them, DDP with
sync_batchnorm and with the GAN's unused parameters. Skipped without CUDA, with the reason.

Each fit is the train stage's, through bench/gpu_check.py's `configure` (params' validation and the
train stage's checks) and `fit` (pipeline.core.trainer.build_trainer, a throwaway MLflow store), on
params.yaml's experiments with accelerator: gpu and the test's change, for an epoch or two.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from bench import gpu_check
from pipeline import data
from pipeline.base import ConfigError
from pipeline.params import family_class, load
from pipeline.prepare import prepare

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: torch.cuda.is_available() is False (a CPU build of torch, or no GPU or driver); "
           "`python bench/gpu_check.py --accelerator cpu` is the CPU dry run of the GPU check",
)

DATASETS = ("digits", "karate", "connectivity")  # of the experiments below


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Prepared data and a throwaway MLflow store, for this module's fits (and the DDP processes)."""
    root = tmp_path_factory.mktemp("gpu")
    config = load()
    threads = torch.get_num_threads()  # each fit sets its experiment's threads (pipeline.cli.set_threads)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        for dataset in DATASETS:
            prepare(dataset, config.data, root / "prepared" / dataset)
        patch.setattr(data, "PREPARED", root / "prepared")
        yield root
    torch.set_num_threads(threads)


def on_gpu(name: str, **change):
    return gpu_check.configure(gpu_check.read_params(), name, {"accelerator": "gpu", **change})


def fit(experiment, workdir, epochs: int = 1, callbacks: tuple = ()) -> gpu_check.Fit:
    folders = sorted((workdir / "checkpoints").glob("*")) if (workdir / "checkpoints").exists() else []
    return gpu_check.fit(experiment, epochs, workdir / "checkpoints" / str(len(folders)), callbacks)


def finite(result: gpu_check.Fit) -> None:
    assert result.metrics and all(math.isfinite(value) for value in result.metrics.values()), result.metrics
    assert all(torch.isfinite(value).all() for value in result.weights.values() if value.is_floating_point())


@pytest.mark.parametrize("name", ["gcn_karate", "gin_connectivity", "cnn_digits"])
def test_two_deterministic_fits_on_cuda_are_identical(name, workdir):
    """gcn: index_add over edges; gin: index_add over edges and graphs; cnn: cuDNN's convolutions."""
    if family_class(gpu_check.read_params()["experiments"][name]["family"]).NONDETERMINISTIC_ON_CUDA:
        with pytest.raises(ConfigError, match="set deterministic: warn"):
            on_gpu(name, deterministic=True)
        finite(fit(on_gpu(name, deterministic="warn"), workdir, epochs=2))
        return
    experiment = on_gpu(name, deterministic=True)
    first, second = fit(experiment, workdir, epochs=2), fit(experiment, workdir, epochs=2)
    finite(first)
    assert gpu_check.differences(first, second) == ""


class Initial(Callback):
    """The weights as training starts (on the GPU, after Lightning's set-up)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.weights = {key: value.detach().cpu().clone() for key, value in pl_module.state_dict().items()}


def test_the_gan_trains_at_16_mixed_on_cuda_with_finite_losses(workdir):
    """Manual optimization through manual_backward and the LightningOptimizer: the GradScaler scales the
    losses, unscales the gradients and skips a step with an overflow; both networks move."""
    initial = Initial()
    result = fit(on_gpu("gan_digits", precision="16-mixed"), workdir, epochs=2, callbacks=(initial,))
    finite(result)
    for network in ("generator.", "critic."):
        moved = [key for key, value in result.weights.items()
                 if key.startswith(network) and not torch.equal(value, initial.weights[key])]
        assert moved, f"no weight of the {network[:-1]} changed in two epochs at 16-mixed"


@pytest.mark.skipif(not torch.cuda.is_available() or not torch.cuda.is_bf16_supported(including_emulation=False),
                    reason="needs a CUDA GPU with bfloat16 (compute capability 8.0 or newer)")
def test_bf16_mixed_trains_a_supervised_family_on_cuda(workdir):
    result = fit(on_gpu("cnn_digits", precision="bf16-mixed"), workdir, epochs=1)
    finite(result)
    assert result.metrics["val/accuracy"] > 0.2  # ten classes: above chance after an epoch


class BatchDevices(Callback):
    """The devices of the batch as training_step receives it (the hook runs right before it) and of the module."""

    def __init__(self):
        self.devices: set[str] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x, y = batch
        tensors = [y, *([x] if torch.is_tensor(x) else [x.x, x.edge_index])]  # a tensor, or a graph (Data, Batch)
        self.devices |= {tensor.device.type for tensor in tensors} | {pl_module.device.type}


@pytest.mark.parametrize("name", ["mlp_digits", "gcn_karate", "gin_connectivity"])
def test_a_batch_reaches_training_step_on_the_cuda_device(name, workdir):
    seen = BatchDevices()
    finite(fit(on_gpu(name), workdir, epochs=1, callbacks=(seen,)))
    assert seen.devices == {"cuda"}


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs at least 2 CUDA GPUs for DDP across devices")
@pytest.mark.parametrize("name", ["cnn_digits", "gan_digits"])
def test_ddp_on_every_gpu_with_sync_batchnorm(name, workdir):
    """cnn: batch norm synchronized over the GPUs, converted once the model is on its device; the GAN:
    DDP looks for the parameters a critic step leaves without gradients (Lightning #20328). In a process
    of its own, as the GPU check runs it: Lightning's launcher starts the other ranks from its command line."""
    devices = torch.cuda.device_count()
    out = workdir / f"ddp-{name}.json"
    change = {"accelerator": "gpu", "strategy": "ddp", "devices": devices, "sync_batchnorm": True}
    subprocess.run([sys.executable, str(gpu_check.ROOT / "bench" / "gpu_check.py"), "--single", name, "--trainer",
                    json.dumps(change), "--epochs", "1", "--result", str(out), "--workdir", str(workdir)],
                   cwd=gpu_check.ROOT, check=True, timeout=gpu_check.SINGLE_TIMEOUT)
    result = json.loads(out.read_text())
    assert result["status"].startswith("ok"), result["status"]
    assert result["world_size"] == devices
    if name == "cnn_digits":
        assert result["synced"] > 0
