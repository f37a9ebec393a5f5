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
from typing import Any

import onnxruntime as ort

from . import __version__
from .errors import EdgeRuntimeError
from .imageio import read_image
from .postprocess import PostprocessOptions
from .predictor import Predictor
from .types import PredictionResult

DEMO_MODEL = Path(__file__).parent / "demo"
EXIT_ERROR = 1
HUMAN_TOP_K = 5


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="export zip, export folder or .onnx file")
    parser.add_argument(
        "--provider", action="append", dest="providers", metavar="NAME",
        help="execution provider (tensorrt, cuda, openvino, cpu or a full name); repeat for a "
        "fallback order; default: the fastest available",
    )
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser("inspect", help="show what a model is and how it is fed")
    _model_args(inspect)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")

    predict = sub.add_parser("predict", help="predict on image files")
    _model_args(predict)
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    predict.add_argument("--json", action="store_true", help="Custom Vision prediction JSON")
    predict.add_argument("--threshold", type=float, help="lowest probability shown (default: "
                         "0 for classification, 0.1 for detection)")
    predict.add_argument("--top-k", type=int, help="at most K predictions per image")
    predict.add_argument("--max-detections", type=int, default=20, help="detection only (default 20)")

    serve = sub.add_parser("serve", help="watch cameras and serve predictions over HTTP (default: the demo)")
    serve.add_argument("model", nargs="?", help="export zip, folder or .onnx (default: the built-in demo)")
    serve.add_argument("--config", type=Path, help="YAML settings file")
    serve.add_argument("--source", action="append", default=[], metavar="[ID=]URI",
                       help="camera, stream, video file, image folder, gst:, picam: or demo:; repeatable")
    serve.add_argument("--loop", action="store_true", default=None, help="files: start again at the end")
    serve.add_argument("--realtime", action="store_true", default=None, help="files: play at their own rate")
    serve.add_argument("--max-fps", type=float, help="run the model at most this often per camera")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--token-file", type=Path, help="file holding the bearer token (or set EDGE_RUNTIME_TOKEN)")
    serve.add_argument("--insecure", action="store_true", default=None,
                       help="allow serving beyond loopback without a token")
    serve.add_argument("--threshold", type=float)
    serve.add_argument("--top-k", type=int)
    serve.add_argument("--jsonl", type=Path, help="append every result to this JSON-lines file")
    serve.add_argument("--allow-url-host", action="append", default=[], metavar="HOST",
                       help="enable POST /url for this host; repeatable")
    serve.add_argument("--provider", action="append", dest="providers", metavar="NAME")
    serve.add_argument("--threads", type=int)
    serve.add_argument("--workers", type=_workers, help="camera worker processes: auto (default), a number, "
                       "or 0 to run the cameras in the server process")

    bench = sub.add_parser("bench", help="time each stage on a 1280x720 frame and print a table")
    _model_args(bench)
    bench.add_argument("--iterations", type=int, default=200)
    bench.add_argument("--image", type=Path, help="picture to use (default: a bundled sample)")
    return parser


def _load(args: argparse.Namespace, options: PostprocessOptions | None = None) -> Predictor:
    return Predictor.load(args.model, providers=args.providers, intra_op_threads=args.threads, options=options)


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
    options = PostprocessOptions(threshold=args.threshold, top_k=args.top_k, max_detections=args.max_detections)
    predictor = _load(args, options)
    results, failed = [], 0
    for path in args.images:
        try:
            result = predictor.predict(read_image(path))
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
    from .bench import report, run_benchmark

    predictor = _load(args)
    print(report(predictor, run_benchmark(predictor, args.iterations, args.image), args.iterations))
    return 0


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, not {value!r}") from None


def serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags given on the command line, as a settings tree that overrides file and environment."""
    def given(**values: Any) -> dict[str, Any]:
        return {k: v for k, v in values.items() if v is not None}

    overrides: dict[str, Any] = {
        "model": given(path=args.model, threshold=args.threshold, top_k=args.top_k, providers=args.providers,
                       threads=args.threads),
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


def cmd_serve(args: argparse.Namespace) -> int:
    from .config import DEMO, load_settings
    from .serve import serve

    settings = load_settings(args.config, overrides=serve_overrides(args))
    if settings.model.path == DEMO and not settings.cameras:
        # No arguments: the demo model over the demo clip; 5 of its 1000 tags are plenty to show.
        demo: dict[str, Any] = {"cameras": [{"id": "demo", "source": "demo:"}]}
        if settings.model.top_k is None:
            demo["model"] = {"top_k": 5}
        settings = load_settings(args.config, overrides={**serve_overrides(args), **demo})
    serve(settings)
    return 0


COMMANDS = {"inspect": cmd_inspect, "predict": cmd_predict, "serve": cmd_serve, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO if args.command == "serve" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except EdgeRuntimeError as exc:
        print(f"edge-runtime: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except PermissionError as exc:  # e.g. a bundle made by another user, read by the service's own user
        print(f"edge-runtime: {exc.filename or exc}: permission denied for the user running edge-runtime",
              file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
