"""The model store on disk: publish by name, versions, rollback, unpublish, kill -9 at any
instant, hostile names and damaged state. Real exports, real onnxruntime sessions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from edge_runtime.errors import BundleError, ChecksumError, ConfigError, ModelStoreError, UnsafeArchiveError
from edge_runtime.model.predictor import Predictor
from edge_runtime.publish import store as store_module
from edge_runtime.publish.store import ModelStore
from edge_runtime.publish.versions import STAGING_PREFIX
from tests import models
from tests.conftest import zip_export_path


def colours(tmp_path: Path, name: str, iteration: str) -> Path:
    """A colour classifier export with its own iteration id (so versions can be told apart)."""
    folder = models.write_export(tmp_path / name, models.color_classifier(), models.COLOR_TAGS,
                                 metadata=models.modern_metadata())
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest["IterationId"] = iteration
    (folder / "cvexport.manifest").write_text(json.dumps(manifest))
    return folder


def test_publish_makes_a_verified_version_active_and_says_what_it_is(tmp_path):
    store = ModelStore.open(tmp_path / "models")
    first = store.publish(colours(tmp_path, "a", "iteration-1"), "shelf", project="p-1")
    assert (first.name, first.active, first.project, first.previous) == ("shelf", 1, "p-1", None)
    assert first.iteration == "iteration-1" and first.tags == tuple(models.COLOR_TAGS) and len(first.sha1) == 40
    assert Predictor.load(first.path).spec.labels == tuple(models.COLOR_TAGS)  # a real, loadable version
    second = store.publish(zip_export_path(colours(tmp_path, "b", "iteration-2"), tmp_path), "shelf")
    assert (second.active, second.previous, second.project) == (2, 1, "p-1")  # the project is kept
    state = json.loads((tmp_path / "models" / "shelf" / "state.json").read_text())  # readable by hand
    assert state["active"] == 2 and state["previous"] == 1 and [h["reason"] for h in state["history"]] == [
        "publish", "publish"]
    assert [m.name for m in store.models()] == ["shelf"]


def test_rollback_goes_back_one_version_at_a_time_and_says_when_it_cannot(tmp_path):
    store = ModelStore.open(tmp_path / "models")
    for i in (1, 2, 3):
        store.publish(colours(tmp_path, f"e{i}", f"it-{i}"), "shelf")
    assert store.rollback("shelf").iteration == "it-2"
    assert store.rollback("shelf").iteration == "it-1"
    with pytest.raises(ModelStoreError, match="no earlier version"):
        store.rollback("shelf")
    with pytest.raises(ModelStoreError, match="no model published as 'door'"):
        store.rollback("door")


def test_keep_leaves_that_many_versions_and_never_the_active_or_previous(tmp_path):
    store = ModelStore.open(tmp_path / "models", keep=2)
    for i in range(1, 5):
        store.publish(colours(tmp_path, f"e{i}", f"it-{i}"), "shelf")
    folder = tmp_path / "models" / "shelf"
    assert sorted(p.name for p in folder.glob("v*")) == ["v3", "v4"]
    store.rollback("shelf")  # v3 active; v4 is now the spare one
    store.publish(colours(tmp_path, "e5", "it-5"), "shelf")
    assert sorted(p.name for p in folder.glob("v*")) == ["v3", "v5"]  # active v5, previous v3
    with pytest.raises(ConfigError, match="keep"):
        ModelStore.open(tmp_path / "models", keep=1)


@pytest.mark.parametrize("damage", ["sha1", "labels", "not onnx", "zip slip"])
def test_a_bad_export_is_refused_in_one_line_and_the_old_version_stays(tmp_path, damage):
    store = ModelStore.open(tmp_path / "models")
    store.publish(colours(tmp_path, "good", "it-good"), "shelf")
    bad = colours(tmp_path, "bad", "it-bad")
    if damage == "sha1":
        (bad / "model.onnx").write_bytes((bad / "model.onnx").read_bytes() + b"\0")
        expected: type[Exception] = ChecksumError
    elif damage == "labels":
        (bad / "labels.txt").write_text("only-one\n")
        expected = BundleError
    elif damage == "not onnx":
        (bad / "model.onnx").write_bytes(b"not a model")
        manifest = json.loads((bad / "cvexport.manifest").read_text())
        manifest.pop("ModelFileSHA1")
        (bad / "cvexport.manifest").write_text(json.dumps(manifest))
        expected = BundleError
    else:
        bad = tmp_path / "slip.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("../../outside.txt", "x")
        expected = UnsafeArchiveError
    with pytest.raises(expected) as err:
        store.publish(bad, "shelf")
    assert "\n" not in str(err.value)
    assert store.describe("shelf").iteration == "it-good"
    assert not list((tmp_path / "models" / "shelf").glob(f"{STAGING_PREFIX}*"))
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "..", "x" * 65, "sp ace", "nul\0", "é"])
def test_names_that_could_leave_the_store_are_refused(tmp_path, name):
    store = ModelStore.open(tmp_path / "models")
    with pytest.raises(ConfigError, match="use 1 to 64 letters"):
        store.publish(colours(tmp_path, "e", "it"), name)
    with pytest.raises(ConfigError):
        store.publish(colours(tmp_path, "f", "it"), "shelf", project=name or "../p")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".lock"]


def test_a_version_that_edge_export_wrote_into_the_store_is_activated_where_it_is(tmp_path):
    from exporter.package import write_bundle

    root = tmp_path / "models"
    version, _ = write_bundle(root, "shelf", colours(tmp_path, "e", "it-train"), {"source": {"backend": "local"}})
    published = ModelStore.open(root).publish(version, "shelf")
    assert published.active == 1 and published.path == version and sorted(p.name for p in version.parent.glob(
        "v*")) == ["v1"]  # no copy


def test_a_damaged_state_file_is_one_line_and_hides_no_other_model(tmp_path, caplog):
    store = ModelStore.open(tmp_path / "models")
    store.publish(colours(tmp_path, "a", "it-a"), "shelf")
    store.publish(colours(tmp_path, "b", "it-b"), "door")
    for garbage in (b"\x00\xff binary", b"[1, 2]", b'{"schema": 1, "name": "door", "history": [{"version": -1}]}',
                    b'{"schema": 1, "name": "door", "project": "../x", "history": []}'):
        (tmp_path / "models" / "door" / "state.json").write_bytes(garbage)
        with pytest.raises(ModelStoreError, match=r"door/state.json: damaged") as err:
            store.describe("door")
        assert "\n" not in str(err.value)
        assert [m.name for m in store.models()] == ["shelf"]  # the other one is still listed


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from edge_runtime.publish.store import ModelStore
    store = ModelStore.open(Path(sys.argv[1]))
    print("up", flush=True)
    while True:
        for export in sys.argv[2:]:
            store.publish(Path(export), "shelf")
    """)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_9_at_any_instant_leaves_the_old_or_the_new_version_active(tmp_path, monkeypatch):
    root = tmp_path / "models"
    exports = [str(colours(tmp_path, f"e{i}", f"it-{i}")) for i in range(3)]
    ModelStore.open(root).publish(Path(exports[0]), "shelf")
    iterations = {f"it-{i}" for i in range(3)}
    for delay in (0.05, 0.15, 0.3, 0.45, 0.6, 0.8, 1.1, 1.4):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), *exports], stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout is not None and child.stdout.readline() == "up\n"
        time.sleep(delay)  # somewhere in a copy, a verification, a rename or a state write
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        monkeypatch.setattr(store_module, "STALE_STAGING_S", 0.0)  # the killed writer is gone for sure
        store = ModelStore.open(root)
        published = store.describe("shelf")
        assert published.iteration in iterations and Predictor.load(published.path).spec.labels
        assert [p.name for p in (root / "shelf").iterdir() if p.name.startswith(".")] == []
        for version in (root / "shelf").glob("v*"):  # one claimed but never made active is whole too
            assert Predictor.load(version).spec.labels
        monkeypatch.undo()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_the_commands_publish_list_roll_back_and_unpublish(tmp_path):
    root = str(tmp_path / "models")
    done = cli("publish", str(colours(tmp_path, "a", "it-a")), "--name", "shelf", "--project", "p-1", "--models", root)
    assert done.returncode == 0 and "published shelf v1" in done.stdout, done.stderr
    # models.path from the environment, as a config file or a service would set it
    done = cli("publish", str(colours(tmp_path, "b", "it-b")), "--name", "shelf", EDGE_RUNTIME_MODELS__PATH=root)
    assert done.returncode == 0, done.stderr
    listed = json.loads(cli("models", "--json", "--models", root).stdout)
    assert [(m["name"], m["activeVersion"], m["previousVersion"], m["iteration"]) for m in listed] == [
        ("shelf", 2, 1, "it-b")]
    assert "shelf" in cli("models", "--models", root).stdout
    assert cli("rollback", "shelf", "--models", root).returncode == 0
    assert json.loads(cli("models", "--json", "--models", root).stdout)[0]["iteration"] == "it-a"
    for args in (("rollback", "nothing"), ("unpublish", "../etc"), ("publish", "/nonexistent.zip", "--name", "x")):
        done = cli(*args, "--models", root)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert cli("unpublish", "shelf", "--models", root).returncode == 0
    assert json.loads(cli("models", "--json", "--models", root).stdout) == []
    assert sorted(p.name for p in Path(root).iterdir()) == [".lock"]


