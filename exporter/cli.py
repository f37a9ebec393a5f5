"""`edge-export`: build and check model bundles for edge-runtime."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_runtime.errors import EdgeRuntimeError

from .verify import verify_export


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check an export (zip, folder or .onnx) loads and runs")
    verify.add_argument("export", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = verify_export(args.export)
    except EdgeRuntimeError as exc:
        print(f"edge-export: {exc}", file=sys.stderr)
        return 1
    sha = "SHA-1 verified" if result.sha1_checked else "no SHA-1 in manifest"
    print(f"{result.path}: OK, {result.variant} with {result.tags} tags, {sha}, runs on {', '.join(result.providers)}")
    return 0


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
