"""`edge-runtime`: inspect a model, predict on images, benchmark.

Parses arguments, wires the parts and prints; the work happens in the modules it calls.
Errors of the EdgeRuntimeError tree end as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import onnxruntime as ort

from . import __version__
from .capture.sources.opencv import configure_logging as configure_opencv_logging
from .config import DEMO, DEMO_TOP_K, ModelConfig, Settings, field_help, flag_type, load_settings, merge
from .errors import EXIT_ERROR, EdgeRuntimeError, run_command
from .int8.target import TARGETS, Target
from .model.bench import BenchOptions
from .model.imageio import read_image
from .model.postprocess import PostprocessOptions
from .model.predictor import Predictor
from .paths import graph_cache_dir
from .service import logs
from .types import PredictionResult

EXIT_USAGE = 2
HUMAN_TOP_K = 5
DESCRIPTION = ("Run Custom Vision ONNX exports: serve cameras and uploads over HTTP (`serve`, the built-in demo "
               "when given no model), predict on image files, inspect a model, benchmark it.")


class Parser(argparse.ArgumentParser):
    """Usage mistakes end as one line, like every other error (`--help` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _help(name: str, extra: str = "") -> str:
    return field_help(ModelConfig, name) + extra


def _model_args(parser: argparse.ArgumentParser, model: bool = True) -> None:
    if model:
        parser.add_argument("model", type=Path, help="export zip, export folder or .onnx file")
    parser.add_argument(
        "--provider", action="append", dest="providers", metavar="NAME",
        help="execution provider (tensorrt, cuda, openvino, cpu or a full name); repeat for a "
        "fallback order (default: the fastest available)",
    )
    parser.add_argument("--threads", type=flag_type(ModelConfig, "threads"), metavar="N",
                        help=_help("threads", " (default: 0)"))


def _prediction_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=flag_type(ModelConfig, "threshold"), metavar="P",
                        help=_help("threshold"))
    parser.add_argument("--top-k", type=flag_type(ModelConfig, "top_k"), metavar="K", help=_help("top_k"))
    parser.add_argument("--max-detections", type=flag_type(ModelConfig, "max_detections"), metavar="N",
                        help=_help("max_detections", f" (default: {ModelConfig().max_detections})"))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edge-runtime", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr, OpenCV's own too")
    sub = parser.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser("inspect", help="show what a model is and how it is fed")
    _model_args(inspect)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")

    predict = sub.add_parser("predict", help="predict on image files")
    _model_args(predict)
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    predict.add_argument("--json", action="store_true", help="Custom Vision prediction JSON")
    _prediction_args(predict)

    serve = sub.add_parser("serve", help="watch cameras and serve predictions over HTTP (default: the demo)",
                           description="Watch cameras and serve predictions over HTTP. With no model and no "
                           "source: the built-in demo model on the demo clip, at most "
                           f"{DEMO_TOP_K} tags per result unless --top-k says otherwise.")
    serve.add_argument("model", nargs="?", help="export zip, folder or .onnx (default: the built-in demo)")
    serve.add_argument("--config", type=Path, help="YAML settings file")
    serve.add_argument("--source", action="append", default=[], metavar="[ID=]URI",
                       help="camera, stream, video file, image folder, gst:, picam: or demo:; repeatable")
    serve.add_argument("--loop", action="store_true", default=None, help="files: start again at the end")
    serve.add_argument("--realtime", action="store_true", default=None,
                       help="files: play at their own rate, dropping frames if behind (they still end "
                       "unless --loop)")
    serve.add_argument("--max-fps", type=float, help="run the model at most this often per camera")
    serve.add_argument("--host", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: 8080)")
    serve.add_argument("--token-file", type=Path, help="file holding the bearer token (or set EDGE_RUNTIME_TOKEN)")
    serve.add_argument("--insecure", action="store_true", default=None,
                       help="allow serving beyond loopback without a token")
    _prediction_args(serve)
    serve.add_argument("--jsonl", type=Path, help="append every result to this JSON-lines file")
    serve.add_argument("--allow-url-host", action="append", default=[], metavar="HOST[:PORT]",
                       help="enable POST /url for this host and port (default 80 for http, 443 for https); "
                       "repeatable")
    serve.add_argument("--workers", type=_workers, help="camera worker processes: auto (default), a number, "
                       "or 0 to run the cameras in the server process")
    _model_args(serve, model=False)

    quantize = sub.add_parser("quantize", help="write a static INT8 export calibrated on real frames")
    quantize.add_argument("model", type=Path, help="float32 export zip, folder or .onnx file")
    quantize.add_argument("--calibrate", type=Path, required=True, metavar="DIR|VIDEO",
                          help="images (a folder, searched recursively) or a video from the camera's scene")
    quantize.add_argument("--out", type=Path, required=True, help="folder for the INT8 export (new or empty)")
    quantize.add_argument("--eval", type=Path, metavar="LABELLED",
                          help="folder-per-tag images (top-1 accuracy), or for a detector a COCO set "
                          "(annotations.json or its folder: mAP@0.5), judged instead of agreement")
    quantize.add_argument("--max-drop", type=float, default=1.0,
                          help="refuse when more than this many points are lost: of accuracy on --eval, else of "
                          "agreement on the decisions FP32 makes clearly")
    quantize.add_argument("--force", action="store_true", help="write even when the drop is larger")
    quantize.add_argument("--max-frames", type=int, default=200, help="calibration frames to use at most")
    quantize.add_argument("--target", choices=TARGETS, default=Target.X86_AVX2.value,
                          help="the processor it will run on: x86-avx2 (default, 7-bit weights, safe on every "
                          "x86), x86-vnni or arm64 (8-bit weights)")

    bench = sub.add_parser("bench", help="time each stage on a 1280x720 frame and print a table")
    _model_args(bench)
    bench.add_argument("--iterations", type=flag_type(BenchOptions, "iterations"), metavar="N",
                       default=BenchOptions().iterations,
                       help=field_help(BenchOptions, "iterations") + " (default: %(default)s)")
    bench.add_argument("--image", type=Path, help="picture to use (default: a bundled sample)")
    _survey_parser(sub)
    _events_args(sub)
    _models_args(sub)
    return parser


