"""reports/index.html: the comparison as one static page that opens in a browser from file://, no server.

Called by the report stage (pipeline.report) with the rows and target checks it has already computed.
One section per dataset (generative models in sections of their own): the table of its experiments
beside its baselines and floors (the rows of reports/comparison.md) with each experiment's targets and
whether they hold; its learning curves overlaid, from plots/learning_curves/ and plots/validation/, with
the baselines' test values and the targets' thresholds as horizontal lines; then the figures the
evaluate stage drew for each experiment (confusion matrices, predicted vs actual, sample grids, test
returns): every PNG under plots/figures/EXPERIMENT/ but its single-run learning curve, which the
overlay replaces. What a section shows follows from the files present and their columns, not from the
family.

Images are files referenced by relative paths, not data URIs: the page stays a few tens of KB and
the PNGs are not stored a second time in git (reports/ and plots/ are both git-tracked outputs). The
figures drawn here go to reports/figures/; evaluate's are linked where they are
(../plots/figures/...), so the page opens inside the repository (or any copy holding reports/ and
plots/ side by side). No script, stylesheet or font is fetched: the CSS is inline, there is no script.

A section's overlay is drawn again only when what it shows changed: reports/figures/drawn.json keeps,
for each figure, a hash of its curves, references and title and of this module's code (its closure,
pipeline/codedeps.py). After one experiment's edit the report redraws that experiment's section only;
drawing every section's figure is most of the report's time otherwise.

The overlay is drawn here rather than in pipeline.core.figures: the train and evaluate stages import
that module (their code dependencies, pipeline/codedeps.py), and a figure only the report draws should
not rerun them.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from pipeline import files

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; }
main { max-width: 1240px; margin: 0 auto; padding: 1em 1.5em 4em; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin: 1.2em 0 0.4em; font-size: 1.05em; }
nav ol { columns: 3; padding-left: 1.4em; }
.muted { color: #666; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
td:first-child, .yes, .no, .unchecked { white-space: nowrap; }
table.targets { margin-top: 0.8em; }
tr.baseline td { background: #fafafa; color: #555; }
.yes { color: #16730f; }
.no { color: #b3141b; font-weight: bold; }
.unchecked { color: #8a6d00; }
figure { margin: 0.6em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
.grid figure { margin: 0; }
.grid img { max-height: 330px; }
#overview figure { flex: 1 1 45%; }
#overview img { max-height: none; }
"""


SWEEP_INTRO = ("Collected from MLflow by `python -m pipeline.sweep NAME`: the runs tagged with the sweep's name, one row "
               "per configuration (the params that vary in the sweep, the seed left out), each test metric as the mean ± "
               "the standard deviation over the configuration's seeds.")


def fmt(value) -> str:
    """A table cell: 4 decimals, or 1 from 100 on; empty for a missing value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


@dataclass
class Check:
    """One target of params.yaml checked against its experiment's test value (pipeline.report.check_target)."""

    experiment: str
    metric: str
    statement: str
    value: float | None
    threshold: float | None  # the line a figure draws; None for `lowest_among` (several experiments)
    ok: bool | None  # None: could not be checked


@dataclass
class Section:
    """A dataset's experiments and reference rows, shown together. `separate_losses`: each experiment's
    loss on a panel of its own, where the losses are different objectives on different scales (a VAE's
    negative ELBO in nats, a GAN's discriminator loss, an autoencoder's MSE per pixel)."""

    anchor: str
    title: str
    rows: list[dict]
    separate_losses: bool = False


def quantity(key: str) -> str:
    """What a metric measures, the last word of its name: val/accuracy, test/token_accuracy -> accuracy;
    train/episode_return, test/mean_return -> return. Test values are drawn on the curves of the same quantity."""
    return key.rsplit("/", 1)[-1].rsplit("_", 1)[-1]


def target_unit_power(quantity: str) -> int:
    """The power of a regression target's scale a metric of this quantity carries (0: none): its
    validation curve, on the standardized target, times target_std ** power is in the target's units, as
    test values, baselines and targets are. Where the metric is defined: pipeline.core.metrics."""
    from pipeline.core.metrics import TARGET_UNIT_POWER  # torchmetrics: only when a page is drawn

    return TARGET_UNIT_POWER.get(quantity, 0)


