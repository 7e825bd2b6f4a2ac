"""PNG figures for MLflow and the DVC plots (matplotlib, no display needed); the report draws its own with `save`."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(figure, path: Path) -> None:
    """Rendered first, then written whole (pipeline.files): a full disk names the file and leaves no part of it."""

    from pipeline import files

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=100, format="png")
    plt.close(figure)
    with files.replacing(path, size=buffer.getbuffer().nbytes) as handle:
        handle.write(buffer.getbuffer())


def _read(csv_path: Path) -> list[dict]:
    with csv_path.open() as handle:
        return list(csv.DictReader(handle))


def learning_curve(loss_csv: Path, metric_csv: Path, png_path: Path, title: str) -> None:
    """Train and validation loss per epoch (log scale while every value is positive), and the
    validation metric beside them if the family has one besides the loss (generative ones do not)."""
    losses, metrics = _read(loss_csv), _read(metric_csv)
    # a counter column (e.g. train/env_steps) is the metric panel's x axis in place of the epoch
    counter = next((k for k in (metrics[0] if metrics else {}) if k.endswith("_steps")), "epoch")
    has_metric = any(k not in ("epoch", counter) for k in (metrics[0] if metrics else {}))
    figure, axes = plt.subplots(1, 2 if has_metric else 1, figsize=(9 if has_metric else 4.8, 3.5), squeeze=False)
    values = []
    for ax, rows, x in zip(axes[0], (losses, metrics), ("epoch", counter)):
        for key in (k for k in (rows[0] if rows else {}) if k not in ("epoch", x)):
            points = [(float(row[x]), float(row[key])) for row in rows if row[key] != "" and row[x] != ""]
            ax.plot([e for e, _ in points], [v for _, v in points], label=key)
            values += [v for _, v in points] if ax is axes[0][0] else []
        ax.set(xlabel=x, title=title)
        ax.legend()
    axes[0][0].set(ylabel="loss", yscale="log" if values and min(values) > 0 else "linear")
    save(figure, png_path)


def confusion(matrix, png_path: Path, title: str, classes: list | None = None) -> None:
    """`classes`: the label of each row and column, if not 0, 1, ..."""
    figure, ax = plt.subplots(figsize=(4.5, 4))
    image = ax.imshow(matrix.numpy(), cmap="Blues")
    if classes is not None:
        ax.set_xticks(range(len(classes)), [str(c) for c in classes])
        ax.set_yticks(range(len(classes)), [str(c) for c in classes])
    for (i, j), count in zip(((i, j) for i in range(len(matrix)) for j in range(len(matrix))), matrix.flatten().tolist()):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="actual", title=f"{title}: test confusion matrix")
    figure.colorbar(image)
    save(figure, png_path)


def predicted_vs_actual(prediction, target, png_path: Path, title: str) -> None:
    figure, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(target.numpy(), prediction.numpy(), s=10)
    low, high = float(min(target.min(), prediction.min())), float(max(target.max(), prediction.max()))
    ax.plot([low, high], [low, high], color="gray", linestyle="--")
    ax.set(xlabel="actual", ylabel="predicted", title=f"{title}: test predictions")
    save(figure, png_path)


def attention(weights, source, pad_token: int, png_path: Path, title: str) -> None:
    """Heatmaps of attention weights (N, L, S), one for the first test sample of each source length: rows
    are target positions, columns source positions, both cut at the source's length (its padding has
    weight 0, and the positions after a target's end emit padding)."""
    lengths = (source != pad_token).sum(dim=1)
    shown = [int((lengths == n).nonzero()[0]) for n in lengths.unique().tolist()]
    figure, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.6), squeeze=False)
    for ax, index in zip(axes[0], shown):
        n = int(lengths[index])
        ax.imshow(weights[index, :n, :n].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set(xlabel="source position j", ylabel="target position t", title=f"{title}: source length {n}")
    save(figure, png_path)


def sample_grid(images, png_path: Path, title: str) -> None:
    """Generated images (n, 1, H, W) in a square grid, each scaled to its own grey range."""

    n = len(images)
    side = math.ceil(math.sqrt(n))
    figure, axes = plt.subplots(side, side, figsize=(0.6 * side + 0.4, 0.6 * side + 0.7))
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < n:
            ax.imshow(images[index][0].detach().cpu().numpy(), cmap="gray_r", interpolation="nearest")
    figure.suptitle(title, fontsize=9)
    save(figure, png_path)


def return_histogram(returns, png_path: Path, title: str) -> None:
    """The returns of a policy's test episodes, with their mean."""
    figure, ax = plt.subplots(figsize=(4.8, 3.5))
    ax.hist(returns.numpy(), bins=20)
    ax.axvline(float(returns.mean()), color="black", linestyle="--", label=f"mean {float(returns.mean()):.1f}")
    ax.set(xlabel="episode return", ylabel="episodes", title=title)
    ax.legend()
    save(figure, png_path)