# ---- the model store: publish by name, list, roll back, unpublish ----
def _models_args(sub: Any) -> None:
    def store_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--models", type=Path, help="the model store (default: models.path: ./models, or models/ "
                       "in the state folder under systemd)")

    publish = sub.add_parser("publish", help="copy an export into the model store under a name and make it active")
    publish.add_argument("export", type=Path, help="an export zip, folder or .onnx (with labels.txt beside it)")
    publish.add_argument("--name", required=True, help="the published name clients ask for")
    publish.add_argument("--project", help="the project id it answers for (default: any)")
    publish.add_argument("--eval", type=Path, metavar="DIR", help="a labelled folder (DIR/<tag>/*.jpg): refused if "
                         "its top-1 accuracy is below the active version's by more than models.eval_margin")
    publish.add_argument("--signature", type=Path, help="the export's signature (default: model.sig inside a "
                         "folder, EXPORT.sig beside a zip); required when models.public_key is set")
    models = sub.add_parser("models", help="list the published models")
    models.add_argument("--json", action="store_true", help="one JSON array")
    for name, text in (("rollback", "make the version before the active one active again"),
                       ("unpublish", "remove a published name and its versions")):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", help="the published name")
        store_flag(p)
    retrain = sub.add_parser("retrain", help="train a candidate from a model's labelled frames and compare it with "
                             "the active version on the held-out ones")
    retrain.add_argument("name", help="the published name")
    retrain.add_argument("--dataset", type=Path, metavar="DIR", help="train on DIR/train and compare on "
                         "DIR/held_out (default: the model's labelled frames)")
    retrain.add_argument("--data", type=Path, help="the event store holding the labels (default: events.store.path)")
    retrain.add_argument("--promote", action="store_true", help="publish the candidate once it is compared, "
                         "through the same checks as `publish`")
    store_flag(publish)
    store_flag(models)
    store_flag(retrain)


