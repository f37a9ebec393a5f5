"""The README's examples and claims hold on a real run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_the_example_commands_print_what_the_readme_shows():
    proc = subprocess.run([sys.executable, "scripts/readme_examples.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    count = int(proc.stdout.strip().splitlines()[-1].split()[0])
    assert count >= 2 and '"probability": 0.9487986' in README and "espresso" in README


def test_the_test_command_is_described_as_it_is():
    script = (ROOT / "scripts" / "test.sh").read_text()
    tools = ("ruff", "mypy", "hadolint", "lint-imports", "pytest")
    ran = [tool for tool in tools if re.search(rf"\b{tool}\b", script)]
    described = README.split("bash scripts/test.sh", 1)[0].rsplit("Run the tests", 1)[1].replace(
        "import-linter", "lint-imports")
    assert ran == list(tools)
    assert all(tool in described for tool in ran)


def test_the_help_says_what_the_readme_says():
    def run(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True, text=True,
                              timeout=60, check=True).stdout

    top = " ".join(run("--help").split())
    assert "serve" in top.split("positional arguments")[0]  # the description names serve
    serve = " ".join(run("serve", "--help").split())
    for flag in ("--threshold P", "--top-k K", "--provider NAME", "--threads N", "--max-detections N"):
        assert re.search(re.escape(flag) + r" [a-z(]", serve), flag  # each has help text
    assert "(default: 20)" in serve and "(default: 0)" in serve and "at most 5 tags" in serve
