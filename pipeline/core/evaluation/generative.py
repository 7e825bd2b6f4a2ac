"""A generative family's evaluation: samples scored against the test images by the scorer stage's
classifier (pipeline.core.scoring: FID, KID, class coverage), the family's own test metrics, a sample grid."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from pipeline import data, stagestats
from pipeline.core import figures as fig
from pipeline.core import scoring
from pipeline.core.evaluation import Context, write_csv

GRID = 64  # generated samples in the PNG grid


def evaluate(model, context: Context) -> dict[str, float] | None:
    """N samples (N = the test split's size, drawn with the experiment's seed) scored against the test
    images; the family's own test metrics; a sample grid (PNG); the samples' classes as a DVC plot
    (actual = generated, predicted = the scorer's class). Global rank 0 only."""
    if rank_zero_only.rank != 0:
        return None
    experiment, x = context.experiment, context.x
    scorer = scoring.load_scorer(experiment.dataset)
    x_train, _ = data.load_split(experiment.dataset, "train")
    generator = torch.Generator().manual_seed(experiment.seed)
    with torch.no_grad():
        stagestats.mark("sampling")
        model.fit_sampler(x_train)
        samples = model.sample(len(x), generator)
        stagestats.mark("sampled")
        own = model.test_metrics(x, x_train)
        classes = scorer(samples.float()).argmax(-1)
    results = {f"test/{k}": v for k, v in scoring.sample_scores(samples, x, scorer, experiment.seed).items()}
    results.update({f"test/{k}": round(float(v), 6) for k, v in own.items()})
    write_csv(context.predictions, ["actual", "predicted"], (("generated", int(c)) for c in classes))
    fig.sample_grid(samples[:GRID], context.figures / "samples.png", f"{experiment.name}: samples")
    return dict(sorted(results.items()))
