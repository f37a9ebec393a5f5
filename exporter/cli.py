"""`edge-export`: check datasets, train (offline or in Custom Vision), pull projects, evaluate, verify, sign bundles.

Exit status: 0 done, 1 a problem with the input (named on stderr in one line), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime import __version__
from edge_runtime.cli import Parser
from edge_runtime.errors import EXIT_ERROR, ConfigError, run_command
from edge_runtime.int8.target import TARGETS, Target
from edge_runtime.publish.child import progress_line

from .dataset import WHAT_A_DATASET_IS, Dataset, Kind, load_dataset
from .keys import PASSWORD_ENV, SigningKey, generate_keys, key_password
from .training_client import Flavor
from .verify import verify_export

if TYPE_CHECKING:
    from .credentials import Credentials
    from .customvision import CloudTraining
    from .local import TrainResult
    from .pulled import ServiceFigures

DATASET_HELP = WHAT_A_DATASET_IS[0].upper() + WHAT_A_DATASET_IS[1:]
FLAVORS = [f.value for f in Flavor]
FLAVOR_HELP = "export flavor (default: ONNX, which is float32)"
PASSWORD_HELP = f"a file whose first line is the key's password (default: the {PASSWORD_ENV} variable, if set)"


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


class ProgressLines:
    """`--progress-lines`: each step as one machine-readable line on stdout, for the process
    that started this one (edge-runtime retrain reads them for its progress bar)."""

    def __call__(self, stage: str, done: int, total: int) -> None:
        print(progress_line(stage, done, total), flush=True)


def progress_for(args: argparse.Namespace) -> Bars | ProgressLines:
    if getattr(args, "progress_lines", False):
        return ProgressLines()
    return Bars(not getattr(args, "no_progress", False))


def _progress_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--progress-lines", action="store_true",
                        help="progress as 'progress {\"stage\": S, \"done\": N, \"total\": N}' lines on stdout")


def _cloud_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--credentials", type=Path,
                        help="JSON file with endpoint and training_key (default: CUSTOMVISION_* variables)")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help=argparse.SUPPRESS)


class _RefusePassword(argparse.Action):
    """`--key-password VALUE` (which argparse would otherwise take for --key-password-file) is
    refused without echoing the value: a password on the command line is seen by `ps`."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string}: a password is never given on the command line; use {PASSWORD_ENV} or "
                     "--key-password-file")


