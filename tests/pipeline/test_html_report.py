"""reports/index.html (pipeline.html_report) renders in headless Chromium with every figure loaded.

The page is built from small fixture files in the layout the stages write (plots/learning_curves,
plots/validation, plots/figures/EXPERIMENT/*.png), so no `dvc repro` is needed. A copy of the page gets a
script that, on load, writes what the browser saw (each image's naturalWidth, each in-page link's target)
into the DOM, which `chromium --dump-dom` prints.
"""

from __future__ import annotations

import csv
import html
import json
import re
import subprocess
from pathlib import Path

from conftest import browser
from pipeline import html_report
from pipeline.html_report import Check, Section

PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth}));
  const links = [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href"));
  const missing = links.filter(h => h.startsWith("#") && !document.getElementById(h.slice(1)));
  const external = [...document.querySelectorAll("[src], [href]")].map(e => e.getAttribute("src") || e.getAttribute("href"))
    .filter(u => /^[a-z][a-z0-9+.-]*:|^\\/\\//i.test(u));
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({images, links, missing, external});
  document.body.appendChild(pre);
});
</script>"""


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])


def _png(path: Path) -> None:
    import numpy as np
    from matplotlib import pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.arange(64.0).reshape(8, 8), cmap="gray")


def _build(root: Path, accuracy_step: float = 0.03) -> Path:
    """A classifier and an agent with the files their stages write, a baseline row, targets; the page."""
    plots = root / "plots"
    for name in ("clf", "agent"):
        _csv(plots / "learning_curves" / f"{name}.csv", ["epoch", "train/loss", "val/loss"],
             [[e, 1 / (e + 1), "" if name == "agent" else 1.2 / (e + 1)] for e in range(5)])
    _csv(plots / "validation" / "clf.csv", ["epoch", "val/accuracy"], [[e, 0.8 + accuracy_step * e] for e in range(5)])
    _csv(plots / "validation" / "agent.csv", ["epoch", "train/env_steps", "train/episode_return", "val/mean_return"],
         [[e, 1000 * (e + 1), 20 * e, 40 * e] for e in range(5)])
    for path in ("clf/confusion_matrix.png", "clf/learning_curve.png", "agent/test_returns.png"):
        _png(plots / "figures" / path)
    out = root / "reports"
    _png(out / "comparison.png")
    sections = [
        Section("toy", "toy <digits>", [
            {"name": "clf", "kind": "model", "family": "mlp & <friends>", "dataset": "toy", "test/accuracy": 0.93,
             "parameters": 10, "train seconds": 0.5},
            {"name": "svc", "kind": "baseline", "family": "scikit-learn", "dataset": "toy", "test/accuracy": 0.9},
        ]),
        Section("gym", "gym", [{"name": "agent", "kind": "model", "family": "dqn", "dataset": "gym",
                                "test/mean_return": 150.0}]),
    ]
    checks = [Check("clf", "test/accuracy", "test/accuracy >= svc +0.01 = 0.91", 0.93, 0.91, True),
              Check("agent", "test/mean_return", "test/mean_return >= 175", 150.0, 175.0, False)]
    return html_report.write(sections, checks, ["test/accuracy", "test/mean_return"], plots=plots, out=out,
                             target_std={}, overview=[out / "comparison.png", out / "missing.png"])


def _render(index: Path, profile: Path) -> dict:
    """What Chromium saw on loading a probed copy of `index` from file://."""
    probed = index.with_name("probed.html")
    probed.write_text(index.read_text().replace("</body>", PROBE + "</body>"))
    result = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=90,
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"no probe output (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_every_figure_of_the_page_loads_from_file_urls(tmp_path):
    index = _build(tmp_path)
    seen = _render(index, tmp_path / "profile")
    sources = [image["src"] for image in seen["images"]]
    broken = [image["src"] for image in seen["images"] if not (image["complete"] and image["width"] > 0)]
    assert broken == []
    assert seen["missing"] == [] and seen["external"] == []
    assert len(seen["links"]) == 3  # the contents: overview and the two sections
    assert sorted(sources) == sorted([
        "comparison.png",  # missing.png, absent, is left out
        "figures/curves_toy.png", "figures/curves_gym.png",
        "../plots/figures/clf/confusion_matrix.png", "../plots/figures/agent/test_returns.png",
    ])  # the single-run learning_curve.png is replaced by the overlay


def test_the_check_reports_a_figure_that_does_not_load(tmp_path):
    index = _build(tmp_path)
    (tmp_path / "plots" / "figures" / "clf" / "confusion_matrix.png").unlink()
    (tmp_path / "reports" / "figures" / "curves_gym.png").write_bytes(b"not a png")
    seen = _render(index, tmp_path / "profile")
    broken = sorted(image["src"] for image in seen["images"] if not (image["complete"] and image["width"] > 0))
    assert broken == ["../plots/figures/clf/confusion_matrix.png", "figures/curves_gym.png"]


