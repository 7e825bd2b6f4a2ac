"""What the README tells users to type."""

from __future__ import annotations

import re

from conftest import ROOT


def test_every_mlflow_ui_or_server_command_in_the_readme_binds_to_loopback():
    commands = [line for line in (ROOT / "README.md").read_text().splitlines() if re.search(r"\bmlflow (ui|server)\b", line)
                and not line.lstrip().startswith(("#", "|"))]
    assert commands, "the README shows no mlflow ui command"
    for line in commands:
        assert "--host 127.0.0.1" in line, line