def _model_store(args: argparse.Namespace) -> Any:
    from .publish.config import store_bytes
    from .publish.store import ModelStore

    settings = load_settings().models
    return ModelStore.open(args.models or settings.path, keep=settings.keep, max_bytes=store_bytes(settings))


def cmd_publish(args: argparse.Namespace) -> int:
    """Through the same checks as an update the server takes (publish/manager.py)."""
    from .model.predictor import Predictor
    from .publish.manager import ModelManager, Policy
    from .publish.update import Update

    store = _model_store(args)
    manager = ModelManager.for_name(store, args.name, lambda path, name: Predictor.load(path),
                                    Policy.of(load_settings().models))
    manager.publish(Update(args.export, args.name, args.project, signature=args.signature, source="cli",
                           origin=str(args.export), eval_dir=args.eval))
    published = store.describe(args.name)
    print(f"published {published.name} v{published.active} (iteration {published.iteration or '-'}, "
          f"{len(published.tags)} tags)" + (f" for project {published.project}" if published.project else ""))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    models = _model_store(args).models()
    if args.json:
        print(json.dumps([m.to_json() for m in models], indent=2))
        return 0
    for m in models:
        print(f"{m.name:<20} v{m.active}  {m.project or '(any project)':<38} {m.iteration or '-':<38} "
              f"{len(m.tags):>5} tags  since {m.activated_at}  previous: {f'v{m.previous}' if m.previous else '-'}")
    if not models:
        print("no models published")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from .model.predictor import Predictor
    from .publish.manager import ModelManager, Policy
    from .publish.retrain import Job, Retrainer, comparison_table, folder_pair, labelled_frames

    everything = load_settings()
    settings = everything.models
    store = _model_store(args)
    manager = ModelManager.for_name(store, args.name, lambda path, name: Predictor.load(path),
                                    Policy.of(settings)) if args.promote else None
    if args.dataset:
        dataset = folder_pair(args.dataset)
    else:  # read-only: safe while the server records
        from .events.store import EventStore

        events = EventStore.open_readonly(args.data or everything.events.store.path)
        dataset = labelled_frames(store, events, settings.retrain.held_out)
    retrainer = Retrainer.open(store, manager, dataset, settings.retrain)
    shown: set[tuple[str, str, bool]] = set()

    def progress(job: Job) -> None:  # a line as each stage starts and ends
        key = (job.phase, job.stage, job.done >= job.total)
        if key not in shown:
            shown.add(key)
            print(f"  {100 * job.progress:5.1f}%  {job.phase} {job.stage} {job.done}/{job.total}", file=sys.stderr)

    job = retrainer.run(args.name, progress)
    if job.state != "ready":
        raise EdgeRuntimeError(f"{args.name}: candidate {job.id} {job.state}: {job.error}")
    print(comparison_table(retrainer.comparison(args.name, job.id) or {}))
    if not args.promote:
        print(f"candidate {job.id} is ready: promote it on the device page, or train again with --promote")
        return 0
    entry = retrainer.promote(args.name, job.id)
    active = entry.slot.active
    print(f"promoted: {args.name} v{active.version if active else '?'} is active")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    m = _model_store(args).rollback(args.name)
    print(f"{m.name}: v{m.active} is active again")
    return 0


def cmd_unpublish(args: argparse.Namespace) -> int:
    _model_store(args).unpublish(args.name)
    print(f"{args.name}: unpublished")
    return 0


