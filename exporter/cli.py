"""`edge-export`: check datasets, train (offline or in Custom Vision), evaluate and verify bundles.

Exit status: 0 done, 1 a problem with the input (named on stderr in one line), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_runtime.errors import EdgeRuntimeError

from .dataset import load_dataset
from .verify import verify_export

EXIT_ERROR = 1


class Bars:
    """tqdm progress bars keyed by stage name, on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="img", file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="read and check a dataset; print its summary")
    check.add_argument("dataset", type=Path)

    train = sub.add_parser("train", help="train a model and write a verified bundle")
    train.add_argument("dataset", type=Path)
    train.add_argument("--backend", choices=["local", "customvision"], default="local")
    train.add_argument("--project", help="project / bundle name (default: the dataset folder's name)")
    train.add_argument("--out", type=Path, default=Path("bundles"), help="bundles are written to OUT/PROJECT/vN")
    train.add_argument("--threshold", type=float, default=0.5, help="probability threshold for the report")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-progress", action="store_true")

    evaluate = sub.add_parser("evaluate", help="precision, recall and AP of a model on a labelled dataset")
    evaluate.add_argument("model", type=Path)
    evaluate.add_argument("dataset", type=Path)
    evaluate.add_argument("--threshold", type=float, default=0.5)
    evaluate.add_argument("--json", type=Path, help="also write the figures here")
    evaluate.add_argument("--no-progress", action="store_true")

    verify = sub.add_parser("verify", help="check an export (zip, folder or .onnx) loads and runs")
    verify.add_argument("export", type=Path)
    return parser


def cmd_check(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset)
    print(dataset.summary())
    return EXIT_ERROR if dataset.report.errors else 0


def cmd_train(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset)
    print(dataset.summary())
    if dataset.report.errors:
        return EXIT_ERROR
    project = args.project or dataset.root.name
    if args.backend == "customvision":
        print("edge-export: the customvision backend is not available in this version", file=sys.stderr)
        return EXIT_ERROR
    from .local import train_local
    from .package import write_bundle, write_export

    result = train_local(dataset, seed=args.seed, threshold=args.threshold, progress=Bars(not args.no_progress))
    print(f"\ntrained on {result.train_images} images ({result.validation_images} held out) "
          f"in {result.seconds:.1f} s\n")
    print(result.metrics.table())
    with tempfile.TemporaryDirectory() as tmp:
        export = write_export(Path(tmp) / "export", result.model, result.labels, result.metadata)
        info = {"source": {"backend": "local", "dataset": str(dataset.root), "images": len(dataset.items)},
                "domain": "General (compact), offline", "iteration": None,
                "metrics": result.metrics.to_json()}
        bundle, verified = write_bundle(args.out, project, export, info)
    print(f"\nbundle: {bundle} ({verified.variant}, {verified.tags} tags, verified)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from edge_runtime.predictor import Predictor

    from .evaluate import evaluate

    predictor = Predictor.load(args.model)
    dataset = load_dataset(args.dataset)
    for problem in dataset.report.notices:
        print(f"skipped {problem[0]}: {problem[1]}", file=sys.stderr)
    metrics = evaluate(predictor, dataset, args.threshold, progress=Bars(not args.no_progress))
    print(metrics.table())
    if args.json:
        args.json.write_text(json.dumps(metrics.to_json(), indent=2) + "\n")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    result = verify_export(args.export)
    sha = "SHA-1 verified" if result.sha1_checked else "no SHA-1 in manifest"
    print(f"{result.path}: OK, {result.variant} with {result.tags} tags, {sha}, runs on {', '.join(result.providers)}")
    return 0


COMMANDS = {"check": cmd_check, "train": cmd_train, "evaluate": cmd_evaluate, "verify": cmd_verify}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except EdgeRuntimeError as exc:
        print(f"edge-export: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