def write(sections: list[Section], checks: list[Check], columns: list[str], *, plots: Path, out: Path,
          target_std: dict[str, float], overview: list[Path] = (), sweeps: list[dict] = ()) -> Path:
    """Write out/index.html and its figures (out/figures/). `columns`: the metric columns, in order, that
    tables may show; `plots`: the plots/ folder the stages wrote; `target_std`: a regression dataset's
    target scale (meta.json); `overview`: figures shown at the top (reports/comparison.png ...);
    `sweeps`: pipeline.report.sweep_tables, shown last (mean ± standard deviation over seeds)."""
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    manifest = figures_dir / DRAWN
    drawn = Drawn(previous=_read_json(manifest), code=_code_digest())
    by_experiment: dict[str, list[Check]] = {}
    for check in checks:
        by_experiment.setdefault(check.experiment, []).append(check)
    held = sum(check.ok is True for check in checks)
    failed = [check for check in checks if check.ok is False]
    body = [
        "<h1>Comparison</h1>",
        f'<p class="muted">{len([r for s in sections for r in s.rows if r["kind"] == "model"])} experiments on '
        f"{len({r['dataset'] for s in sections for r in s.rows})} datasets, test split of each; "
        f"targets of params.yaml holding: <b>{held} of {len(checks)}</b>"
        + ("" if not failed else " (not met: " + ", ".join(_e(f"{c.experiment}: {c.statement}") for c in failed) + ")")
        + ". Written by <code>python -m pipeline.report</code>; the same rows as <code>comparison.md</code>.</p>",
        "<nav><ol>",
        '<li><a href="#overview">Overview</a></li>',
        *(f'<li><a href="#{s.anchor}">{_e(s.title)}</a></li>' for s in sections),
        *(['<li><a href="#sweeps">Sweeps</a></li>'] if sweeps else []),
        "</ol></nav>",
        '<section id="overview"><h2>Overview</h2>',
        "<p>Models in blue, baselines in gray. Each section below: the table (baselines and floors in gray rows,"
        " then each target of params.yaml and whether it holds), the learning curves of its experiments overlaid"
        " (training and validation splits; dashed: train/*, solid: val/*) with horizontal lines at the baselines'"
        " and floors' values on the test split (gray) and the targets' thresholds, on test values too (red): a"
        " reference for the curves, not a value of the same split; then the figures the evaluate stage drew from"
        " each experiment's test split or samples.</p>",
        '<div class="grid">',
        *(_figure(out, path, path.stem) for path in overview if path.exists()),
        "</div></section>",
    ]
    for section in sections:
        body += _section(section, by_experiment, columns, plots, out, target_std, drawn)
    for stale in figures_dir.glob("*.png"):
        if stale.name not in drawn.now:
            stale.unlink()
    _write(manifest, (json.dumps(drawn.now, indent=1, sort_keys=True) + "\n").encode())
    if sweeps:
        body += _sweeps(sweeps)
    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Comparison: Mathematical Engineering of Deep Learning, as experiments</title>",
        f"<style>{CSS}</style></head><body><main>",
        *body,
        "</main></body></html>",
        "",
    ])
    index = out / "index.html"
    _write(index, page.encode("utf-8"))
    return index


def _write(path: Path, content: bytes) -> None:
    """Whole or not at all (pipeline.files.replacing); `out` is the caller's folder, so not files.write_bytes,
    which refuses paths outside the project's folders."""
    with files.replacing(path, size=len(content)) as handle:
        handle.write(content)


DRAWN = "drawn.json"  # under out/figures: each figure drawn here and the hash of what it shows


@dataclass
class Drawn:
    """The figures of the last report (name -> hash) and of this one, and the drawing code's hash."""

    previous: dict[str, str]
    code: str
    now: dict[str, str] = field(default_factory=dict)

    def draw(self, png: Path, content, draw) -> None:
        """Call draw() unless png holds this content drawn by this code already."""
        key = hashlib.sha256(json.dumps([self.code, content]).encode()).hexdigest()
        if self.previous.get(png.name) != key or not png.is_file():
            draw()
        self.now[png.name] = key


def _read_json(path: Path) -> dict[str, str]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: every figure is drawn
        return {}
    return found if isinstance(found, dict) else {}


def _code_digest() -> str:
    """This module's code and matplotlib's version: either may change what the same curves look like."""
    from importlib.metadata import version

    from pipeline import codedeps

    return f"{codedeps.digest(__name__)} matplotlib {version('matplotlib')}"


