"""The onnxruntime session: providers, threads, and what the model's inputs and outputs are.

    model = OnnxModel.load(path, providers=None)   # None: the fastest available
    outputs = model.run({"data": tensor})
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import platform
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..errors import InferenceError, NotOnnxError, ProviderError, UnsupportedModelError, first_line
from .hashing import file_sha1
from .onnx_header import read_opsets

log = logging.getLogger(__name__)
STUCK_RUN_S = 60.0  # a run in the session this long means it hangs (a driver, a deadlock); the
# session's first run, which may build an engine (TensorRT), is the warm-up at load

# Tried in this order among those this onnxruntime build has.
PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)
PROVIDER_ALIASES = {"tensorrt": 0, "trt": 0, "cuda": 1, "openvino": 2, "cpu": 3}
OLDEST_SUPPORTED_OPSET = 7  # onnxruntime guarantees nothing below; 2018 "ONNX10" exports are opset 1
GRAPH_CACHE_KEEP = 8  # optimised graphs kept in the cache folder, newest first


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

    At most `max_concurrent_runs` runs execute at once; the others queue, first come first
    served. Each run holds its own activations, so every run allowed costs memory; the
    session's intra-op threads are shared by the runs.
    """

    def __init__(self, session: ort.InferenceSession, path: Path, max_concurrent_runs: int = 1) -> None:
        self.session = session
        self.path = path
        self.runs = max(1, max_concurrent_runs)
        self._runs = FairGate(self.runs)
        self.inputs = tuple(TensorInfo(i.name, i.type, tuple(i.shape)) for i in session.get_inputs())
        self.outputs = tuple(TensorInfo(o.name, o.type, tuple(o.shape)) for o in session.get_outputs())
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
        self.providers: list[str] = list(session.get_providers())
        self.graph_cached = False  # True when the session came from the optimised-graph cache
        self._running: dict[int, float] = {}  # thread ident -> when its run got a slot

    @classmethod
    def load(
        cls,
        path: Path,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        spinning: bool = False,
        graph_cache: Path | None = None,
        runs: int = 1,
    ) -> OnnxModel:
        """`spinning`: let idle intra-op threads busy-wait for the next op. It shaves a little
        off back-to-back runs but steals the cores that capture and decoding need, so it is
        off unless asked for (measured in docs/benchmarks.md).

        `graph_cache`: a folder for onnxruntime's optimised graph, so that the next start
        loads it instead of optimising again (see GraphCache).

        `runs`: how many runs may execute at once on the CPU provider (the camera pipeline
        infers that many frames at once); they share the session's `intra_op_threads`,
        each calling thread joining in. Other providers keep one: a GPU already runs a
        frame's operators in parallel."""
        names = resolve_providers(providers, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
        options.log_severity_level = 3  # errors only: old exports trip harmless warnings
        opts = [dict((provider_options or {}).get(n, {})) for n in names]
        cache = GraphCache(graph_cache, path, names) if graph_cache is not None else None
        target = path
        if cache is not None and cache.usable:
            if cache.path.is_file():
                target = cache.path
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            else:
                options.optimized_model_filepath = str(cache.pending)
        try:
            session = ort.InferenceSession(str(target), sess_options=options, providers=names, provider_options=opts)
        except Exception as exc:  # onnxruntime raises pybind-generated classes
            if cache is None or not cache.usable:
                raise _load_error(path, exc) from exc
            # The cache entry is damaged or cannot be written, or the model itself is bad: load
            # without the cache, which raises the model's own error in the last case.
            cache.discard()
            model = cls.load(path, providers, intra_op_threads, inter_op_threads, provider_options, spinning,
                             runs=runs)
            log.warning("optimised graph cache %s unusable; loaded the model without it", cache.folder)
            return model
        if cache is not None and target == path:
            cache.commit()
        model = cls(session, path, runs if names == ["CPUExecutionProvider"] else 1)
        model.graph_cached = target != path
        return model

    def run(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> list[Any]:
        try:
            with self._runs:
                ident = threading.get_ident()
                self._running[ident] = time.monotonic()
                try:
                    return list(self.session.run(list(output_names) if output_names else None, dict(feeds)))
                finally:
                    del self._running[ident]
        except Exception as exc:
            raise InferenceError(f"{self.path.name}: inference failed: {first_line(exc)}") from exc

    def longest_run_s(self) -> float:
        """How long the oldest run now executing has been at it (0 when none is); time spent
        queueing for a slot does not count."""
        starts = self._running.copy().values()  # one C-level copy: safe while runs change it
        return time.monotonic() - min(starts) if starts else 0.0

    @property
    def stuck(self) -> bool:
        """A run has been executing for over STUCK_RUN_S."""
        return self.longest_run_s() > STUCK_RUN_S


class GraphCache:
    """onnxruntime's optimised graph of one model, saved once and loaded on later starts.

    Optimising a graph takes a noticeable part of start-up on a small device. The saved
    graph is only valid for the same model bytes, onnxruntime version, providers and
    processor (the CPU provider bakes in hardware-specific layouts), so all of them are in
    the file name: a change of any of them misses the cache and writes a new entry. Only
    the CPU provider is cached: TensorRT and the other compiling providers keep caches of
    their own. A cache that cannot be written is skipped with a warning, never an error.
    """

    def __init__(self, folder: Path, model: Path, providers: Sequence[str]) -> None:
        self.folder = folder
        self.usable = list(providers) == ["CPUExecutionProvider"]
        key = "|".join([file_sha1(model), ort.__version__, platform.machine(), *providers])
        name = hashlib.sha1(key.encode()).hexdigest()[:20]
        self.path = folder / f"{model.stem}-{name}.onnx"
        self.pending = folder / f".{self.path.name}.{os.getpid()}.tmp"
        if self.usable:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("optimised graph cache %s: %s; not caching", folder, exc.strerror or exc)
                self.usable = False

    def commit(self) -> None:
        """Publish the graph onnxruntime just wrote (atomically), and trim old entries."""
        if not self.usable or not self.pending.is_file():
            return
        try:
            os.replace(self.pending, self.path)
            entries = sorted((p for p in self.folder.glob("*.onnx")), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in entries[GRAPH_CACHE_KEEP:]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("optimised graph cache %s: %s", self.folder, exc.strerror or exc)
            self.pending.unlink(missing_ok=True)

    def discard(self) -> None:
        for path in (self.path, self.pending):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def _load_error(path: Path, exc: Exception) -> Exception:
    kind = type(exc).__name__
    message = first_line(exc)
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
