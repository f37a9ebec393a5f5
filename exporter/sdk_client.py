"""The TrainingClient of the real service, through Microsoft's training SDK.

    client = SdkClient.connect(load_credentials())
    client.domains()

Every SDK call goes through `_call`, which retries 429 (honouring Retry-After) and 5xx
with capped exponential backoff, and maps the SDK's exceptions to CloudError. This is
the only module that imports the SDK; its models become the dataclasses of
training_client.py here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .credentials import Credentials
from .training_client import (
    CloudError,
    Domain,
    DomainType,
    Export,
    Flavor,
    Iteration,
    NewImage,
    Performance,
    Progress,
    Project,
    Tag,
    TagPerformance,
    UploadResult,
)

log = logging.getLogger(__name__)

RETRIES = 6
BACKOFF_S = 1.0
BACKOFF_MAX_S = 60.0
TIMEOUT_S = 120


def _status(exc: Exception) -> tuple[int | None, float | None]:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    retry_after = None
    headers = getattr(response, "headers", None) or {}
    if headers.get("Retry-After"):
        try:
            retry_after = float(headers["Retry-After"])
        except ValueError:
            retry_after = None
    return code, retry_after


def _message(exc: Exception) -> str:
    error = getattr(exc, "error", None)
    inner = getattr(error, "message", None) or getattr(getattr(error, "error", None), "message", None)
    code, _ = _status(exc)
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = inner or first_line
    return f"{text} (HTTP {code})" if code else text


def _iteration(it: Any) -> Iteration:
    trained_at = it.trained_at.isoformat() if getattr(it, "trained_at", None) is not None else ""
    return Iteration(it.id, it.name or "", it.status or "", it.publish_name or "", trained_at)


class SdkClient:
    """TrainingClient over `CustomVisionTrainingClient`, with retries and error mapping."""

    def __init__(self, sdk: Any, sleep: Callable[[float], None] = time.sleep,
                 limiter: Callable[[], None] | None = None) -> None:
        self.sdk = sdk
        self.sleep = sleep
        self.limiter = limiter  # called before every request: the tier's calls-a-second quota
        self.retries_done = 0

    @classmethod
    def connect(cls, credentials: Credentials, sleep: Callable[[float], None] = time.sleep,
                limiter: Callable[[], None] | None = None) -> SdkClient:
        from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
        from msrest.authentication import ApiKeyCredentials

        sdk = CustomVisionTrainingClient(  # type: ignore[no-untyped-call]
            credentials.endpoint, ApiKeyCredentials(in_headers={"Training-key": credentials.training_key}))
        sdk.config.retry_policy.retries = 0  # retries happen in `_call`, where Retry-After is honoured
        sdk.config.connection.timeout = TIMEOUT_S
        return cls(sdk, sleep, limiter)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Any SDK operation by name, with the retries and error mapping of the typed calls."""
        return self._call(name, *args, **kwargs)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import DeserializationError  # what msrest raises for a malformed answer
        from msrest.exceptions import ClientRequestError, HttpOperationError

        for attempt in range(RETRIES + 1):
            log.debug("Custom Vision %s (attempt %d)", name, attempt + 1)
            if self.limiter is not None:
                self.limiter()
            try:
                return getattr(self.sdk, name)(*args, **kwargs)
            except DeserializationError:
                raise CloudError(f"Custom Vision {name}: the answer does not follow the API's schema") from None
            except (HttpOperationError, ClientRequestError) as exc:
                code, retry_after = _status(exc)
                transient = code is None or code == 429 or code >= 500
                if not transient or attempt == RETRIES:
                    raise CloudError(f"Custom Vision {name}: {_message(exc)}") from None
                delay = retry_after if retry_after is not None else min(BACKOFF_MAX_S, BACKOFF_S * 2**attempt)
                log.warning("Custom Vision %s: %s; retrying in %.1f s", name, _message(exc), delay)
                self.retries_done += 1
                self.sleep(delay)
        raise AssertionError("unreachable")

    def domains(self) -> list[Domain]:
        known = {t.value for t in DomainType}
        return [Domain(d.id, d.name, DomainType(d.type), bool(d.exportable))
                for d in self._call("get_domains") if d.type in known]

    def projects(self) -> list[Project]:
        return [Project(p.id, p.name, p.settings.domain_id if p.settings else "") for p in self._call("get_projects")]

    def create_project(self, name: str, domain_id: str, classification: str | None) -> Project:
        p = self._call("create_project", name, domain_id=domain_id, classification_type=classification,
                       target_export_platforms=["ONNX"])
        return Project(p.id, p.name, domain_id)

    def tags(self, project_id: str) -> list[Tag]:
        return [Tag(t.id, t.name) for t in self._call("get_tags", project_id)]

    def create_tag(self, project_id: str, name: str) -> Tag:
        t = self._call("create_tag", project_id, name)
        return Tag(t.id, t.name)

    def upload(self, project_id: str, images: Sequence[NewImage]) -> list[UploadResult]:
        from azure.cognitiveservices.vision.customvision.training.models import (
            ImageFileCreateBatch,
            ImageFileCreateEntry,
            Region,
        )

        entries = [ImageFileCreateEntry(
            name=image.name, contents=bytearray(image.data), tag_ids=list(image.tag_ids) or None,
            regions=[Region(tag_id=r.tag_id, left=r.left, top=r.top, width=r.width, height=r.height)
                     for r in image.regions] or None) for image in images]
        summary = self._call("create_images_from_files", project_id, ImageFileCreateBatch(images=entries))
        return [UploadResult(r.status, r.image.id if r.image else "") for r in summary.images]

    def train(self, project_id: str, training_type: str, budget_hours: int) -> Iteration:
        return _iteration(self._call("train_project", project_id, training_type=training_type,
                                     reserved_budget_in_hours=budget_hours, force_train=False))

    def iteration(self, project_id: str, iteration_id: str) -> Iteration:
        return _iteration(self._call("get_iteration", project_id, iteration_id))

    def iterations(self, project_id: str) -> list[Iteration]:
        return [_iteration(it) for it in self._call("get_iterations", project_id)]

    def performance(self, project_id: str, iteration_id: str, threshold: float,
                    overlap_threshold: float | None) -> Performance:
        perf = self._call("get_iteration_performance", project_id, iteration_id, threshold=threshold,
                          overlap_threshold=overlap_threshold)
        per_tag = tuple(TagPerformance(t.name, t.precision, t.recall, t.average_precision)
                        for t in perf.per_tag_performance or [])
        return Performance(perf.precision, perf.recall, perf.average_precision, per_tag)

    def query_predictions(self, project_id: str, token: Any, max_count: int) -> tuple[list[Any], Any]:
        """One page of the images the prediction endpoint stored, oldest first, and the token for
        the next page (None after the last). Pass None for the first page, then what came back."""
        from azure.cognitiveservices.vision.customvision.training.models import PredictionQueryToken

        if token is None:
            token = PredictionQueryToken(order_by="Oldest", max_count=max_count)
        previous = token.continuation
        result = self._call("query_predictions", project_id, token)
        following = result.token
        more = following is not None and bool(following.continuation) and following.continuation != previous
        if more:
            following.max_count = max_count
        return list(result.results or []), following if more else None

    def exports(self, project_id: str, iteration_id: str) -> list[Export]:
        return [Export(e.platform, Flavor.from_api(e.flavor), e.status, e.download_uri or "")
                for e in self._call("get_exports", project_id, iteration_id)]

    def export(self, project_id: str, iteration_id: str, flavor: Flavor) -> None:
        self._call("export_iteration", project_id, iteration_id, "ONNX", flavor=flavor.api_value)

    def publish(self, project_id: str, iteration_id: str, name: str, prediction_resource_id: str) -> None:
        self._call("publish_iteration", project_id, iteration_id, name, prediction_resource_id)

    def download(self, uri: str, target: Path, progress: Progress | None = None) -> Path:
        return download(uri, target, progress)


def download(url: str, target: Path, progress: Progress | None = None, chunk: int = 1 << 16) -> Path:
    """Stream a file to disk (a partial download never takes the final name)."""
    import requests

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with requests.get(url, stream=True, timeout=60) as r:
            r.raise_for_status()
            total = int(r.headers.get("Content-Length") or 0)
            got = 0
            with open(partial, "wb") as f:
                for block in r.iter_content(chunk):
                    f.write(block)
                    got += len(block)
                    if progress and total:
                        progress("download", got, total)
    except (requests.RequestException, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise CloudError(f"downloading the export failed: {exc.__class__.__name__}") from None
    partial.replace(target)
    return target
