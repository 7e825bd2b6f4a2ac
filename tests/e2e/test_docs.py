"""What the README tells users to type."""

from __future__ import annotations

import re

from conftest import ROOT


def code_lines(text: str) -> list[str]:
    """The lines inside fenced code blocks."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return lines


def test_every_mlflow_ui_or_server_command_in_the_readme_binds_to_loopback():
    commands = [line for line in code_lines((ROOT / "README.md").read_text()) if re.search(r"\bmlflow (ui|server)\b", line)]
    assert commands, "the README shows no mlflow ui command"
    for line in commands:
        assert "--host 127.0.0.1" in line, line
