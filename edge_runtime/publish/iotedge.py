"""Model updates from the Azure IoT Edge module twin (`models.iot_edge: true`, the `iotedge`
extra: azure-iot-device, imported only when the setting is on).

The desired property `edgeRuntimeModels` maps a published name to the same description a
pulled source serves (pull.py), its URLs absolute (a blob URL with a SAS token, say):

    "edgeRuntimeModels": {"shelf": {"version": "2024-06-01", "sha256": "9f86...", "size": 4812331,
                                    "url": "https://.../shelf.zip?sv=...", "signatureUrl": "https://.../shelf.zip.sig?sv=..."}}

Each entry goes through pull.Downloader, the one download path: disk space, resume, size,
SHA-256, then the publisher as Update(source="twin"). After each change the module patches
its reported properties with what became of every entry it was given:

    "edgeRuntimeModels": {"shelf": {"version": "2024-06-01", "sha256": "9f86...", "status": "active",
                                    "error": null, "at": "2024-06-01T07:00:00Z"}}

`status` is "active" or "failed" (with `error`, one line). An entry removed from the desired
properties leaves its model published (unpublish is a decision of its own); a twin without
the property changes nothing.

    twin = ModuleTwin.from_edge_environment(downloader)
    twin.start()     # the whole twin once, then each desired patch as it comes, on a thread of its own
    twin.stop()
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from ..capture.sources.uri import redact
from ..errors import ConfigError, EdgeRuntimeError, PullError, first_line
from .config import NAME, ModelsConfig
from .description import description_from
from .download import Downloader

log = logging.getLogger(__name__)
PROPERTY = "edgeRuntimeModels"


class ModuleClient(Protocol):
    """What is used of azure.iot.device.IoTHubModuleClient (the synchronous one)."""

    on_twin_desired_properties_patch_received: Any

    def connect(self) -> None: ...

    def get_twin(self) -> dict[str, Any]: ...

    def patch_twin_reported_properties(self, reported_properties_patch: dict[str, Any]) -> None: ...

    def shutdown(self) -> None: ...


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class ModuleTwin:
    def __init__(self, client: ModuleClient, downloader: Downloader, timeout_s: float = 30.0,
                 retry_after_s: float = 300.0) -> None:
        self.client, self.downloader = client, downloader
        self.timeout_s, self.retry_after_s = timeout_s, retry_after_s
        self._patches: queue.Queue[Mapping[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_edge_environment(cls, downloader: Downloader) -> ModuleTwin:
        """The module's own client, from the variables IoT Edge gives its modules; a
        ConfigError in one line without the package or outside IoT Edge."""
        try:
            from azure.iot.device import IoTHubModuleClient
        except ImportError:
            raise ConfigError("models.iot_edge needs the azure-iot-device package: "
                              "pip install 'edge-runtime[iotedge]'") from None
        try:
            client = IoTHubModuleClient.create_from_edge_environment()
        except Exception as exc:  # the SDK's own errors: no IoT Edge environment, say
            raise ConfigError(f"models.iot_edge: not an IoT Edge module ({first_line(exc)})") from None
        return cls(client, downloader)

    @classmethod
    def from_config(cls, models: ModelsConfig, downloader: Downloader) -> ModuleTwin | None:
        return cls.from_edge_environment(downloader) if models.iot_edge else None

    def start(self) -> None:
        self.client.connect()
        self.client.on_twin_desired_properties_patch_received = self._patches.put
        self._patches.put(self.client.get_twin().get("desired") or {})
        self._thread = threading.Thread(target=self._run, name="module-twin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (desired := self._patches.get()) is not None:
            try:
                self.apply(desired)
            except Exception as exc:  # the SDK's errors (a lost connection): the next patch tries again
                log.warning("module twin: %s", first_line(exc))

    def stop(self, timeout: float = 5.0) -> None:
        self._patches.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self.client.shutdown()

    def apply(self, desired: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Deliver every entry of a desired patch (or the whole desired twin) and report
        what became of each; what was reported is returned. Synchronous."""
        entries = desired.get(PROPERTY)
        if entries is None:
            return {}
        if not isinstance(entries, Mapping):
            log.warning("module twin: %s is not an object of name: description; ignored", PROPERTY)
            return {}
        reported = {name: self._deliver(str(name), value) for name, value in entries.items()
                    if value is not None and not str(name).startswith("$")}
        if reported:
            self.client.patch_twin_reported_properties({PROPERTY: reported})
        return reported

    def _deliver(self, name: str, value: Any) -> dict[str, Any]:
        where = f"module twin {PROPERTY}.{name if NAME.fullmatch(name) else repr(name)[:70]}"
        fields = value if isinstance(value, Mapping) else {}
        report = {"version": _text(fields.get("version")), "sha256": _text(fields.get("sha256")), "status": "failed",
                  "error": None, "at": _now()}
        try:
            if not NAME.fullmatch(name):
                raise PullError(f"{where}: not a published name (1 to 64 letters, digits, '_', '-' or '.')")
            desc = description_from(value, None, self.downloader.max_bytes, where)
            if desc.name not in (None, name):
                raise PullError(f"{where}: its name {desc.name!r} is not {name!r}")
            desc = desc.model_copy(update={"name": name})
            self.downloader.deliver(f"twin:{name}", desc, origin=f"module twin ({redact(desc.url)})", source="twin",
                                    timeout_s=self.timeout_s, retry_after_s=self.retry_after_s)
        except EdgeRuntimeError as exc:
            log.warning("%s", exc)
            return {**report, "error": str(exc)}
        return {**report, "version": desc.version, "sha256": desc.sha256, "status": "active"}


def _text(value: Any) -> str | None:
    return value[:128] if isinstance(value, str) else None