# ---- events: read a store (safe while the server records) ----
def _events_args(sub: Any) -> None:
    events = sub.add_parser("events", help="list or export recorded events").add_subparsers(dest="action",
                                                                                               required=True)
    for name, text in (("list", "list events, oldest first"), ("export", "copy events and their media out")):
        p = events.add_parser(name, help=text)
        p.add_argument("--data", type=Path, required=True, help="the data folder (events.store.path)")
        p.add_argument("--since", help="ISO 8601, seconds since the epoch, or an age such as 12h")
        p.add_argument("--until", help="as --since")
        if name == "list":
            p.add_argument("--json", action="store_true", help="one JSON array of events")
        else:
            p.add_argument("--out", type=Path, required=True, help="folder to write into")
            p.add_argument("--format", default="jsonl", choices=("jsonl", "csv", "dataset"),
                           help="dataset: one folder per tag, as edge-export train reads")
            p.add_argument("--samples", action="store_true", help="also the samples kept for labelling")
            p.add_argument("--model", help="dataset: the labels of this published model, in OUT/train/ and "
                           "OUT/held_out/ (COCO for boxes), with its base dataset merged into train")
            p.add_argument("--held-out", type=float, default=0.2, metavar="SHARE",
                           help="with --model: the newest share of the labels kept out of training (default 0.2)")
            p.add_argument("--models", type=Path, help="with --model: the model store whose NAME/dataset/ is the "
                           "base dataset (default: models.path)")


