"""Survey a flight: decode on worker threads while the model runs, write what was found.

    summary = survey(predictor, [Path("flight1")], SurveyOptions(out=Path("out")))

A reader thread walks the inputs and hands each image to a pool of `workers` threads,
which read the file and its geotags, decode it and cut and resize its tiles (OpenCV
releases the GIL, so they use the cores); video frames are decoded by the reader thread
itself, in order. The calling thread runs the model on what they prepared, in input order
(an image's tiles in batches, two batches at once: see inference_split), so decoding the
next images overlaps inference on this one. A bounded queue keeps at most
one decoded image per worker (and one more) in memory.
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError, EdgeRuntimeError, first_line
from ..model.annotate import annotate
from ..model.hashing import file_sha1
from ..model.imageio import decode_image
from ..model.predictor import Predictor
from ..types import PredictionResult
from ..workers.plan import Split, split_cores
from . import require
from .checks import MAX_GROUND_OFFSET, position_problem
from .geo import ImageGeo, geotags, locate
from .inputs import Input, collect, sample_frames, samples_expected
from .outputs import write_outputs
from .records import ANNOTATED, BadRecord, FindingRecord, Journal, NoteRecord, UnitRecord
from .report import write_report
from .telemetry import Track, beside, read_track
from .tiled import Found, PreparedImage, TiledPredictor
from .tiling import TileMode

ANNOTATED_SIDE = 1600  # longer side of the annotated copies, in pixels


@dataclass(frozen=True)
class SurveyOptions:
    out: Path
    tiles: TileMode = field(default_factory=lambda: TileMode("auto"))
    overlap: float = 0.2
    every: float = 1.0
    telemetry: Path | None = None
    threshold: float | None = None
    resume: bool = False
    workers: int = 0  # 0: one per core
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"--overlap {self.overlap}: expected at least 0 and below 1")
        if self.every <= 0:
            raise ConfigError(f"--every {self.every}: expected a number of seconds above 0")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold {self.threshold}: expected a probability from 0 to 1")
        if self.workers < 0:
            raise ConfigError(f"--workers {self.workers}: expected 0 (one per core) or more")


@dataclass(frozen=True)
class Loaded:
    """An image or frame, decoded and prepared, with its place on the ground."""

    input: Input
    name: str
    image: np.ndarray
    prepared: PreparedImage
    geo: ImageGeo


@dataclass(frozen=True)
class Summary:
    units: int
    findings: int
    skipped: int
    report: Path
    problems: int = 0  # values dropped, track points and journal lines skipped: listed in the report


_END = object()  # an input is finished: everything for it has been queued


def inference_split(threads: int = 0, cores: int | None = None) -> Split:
    """How a survey's session uses the cores: two batches of tiles at once, over the threads
    the two runs leave, as a camera's frames are (workers/plan.py). An intra-op pool waits
    for its slowest thread at every operator, and decoding shares the cores: on 2 cores
    the tiles ran 1.5x slower with one 2-thread run than with one 1-thread run, and two
    1-thread runs fill both cores (docs/benchmarks.md, Survey). `threads` (--threads) is
    kept if given."""
    return split_cores(cores or os.cpu_count() or 1, 1, threads=threads)


def _annotated_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
    return f"{ANNOTATED}/{stem}-{hashlib.sha1(name.encode()).hexdigest()[:8]}.jpg"


def _write_annotated(path: Path, image: np.ndarray, found: list[Found], width: int, height: int) -> None:
    scale = ANNOTATED_SIDE / max(width, height)
    small = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA) \
        if scale < 1 else image
    drawn = annotate(small, PredictionResult(tuple(f.prediction for f in found), width, height))
    cv2.imwrite(str(path), drawn, [cv2.IMWRITE_JPEG_QUALITY, 85])


class Survey:
    def __init__(self, predictor: Predictor, options: SurveyOptions) -> None:
        self.predictor = predictor
        self.options = options
        self.tiled = TiledPredictor(predictor, options.tiles, options.overlap, options.threshold)
        self.track = read_track(options.telemetry) if options.telemetry else None
        self.workers = options.workers or os.cpu_count() or 1
        # enough decimals that two sampled frames never share a name ("clip.mp4@12.5s")
        self.decimals = max(1, math.ceil(-math.log10(options.every))) if options.every < 1 else 1

    # -- worker threads ---------------------------------------------------------------
    def _load_image(self, item: Input) -> Loaded | BadRecord:
        try:
            data = item.path.read_bytes()
            image = decode_image(data)
            geo = geotags(data)
            if isinstance(geo, str):  # no position, or one off the globe
                return BadRecord(str(item.path), geo, item.key)
            return Loaded(item, item.name, image, self.tiled.prepare(image), geo)
        except OSError as exc:
            return BadRecord(str(item.path), exc.strerror or str(exc), item.key)
        except (EdgeRuntimeError, cv2.error) as exc:
            return BadRecord(str(item.path), first_line(exc), item.key)

    def _load_frame(self, item: Input, seconds: float, frame: np.ndarray, track: Track) -> Loaded | BadRecord:
        name = f"{item.name}@{seconds:.{self.decimals}f}s"
        lat, lon, alt, when = track.at(seconds)
        if why := position_problem(lat, lon):  # a track holds checked points only: a bug if this fires
            return BadRecord(name, f"track position: {why}", item.key)
        try:
            return Loaded(item, name, frame, self.tiled.prepare(frame), ImageGeo(lat, lon, alt, when))
        except (EdgeRuntimeError, cv2.error) as exc:
            return BadRecord(name, first_line(exc), item.key)

    def _track_for(self, item: Input) -> Track:
        if self.track is not None:
            return self.track
        srt = beside(item.path)
        if srt is None:
            raise ConfigError("no telemetry: no .SRT file beside it and no --telemetry given")
        return read_track(srt)

    def _read(self, inputs: list[Input], pool: ThreadPoolExecutor, out: queue.Queue[Any],
              stop: threading.Event) -> None:
        """The reader thread: queue (input, future) pairs in order, then (input, _END)."""
        def put(value: Any) -> None:
            while not stop.is_set():
                try:
                    out.put(value, timeout=0.2)
                    return
                except queue.Full:
                    continue

        try:
            for item in inputs:
                if stop.is_set():
                    break
                if not item.video:
                    put((item, pool.submit(self._load_image, item)))
                else:
                    try:
                        track = self._track_for(item)
                        if track is not self.track:  # the SRT beside it: its problems are this input's
                            for problem in track.problems:
                                put((item, _done(NoteRecord(item.name, problem, item.key))))
                        for seconds, frame in sample_frames(item.path, self.options.every):
                            if stop.is_set():
                                break
                            put((item, pool.submit(self._load_frame, item, seconds, frame, track)))
                    except (OSError, EdgeRuntimeError, cv2.error) as exc:
                        reason = first_line(exc)
                        put((item, _done(BadRecord(str(item.path), reason, item.key))))
                put((item, _END))
        except BaseException as exc:  # handed to the calling thread, which raises it
            put((None, _failed(exc)))
        finally:
            put(None)

    # -- the calling thread -----------------------------------------------------------
    def _unit(self, loaded: Loaded, pool: ThreadPoolExecutor) -> tuple[UnitRecord, list[str], Future[None] | None]:
        """The record of one image or frame, its problems (one line each), and its annotated copy."""
        everything = self.tiled.run(loaded.prepared)
        found = [f for f in everything if _finite(f)]
        problems = list(loaded.geo.problems)
        if len(found) < len(everything):
            problems.append(f"{len(everything) - len(found)} findings dropped: the model gave a box or "
                            "probability that is not a finite number")
        width, height = loaded.prepared.width, loaded.prepared.height
        findings, unplaced = [], 0
        for f in found:
            box = f.prediction.bounding_box
            assert box is not None
            lat, lon, how = locate(loaded.geo, (box.left + box.width / 2) * width,
                                   (box.top + box.height / 2) * height, width, height)
            if loaded.geo.projectable and how == "image":
                unplaced += 1
            findings.append(FindingRecord(f.prediction.tag_name, round(f.prediction.probability, 6),
                                          box.to_json(), f.tile, lat, lon, how))
        if unplaced:
            problems.append(f"{unplaced} findings projected off the globe or over {MAX_GROUND_OFFSET / 1000:g} km "
                            "away: they take the image position")
        result = PredictionResult(tuple(f.prediction for f in found), width, height)
        annotated, job = None, None
        if found:
            annotated = _annotated_name(loaded.name)
            job = pool.submit(_write_annotated, self.options.out / annotated, loaded.image, found, width, height)
        geo = loaded.geo
        unit = UnitRecord(loaded.input.key, loaded.name, width, height, geo.lat, geo.lon, geo.alt, geo.time,
                          result.to_json(iteration=self.predictor.iteration), findings, annotated)
        return unit, problems, job

    def settings(self) -> dict[str, Any]:
        """What changes the results, recorded in the journal (--resume refuses others) and the report."""
        opts, bundle = self.options, self.predictor.bundle
        sha1 = str(bundle.manifest.get("ModelFileSHA1") or "").lower() or file_sha1(bundle.model_path)
        labels = "\n".join(self.predictor.spec.labels or ())
        return {"model": str(bundle.source.name), "model_sha1": sha1,
                "labels_sha1": hashlib.sha1(labels.encode()).hexdigest(),
                "variant": self.predictor.spec.variant.value, "tiles": str(opts.tiles), "overlap": opts.overlap,
                "threshold": self.tiled.threshold, "every": opts.every,
                "telemetry": opts.telemetry.name if opts.telemetry else None,
                "telemetry_sha1": file_sha1(opts.telemetry) if opts.telemetry else None}

    def run(self, paths: list[Path]) -> Summary:
        opts = self.options
        settings = self.settings()
        journal = Journal.open(opts.out, opts.resume, settings)
        if self.track is not None and opts.telemetry is not None:  # read again by every run: not journaled
            for problem in self.track.problems:
                journal.add_note(NoteRecord(str(opts.telemetry), problem, ""), journaled=False)
        inputs, missing = collect(paths)
        for path in missing:
            key = str(path.resolve())
            if key not in journal.done_inputs:
                reason = "not a file or folder of images or videos" if path.exists() else "no such file or folder"
                journal.add_bad(BadRecord(str(path), reason, key))
                journal.finish(key)
        todo = [i for i in inputs if i.key not in journal.done_inputs]
        total = sum(samples_expected(i.path, opts.every) if i.video else 1 for i in todo)
        try:
            self._process(todo, journal, total)
        finally:
            journal.close()
        write_outputs(opts.out, journal.units)
        report = write_report(opts.out, journal.units, journal.bad, settings, journal.notes)
        return Summary(len(journal.units), sum(len(u.findings) for u in journal.units), len(journal.bad), report,
                       len(journal.notes))

    def _process(self, todo: list[Input], journal: Journal, total: int) -> None:
        from tqdm import tqdm

        stop = threading.Event()
        # One decoded photo per worker waits at most: 20 megapixels are 60 MB each.
        pending: queue.Queue[Any] = queue.Queue(maxsize=self.workers + 1)
        writes: list[Future[None]] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="survey") as pool, \
                tqdm(total=total, unit="img", desc="survey", disable=not self.options.progress,
                     dynamic_ncols=True) as bar:
            reader = threading.Thread(target=self._read, args=(todo, pool, pending, stop), daemon=True)
            reader.start()
            try:
                for item, outcome in _drain(pending):
                    if outcome is _END:
                        journal.finish(item.key)
                        continue
                    loaded = outcome.result()
                    if isinstance(loaded, NoteRecord):  # about the input, not one of its images
                        journal.add_note(loaded)
                        continue
                    if isinstance(loaded, BadRecord):
                        journal.add_bad(loaded)
                    else:
                        try:
                            unit, problems, job = self._unit(loaded, pool)
                        except (EdgeRuntimeError, MemoryError) as exc:  # listed like a bad file; the run goes on
                            name = loaded.name if loaded.input.video else str(loaded.input.path)
                            reason = first_line(exc, "out of memory")
                            journal.add_bad(BadRecord(name, reason, loaded.input.key))
                        else:
                            journal.add_unit(unit)
                            if problems:
                                journal.add_note(NoteRecord(loaded.name, "; ".join(problems), loaded.input.key))
                            if job is not None:
                                writes.append(job)
                    bar.update(1)
            finally:
                stop.set()
                reader.join()
                for job in writes:
                    job.result()


def _finite(found: Found) -> bool:
    box = found.prediction.bounding_box
    values = (found.prediction.probability, *((box.left, box.top, box.width, box.height) if box else ()))
    return all(math.isfinite(v) for v in values)


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


def _failed(exc: BaseException) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(exc)
    return future


def _drain(pending: queue.Queue[Any]) -> Iterator[tuple[Input, Any]]:
    while (item := pending.get()) is not None:
        yield item


def survey(predictor: Predictor, paths: list[Path], options: SurveyOptions) -> Summary:
    """Run a survey over files and folders; see SurveyOptions for the knobs."""
    require()
    return Survey(predictor, options).run(paths)
