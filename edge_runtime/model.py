"""The onnxruntime session: providers, threads, and what the model's inputs and outputs are.

    model = OnnxModel.load(path, providers=None)   # None: the fastest available
    outputs = model.run({"data": tensor})
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import InferenceError, NotOnnxError, ProviderError, UnsupportedModelError
from .onnx_header import read_opsets

log = logging.getLogger(__name__)

# Tried in this order among those this onnxruntime build has.
PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)
PROVIDER_ALIASES = {"tensorrt": 0, "trt": 0, "cuda": 1, "openvino": 2, "cpu": 3}
OLDEST_SUPPORTED_OPSET = 7  # onnxruntime guarantees nothing below; 2018 "ONNX10" exports are opset 1


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str  # onnxruntime's spelling: "tensor(float)", "seq(map(string,tensor(float)))", ...
    shape: tuple[int | str | None, ...]

    def dim(self, index: int) -> int | None:
        """A static dimension, or None when it is symbolic or unknown."""
        value = self.shape[index] if -len(self.shape) <= index < len(self.shape) else None
        return value if isinstance(value, int) and value > 0 else None


def resolve_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Expand short names ("cuda", "cpu") and check each is available; None picks the fastest."""
    if not requested or list(requested) == ["auto"]:
        chosen = [p for p in PROVIDER_PREFERENCE if p in available]
        return chosen or list(available)
    names = []
    for name in requested:
        full = PROVIDER_PREFERENCE[PROVIDER_ALIASES[name.lower()]] if name.lower() in PROVIDER_ALIASES else name
        if full not in available:
            raise ProviderError(
                f"execution provider {name!r} is not available in this onnxruntime build "
                f"(available: {', '.join(available)})"
            )
        names.append(full)
    if "CPUExecutionProvider" in available and "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")  # a fallback for nodes the others cannot run
    return names


class FairGate:
    """At most `slots` holders at once, admitted first come, first served. A plain semaphore
    lets a camera's worker, which re-enters at once, starve an upload waiting beside it."""

    def __init__(self, slots: int) -> None:
        self._cond = threading.Condition()
        self._slots = slots
        self._queue: collections.deque[object] = collections.deque()

    def __enter__(self) -> None:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while self._queue[0] is not ticket or self._slots == 0:
                self._cond.wait()
            self._queue.popleft()
            self._slots -= 1
            self._cond.notify_all()

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._slots += 1
            self._cond.notify_all()


class OnnxModel:
    """One onnxruntime session and its I/O description; thread-safe for `run`.

    At most `max_concurrent_runs` runs execute at once; the others queue. On a CPU every
    run already uses all its intra-op threads, so running more at once only adds memory
    (each run holds its own activations) and contention.
    """

    def __init__(self, session: ort.InferenceSession, path: Path, max_concurrent_runs: int = 1) -> None:
        self.session = session
        self.path = path
        self._runs = FairGate(max_concurrent_runs)
        self.inputs = tuple(TensorInfo(i.name, i.type, tuple(i.shape)) for i in session.get_inputs())
        self.outputs = tuple(TensorInfo(o.name, o.type, tuple(o.shape)) for o in session.get_outputs())
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
        self.providers: list[str] = list(session.get_providers())

    @classmethod
    def load(
        cls,
        path: Path,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        spinning: bool = False,
    ) -> OnnxModel:
        """`spinning`: let idle intra-op threads busy-wait for the next op. It shaves a little
        off back-to-back runs but steals the cores that capture and decoding need, so it is
        off unless asked for (measured in docs/benchmarks.md)."""
        names = resolve_providers(providers, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
        options.log_severity_level = 3  # errors only: old exports trip harmless warnings
        opts = [dict((provider_options or {}).get(n, {})) for n in names]
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=names, provider_options=opts)
        except Exception as exc:  # onnxruntime raises pybind-generated classes
            raise _load_error(path, exc) from exc
        return cls(session, path)

    def run(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> list[Any]:
        try:
            with self._runs:
                return list(self.session.run(list(output_names) if output_names else None, dict(feeds)))
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InferenceError(f"{self.path.name}: inference failed: {first_line}") from exc


def _load_error(path: Path, exc: Exception) -> Exception:
    kind = type(exc).__name__
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
    if kind == "InvalidProtobuf" or "Protobuf parsing failed" in message:
        return NotOnnxError(f"{path.name} is not an ONNX model (onnxruntime could not parse it)")
    opsets = read_opsets(path)
    opset = opsets.get("", opsets.get("ai.onnx"))
    if opset is not None and opset < OLDEST_SUPPORTED_OPSET:
        return UnsupportedModelError(
            f"{path.name} is a 2018 'ONNX10' export (opset {opset}) that current onnxruntime refuses "
            f"({kind}); re-export the iteration from Custom Vision to get a newer ONNX flavor"
        )
    return UnsupportedModelError(f"{path.name}: onnxruntime cannot load this model: {message}")
