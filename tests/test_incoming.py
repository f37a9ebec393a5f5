"""The watched folder against real files: real export zips (the demo model, the colour
classifier), a publisher made from a real ModelStore, and scans driven by the clock they
are given (the files' own sizes and times are real)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.model.limits import MAX_JSON_BYTES
from edge_runtime.publish.config import ModelsConfig
from edge_runtime.publish.incoming import FAILED, TAKING, IncomingWatcher, Outcome
from edge_runtime.publish.store import ModelStore
from edge_runtime.publish.update import Update
from tests import models
from tests.conftest import wait_for

DEMO = Path(__file__).resolve().parent.parent / "edge_runtime" / "demo"
PROJECT = "2d50f1c6-7b1e-4a3c-9c55-0a1b2c3d4e5f"


class Publisher:
    """ModelStore.publish, remembering each update and the signature it carried."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.updates: list[Update] = []
        self.signatures: list[bytes | None] = []

    def __call__(self, update: Update) -> Any:
        self.updates.append(update)
        self.signatures.append(update.signature.read_bytes() if update.signature else None)
        return ModelStore.open(self.root).publish(update.path, update.name, update.project)

    @property
    def store(self) -> ModelStore:
        return ModelStore.open(self.root)


def export_zip(folder: Path, out: Path, bundle: dict[str, Any] | None = None, bundle_raw: bytes | None = None) -> Path:
    """A zip of the export in `folder`, with a bundle.json when one is given."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            zf.write(path, path.name)
        if bundle is not None or bundle_raw is not None:
            zf.writestr("bundle.json", bundle_raw if bundle_raw is not None else json.dumps(bundle))
    return out


@pytest.fixture(scope="module")
def demo_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_zip(DEMO, tmp_path_factory.mktemp("demo") / "demo.zip")


def colours(tmp_path: Path, iteration: str, sha1: str | None = None) -> Path:
    folder = models.write_export(tmp_path / f"colours-{iteration}", models.color_classifier(), models.COLOR_TAGS,
                                 metadata=models.modern_metadata(), sha1=sha1)
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest["IterationId"] = iteration
    (folder / "cvexport.manifest").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Publisher, IncomingWatcher]:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    publisher = Publisher(tmp_path / "models")
    return incoming, publisher, IncomingWatcher(incoming, publisher, poll_s=2.0, give_up_s=60.0)


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != TAKING)


def reason(folder: Path, file: str) -> str:
    return (folder / FAILED / f"{file}.reason").read_text()


@pytest.mark.timeout(120)
def test_a_complete_zip_is_published_under_its_bundle_name_with_its_signature(setup, tmp_path: Path):
    incoming, publisher, watcher = setup
    zip_path = export_zip(DEMO, tmp_path / "x.zip", {"name": "shelf", "source": {"projectId": PROJECT}})
    (incoming / "upload-17.zip.sig").write_bytes(b"signature bytes")
    shutil.copy(zip_path, incoming / "upload-17.zip")
    assert watcher.scan_once(now=0.0) == []
    assert watcher.scan_once(now=1.0) == []  # not yet poll_s unchanged
    assert watcher.scan_once(now=2.5) == [Outcome("upload-17.zip", "shelf")]
    published = publisher.store.describe("shelf")
    assert published.project == PROJECT and published.active == 1
    assert publisher.signatures == [b"signature bytes"]
    update = publisher.updates[0]
    assert update.source == "incoming" and update.origin == "upload-17.zip" and update.signature is not None
    assert visible(incoming) == [] and list((incoming / TAKING).iterdir()) == []
    assert watcher.scan_once(now=10.0) == [] and len(publisher.updates) == 1


@pytest.mark.timeout(120)
def test_a_zip_without_bundle_json_is_published_under_its_stem(setup, demo_zip: Path):
    incoming, publisher, watcher = setup
    shutil.copy(demo_zip, incoming / "door.zip")
    watcher.scan_once(now=0.0)
    assert watcher.scan_once(now=2.0) == [Outcome("door.zip", "door")]
    assert publisher.store.names() == ["door"] and publisher.updates[0].signature is None
    assert publisher.store.describe("door").project is None


@pytest.mark.timeout(120)
def test_a_zip_being_written_is_taken_only_once_it_is_whole_and_stable(setup, demo_zip: Path):
    incoming, publisher, watcher = setup
    data = demo_zip.read_bytes()
    target = incoming / "shelf.zip"
    target.write_bytes(data[: len(data) // 2])
    assert watcher.scan_once(now=0.0) == []
    assert watcher.scan_once(now=5.0) == []  # stable, but its directory does not read: waited for
    with open(target, "ab") as f:
        f.write(data[len(data) // 2:])
    assert watcher.scan_once(now=6.0) == []  # it changed: the wait starts again
    assert publisher.updates == []
    assert watcher.scan_once(now=8.0) == [Outcome("shelf.zip", "shelf")]
    assert publisher.store.names() == ["shelf"]


@pytest.mark.timeout(60)
def test_a_signature_still_being_written_holds_its_zip_back(setup, tmp_path: Path):
    incoming, publisher, watcher = setup
    shutil.copy(models.zip_folder(colours(tmp_path, "it-1"), tmp_path / "c.zip"), incoming / "shelf.zip")
    sig = incoming / "shelf.zip.sig"
    sig.write_bytes(b"half")
    watcher.scan_once(now=0.0)
    with open(sig, "ab") as f:
        f.write(b" and the rest")
    assert watcher.scan_once(now=3.0) == []
    assert watcher.scan_once(now=5.0) == [Outcome("shelf.zip", "shelf")]
    assert publisher.signatures == [b"half and the rest"]


@pytest.mark.timeout(60)
def test_a_truncated_zip_that_stays_unchanged_goes_to_failed_after_give_up_s(setup, tmp_path: Path, caplog):
    incoming, publisher, watcher = setup
    data = models.zip_folder(colours(tmp_path, "it-1"), tmp_path / "c.zip").read_bytes()
    (incoming / "cut.zip").write_bytes(data[:-100])  # the directory at its end is gone
    for now in (0.0, 3.0, 30.0):
        assert watcher.scan_once(now=now) == []
    with caplog.at_level(logging.WARNING, logger="edge_runtime.publish.incoming"):
        [outcome] = watcher.scan_once(now=61.0)
    assert outcome.name is None and outcome.reason.startswith("not a readable zip, unchanged for 61 s")
    assert visible(incoming) == [FAILED]
    assert sorted(os.listdir(incoming / FAILED)) == ["cut.zip", "cut.zip.reason"]
    assert reason(incoming, "cut.zip") == outcome.reason + "\n"
    assert [r.getMessage() for r in caplog.records] == [f"models.incoming: 'cut.zip' refused: {outcome.reason}"]
    assert publisher.updates == []


@pytest.mark.timeout(60)
def test_a_zip_that_does_not_load_goes_to_failed_with_the_reason_and_is_not_retried(setup, tmp_path: Path):
    incoming, publisher, watcher = setup
    bad = models.zip_folder(colours(tmp_path, "it-1", sha1="0" * 40), tmp_path / "bad.zip")
    shutil.copy(bad, incoming / "shelf.zip")
    shutil.copy(bad, incoming / "shelf.zip.sig")  # any bytes: it goes with its zip
    watcher.scan_once(now=0.0)
    [outcome] = watcher.scan_once(now=2.0)
    assert "SHA-1" in outcome.reason and "\n" not in outcome.reason
    assert sorted(os.listdir(incoming / FAILED)) == ["shelf.zip", "shelf.zip.reason", "shelf.zip.sig"]
    assert reason(incoming, "shelf.zip").strip() == outcome.reason
    assert publisher.store.names() == [] and len(publisher.updates) == 1
    watcher.scan_once(now=4.0)
    watcher.scan_once(now=8.0)
    assert len(publisher.updates) == 1  # not tried again
    # a good one dropped under the same file name is a new update
    shutil.copy(models.zip_folder(colours(tmp_path, "it-2"), tmp_path / "good.zip"), incoming / "shelf.zip")
    watcher.scan_once(now=10.0)
    assert watcher.scan_once(now=12.0) == [Outcome("shelf.zip", "shelf")]
    assert publisher.store.describe("shelf").iteration == "it-2"
    assert reason(incoming, "shelf.zip").strip() == outcome.reason  # the old refusal stays, for a person to read


@pytest.mark.timeout(60)
def test_two_zips_for_one_name_in_one_scan_are_published_oldest_first(setup, tmp_path: Path):
    incoming, publisher, watcher = setup
    for file, iteration, mtime in (("a.zip", "newer", 2_000_000_000), ("b.zip", "older", 1_900_000_000)):
        export_zip(colours(tmp_path, iteration), incoming / file, {"name": "shelf"})
        os.utime(incoming / file, (mtime, mtime))
    watcher.scan_once(now=0.0)
    assert watcher.scan_once(now=2.0) == [Outcome("b.zip", "shelf"), Outcome("a.zip", "shelf")]
    store = publisher.store
    assert store.describe("shelf").iteration == "newer" and store.describe("shelf").previous == 1
    assert open_iteration(store, 1) == "older"


def open_iteration(store: ModelStore, version: int) -> str:
    manifest = json.loads((store.version_path("shelf", version) / "cvexport.manifest").read_text())
    return str(manifest["IterationId"])


@pytest.mark.timeout(60)
def test_links_folders_hidden_and_other_files_are_left_alone_and_logged_once(setup, tmp_path: Path, caplog):
    incoming, publisher, watcher = setup
    outside = models.zip_folder(colours(tmp_path, "it-1"), tmp_path / "outside.zip")
    before = outside.read_bytes()
    (incoming / "evil.zip").symlink_to(outside)
    (incoming / "good.zip.sig").symlink_to(tmp_path / "nothing")  # a dangling .sig link, without its zip
    (incoming / "notes.txt").write_text("hello")
    (incoming / ".hidden.zip").write_bytes(before)
    (incoming / "folder.zip").mkdir()
    os.mkfifo(incoming / "pipe.zip")
    with caplog.at_level(logging.INFO, logger="edge_runtime.publish.incoming"):
        for now in (0.0, 3.0, 6.0, 100.0):
            assert watcher.scan_once(now=now) == []
    messages = sorted(r.getMessage() for r in caplog.records)
    assert messages == ["models.incoming: 'evil.zip' is ignored: a symbolic link, never followed",
                        "models.incoming: 'good.zip.sig' is ignored: a symbolic link, never followed",
                        "models.incoming: 'notes.txt' is ignored: not a .zip",
                        "models.incoming: 'pipe.zip' is ignored: not a regular file"]
    assert publisher.updates == [] and outside.read_bytes() == before
    assert (incoming / "evil.zip").is_symlink() and not (incoming / FAILED).exists()


@pytest.mark.timeout(60)
def test_a_signature_that_is_a_link_refuses_its_zip(setup, tmp_path: Path):
    incoming, publisher, watcher = setup
    shutil.copy(models.zip_folder(colours(tmp_path, "it-1"), tmp_path / "c.zip"), incoming / "shelf.zip")
    secret = tmp_path / "secret"
    secret.write_text("not to be read")
    (incoming / "shelf.zip.sig").symlink_to(secret)
    watcher.scan_once(now=0.0)
    [outcome] = watcher.scan_once(now=2.0)
    assert outcome.reason == "shelf.zip.sig is not a regular file (a link is never followed)"
    assert publisher.updates == [] and secret.read_text() == "not to be read"
    assert (incoming / FAILED / "shelf.zip.sig").is_symlink()  # moved as a link, never opened


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("bundle", "raw", "expected"), [
    ({"name": "../../etc"}, None, "bundle.json name '../../etc': use 1 to 64 letters"),
    ({"name": "a/b"}, None, "bundle.json name 'a/b'"),
    ({"name": ["shelf"]}, None, "bundle.json name ['shelf'] is not text"),
    ({"name": "shelf", "project": "../x"}, None, "bundle.json project '../x' is not a project id"),
    (None, b"{not json", "bundle.json: Expecting property name"),
    (None, b"[1, 2]", "bundle.json is not a JSON object"),
    (None, b" " * (MAX_JSON_BYTES + 1), f"bundle.json is larger than {MAX_JSON_BYTES} bytes"),
])
def test_a_bad_bundle_json_is_refused_in_one_line(setup, tmp_path: Path, bundle, raw, expected):
    incoming, publisher, watcher = setup
    export_zip(colours(tmp_path, "it-1"), incoming / "shelf.zip", bundle, raw)
    watcher.scan_once(now=0.0)
    [outcome] = watcher.scan_once(now=2.0)
    assert outcome.reason.startswith(expected), outcome.reason
    assert publisher.updates == [] and (incoming / FAILED / "shelf.zip").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colours-it-1", "incoming"]  # nothing written elsewhere


@pytest.mark.timeout(60)
def test_a_file_name_that_is_no_store_name_and_no_bundle_json_is_refused(setup, tmp_path: Path):
    incoming, publisher, watcher = setup
    shutil.copy(models.zip_folder(colours(tmp_path, "it-1"), tmp_path / "c.zip"), incoming / "-shelf.zip")
    watcher.scan_once(now=0.0)
    [outcome] = watcher.scan_once(now=2.0)
    assert outcome.reason.startswith("file name '-shelf': use 1 to 64 letters") and publisher.updates == []


@pytest.mark.timeout(60)
def test_a_zip_over_the_cap_is_refused_without_being_read(tmp_path: Path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "big.zip").write_bytes(b"\0" * 2_000_000)
    publisher = Publisher(tmp_path / "models")
    watcher = IncomingWatcher(incoming, publisher, max_bytes=1 << 20)
    [outcome] = watcher.scan_once(now=0.0)
    assert outcome.reason == "larger than the 1 MB cap" and (incoming / FAILED / "big.zip").is_file()


def test_settings_name_the_folder_and_its_poll(tmp_path: Path):
    assert IncomingWatcher.from_config(ModelsConfig(), print) is None
    watcher = IncomingWatcher.from_config(ModelsConfig(incoming=tmp_path, incoming_poll_s=0.5), print)
    assert watcher is not None and watcher.folder == tmp_path and watcher.poll_s == 0.5
    with pytest.raises(ValueError, match="incoming_poll_s"):
        ModelsConfig(incoming_poll_s=0)
    with pytest.raises(ValueError, match="incomng"):
        ModelsConfig.model_validate({"incomng": str(tmp_path)})


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^models.incoming .*file/incoming: Not a directory$"):
        IncomingWatcher(tmp_path / "file" / "incoming", print).start()


@pytest.mark.timeout(60)
def test_the_thread_publishes_what_is_dropped_and_a_crash_mid_publish_is_taken_again(tmp_path: Path):
    incoming = tmp_path / "incoming"
    (incoming / TAKING).mkdir(parents=True)
    zip_path = models.zip_folder(colours(tmp_path, "it-1"), tmp_path / "c.zip")
    shutil.copy(zip_path, incoming / TAKING / "left.zip")  # what a killed publish left
    publisher = Publisher(tmp_path / "models")
    watcher = IncomingWatcher(incoming, publisher, poll_s=0.05).start()
    try:
        assert wait_for(lambda: publisher.store.names() == ["left"], timeout=20)
        shutil.copy(zip_path, incoming / "dropped.zip")
        assert wait_for(lambda: "dropped" in publisher.store.names(), timeout=20)
        assert wait_for(lambda: visible(incoming) == [], timeout=5)
    finally:
        watcher.stop(timeout=5)
    assert watcher.published == 2 and watcher.refused == 0


@pytest.mark.timeout(60)
def test_a_refused_zip_that_cannot_be_moved_is_left_alone_until_replaced(setup, tmp_path: Path):
    incoming, publisher, watcher = setup
    (incoming / FAILED).write_text("a file where the folder should be")
    export_zip(colours(tmp_path, "it-1"), incoming / "shelf.zip", {"name": "../../etc"})
    watcher.scan_once(now=0.0)
    [outcome] = watcher.scan_once(now=2.0)
    assert outcome.reason.startswith("bundle.json name '../../etc'") and (incoming / "shelf.zip").is_file()
    assert watcher.scan_once(now=4.0) == watcher.scan_once(now=8.0) == []  # not tried again
    export_zip(colours(tmp_path, "it-2"), incoming / "shelf.zip", {"name": "shelf"})  # replaced
    watcher.scan_once(now=10.0)
    assert watcher.scan_once(now=12.0) == [Outcome("shelf.zip", "shelf")]
    assert watcher.refused == 1 and watcher.published == 1 and len(publisher.updates) == 1