def test_opening_the_store_never_removes_a_version(tmp_path):
    """A version edge-export wrote beside the active one, or one rolled back from, stays."""
    from exporter.package import write_bundle

    root = tmp_path / "models"
    store = ModelStore.open(root)
    store.publish(colours(tmp_path, "a", "it-1"), "shelf")
    store.publish(colours(tmp_path, "b", "it-2"), "shelf")
    store.rollback("shelf")
    trained, _ = write_bundle(root, "shelf", colours(tmp_path, "c", "it-3"), {"source": {"backend": "local"}})
    (root / "shelf" / "notes").symlink_to(tmp_path / "nowhere")  # a stray entry breaks nothing
    ModelStore.open(root)
    assert sorted(p.name for p in (root / "shelf").glob("v*")) == ["v1", "v2", "v3"]
    assert ModelStore.open(root).publish(trained, "shelf").iteration == "it-3"


def test_a_rollback_to_a_broken_version_changes_nothing(tmp_path):
    store = ModelStore.open(tmp_path / "models")
    store.publish(colours(tmp_path, "a", "it-1"), "shelf")
    store.publish(colours(tmp_path, "b", "it-2"), "shelf")
    (tmp_path / "models" / "shelf" / "v1" / "model.onnx").unlink()
    with pytest.raises(BundleError):
        store.rollback("shelf")
    state = store.state("shelf")
    assert state is not None and (state.active, state.previous) == (2, 1)