def _section(section: Section, checks: dict[str, list[Check]], columns: list[str], plots: Path, out: Path,
             target_std: dict[str, float], drawn: Drawn) -> list[str]:
    models = [row["name"] for row in section.rows if row["kind"] == "model"]
    shown = [c for c in columns if any(row.get(c) is not None for row in section.rows)]
    text = ("name", "kind", "family", "targets")
    header = ["name", "kind", "family", *shown, "parameters", "train seconds", "targets"]
    lines = [f'<section id="{_e(section.anchor)}"><h2>{_e(section.title)}</h2>', '<div class="scroll"><table>',
             "<tr>" + "".join(f'<th class="{"text" if h in text else ""}">{_e(h)}</th>' for h in header) + "</tr>"]
    for row in section.rows:
        cells = [f'<td class="text">{_e(row.get(key, ""))}</td>' for key in ("name", "kind", "family")]
        cells += [f"<td>{_e(fmt(row.get(key)))}</td>" for key in [*shown, "parameters", "train seconds"]]
        cells.append(f'<td class="text">{_tally(checks.get(row["name"], [])) if row["kind"] == "model" else ""}</td>')
        lines.append(f'<tr class="{_e(row["kind"])}">' + "".join(cells) + "</tr>")
    lines.append("</table></div>")
    section_checks = [check for name in models for check in checks.get(name, [])]
    if section_checks:
        lines += ['<table class="targets"><tr><th class="text">experiment</th><th class="text">target</th><th>value</th>'
                  '<th class="text">holds</th></tr>',
                  *(f'<tr><td class="text">{_e(c.experiment)}</td><td class="text">{_e(c.statement)}</td>'
                    f'<td>{_e(fmt(c.value))}</td><td class="text">{_verdict(c)}</td></tr>' for c in section_checks),
                  "</table>"]

    panels = _panels(section, checks, plots, target_std)
    if panels:
        png = out / "figures" / f"curves_{section.anchor}.png"
        title = f"{section.title}: learning curves"
        drawn.draw(png, [title, [[list(key), panel] for key, panel in panels.items()]],
                   lambda: draw_curves(panels, png, title))
        in_units = {row["dataset"] for row in section.rows} & set(target_std)
        caption = ", ".join(f"{q} vs {x}" + (" (in the target's units)" if target_unit_power(q) and in_units else "")
                            for q, x in panels)
        lines += ["<h3>Learning curves</h3>", _figure(out, png, caption)]
    evaluated = [(name, path) for name in models for path in sorted((plots / "figures" / name).glob("*.png"))
                 if path.name != "learning_curve.png"]
    if evaluated:
        lines += ["<h3>Evaluation figures</h3>", '<div class="grid">',
                  *(_figure(out, path, f"{name}: {path.stem.replace('_', ' ')}") for name, path in evaluated), "</div>"]
    return [*lines, "</section>"]


