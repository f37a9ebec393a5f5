"""A test double of the Custom Vision training API (v3.4-preview), following its REST
contract closely enough for the official SDK: JSON in camelCase, the batch limits and
per-image statuses of images/files, iterations that train and exports that finish over
several polls, errors as {"code", "message"}. Faults are injected on request.

Stored predictions (`query_predictions`) are served in pages with a continuation token.
`add_synthetic` makes a project of any size whose records and tiny JPEGs are made on the
fly from their index, so 100,000 images cost the double no memory; its downloads come
from the loopback blob route, which, like the service's blob storage, is outside the
training API and its quota.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import struct
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from tests.server_util import running

KEY = "test-training-key-0123456789"
BASE = "/customvision/v3.4-preview/training"
DOMAINS = [
    {"id": "0732100f-1a38-4e49-a514-c9b44c697ab5", "name": "General", "type": "Classification",
     "exportable": False, "enabled": True, "exportablePlatforms": []},
    {"id": "0732100f-1a38-4e49-a514-c9b44c697ab6", "name": "General (compact)", "type": "Classification",
     "exportable": True, "enabled": True, "exportablePlatforms": ["CoreML", "TensorFlow", "DockerFile", "ONNX"]},
    {"id": "a1db07ca-a19a-4830-bae8-e004a42dc863", "name": "General (compact) [S1]", "type": "Classification",
     "exportable": True, "enabled": True, "exportablePlatforms": ["ONNX"]},
    {"id": "a27d5ca5-bb19-49d8-a70a-fec086c47f5b", "name": "General (compact)", "type": "ObjectDetection",
     "exportable": True, "enabled": True, "exportablePlatforms": ["ONNX"]},
]


@dataclass
class Faults:
    throttle_first_upload: bool = False  # one 429 with Retry-After on the first images call
    fail_once: str = ""  # an operation name that answers 500 once
    break_after_batches: int = 0  # from then on, every images call answers 503
    throttle_once: str = ""  # an operation name that answers 429 with Retry-After once
    cut_once: set[str] = field(default_factory=set)  # image ids whose first download stops half-way
    truncate_once: set[str] = field(default_factory=set)  # ... whose first download is a whole but cut file
    huge_length: set[str] = field(default_factory=set)  # ... whose download claims a terabyte


@dataclass
class Double:
    export_zip: Path
    faults: Faults = field(default_factory=Faults)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    images: dict[str, dict[str, str]] = field(default_factory=dict)  # project -> sha1 -> id
    received: list[str] = field(default_factory=list)  # sha1 of every image body received
    uploaded: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # project -> entries taken (no contents)
    batches: int = 0
    iterations: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: list[tuple[str, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    base_url: str = ""
    stored: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # project -> image records
    blobs: dict[str, bytes] = field(default_factory=dict)  # image id -> original file
    downloads: list[str] = field(default_factory=list)  # image id of every download asked for
    takes: list[int] = field(default_factory=list)  # the take of every listing call
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # project -> stored predictions
    queries: list[dict[str, Any]] = field(default_factory=list)  # the token of every query_predictions call
    synthetic: dict[str, Synthetic] = field(default_factory=dict)  # project -> images made on the fly
    performances: dict[str, dict[str, Any]] = field(default_factory=dict)  # iteration -> its answer, if not the default
    record_downloads: bool = True  # off for large projects: the list would grow with them

    def add_project(self, name: str, domain_id: str, classification: str | None,
                    tags: list[tuple[str, str]]) -> tuple[str, dict[str, str]]:
        """A project as the service holds it; tags are (name, type); returns its id and tag ids by name."""
        pid = str(uuid.uuid4())
        self.projects[pid] = {"id": pid, "name": name, "description": "pulled in tests",
                              "settings": {"domainId": domain_id, "classificationType": classification,
                                           "targetExportPlatforms": ["ONNX"]}}
        self.tags[pid] = [{"id": str(uuid.uuid4()), "name": n, "description": None, "type": t, "imageCount": 0}
                          for n, t in tags]
        self.images[pid], self.stored[pid] = {}, []
        return pid, {t["name"]: t["id"] for t in self.tags[pid]}

    def add_image(self, pid: str, data: bytes, width: int, height: int, tag_ids: list[str] = (),  # type: ignore[assignment]
                  regions: list[tuple[str, float, float, float, float]] = (),  # type: ignore[assignment]
                  image_id: str = "", metadata: dict[str, str] | None = None) -> str:
        image_id = image_id or str(uuid.uuid4())
        names = {t["id"]: t["name"] for t in self.tags[pid]}
        uri = f"{self.base_url}/img/{urllib.parse.quote(image_id, safe='')}"
        self.stored[pid].append({
            "id": image_id, "created": "2024-01-01T00:00:00Z", "width": width, "height": height,
            "resizedImageUri": uri, "thumbnailUri": uri, "originalImageUri": uri,
            "tags": [{"tagId": t, "tagName": names.get(t, "?"), "created": "2024-01-01T00:00:00Z"} for t in tag_ids],
            "regions": [{"regionId": str(uuid.uuid4()), "tagName": names.get(t, "?"), "created": "2024-01-01T00:00:00Z",
                         "tagId": t, "left": x, "top": y, "width": w, "height": h} for t, x, y, w, h in regions],
            "metadata": metadata or {}})
        self.blobs[image_id] = data
        return image_id

    def add_prediction(self, pid: str, data: bytes, iteration: str,
                       predicted: list[tuple[str, float, tuple[float, float, float, float] | None]],
                       prediction_id: str = "") -> str:
        """An image the prediction endpoint stored: (tag id, probability, normalised box or None) each."""
        prediction_id = prediction_id or str(uuid.uuid4())
        names = {t["id"]: (t["name"], t["type"]) for t in self.tags[pid]}
        uri = f"{self.base_url}/img/{urllib.parse.quote(prediction_id, safe='')}"
        self.predictions.setdefault(pid, []).append({
            "resizedImageUri": uri, "thumbnailUri": uri, "originalImageUri": uri, "domain": "General",
            "id": prediction_id, "project": pid, "iteration": iteration,
            "created": f"2024-02-{1 + len(self.predictions[pid]) % 28:02d}T10:00:00Z",
            "predictions": [{"probability": prob, "tagId": t, "tagName": names.get(t, ("?", ""))[0],
                             "tagType": names.get(t, ("?", "Regular"))[1],
                             "boundingBox": None if box is None else dict(zip(("left", "top", "width", "height"),
                                                                              box, strict=True))}
                            for t, prob, box in predicted]})
        self.blobs[prediction_id] = data
        return prediction_id

    def add_synthetic(self, pid: str, count: int, detection: bool = False, multilabel: bool = False) -> None:
        """`count` tagged images made on the fly: image i carries tag i mod tags (multilabel: also the
        next one), and for detection one box of that tag."""
        tags = [t["id"] for t in self.tags[pid] if t["type"] != "Negative"]
        self.synthetic[pid] = Synthetic(count, tuple(tags), detection, multilabel, self.base_url)

    def add_iteration(self, pid: str, name: str = "Iteration 1", trained_at: str = "2024-01-02T00:00:00Z") -> str:
        iid = str(uuid.uuid4())
        self.iterations[iid] = {"id": iid, "name": name, "status": "Completed", "projectId": pid,
                                "trainedAt": trained_at,
                                "trainingType": "Regular", "exportable": True, "reservedBudgetInHours": 0,
                                "domainId": self.projects[pid]["settings"]["domainId"]}
        return iid


SYNTHETIC_PREFIX = "5e000000-0000-4000-8000-"
SYNTHETIC_SIZE = (32, 24)


@dataclass(frozen=True)
class Synthetic:
    count: int
    tags: tuple[str, ...]
    detection: bool
    multilabel: bool
    base_url: str

    def record(self, i: int) -> dict[str, Any]:
        image_id = f"{SYNTHETIC_PREFIX}{i:012d}"
        uri = f"{self.base_url}/img/{image_id}"
        tag = self.tags[i % len(self.tags)]
        tags = [tag, self.tags[(i + 1) % len(self.tags)]] if self.multilabel and i % 2 else [tag]
        regions = [{"regionId": image_id, "tagName": "", "created": "2024-01-01T00:00:00Z", "tagId": tag,
                    "left": 0.125, "top": 0.25, "width": 0.5, "height": 0.5}] if self.detection else []
        return {"id": image_id, "created": "2024-01-01T00:00:00Z", "width": SYNTHETIC_SIZE[0],
                "height": SYNTHETIC_SIZE[1], "resizedImageUri": uri, "thumbnailUri": uri, "originalImageUri": uri,
                "tags": [] if self.detection else [{"tagId": t, "tagName": "", "created": "2024-01-01T00:00:00Z"}
                                                   for t in tags],
                "regions": regions, "metadata": {}}


@functools.lru_cache(maxsize=8)
def _base_jpeg(shade: int) -> bytes:
    import cv2
    import numpy as np

    image = np.full((SYNTHETIC_SIZE[1], SYNTHETIC_SIZE[0], 3), shade, np.uint8)
    image[6:18, 8:24] = 255 - shade
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return bytes(buf.tobytes())


def synthetic_jpeg(image_id: str) -> bytes:
    """A tiny JPEG of its own: a shared picture with the id in a comment segment, so every
    file has its own hash and still decodes."""
    comment = image_id.encode()
    base = _base_jpeg(40 * (int(image_id[-3:]) % 6))
    return base[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + base[2:]


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def create_double_app(double: Double) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def check_key(request: Request, call_next):  # type: ignore[no-untyped-def]
        if request.url.path.startswith(BASE):
            if request.headers.get("Training-key") != KEY:
                return error(401, "Unauthorized", "Access denied due to invalid training key.")
            op = request.method + " " + request.url.path[len(BASE):]
            double.calls.append(op)
            if double.faults.fail_once and double.faults.fail_once in op:
                double.faults.fail_once = ""
                return error(500, "InternalServerError", "Something went wrong on our side.")
            if double.faults.throttle_once and double.faults.throttle_once in op:
                double.faults.throttle_once = ""
                return error(429, "TooManyRequests", "Rate limit is exceeded.", {"Retry-After": "1"})
        return await call_next(request)

    @app.get(BASE + "/domains")
    async def domains() -> Any:
        return DOMAINS

    @app.get(BASE + "/projects")
    async def projects() -> Any:
        return list(double.projects.values())

    @app.post(BASE + "/projects")
    async def create_project(name: str, domainId: str = "", classificationType: str = "") -> Any:
        pid = str(uuid.uuid4())
        double.projects[pid] = {"id": pid, "name": name, "description": "",
                                "settings": {"domainId": domainId, "classificationType": classificationType or None,
                                             "targetExportPlatforms": ["ONNX"]}}
        double.tags[pid], double.images[pid] = [], {}
        return double.projects[pid]

    @app.get(BASE + "/projects/{pid}")
    async def project(pid: str) -> Any:
        if pid not in double.projects:
            return error(404, "BadRequestProjectUnknown", "Unknown project.")
        return double.projects[pid]

    def listed(pid: str, tagged: bool) -> list[dict[str, Any]]:
        return [i for i in double.stored.get(pid, []) if bool(i["tags"] or i["regions"]) == tagged]

    def page(pid: str, tagged: bool, take: int, skip: int) -> Response:
        double.takes.append(take)
        if take > 256:
            return error(400, "BadRequestInvalidArgument", "take is limited to 256.")
        made = double.synthetic.get(pid)
        if made is not None:
            records = [made.record(i) for i in range(skip, min(skip + take, made.count))] if tagged else []
        else:
            records = listed(pid, tagged)[skip : skip + take]
        # json.dumps, not JSONResponse: hostile tests send NaN as the service's JSON writer could
        return Response(json.dumps(records), media_type="application/json")

    def counted(pid: str, tagged: bool) -> int:
        made = double.synthetic.get(pid)
        if made is not None:
            return made.count if tagged else 0
        return len(listed(pid, tagged))

    @app.get(BASE + "/projects/{pid}/images/tagged")
    async def tagged(pid: str, take: int = 50, skip: int = 0) -> Any:
        return page(pid, True, take, skip)

    @app.get(BASE + "/projects/{pid}/images/untagged")
    async def untagged(pid: str, take: int = 50, skip: int = 0) -> Any:
        return page(pid, False, take, skip)

    @app.get(BASE + "/projects/{pid}/images/tagged/count")
    async def tagged_count(pid: str) -> Any:
        return counted(pid, True)

    @app.get(BASE + "/projects/{pid}/images/untagged/count")
    async def untagged_count(pid: str) -> Any:
        return counted(pid, False)

    @app.post(BASE + "/projects/{pid}/predictions/query")
    async def query_predictions(pid: str, request: Request) -> Any:
        token = await request.json()
        double.queries.append(token)
        take = token.get("maxCount") or 50
        if take > 256:
            return error(400, "BadRequestInvalidArgument", "maxCount is limited to 256.")
        start = int(token.get("continuation") or 0)
        stored = double.predictions.get(pid, [])
        if token.get("orderBy") == "Newest":
            stored = stored[::-1]
        following = start + take if start + take < len(stored) else None
        body = {"token": {**token, "session": token.get("session") or "session-1",
                          "continuation": None if following is None else str(following)},
                "results": stored[start : start + take]}
        return Response(json.dumps(body), media_type="application/json")

    @app.get("/img/{image_id:path}")
    async def image(image_id: str) -> Any:
        if double.record_downloads:
            double.downloads.append(image_id)
        if image_id.startswith(SYNTHETIC_PREFIX):
            return Response(synthetic_jpeg(image_id), media_type="image/jpeg")
        data, faults = double.blobs[image_id], double.faults
        if image_id in faults.cut_once:
            faults.cut_once.discard(image_id)
            return Response(data[: len(data) // 2], headers={"content-length": str(len(data))})
        if image_id in faults.truncate_once:
            faults.truncate_once.discard(image_id)
            return Response(data[: len(data) // 2], media_type="application/octet-stream")
        if image_id in faults.huge_length:
            return Response(data, headers={"content-length": str(10**12)})
        return Response(data, media_type="application/octet-stream")

    @app.get(BASE + "/projects/{pid}/tags")
    async def tags(pid: str) -> Any:
        return double.tags[pid]

    @app.post(BASE + "/projects/{pid}/tags")
    async def create_tag(pid: str, name: str) -> Any:
        tag = {"id": str(uuid.uuid4()), "name": name, "description": None, "type": "Regular", "imageCount": 0}
        double.tags[pid].append(tag)
        return tag

    @app.post(BASE + "/projects/{pid}/images/files")
    async def images(pid: str, request: Request) -> Any:
        if double.faults.throttle_first_upload:
            double.faults.throttle_first_upload = False
            return error(429, "TooManyRequests", "Rate limit is exceeded.", {"Retry-After": "2"})
        if double.faults.break_after_batches and double.batches >= double.faults.break_after_batches:
            return error(503, "ServiceUnavailable", "The service is unavailable.")
        body = await request.json()
        entries = body.get("images") or []
        tag_ids = {t for e in entries for t in (e.get("tagIds") or [])}
        tag_ids |= {r["tagId"] for e in entries for r in (e.get("regions") or [])}
        if len(entries) > 64:
            return error(400, "BadRequestImageBatch", "Image batch is limited to 64 images.")
        if len(tag_ids) > 20:
            return error(400, "BadRequestTagBatch", "Image batch is limited to 20 tags.")
        double.batches += 1
        results, ok = [], True
        for e in entries:
            data = base64.b64decode(e["contents"])
            sha1 = hashlib.sha1(data).hexdigest()
            double.received.append(sha1)
            if len(data) > 6 * 1024 * 1024:
                status, ok = "ErrorImageSize", False
            elif sha1 in double.images[pid]:
                status = "OKDuplicate"
            else:
                double.images[pid][sha1] = str(uuid.uuid4())
                double.uploaded.setdefault(pid, []).append({k: v for k, v in e.items() if k != "contents"})
                status = "OK"
            image = {"id": double.images[pid][sha1], "width": 64, "height": 64} if status.startswith("OK") else None
            results.append({"sourceUrl": e.get("name"), "status": status, "image": image})
        return JSONResponse({"isBatchSuccessful": ok, "images": results}, status_code=200 if ok else 207)

    @app.post(BASE + "/projects/{pid}/train")
    async def train(pid: str, trainingType: str = "Regular", reservedBudgetInHours: int = 0) -> Any:
        if not double.images.get(pid):
            return error(400, "BadRequestTrainingValidationFailed", "Not enough images for training.")
        iid = str(uuid.uuid4())
        double.iterations[iid] = {"id": iid, "name": f"Iteration {len(double.iterations) + 1}", "status": "Training",
                                  "projectId": pid, "trainingType": trainingType, "exportable": True,
                                  "reservedBudgetInHours": reservedBudgetInHours,
                                  "domainId": double.projects[pid]["settings"]["domainId"]}
        return double.iterations[iid]

    @app.get(BASE + "/projects/{pid}/iterations")
    async def iterations(pid: str) -> Any:
        return [it for it in double.iterations.values() if it["projectId"] == pid]

    @app.get(BASE + "/projects/{pid}/iterations/{iid}")
    async def iteration(pid: str, iid: str) -> Any:
        double.polls[iid] = double.polls.get(iid, 0) + 1
        if double.polls[iid] >= 3:
            double.iterations[iid]["status"] = "Completed"
        return double.iterations[iid]

    @app.get(BASE + "/projects/{pid}/iterations/{iid}/performance")
    async def performance(pid: str, iid: str, threshold: float = 0.5) -> Any:
        if iid in double.performances:
            return Response(json.dumps(double.performances[iid]), media_type="application/json")
        per_tag = [{"id": t["id"], "name": t["name"], "precision": 0.9, "precisionStdDeviation": 0.0,
                    "recall": 0.8, "recallStdDeviation": 0.0, "averagePrecision": 0.95} for t in double.tags[pid]]
        return {"perTagPerformance": per_tag, "precision": 0.9, "precisionStdDeviation": 0.0, "recall": 0.8,
                "recallStdDeviation": 0.0, "averagePrecision": 0.95}

    @app.post(BASE + "/projects/{pid}/iterations/{iid}/export")
    async def export(pid: str, iid: str, platform: str, flavor: str | None = None) -> Any:
        double.exports[iid] = {"platform": platform, "status": "Exporting", "downloadUri": None, "flavor": flavor,
                               "newerVersionAvailable": False, "polls": 0}
        return {k: v for k, v in double.exports[iid].items() if k != "polls"}

    @app.get(BASE + "/projects/{pid}/iterations/{iid}/export")
    async def exports(pid: str, iid: str) -> Any:
        if iid not in double.exports:
            return []
        entry = double.exports[iid]
        entry["polls"] += 1
        if entry["polls"] >= 2:
            entry["status"], entry["downloadUri"] = "Done", f"{double.base_url}/download/{iid}.zip"
        return [{k: v for k, v in entry.items() if k != "polls"}]

    @app.post(BASE + "/projects/{pid}/iterations/{iid}/publish")
    async def publish(pid: str, iid: str, publishName: str, predictionId: str) -> Any:
        double.published.append((iid, publishName))
        double.iterations[iid]["publishName"] = publishName
        return True

    @app.get("/download/{name}")
    async def download(name: str) -> Any:
        return FileResponse(double.export_zip, media_type="application/zip")

    return app


@contextmanager
def serving(export_zip: Path) -> Iterator[tuple[Double, str]]:
    """The double on a loopback port: (its state, its endpoint)."""
    double = Double(export_zip)
    with running(create_double_app(double)) as url:
        double.base_url = url
        yield double, url