def test_the_page_escapes_text_and_states_each_target(tmp_path):
    page = _build(tmp_path).read_text()
    assert "mlp &amp; &lt;friends&gt;" in page and "toy &lt;digits&gt;" in page and "<friends>" not in page
    assert "targets of params.yaml holding: <b>1 of 2</b>" in page
    assert "test/mean_return &gt;= 175" in page and 'class="no"' in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_curves_are_overlaid_by_quantity_with_the_baselines_and_targets(tmp_path):
    _build(tmp_path)
    rows = [{"name": "reg", "kind": "model", "dataset": "series"},
            {"name": "floor", "kind": "baseline", "dataset": "series", "test/mse": 4.0}]
    _csv(tmp_path / "plots" / "validation" / "reg.csv", ["epoch", "val/mse"], [[0, 2.0], [1, 1.0]])
    checks = {"reg": [Check("reg", "test/mse", "test/mse <= 5", 4.5, 5.0, True)]}
    panels = html_report._panels(Section("s", "s", rows), checks, tmp_path / "plots", {"series": 3.0})
    assert list(panels) == [("mse", "epoch")]
    # the validation curve was on the standardized target: x 3² puts it in the target's units, the test values'
    assert panels["mse", "epoch"]["lines"] == [("reg", "val/mse", [0.0, 1.0], [18.0, 9.0])]
    # test values beside validation curves: each label says which split it is
    assert panels["mse", "epoch"]["references"] == [("floor, test 4.0000", 4.0, False), ("target, test 5.0000: reg", 5.0, True)]

    agent = Section("gym", "gym", [{"name": "agent", "kind": "model", "dataset": "gym"}])
    targets = {"agent": [Check("agent", "test/mean_return", "", 150.0, 175.0, False)]}
    panels = html_report._panels(agent, targets, tmp_path / "plots", {})
    assert list(panels) == [("loss", "epoch"), ("return", "train/env_steps")]  # the counter column, not the epoch
    returns = panels["return", "train/env_steps"]
    assert [key for _, key, *_ in returns["lines"]] == ["train/episode_return", "val/mean_return"]
    assert returns["references"] == [("target, test 175.0: agent", 175.0, True)]
    assert [key for _, key, *_ in panels["loss", "epoch"]["lines"]] == ["train/loss"]  # val/loss is empty for the agent


def test_generative_losses_get_a_panel_each_and_many_panels_wrap(tmp_path):
    import matplotlib.image

    plots = tmp_path / "plots"
    names = ("vae", "gan", "ae", "ddpm")
    for scale, name in zip((80.0, 1.0, 0.05, 0.2), names):  # a negative ELBO in nats, a GAN's loss, MSEs per pixel
        _csv(plots / "learning_curves" / f"{name}.csv", ["epoch", "train/loss", "val/loss"],
             [[e, scale / (e + 1), scale / (e + 1)] for e in range(3)])
    rows = [{"name": name, "kind": "model", "dataset": "digits"} for name in names]
    panels = html_report._panels(Section("g", "g", rows, separate_losses=True), {}, plots, {})
    assert list(panels) == [(f"loss: {name}", "epoch") for name in names]
    assert [[line[0] for line in panel["lines"]] for panel in panels.values()] == [[name, name] for name in names]
    shared = html_report._panels(Section("s", "s", rows), {}, plots, {})  # a supervised dataset's losses: one panel
    assert list(shared) == [("loss", "epoch")]
    png = tmp_path / "curves.png"
    html_report.draw_curves(panels, png, "g")
    height, width, _ = matplotlib.image.imread(png).shape
    assert width <= 3 * 4.6 * 100 + 1 and height >= 2 * 3.9 * 100 - 1  # three panels a row at most: two rows


def test_markdown_code_spans_are_code_on_the_page_not_backticks(tmp_path):
    index = _build(tmp_path)
    out = tmp_path / "reports"
    sweep = {"title": "Sweep `lr`: clf", "anchor": "sweep-lr-clf", "header": ["optimizer.lr", "seeds", "test/accuracy"],
             "rows": [["0.001", "0, 1", "0.9000 ± 0.0100"]], "note": ""}
    page = html_report.write([], [], ["test/accuracy"], plots=tmp_path / "plots", out=out, target_std={},
                             sweeps=[sweep]).read_text()
    assert "`" not in page and "`" not in index.read_text()
    assert "<code>python -m pipeline.sweep NAME</code>" in page and "Sweep <code>lr</code>: clf" in page


def test_a_figure_is_drawn_again_only_when_what_it_shows_changed(tmp_path, monkeypatch):
    """The second report with nothing changed draws nothing; after one experiment's curves change, only its
    section's figure is drawn, and every figure has the bytes a report drawing all of them writes."""
    figures = tmp_path / "reports" / "figures"
    _build(tmp_path)
    first = {path.name: path.read_bytes() for path in figures.glob("*.png")}
    assert sorted(first) == ["curves_gym.png", "curves_toy.png"]

    drawn = []
    draw = html_report.draw_curves
    monkeypatch.setattr(html_report, "draw_curves", lambda panels, png, title: (drawn.append(png.name), draw(panels, png, title)))
    _build(tmp_path)
    assert drawn == []
    assert {path.name: path.read_bytes() for path in figures.glob("*.png")} == first

    _build(tmp_path, accuracy_step=0.04)  # the classifier's validation curve changed
    assert drawn == ["curves_toy.png"]
    cached = {path.name: path.read_bytes() for path in figures.glob("*.png")}
    assert cached["curves_toy.png"] != first["curves_toy.png"]

    (figures / html_report.DRAWN).unlink()  # no record: every figure is drawn anew, to the same bytes
    drawn.clear()
    _build(tmp_path, accuracy_step=0.04)
    assert sorted(drawn) == ["curves_gym.png", "curves_toy.png"]
    assert {path.name: path.read_bytes() for path in figures.glob("*.png")} == cached


def test_a_figure_no_section_draws_any_more_is_removed(tmp_path):
    figures = tmp_path / "reports" / "figures"
    _build(tmp_path)
    (figures / "curves_gone.png").write_bytes(b"stale")
    _build(tmp_path)
    assert sorted(path.name for path in figures.glob("*.png")) == ["curves_gym.png", "curves_toy.png"]
    assert sorted(json.loads((figures / html_report.DRAWN).read_text())) == ["curves_gym.png", "curves_toy.png"]
