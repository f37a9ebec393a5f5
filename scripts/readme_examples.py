"""Run the example commands shown in README.md and check, or rewrite, the output shown under them.

An example is an indented block whose first line is `$ edge-runtime ...`; the lines after it,
up to a blank line, are its output. Values that change on every run (a prediction's id and
time) are shown as "…".

    python scripts/readme_examples.py            # check: exit 1 and show the differences
    python scripts/readme_examples.py --write    # rewrite README.md from a real run
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INDENT = "    "
PROMPT = INDENT + "$ "
VOLATILE = re.compile(r'("(?:id|created)": )"[^"]*"')


@dataclass(frozen=True)
class Example:
    command: str
    first: int  # index of the first output line in the README's lines
    end: int  # index after the last output line
    shown: list[str]


def examples(lines: list[str]) -> list[Example]:
    found = []
    for i, line in enumerate(lines):
        if line.startswith(PROMPT + "edge-runtime "):
            end = i + 1
            while end < len(lines) and lines[end].startswith(INDENT):
                end += 1
            found.append(Example(line[len(PROMPT):], i + 1, end, [x[len(INDENT):] for x in lines[i + 1 : end]]))
    return found


def run(command: str) -> list[str]:
    argv = shlex.split(command)
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", *argv[1:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{command}: exit {proc.returncode}: {proc.stderr.strip()}")
    return [VOLATILE.sub(r'\1"…"', line) for line in proc.stdout.rstrip("\n").splitlines()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md with the real output")
    args = parser.parse_args(argv)
    lines = README.read_text().splitlines()
    found = examples(lines)
    if not found:
        raise SystemExit("README.md has no examples")
    stale = 0
    for example in reversed(found):  # from the end, so earlier indexes stay valid while rewriting
        real = run(example.command)
        if real == example.shown:
            continue
        stale += 1
        if args.write:
            lines[example.first : example.end] = [INDENT + x for x in real]
        else:
            print(f"$ {example.command}")
            print("\n".join(difflib.unified_diff(example.shown, real, "README", "real run", lineterm="")))
    if args.write:
        README.write_text("\n".join(lines) + "\n")
        print(f"{len(found)} examples, {stale} rewritten")
        return 0
    print(f"{len(found)} examples, {stale} differ from a real run" + (" (--write updates them)" if stale else ""))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
