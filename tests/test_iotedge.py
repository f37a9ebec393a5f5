"""The Azure IoT Edge module twin: a desired property triggers the same download, verify and
publish as a pulled description, and the reported properties say what became of it. The
module client is a fake with the SDK's methods (IoT Edge cannot run here); the download
is real, from a loopback server, into a real ModelStore."""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.publish.config import ModelsConfig
from edge_runtime.publish.description import MB
from edge_runtime.publish.download import Downloader
from edge_runtime.publish.iotedge import PROPERTY, ModuleTwin
from edge_runtime.publish.store import ModelStore
from tests.conftest import wait_for
from tests.test_pull import Store, export_zip
from tests.update_server import UpdateServer


class FakeModuleClient:
    """IoTHubModuleClient's twin methods, recording what the module reports."""

    def __init__(self, desired: dict[str, Any]) -> None:
        self.desired = desired
        self.reported: list[dict[str, Any]] = []
        self.on_twin_desired_properties_patch_received: Any = None
        self.connected = self.shut = False

    def connect(self) -> None:
        self.connected = True

    def get_twin(self) -> dict[str, Any]:
        return {"desired": {**self.desired, "$version": 3}, "reported": {"$version": 1}}

    def patch_twin_reported_properties(self, reported_properties_patch: dict[str, Any]) -> None:
        self.reported.append(reported_properties_patch)

    def shutdown(self) -> None:
        self.shut = True

    def deliver(self, patch: dict[str, Any]) -> None:
        """As the SDK does: the handler is called with the patch alone, on its own thread."""
        self.on_twin_desired_properties_patch_received({**patch, "$version": 4})


@pytest.fixture()
def server(tmp_path):
    srv = UpdateServer(export_zip(tmp_path, "it-twin"))
    yield srv
    srv.close()


def entry(server: UpdateServer, **changes: Any) -> dict[str, Any]:
    info = {k: v for k, v in server.info.items() if k != "name"}
    return {**info, "url": f"{server.base}/model.zip", "version": "7", **changes}


def twin(tmp_path, client) -> tuple[ModuleTwin, Store]:
    store = Store(tmp_path / "models")
    return ModuleTwin(client, Downloader(store.root, store, 512 * MB), timeout_s=10), store


@pytest.mark.timeout(60)
def test_a_desired_patch_publishes_and_reports_active(tmp_path, server):
    client = FakeModuleClient({"other": 1})  # a twin without the property does nothing
    module, store = twin(tmp_path, client)
    module.start()
    try:
        assert client.connected and client.reported == []
        client.deliver({PROPERTY: {"shelf": entry(server)}})
        assert wait_for(lambda: client.reported, timeout=30)
    finally:
        module.stop()
    report = client.reported[0][PROPERTY]["shelf"]
    assert report["status"] == "active" and report["error"] is None and report["version"] == "7"
    assert report["sha256"] == hashlib.sha256(server.export).hexdigest() and report["at"].endswith("Z")
    assert store.active() == "it-twin" and store.updates[0].source == "twin"
    assert client.shut


def test_the_whole_twin_is_applied_at_start_and_an_unchanged_entry_is_not_downloaded_again(tmp_path, server):
    client = FakeModuleClient({PROPERTY: {"shelf": entry(server)}})
    module, store = twin(tmp_path, client)
    module.apply(client.get_twin()["desired"])
    assert module.apply(client.get_twin()["desired"])["shelf"]["status"] == "active"
    assert len(server.downloads()) == 1 and len(store.updates) == 1


@pytest.mark.parametrize("bad, message", [
    ({"sha256": "0" * 64}, "is not the description's"),
    ({"url": "model.zip"}, "not an absolute http"),  # a twin has no URL to be relative to
    ({"size": -1}, "size"),
    ({"name": "door"}, "is not 'shelf'"),
])
def test_a_bad_entry_reports_failed_with_the_error_and_publishes_nothing(tmp_path, server, bad, message):
    client = FakeModuleClient({})
    module, store = twin(tmp_path, client)
    module.apply({PROPERTY: {"shelf": entry(server, **bad)}})
    report = client.reported[-1][PROPERTY]["shelf"]
    assert report["status"] == "failed" and message in report["error"] and "\n" not in report["error"]
    assert not store.updates and "shelf" not in ModelStore.open(store.root).names()


def test_hostile_names_and_shapes_are_reported_or_ignored(tmp_path, server):
    client = FakeModuleClient({})
    module, store = twin(tmp_path, client)
    assert module.apply({PROPERTY: "not an object"}) == {}
    assert module.apply({PROPERTY: {"gone": None}}) == {}  # removed from desired: nothing to do
    reported = module.apply({PROPERTY: {"../x": entry(server), "a": "not an object"}})
    assert reported["../x"]["status"] == "failed" and "not a published name" in reported["../x"]["error"]
    assert reported["a"]["status"] == "failed"
    assert not store.updates and server.downloads() == []


def test_iot_edge_without_the_package_is_one_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.iot.device", None)  # as if azure-iot-device were not installed
    models = ModelsConfig(path=tmp_path / "models", iot_edge=True)
    downloader = Downloader.from_config(models, Store(tmp_path / "models"))
    with pytest.raises(ConfigError, match=r"pip install 'edge-runtime\[iotedge\]'"):
        ModuleTwin.from_config(models, downloader)
    assert ModuleTwin.from_config(ModelsConfig(path=tmp_path / "models"), downloader) is None