def _password_arg(parser: argparse.ArgumentParser, help: str = PASSWORD_HELP) -> None:
    parser.add_argument("--key-password-file", type=Path, metavar="FILE", help=help)
    parser.add_argument("--key-password", "--password", action=_RefusePassword, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edge-export", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="read and check a dataset; print its summary")
    check.add_argument("dataset", type=Path, help=DATASET_HELP)

    train = sub.add_parser("train", help="train a model and write a verified bundle")
    train.add_argument("dataset", type=Path, help=DATASET_HELP)
    train.add_argument("--backend", choices=["local", "customvision"], default="local")
    train.add_argument("--project", help="project / bundle name (default: the dataset folder's name)")
    train.add_argument("--out", type=Path, default=Path("bundles"), help="bundles are written to OUT/PROJECT/vN")
    train.add_argument("--threshold", type=float, default=0.5, help="probability threshold for the report")
    train.add_argument("--seed", type=int, default=0)
    _progress_args(train)
    train.add_argument("--sign", type=Path, metavar="KEY",
                       help="sign each bundle with this private key once it is verified (vN/model.sig)")
    _password_arg(train)
    local = train.add_argument_group("local backend")
    local.add_argument("--int8", action="store_true",
                       help="also write a static INT8 export (OUT/PROJECT/vN-int8) calibrated on the training images")
    local.add_argument("--int8-max-drop", type=float, default=1.0, metavar="POINTS",
                       help="refuse the INT8 export when it loses more agreement on the decisions FP32 makes "
                       "clearly than this")
    local.add_argument("--budget", type=float, default=150.0, metavar="SECONDS",
                       help="detection: seconds of training steps, after the augmented views are made "
                       "(the step count is fitted to this machine's pace)")
    local.add_argument("--steps", type=int, metavar="N", help="detection: a fixed number of steps instead of --budget")
    local.add_argument("--views", type=int, default=480, metavar="N",
                       help="detection: augmented views of the training images made before the steps")
    local.add_argument("--input-size", type=int, default=320, metavar="PIXELS",
                       help="detection: the network's square input, a multiple of 32")
    local.add_argument("--int8-target", choices=TARGETS, default=Target.X86_AVX2.value,
                       help="the processor the INT8 export will run on (edge-runtime quantize --target)")
    cloud = train.add_argument_group("customvision backend")
    cloud.add_argument("--domain", default="General (compact)", help="compact domain name (exportable ones only)")
    cloud.add_argument("--training-type", choices=["Regular", "Advanced"], default="Regular")
    cloud.add_argument("--budget-hours", type=int, default=0, help="Advanced training budget")
    cloud.add_argument("--flavor", choices=FLAVORS, default=Flavor.ONNX.value, help=FLAVOR_HELP)
    cloud.add_argument("--publish", metavar="NAME", help="also publish the iteration under this name")
    cloud.add_argument("--timeout", type=float, default=3600, help="seconds to wait for training and export")
    _cloud_args(train)

    export = sub.add_parser("export", help="export an existing Custom Vision iteration as a bundle")
    export.add_argument("--project", required=True)
    export.add_argument("--iteration", required=True, help="iteration id")
    export.add_argument("--out", type=Path, default=Path("bundles"))
    export.add_argument("--flavor", choices=FLAVORS, default=Flavor.ONNX.value, help=FLAVOR_HELP)
    export.add_argument("--timeout", type=float, default=1800)
    export.add_argument("--no-progress", action="store_true")
    _cloud_args(export)

    pull = sub.add_parser("pull", help="bring a Custom Vision project's images, labels, iterations and exports out "
                          "as a dataset the other commands read")
    pull.add_argument("--project", required=True, help="project name or id")
    pull.add_argument("--out", type=Path, required=True, metavar="DATASET", help="the dataset folder to write")
    pull.add_argument("--exports", action="store_true",
                      help="also download each trained iteration's ONNX export (asking for it where none exists), "
                      "verified")
    pull.add_argument("--untagged", action="store_true", help="also pull untagged images (into DATASET/_untagged)")
    pull.add_argument("--predictions", action="store_true",
                      help="also pull the images the prediction endpoint stored, with what was predicted, for "
                      "labelling (into DATASET/_predictions, with predictions.json)")
    pull.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each export")
    pull.add_argument("--no-progress", action="store_true")
    _cloud_args(pull)

    push = sub.add_parser("push-labels", help="send the labels made on a device (its event store) up to a Custom "
                          "Vision project, with their tags or boxes")
    push.add_argument("--data", type=Path, required=True, help="the device's data folder (events.store.path); "
                      "read only, so safe while the server records")
    push.add_argument("--model", required=True, help="the published model name the labels are for")
    push.add_argument("--project", required=True, help="project id or name")
    push.add_argument("--out", type=Path, default=Path("bundles"),
                      help="the upload state goes to OUT/.state/PROJECT.json: a second run sends only what is new")
    push.add_argument("--no-progress", action="store_true")
    _cloud_args(push)

    status = sub.add_parser("status", help="a Custom Vision project's iterations and upload state")
    status.add_argument("--project", required=True)
    status.add_argument("--out", type=Path, default=Path("bundles"))
    _cloud_args(status)

    evaluate = sub.add_parser("evaluate", help="precision, recall and AP of a model on a labelled dataset")
    evaluate.add_argument("model", type=Path)
    evaluate.add_argument("dataset", type=Path, help=DATASET_HELP)
    evaluate.add_argument("--threshold", type=float, default=0.5)
    evaluate.add_argument("--json", type=Path, help="also write the figures here")
    evaluate.add_argument("--against", metavar="PROJECT_JSON[:ITERATION]",
                          help="set the figures beside the service's own for an iteration (name or id; default: the "
                          "newest trained), from the project.json that pull wrote (default: DATASET/project.json, "
                          "when there is one)")
    evaluate.add_argument("--no-progress", action="store_true")

    compare = sub.add_parser("compare", help="two versions of a model side by side on the same labelled dataset: "
                             "per-tag precision, recall and AP (mAP for detectors), and the images they disagree on")
    compare.add_argument("active", type=Path, help="the version serving now (export zip, folder or .onnx)")
    compare.add_argument("candidate", type=Path, help="the version that may replace it")
    compare.add_argument("dataset", type=Path, help=DATASET_HELP)
    compare.add_argument("--threshold", type=float, default=0.5)
    compare.add_argument("--json", type=Path, help="also write the comparison here")
    _progress_args(compare)

    verify = sub.add_parser("verify", help="check an export (zip, folder or .onnx) loads and runs")
    verify.add_argument("export", type=Path)

    sign = sub.add_parser("sign", help="sign an export's files (a folder gets model.sig inside, a zip X.zip.sig "
                          "beside it)")
    sign.add_argument("export", type=Path, help="an export folder (OUT/PROJECT/vN) or zip")
    sign.add_argument("--key", type=Path, required=True, help="the PEM elliptic-curve private key")
    sign.add_argument("--out", type=Path, metavar="SIG", help="write the signature here instead")
    _password_arg(sign)

    keygen = sub.add_parser("keygen", help="make a P-256 key pair: DIR/private.pem (0600) and DIR/public.pem "
                            "(for models.public_key)")
    keygen.add_argument("--out", type=Path, required=True, metavar="DIR")
    _password_arg(keygen, f"encrypt the private key with the password on this file's first line (default: the "
                  f"{PASSWORD_ENV} variable; neither: not encrypted)")
    return parser


def cmd_check(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset)
    print(dataset.summary())
    return EXIT_ERROR if dataset.report.errors else 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.int8 and args.backend != "local":
        raise ConfigError("--int8 is for the local backend; run edge-runtime quantize on the exported bundle")
    # the key is checked first: a wrong password must not wait for the end of a training run
    args.signing_key = SigningKey.load(args.sign, args.key_password_file) if args.sign else None
    dataset = load_dataset(args.dataset)
    print(dataset.summary())
    if dataset.report.errors:  # the reason on stderr too: the one line a parent (a retrain on the device) shows
        print(f"edge-export: {dataset.report.errors[0]}", file=sys.stderr)
        return EXIT_ERROR
    project = args.project or dataset.root.name
    if args.backend == "customvision":
        return train_cloud(args, dataset, project)
    from .package import write_bundle, write_export
    from .pulled import pulled_tag_ids

    tag_ids = pulled_tag_ids(dataset.root)  # a pulled dataset: the bundle reports the service's tag ids
    result = _train_locally(args, dataset)
    print()
    print(result.metrics.table())
    with tempfile.TemporaryDirectory() as tmp:
        export = write_export(Path(tmp) / "export", result.model, result.labels, result.metadata,
                              domain=result.domain)
        info: dict[str, Any] = {
            "source": {"backend": "local", "dataset": str(dataset.root.resolve()), "images": len(dataset.items)},
            "domain": "General (compact), offline", "iteration": None, "metrics": result.metrics.to_json()}
        info["recipe"] = ({"chosen": result.recipe, "crossValidated": dict(result.candidates)} if result.candidates
                          else {"chosen": result.recipe})
        bundle, verified = write_bundle(args.out, project, export, info, tag_ids, signing_key=args.signing_key)
    signed = ", signed" if args.signing_key else ""
    print(f"\nbundle: {bundle} ({verified.variant}, {verified.tags} tags, verified{signed})")
    if not args.int8:
        return 0
    return _int8(bundle, dataset.root, args.int8_max_drop, Target(args.int8_target), args.signing_key)


def _train_locally(args: argparse.Namespace, dataset: Dataset) -> TrainResult:
    """A classifier (local.py) or, for a COCO set, a detector (detection/, the `train` extra)."""
    progress = progress_for(args)
    if dataset.kind is Kind.DETECTION:
        from .detection.train import Recipe, require_torch, train_detector

        require_torch()  # before the recipe's checks: a missing extra is the first thing to say
        recipe = Recipe(size=args.input_size, views=args.views, budget_s=args.budget, steps=args.steps)
        result = train_detector(dataset, seed=args.seed, threshold=args.threshold, progress=progress, recipe=recipe)
        print(f"\ntrained on {result.train_images} images ({result.validation_images} held out) "
              f"in {result.seconds:.1f} s: {result.recipe}")
        return result
    from .local import FOLDS, train_local

    result = train_local(dataset, seed=args.seed, threshold=args.threshold, progress=progress)
    print(f"\ntrained on {result.train_images} images ({result.validation_images} held out) "
          f"in {result.seconds:.1f} s")
    print(f"recipe, chosen by {FOLDS}-fold cross-validation on the training images: {result.recipe}")
    for name, score in result.candidates:
        print(f"  {score:6.1%}  {name}")
    return result


def _int8(bundle: Path, images: Path, max_drop: float, target: Target, signing_key: SigningKey | None) -> int:
    """The INT8 sibling of a fresh bundle, calibrated on the images it was trained on."""
    from edge_runtime.int8.quantize import format_report, quantize_export

    print("\nquantising to INT8 ...")
    report = quantize_export(bundle, images, bundle.with_name(f"{bundle.name}-int8"), max_drop=max_drop,
                             target=target)
    print(format_report(report, max_drop))
    if report.written and signing_key is not None:
        print(f"signed: {signing_key.sign(bundle.with_name(f'{bundle.name}-int8'))}")
    return 0 if report.written else EXIT_ERROR


def _cloud(args: argparse.Namespace, project: str) -> tuple[CloudTraining, Credentials]:
    from .credentials import guard_logs, load_credentials
    from .customvision import CloudTraining, UploadState
    from .sdk_client import SdkClient

    credentials = load_credentials(args.credentials)
    guard_logs(credentials.training_key)
    state = UploadState.open(args.out / ".state" / f"{project}.json")
    progress = Bars(not getattr(args, "no_progress", True))
    run = CloudTraining(SdkClient.connect(credentials), state, progress, poll_s=args.poll_seconds)
    return run, credentials


def _bundle_from_cloud(args: argparse.Namespace, run: CloudTraining, project: str, project_id: str,
                       iteration_id: str, info: dict[str, Any], tag_ids: dict[str, str]) -> int:
    from .package import write_bundle

    with tempfile.TemporaryDirectory() as tmp:
        zip_path = run.export(project_id, iteration_id, Path(tmp), Flavor(args.flavor), timeout_s=args.timeout)
        bundle, verified = write_bundle(args.out, project, zip_path, info, tag_ids,
                                        signing_key=getattr(args, "signing_key", None))
    signed = ", signed" if getattr(args, "signing_key", None) else ""
    print(f"\nbundle: {bundle} ({verified.variant}, {verified.tags} tags, SHA-1 and load verified{signed})")
    return 0


def train_cloud(args: argparse.Namespace, dataset: Dataset, project: str) -> int:
    run, credentials = _cloud(args, project)
    result = run.train(dataset, project, args.domain, args.training_type, args.budget_hours, args.timeout,
                       args.threshold)
    print(f"\nuploaded {result.upload.uploaded} images ({result.upload.already_there} already there, "
          f"{len(result.upload.failed)} refused); iteration {result.iteration_id} trained\n")
    for path, status in result.upload.failed:
        print(f"refused by the service: {path} ({status})", file=sys.stderr)
    print(result.metrics.table())
    (args.out / project).mkdir(parents=True, exist_ok=True)
    (args.out / project / f"metrics-{result.iteration_id}.json").write_text(
        json.dumps(result.metrics.to_json(), indent=2) + "\n")
    if args.publish:
        run.publish(result.project_id, result.iteration_id, args.publish, credentials.prediction_resource_id)
        print(f"published as {args.publish!r}")
    info = {"source": {"backend": "customvision", "endpoint": credentials.endpoint, "project": project,
                       "projectId": result.project_id, "dataset": str(dataset.root.resolve())},
            "iteration": result.iteration_id, "domain": result.domain, "flavor": args.flavor,
            "metrics": result.metrics.to_json()}
    return _bundle_from_cloud(args, run, project, result.project_id, result.iteration_id, info, result.tag_ids)


def cmd_export(args: argparse.Namespace) -> int:
    run, credentials = _cloud(args, args.project)
    project = run.find_project(args.project)
    tag_ids = {t.name: t.id for t in run.client.tags(project.id)}
    info = {"source": {"backend": "customvision", "endpoint": credentials.endpoint, "project": args.project,
                       "projectId": project.id}, "iteration": args.iteration, "flavor": args.flavor}
    return _bundle_from_cloud(args, run, args.project, project.id, args.iteration, info, tag_ids)


def cmd_pull(args: argparse.Namespace) -> int:
    from .credentials import guard_logs, load_credentials
    from .pull import Pull, RateLimiter
    from .sdk_client import SdkClient

    credentials = load_credentials(args.credentials)
    guard_logs(credentials.training_key)
    client = SdkClient.connect(credentials, limiter=RateLimiter(10))
    summary = Pull(client, args.out, Bars(not args.no_progress), poll_s=args.poll_seconds,
                   timeout_s=args.timeout).run(args.project, exports=args.exports, untagged=args.untagged,
                                               predictions=args.predictions)
    for problem in summary.problems():
        print(problem, file=sys.stderr)
    print(summary.line())
    return EXIT_ERROR if summary.refused or summary.failed else 0


def cmd_push_labels(args: argparse.Namespace) -> int:
    from edge_runtime.events.store import EventStore

    from .push_labels import push_labels

    store = EventStore.open_readonly(args.data)
    try:
        run, _ = _cloud(args, args.project)
        with tempfile.TemporaryDirectory() as work:
            report = push_labels(store, args.model, args.project, run, Path(work))
    finally:
        store.close()
    for path, status in report.failed:
        print(f"refused by the service: {Path(path).name} ({status})", file=sys.stderr)
    print(f"labels of {args.model}: {report.uploaded} images uploaded, {report.already_there} already there, "
          f"{len(report.failed)} refused")
    return EXIT_ERROR if report.failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    run, _ = _cloud(args, args.project)
    project = run.find_project(args.project)
    print(f"project {args.project} ({project.id}); {len(run.state.images)} images recorded as uploaded")
    for it in run.client.iterations(project.id):
        print(f"  {it.id}  {it.name:<14} {it.status:<10} {it.publish_name}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from edge_runtime.model.predictor import Predictor

    from .evaluate import evaluate

    figures = _service_figures(args.against, args.dataset)  # a bad file fails before the model runs
    predictor = Predictor.load(args.model)
    dataset = load_dataset(args.dataset)
    for problem in dataset.report.notices:
        print(f"skipped {problem[0]}: {problem[1]}", file=sys.stderr)
    metrics = evaluate(predictor, dataset, args.threshold, progress=Bars(not args.no_progress))
    print(metrics.table())
    body = metrics.to_json()
    if figures is not None:
        from .pulled import side_by_side

        print(f"\nbeside Custom Vision's figures for {figures.iteration!r}:\n")
        print(side_by_side(metrics, figures, f"{len(dataset.items)} images of {dataset.root.name}"))
        body["service"] = figures.to_json()
    if args.json:
        args.json.write_text(json.dumps(body, indent=2) + "\n")
    return 0


def _service_figures(against: str | None, dataset: Path) -> ServiceFigures | None:
    from .dataset import DatasetError
    from .pulled import service_figures, split_against

    if against is not None:
        return service_figures(*split_against(against))
    found = (dataset.parent if dataset.is_file() else dataset) / "project.json"
    if not found.is_file():
        return None
    try:
        return service_figures(found)
    except DatasetError as exc:
        print(f"note: {exc}; evaluating without the service's figures", file=sys.stderr)
        return None


def cmd_compare(args: argparse.Namespace) -> int:
    from edge_runtime.model.predictor import Predictor
    from edge_runtime.publish.retrain import comparison_table

    from .compare import compare

    active, candidate = Predictor.load(args.active), Predictor.load(args.candidate)
    dataset = load_dataset(args.dataset)
    report = compare(active, candidate, dataset, args.threshold, progress=progress_for(args))
    print(comparison_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    result = verify_export(args.export)
    sha = "SHA-1 verified" if result.sha1_checked else "no SHA-1 in manifest"
    print(f"{result.path}: OK, {result.variant} with {result.tags} tags, {sha}, runs on {', '.join(result.providers)}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    signature = SigningKey.load(args.key, args.key_password_file).sign(args.export, args.out)
    print(f"{args.export}: signed, {signature}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    password = key_password(args.key_password_file)
    private, public = generate_keys(args.out, password)
    encrypted = "encrypted, " if password else ""
    print(f"private key: {private} ({encrypted}keep it secret; edge-export sign --key {private})")
    print(f"public key:  {public} (models.public_key on the devices)")
    return 0


COMMANDS = {"check": cmd_check, "train": cmd_train, "export": cmd_export, "pull": cmd_pull, "status": cmd_status,
            "push-labels": cmd_push_labels,
            "evaluate": cmd_evaluate, "compare": cmd_compare, "verify": cmd_verify, "sign": cmd_sign,
            "keygen": cmd_keygen}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_command("edge-export", lambda: COMMANDS[args.command](args))


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
