"""Example experiments: list them, or enable some by moving them from `examples:` to `experiments:`.

    python -m pipeline.examples list
    python -m pipeline.examples enable NAME [NAME ...]

params.yaml's `examples:` holds full experiment specs that no DVC stage trains (dvc.yaml's stages are
`foreach: ${experiments}`); pipeline.params validates them as it validates experiments. `enable` moves
each named entry, its lines as written (comments included), to the end of `experiments:`, adds its
dataset to `data.download` if that dataset comes from the network, checks the result like any stage
would, and only then rewrites params.yaml; `dvc repro` then trains and evaluates it. Comment lines
above an entry at its own indentation describe a group of examples and stay where they are.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from pipeline import cli
from pipeline.datasets import DATASETS
from pipeline.params import PARAMS_FILE, ConfigError, check_name, load


def _round_trip():
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments, order and flow style kept
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # params.yaml's layout
    return yaml


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _entry_end(lines: list[str], start: int) -> int:
    """One past the last line of the mapping entry whose key is on line `start`: the lines indented deeper
    than its key, trailing blank lines left out."""
    end = start + 1
    for index in range(start + 1, len(lines)):
        if lines[index].strip():
            if _indent(lines[index]) <= _indent(lines[start]):
                break
            end = index + 1
    return end


def move_to_experiments(text: str, name: str) -> str:
    """params.yaml's text with the example `name` moved, line for line, to the end of `experiments:`."""
    doc = _round_trip().load(text)
    examples, experiments = doc["examples"], doc["experiments"]
    lines = text.splitlines(keepends=True)
    start = examples.lc.key(name)[0]
    last_experiment = max(experiments.lc.key(key)[0] for key in experiments)
    if examples.fa.flow_style() or experiments.fa.flow_style():
        raise ConfigError("examples: enable moves entries written one key a line (block style), as params.yaml writes them")
    end = _entry_end(lines, start)
    insert_at = _entry_end(lines, last_experiment)
    shift = _indent(lines[last_experiment]) - _indent(lines[start])
    block = [(" " * shift + line if shift >= 0 else line[-shift:]) if line.strip() else line for line in lines[start:end]]
    if not block[-1].endswith("\n"):
        block[-1] += "\n"
    if end < len(lines) and not lines[end].strip():  # the blank line that separated it from the next example
        end += 1
    # examples come after experiments in params.yaml, but either order works: edit the later lines first
    edits = sorted([(start, end, []), (insert_at, insert_at, ["\n", *block])], reverse=True)
    for first, stop, replacement in edits:
        lines[first:stop] = replacement
    return "".join(lines)


def opt_in_download(text: str, dataset: str) -> str:
    """params.yaml's text with `dataset` appended to data.download: in place on a one-line `[...]` (the rest
    of the file byte for byte), else through a round-trip dump."""
    yaml = _round_trip()
    doc = yaml.load(text)
    download = doc["data"]["download"]
    row, column = doc["data"].lc.value("download")
    lines = text.splitlines(keepends=True)
    if lines[row][column] == "[" and "]" in lines[row][column:]:
        close = lines[row].index("]", column)
        lines[row] = f"{lines[row][:column]}[{', '.join([*download, dataset])}]{lines[row][close + 1:]}"
        return "".join(lines)
    download.append(dataset)
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def enable(names: list[str], path: Path = PARAMS_FILE) -> list[str]:
    """Enable the examples `names` in the params file at `path`; returns what was done, a line each."""
    for name in names:  # typed on the command line: checked before it is looked up or printed
        check_name(name, "example name", "an example name")
    config = load(path, family_checks=False)
    for name in names:
        if name in config.experiments:
            raise ConfigError(f"{name}: already an experiment (enabled)")
        if name not in config.examples:
            known = ", ".join(config.examples) or "none"
            raise ConfigError(f"unknown example {name!r}; params.yaml's examples: {known}")
    text, done, download = path.read_text(), [], list(config.data.download)
    for name in dict.fromkeys(names):
        text = move_to_experiments(text, name)
        done.append(f"enabled {name}: moved from examples to experiments")
        dataset = config.examples[name].dataset
        if DATASETS[dataset].download and dataset not in download:
            text = opt_in_download(text, dataset)
            download.append(dataset)
            done.append(f"data.download: added {dataset} (prepare downloads it: needs network)")
    tmp = path.with_name(f".{path.name}.enable.tmp")
    try:
        tmp.write_text(text)
        load(tmp)  # the edited file, checked as every stage checks it, before it replaces params.yaml
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.examples", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="the params file (default: the project's params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the examples and the enabled experiments")
    enabling = commands.add_parser("enable", help="move examples under experiments: (then `dvc repro`)")
    enabling.add_argument("names", nargs="+", metavar="NAME", help="an example of params.yaml")
    args = parser.parse_args(argv)

    if args.command == "list":
        config = load(args.params, family_checks=False)
        for kind, section in (("example", config.examples), ("experiment", config.experiments)):
            for name, experiment in section.items():
                network = " (downloaded)" if DATASETS[experiment.dataset].download else ""
                print(f"{kind:10}  {name:28}  {experiment.family:26}  {experiment.dataset}{network}")
        return 0
    for line in enable(args.names, args.params):
        print(line)
    print("now `dvc repro` trains and evaluates them")
    return 0


if __name__ == "__main__":
    cli.run_and_exit(main)
