"""Device placement, checked without a GPU: on PyTorch's meta device, as on CUDA, an operation refuses a
(non-scalar) CPU tensor beside one of its own device, so a tensor made without `device=` shows up here
as it would on the first GPU. Meta tensors hold no values: what needs them (`.tolist()`, a sparse
matrix's coalescing, torchmetrics' checks) is out of reach, and the GPU check (bench/gpu_check.py) runs
the rest."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from pipeline import data
from pipeline.core.evaluation import graph as graph_evaluation
from pipeline.core.resume import ResumeState
from pipeline.params import family_class, load

META = torch.device("meta")
# Families whose training step needs what the meta device lacks, and what covers them instead.
NOT_ON_META = {
    "seq2seq_rnn": "pack_padded_sequence takes the source lengths on the CPU, as it must",
    "gcn": "a sparse matrix's coalesce has no meta kernel: test_graph_propagation_is_computed_where_the_edges_are",
    "sage": "a sparse matrix's coalesce has no meta kernel: test_graph_propagation_is_computed_where_the_edges_are",
    "gat": "torch.nonzero has no meta kernel",
}


def default_experiments():
    """The first experiment of each family in params.yaml."""
    first = {}
    for experiment in load().experiments.values():
        first.setdefault(experiment.family, experiment)
    return first


def build(experiment):
    cls = family_class(experiment.family)
    torch.manual_seed(0)
    return cls(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
               scheduler=experiment.scheduler, **cls.small_config(experiment.model))


def meta_batch(experiment, size: int = 4):
    """A batch of the experiment's data shapes and dtypes, on the meta device (values play no part there)."""
    entry = data.DATASETS[experiment.dataset]
    spec = entry.spec
    if entry.kind == "graphs":
        from torch_geometric.data import Batch, Data

        edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        graphs = [Data(x=torch.zeros(3, *spec.input_shape), edge_index=edges) for _ in range(size)]
        return Batch.from_data_list(graphs).to(META), torch.zeros(size, dtype=torch.long, device=META)
    x = torch.empty((size, *spec.input_shape), dtype=torch.long if spec.vocab_size else torch.float32, device=META)
    if spec.task == "sequence":
        y = torch.empty((size, spec.target_length), dtype=torch.long, device=META)
    elif spec.task in ("multiclass", "oneshot"):
        y = torch.empty(size, dtype=torch.long, device=META)
    else:
        y = torch.empty(size, device=META)
    return x, y


@pytest.mark.parametrize("family", sorted(default_experiments()))
def test_each_training_step_keeps_to_the_device_of_its_module_and_batch(family):
    experiment = default_experiments()[family]
    cls = family_class(family)
    if data.DATASETS[experiment.dataset].is_environment:
        pytest.skip("an agent's rollouts act in gymnasium on the CPU (.tolist()); read only, the GPU check runs it")
    if cls.MANUAL_OPTIMIZATION:
        pytest.skip("its training step steps the optimizers a Trainer gives; the GPU check runs it")
    if family in NOT_ON_META:
        pytest.skip(NOT_ON_META[family])
    model = build(experiment).to(META)
    x, y = meta_batch(experiment)
    loss = model.training_step((x, y), 0)
    assert loss.device == META and loss.shape == ()
    if hasattr(model, "predict"):  # what validation's metrics and the evaluation consume
        with torch.no_grad():
            assert model.predict(x).device == META


@pytest.mark.parametrize("family", ["autoencoder", "vae", "gan", "ddpm"])
def test_samples_drawn_with_a_cpu_generator_come_out_on_the_models_device(family):
    experiment = default_experiments()[family]
    model = build(experiment).to(META).eval()
    if family == "autoencoder":  # its Gaussian over the codes, fitted on the CPU (torch.cov has no meta kernel), moved
        from modules.autoencoder import GaussianCodes

        model.sampler = GaussianCodes(torch.randn(20, model.latent_size))
        model.sampler.mean, model.sampler.scale = model.sampler.mean.to(META), model.sampler.scale.to(META)
    with torch.no_grad():
        samples = model.sample(3, torch.Generator().manual_seed(0))
    assert samples.device == META and samples.shape == (3, *model.data_spec.input_shape)


def test_graph_propagation_is_computed_where_the_edges_are(monkeypatch):
    from modules.gcn import normalized_adjacency
    from modules.sage import mean_adjacency

    # The sparse matrix itself is out of the meta device's reach (coalesce): its entries are checked.
    monkeypatch.setattr(torch, "sparse_coo_tensor",
                        lambda indices, values, size, **kwargs: SimpleNamespace(coalesce=lambda: (indices, values)))
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]], device=META)
    for propagation in (normalized_adjacency, mean_adjacency):
        indices, weights = propagation(edges, 3)
        assert indices.device == META and weights.device == META, propagation.__name__


def test_the_design_matrix_is_made_on_the_inputs_device():
    from modules.linear_regression import design_matrix

    assert design_matrix(torch.empty(5, 3, device=META)).device == META


def test_a_graph_experiments_refits_train_on_its_accelerator_and_precision(monkeypatch):
    experiment = default_experiments()["gcn"]
    on_gpu = dataclasses.replace(experiment, trainer=dataclasses.replace(experiment.trainer, accelerator="gpu",
                                                                         precision="16-mixed"))
    made = {}

    class Stop(Exception):
        pass

    def trainer(**kwargs):
        made.update(kwargs)
        raise Stop

    monkeypatch.setattr(graph_evaluation.L, "Trainer", trainer)
    with pytest.raises(Stop):
        graph_evaluation.refit(on_gpu, 0)
    assert (made["accelerator"], made["devices"], made["precision"]) == ("gpu", 1, "16-mixed")


def test_a_resume_checkpoint_keeps_the_gpus_random_state(monkeypatch):
    saved, restored = torch.tensor([1, 2, 3], dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state: restored.append(state))
    state = ResumeState().state_dict()
    assert state["cuda"] is saved
    ResumeState().load_state_dict(state)
    assert restored == [saved]


def test_without_a_gpu_the_resume_state_has_no_gpu_entry():
    if torch.cuda.is_initialized():
        pytest.skip("CUDA is in use in this process")
    assert "cuda" not in ResumeState().state_dict()