def test_a_link_named_like_a_version_is_copied_not_taken_as_one(tmp_path):
    store = ModelStore.open(tmp_path / "models")
    store.publish(colours(tmp_path, "a", "it-1"), "shelf")
    (tmp_path / "v9").symlink_to(tmp_path / "models" / "shelf" / "v1")
    published = store.publish(tmp_path / "v9", "shelf")
    assert published.active == 1 and store.describe("shelf").iteration == "it-1"  # the folder it really is


def test_the_disk_budget_removes_the_oldest_spare_versions_first(tmp_path):
    exports = [colours(tmp_path, f"e{i}", f"it-{i}") for i in range(5)]
    one = sum(p.stat().st_size for p in exports[0].iterdir())
    store = ModelStore.open(tmp_path / "models", keep=10, max_bytes=int(3.5 * one))  # room for three versions
    for export in exports:
        store.publish(export, "shelf")
    assert store.describe("shelf").versions == (3, 4, 5)  # keep alone would have left all five
    assert store.size() <= 3.5 * one
    tight = ModelStore.open(tmp_path / "tight", keep=10, max_bytes=one)  # not even two fit
    for export in exports[:3]:
        tight.publish(export, "shelf")
    assert tight.describe("shelf").versions == (2, 3)  # the active and the previous are never removed