def _sweeps(tables: list[dict]) -> list[str]:
    lines = ['<section id="sweeps"><h2>Sweeps</h2>', f"<p>{_code(SWEEP_INTRO)}</p>"]
    for table in tables:
        lines += [f'<h3 id="{_e(table["anchor"])}">{_code(table["title"])}</h3>', '<div class="scroll"><table>',
                  "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in table["header"]) + "</tr>",
                  *("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in cells) + "</tr>" for cells in table["rows"]),
                  "</table></div>"]
        if table["note"]:
            lines.append(f'<p class="muted">{_e(table["note"])}</p>')
    return [*lines, "</section>"]


def _panels(section: Section, checks: dict[str, list[Check]], plots: Path,
            target_std: dict[str, float]) -> dict[tuple[str, str], dict]:
    """(quantity, x axis) -> {"lines", "references"} for draw_curves, from each model's two CSVs."""
    panels: dict[tuple[str, str], dict] = {}
    for row in section.rows:
        if row["kind"] != "model":
            continue
        for path in (plots / "learning_curves" / f"{row['name']}.csv", plots / "validation" / f"{row['name']}.csv"):
            if not path.exists():
                continue
            with path.open() as handle:
                records = list(csv.DictReader(handle))
            keys = list(records[0]) if records else []
            x = next((k for k in keys if k.endswith("_steps")), "epoch")  # e.g. train/env_steps: the RL x axis
            for key in (k for k in keys if k not in ("epoch", x)):
                points = [(float(r[x]), float(r[key])) for r in records if r[key] and r[x]]
                if not points:
                    continue
                scale = target_std.get(row["dataset"], 1.0) ** target_unit_power(quantity(key))
                name = quantity(key)
                if section.separate_losses and name == "loss":
                    name = f"loss: {row['name']}"
                panel = panels.setdefault((name, x), {"lines": [], "references": []})
                panel["lines"].append((row["name"], key, [p[0] for p in points], [p[1] * scale for p in points]))
    for (name, _), panel in panels.items():
        baselines, targets = {}, {}
        for row in section.rows:
            if row["kind"] == "model":
                for check in checks.get(row["name"], []):
                    if quantity(check.metric) == name and check.threshold is not None:
                        targets.setdefault(float(check.threshold), []).append(check.experiment)
                continue
            for key, value in row.items():
                if key.startswith("test/") and quantity(key) == name and isinstance(value, float | int):
                    baselines[f"{row['name']}, test {fmt(value)}"] = float(value)
        panel["references"] = [  # test values: each label says so, beside validation curves
            *((label, value, False) for label, value in sorted(baselines.items(), key=lambda item: -item[1])),
            *((f"target, test {fmt(value)}: {', '.join(names)}", value, True)
              for value, names in sorted(targets.items(), reverse=True)),
        ]
    return panels


def draw_curves(panels: dict[tuple[str, str], dict], png_path: Path, title: str) -> None:
    """Curves of several experiments side by side, one panel per quantity, three a row. `panels`: (quantity, x axis' name)
    -> {"lines": [(experiment, key, xs, ys)], "references": [(label, value, is_target)]}. An experiment keeps
    its colour in every panel; train/* keys are dashed, the others solid. References are horizontal lines,
    listed in the panel's legend: baselines and floors in gray, each its own dash pattern; targets in red. A
    panel's y axis is logarithmic when its curves are positive and span more than 30x; a panel with
    references is zoomed onto them and the curves after their first fifth (the first epochs would squash
    the part the references are about)."""

    from pipeline.core.figures import plt  # matplotlib on the Agg backend

    png_path.parent.mkdir(parents=True, exist_ok=True)
    experiments = list(dict.fromkeys(name for panel in panels.values() for name, *_ in panel["lines"]))
    colors = {name: plt.get_cmap("tab10")(index % 10) for index, name in enumerate(experiments)}
    dashes = [(0, (1, 1.5)), (0, (4, 2)), (0, (6, 2, 1, 2)), (0, (1, 4)), (0, (8, 3))]
    widths = [6.6 if panel["references"] else 4.6 for panel in panels.values()]  # room for the references' legend
    columns = min(len(panels), 3)  # more panels (a loss per generative model) wrap onto further rows
    widths = [max(widths[column::columns]) for column in range(columns)]
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(sum(widths), 3.9 * rows), squeeze=False, layout="constrained",
                                width_ratios=widths)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    styles = set()
    for ax, ((quantity, x), panel) in zip(axes.flat, panels.items()):
        values, later = [], []
        for name, key, xs, ys in panel["lines"]:
            style = "--" if key.startswith("train/") else "-"
            styles.add(style)
            ax.plot(xs, ys, color=colors[name], linestyle=style, linewidth=1.3)
            values += ys
            later += ys[len(ys) // 5:]
        references = panel["references"]
        baselines = 0
        for label, value, is_target in references:
            if is_target:
                ax.axhline(value, color="tab:red", linestyle="-.", linewidth=1.1, label=label)
            else:
                ax.axhline(value, color="dimgray", linestyle=dashes[baselines % len(dashes)], linewidth=1.2, label=label)
                baselines += 1
        log = bool(values) and min(values) > 0 and max(values) / min(values) > 30
        ax.set(xlabel=x, title=quantity, yscale="log" if log else "linear")
        if references and not log:
            low = min(later + [value for _, value, _ in references])
            high = max(later + [value for _, value, _ in references])
            pad = 0.08 * (high - low) or 0.05 * abs(high) or 1.0
            ax.set_ylim(low - pad, high + pad)
        if references:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False,
                      title="on the test split", title_fontsize=7, alignment="left")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[name], label=name) for name in experiments]
    handles += [plt.Line2D([], [], color="black", linestyle=style, label=label)
                for style, label in (("--", "train/*"), ("-", "val/*")) if style in styles]
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), math.floor(sum(widths) / 1.6)),
                  fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=10)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    plt.close(figure)
    _write(png_path, png.getvalue())


def _verdict(check: Check) -> str:
    mark, css, word = {True: ("✓", "yes", "yes"), False: ("✗", "no", "no"), None: ("?", "unchecked", "unchecked")}[check.ok]
    return f'<span class="{css}">{mark} {word}</span>'


def _tally(checks: list[Check]) -> str:
    """An experiment's targets in a table cell: how many hold, red if one does not."""
    if not checks:
        return ""
    held = sum(check.ok is True for check in checks)
    css = "no" if any(check.ok is False for check in checks) else "yes" if held == len(checks) else "unchecked"
    return f'<span class="{css}">{held} of {len(checks)} hold</span>'


def _figure(out: Path, path: Path, caption: str) -> str:
    source = quote(Path(os.path.relpath(path, out)).as_posix())
    return (f'<figure><img src="{_e(source)}" alt="{_e(caption)}" loading="eager">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _code(text: str) -> str:
    """Text with markdown code spans (`python -m ...`), as the markdown report writes it, escaped and
    with each span in <code>: no literal backticks on the page."""
    parts = str(text).split("`")
    return "".join(f"<code>{_e(part)}</code>" if index % 2 else _e(part) for index, part in enumerate(parts))