def cmd_events(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .events.export import all_events, export, export_dataset, table
    from .events.salvage import Damage
    from .events.store import DB_NAME, EventStore
    from .events.times import parse_time

    times = {}
    for flag, text in (("--since", args.since), ("--until", args.until)):
        try:
            times[flag] = parse_time(text) if text else None
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    since, until = times["--since"], times["--until"]
    model = getattr(args, "model", None)
    if model is not None and args.format != "dataset":
        raise ConfigError("--model: only with --format dataset")
    store = EventStore.open_readonly(args.data)
    damage = Damage()  # a damaged store is read as far as it can be, and the loss said in one line
    try:
        if args.action == "list":
            events = all_events(store, since, until, damage)
            print(json.dumps([e.to_json() for e in events], indent=2) if args.json else table(events))
        elif model is not None:
            base = (args.models or load_settings().models.path) / model / "dataset"
            made = export_dataset(store, args.out, model, args.held_out, base=base)
            print(f"exported {made.train} {made.kind} images to {args.out / 'train'} ({made.base} from {base}) and "
                  f"{made.held_out} held out to {args.out / 'held_out'}; tags: {', '.join(made.tags)}"
                  + (f"; {made.missing} labelled images were missing" if made.missing else ""))
        else:
            counts = export(store, args.out, args.format, since, until, samples=args.samples, damage=damage)
            print(f"exported {counts['events']} events" + (f" and {counts['samples']} samples" if args.samples
                                                            else "") + f" to {args.out}")
    finally:
        store.close()
    if damage:
        print(f"edge-runtime: {args.data / DB_NAME} is damaged: {damage.summary()}; everything else was read",
              file=sys.stderr)
        return EXIT_ERROR
    return 0


def _load(args: argparse.Namespace, options: PostprocessOptions | None = None) -> Predictor:
    return Predictor.load(args.model, providers=args.providers, intra_op_threads=args.threads or 0,
                          options=options, graph_cache=graph_cache_dir())


def cmd_inspect(args: argparse.Namespace) -> int:
    predictor = _load(args)
    spec = predictor.spec
    info: dict[str, Any] = {
        "model": str(predictor.bundle.model_path.name),
        "variant": spec.variant.value,
        "domain": spec.domain,
        "input": spec.input.to_json(),
        "output": spec.output,
        "labels": list(spec.labels or ()),
        "manifest": predictor.bundle.manifest,
        "metadata": dict(spec.metadata),
        "providers": {"used": predictor.model.providers, "available": ort.get_available_providers()},
    }
    if spec.variant.value == "yolo":
        info["anchors"], info["nms_iou"] = [list(a) for a in spec.anchors], spec.nms_iou
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    i = spec.input
    size = f"{i.width}x{i.height}" if i.fixed_size else "dynamic"
    print(f"model      {info['model']} ({spec.variant.value}{', ' + spec.domain if spec.domain else ''})")
    print(f"input      {i.name} {i.dtype} {size}, {'BGR' if i.bgr else 'RGB'} {i.pixel_range.value}, "
          f"mean {list(i.mean)} std {list(i.std)}")
    print(f"resize     {i.resize.value} {i.target_width}x{i.target_height}, crop {i.crop.value}"
          + (f" {i.crop_width}x{i.crop_height}" if i.crop.value == "OneCropCenter" else "")
          + (f", longer side at most {i.max_dimension}" if i.max_dimension else ""))
    print(f"output     {spec.output}")
    labels = info["labels"]
    print(f"labels     {len(labels)}: {', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''}")
    print(f"providers  used {', '.join(info['providers']['used'])}; "
          f"available {', '.join(info['providers']['available'])}")
    for key, value in info["metadata"].items():
        print(f"metadata   {key} = {value}")
    return 0


def _human(path: Path, result: PredictionResult, top_k: int | None) -> str:
    lines = [f"{path}:"]
    shown = result.predictions[: top_k or HUMAN_TOP_K] if not any(p.bounding_box for p in result.predictions) \
        else result.predictions
    for p in shown:
        box = p.bounding_box
        where = f"  at left {box.left:.3f} top {box.top:.3f} width {box.width:.3f} height {box.height:.3f}" \
            if box else ""
        lines.append(f"  {p.probability:7.2%}  {p.tag_name}{where}")
    if not shown:
        lines.append("  (nothing above the threshold)")
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> int:
    predictor = _load(args, _model_config(args).postprocess_options())
    results, failed = [], 0
    for path in args.images:
        try:
            result = predictor.predict(read_image(path, spec=predictor.spec.input))
        except EdgeRuntimeError as exc:
            print(f"edge-runtime: {exc}", file=sys.stderr)
            failed += 1
            continue
        results.append(result.to_json(iteration=predictor.iteration) if args.json else _human(path, result, args.top_k))
    if args.json:
        print(json.dumps(results[0] if len(args.images) == 1 and results else results, indent=2))
    else:
        print("\n".join(str(r) for r in results))
    return EXIT_ERROR if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .model.bench import report, run_benchmark

    predictor = _load(args)
    print(report(predictor, run_benchmark(predictor, args.iterations, args.image), args.iterations))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from .int8.quantize import format_report, quantize_export

    report = quantize_export(args.model, args.calibrate, args.out, eval_dir=args.eval, max_drop=args.max_drop,
                             force=args.force, max_frames=args.max_frames, target=Target(args.target))
    print(format_report(report, args.max_drop))
    return 0 if report.written else EXIT_ERROR


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _model_flags(args: argparse.Namespace) -> dict[str, Any]:
    return _given(threshold=args.threshold, top_k=args.top_k, max_detections=args.max_detections,
                  providers=args.providers, threads=args.threads)


def _model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(path=str(args.model), **_model_flags(args))


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, not {value!r}") from None


def serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags given on the command line, as a settings tree that overrides file and environment."""
    given = _given
    overrides: dict[str, Any] = {
        "model": given(path=args.model, **_model_flags(args)),
        "server": given(host=args.host, port=args.port, token_file=args.token_file, insecure=args.insecure),
        "log": given(jsonl=args.jsonl),
    }
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.allow_url_host:
        overrides["server"]["url"] = {"enabled": True, "allow_hosts": args.allow_url_host}
    if args.source:
        cameras = []
        for i, item in enumerate(args.source):
            cam_id, sep, uri = item.partition("=")
            if not sep or "://" in cam_id or not cam_id.replace("-", "").replace("_", "").isalnum():
                cam_id, uri = f"cam{i}", item
            cameras.append({"id": cam_id, "source": uri, **given(loop=args.loop, realtime=args.realtime,
                                                                 max_fps=args.max_fps)})
        overrides["cameras"] = cameras
    return overrides


def demo_overrides(settings: Settings) -> dict[str, Any]:
    """With no model and no camera: the demo model over the demo clip. Its 1000 tags are
    cut to DEMO_TOP_K per result unless top_k is set; every other setting still applies."""
    if settings.model.path != DEMO or settings.cameras:
        return {}
    demo: dict[str, Any] = {"cameras": [{"id": "demo", "source": "demo:"}]}
    if settings.model.top_k is None:
        demo["model"] = {"top_k": DEMO_TOP_K}
    return demo


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    overrides = serve_overrides(args)
    settings = load_settings(args.config, overrides=overrides)
    demo = demo_overrides(settings)
    if demo:
        settings = load_settings(args.config, overrides=merge(overrides, demo))
    serve(settings)
    return 0


# -- survey: geotagged findings from drone photos and videos (edge_runtime/survey) --------------
def _survey_parser(sub: Any) -> None:
    survey = sub.add_parser("survey", help="tiled detection on drone photos and videos: map, GeoJSON, report")
    _model_args(survey)
    survey.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image folder, images or videos")
    survey.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the findings and report")
    survey.add_argument("--tiles", default="auto", help="auto (default), off (whole image) or WxH in pixels")
    survey.add_argument("--overlap", type=float, default=0.2, help="tile overlap, at least 0 and below 1 (default 0.2)")
    survey.add_argument("--every", type=float, default=1.0, metavar="SECONDS", help="video: sample a frame this often")
    survey.add_argument("--telemetry", type=Path, metavar="FILE", help="video positions: .srt, .gpx or .csv "
                        "(default: the .SRT beside each video)")
    survey.add_argument("--threshold", type=flag_type(ModelConfig, "threshold"), metavar="P",
                        help="lowest probability kept (0.1 detection, 0.5 per tile)")
    survey.add_argument("--resume", action="store_true", help="skip inputs already done in DIR")
    survey.add_argument("--workers", type=int, default=0, help="decoding threads (default: one per core)")


def cmd_survey(args: argparse.Namespace) -> int:
    from .survey import require
    from .survey.run import SurveyOptions, inference_split, survey
    from .survey.tiling import TileMode

    require()
    split = inference_split(args.threads or 0)
    options = SurveyOptions(out=args.out, tiles=TileMode.parse(args.tiles), overlap=args.overlap, every=args.every,
                            telemetry=args.telemetry, threshold=args.threshold, resume=args.resume,
                            workers=args.workers)
    predictor = Predictor.load(args.model, providers=args.providers, intra_op_threads=split.threads,
                               graph_cache=graph_cache_dir(), runs=split.runs)
    summary = survey(predictor, args.inputs, options)
    problems = f", {summary.problems} problems" if summary.problems else ""
    print(f"{summary.units} images and frames, {summary.findings} findings, {summary.skipped} skipped{problems}; "
          f"report: {summary.report}")
    return EXIT_ERROR if summary.skipped or summary.problems else 0


COMMANDS = {"inspect": cmd_inspect, "predict": cmd_predict, "serve": cmd_serve, "bench": cmd_bench,
            "quantize": cmd_quantize, "survey": cmd_survey, "events": cmd_events, "publish": cmd_publish,
            "models": cmd_models, "retrain": cmd_retrain, "rollback": cmd_rollback, "unpublish": cmd_unpublish}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO if args.command == "serve" else logging.WARNING
    logs.configure(level)
    configure_opencv_logging(level)
    return run_command("edge-runtime", lambda: COMMANDS[args.command](args))


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
