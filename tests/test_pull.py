"""Pulling model updates from a URL: a real loopback server (tests/update_server.py) serving a
description and a real export zip, a publisher built from a real ModelStore, cut links,
resumes, hostile descriptions and kill -9 in the middle of a download."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge_runtime.errors import ConfigError, PullError
from edge_runtime.publish import pull
from edge_runtime.publish.config import ModelsConfig, SourceConfig
from edge_runtime.publish.description import MB, parse_description
from edge_runtime.publish.download import Downloader
from edge_runtime.publish.pull import Puller
from edge_runtime.publish.store import ModelStore
from edge_runtime.publish.update import Update
from tests import models
from tests.conftest import wait_for
from tests.update_server import UpdateServer

REPO = Path(__file__).resolve().parent.parent


def export_zip(tmp_path: Path, iteration: str) -> bytes:
    folder = models.write_export(tmp_path / f"export-{iteration}", models.color_classifier(), models.COLOR_TAGS,
                                 metadata=models.modern_metadata())
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest["IterationId"] = iteration
    (folder / "cvexport.manifest").write_text(json.dumps(manifest))
    return models.zip_folder(folder, tmp_path / f"{iteration}.zip").read_bytes()


class Store:
    """The publisher under test: a real ModelStore, and a record of each Update it got."""

    def __init__(self, root: Path) -> None:
        self.root, self.updates, self.signatures = root, [], []

    def __call__(self, update: Update) -> object:
        assert update.path.is_file()  # complete, on the local disk
        self.updates.append(update)
        if update.signature is not None:
            self.signatures.append(update.signature.read_bytes())
        return ModelStore.open(self.root).publish(update.path, update.name, update.project)

    def active(self, name: str = "shelf") -> str | None:
        store = ModelStore.open(self.root)
        return store.describe(name).iteration if name in store.names() else None


@pytest.fixture()
def server(tmp_path):
    srv = UpdateServer(export_zip(tmp_path, "it-new"), version="2024-06-01")
    yield srv
    srv.close()


@pytest.fixture()
def store(tmp_path):
    return Store(tmp_path / "models")


def puller(store: Store, server: UpdateServer, disk_free=None, timeout_s: float = 10, **source) -> Puller:
    downloader = Downloader(store.root, store, max_bytes=512 * MB,
                            **({"disk_free": disk_free} if disk_free else {}))
    return Puller([SourceConfig(url=server.url, timeout_s=timeout_s, **source)], downloader)


def poll(p: Puller) -> str:
    return p.poll_once(p.sources[0])


def downloads_folder(store: Store) -> list[str]:
    return sorted(p.name for p in (store.root / ".downloads").iterdir())


def test_a_first_poll_publishes_and_a_second_downloads_nothing(server, store):
    p = puller(store, server)
    assert poll(p) == "published"
    assert store.active() == "it-new"
    update = store.updates[0]
    assert (update.name, update.source, update.release, update.origin) == ("shelf", "pull", "2024-06-01", server.url)
    assert downloads_folder(store) == ["state.json"]  # the download is gone once published
    assert poll(p) == "not-modified"  # the ETag
    assert server.seen[-1].headers["If-None-Match"].startswith('"') and server.seen[-1].status == 304
    server.behaviour.etag = False
    assert poll(p) == "unchanged"  # no ETag: the same sha256 is not downloaded again
    assert len(server.downloads()) == 1 and len(store.updates) == 1
    assert all(s.headers.get("Accept-Encoding") == "identity" for s in server.seen)


def test_a_new_version_is_published_and_the_source_name_and_project_win(server, store, tmp_path):
    p = puller(store, server, name="door", project="p-7")
    poll(p)
    assert store.updates[-1].name == "door" and store.updates[-1].project == "p-7"
    newer = export_zip(tmp_path, "it-newer")
    server.export = newer
    server.info.update(sha256=hashlib.sha256(newer).hexdigest(), size=len(newer), version="2")
    assert poll(p) == "published"
    assert store.active("door") == "it-newer" and ModelStore.open(store.root).describe("door").project == "p-7"


@pytest.mark.timeout(60)
def test_a_link_cut_half_way_resumes_with_range_and_verifies(server, store):
    size = len(server.export)
    server.behaviour.cut_after = size // 2
    p = puller(store, server)
    with pytest.raises(PullError, match="resum"):
        poll(p)
    assert store.active() is None and not store.updates  # nothing published from half a file
    part = [n for n in downloads_folder(store) if n.endswith(".part")]
    assert len(part) == 1 and (store.root / ".downloads" / part[0]).stat().st_size == size // 2
    assert poll(p) == "published"
    first, second = server.downloads()
    assert "Range" not in first.headers and second.headers["Range"] == f"bytes={size // 2}-"
    assert second.status == 206 and second.sent == size - size // 2 < size
    assert store.active() == "it-new"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("answer", ["ignores Range", (416, "bytes */99"), (206, "bytes 0-10/99")])
def test_a_server_that_will_not_resume_starts_again_from_zero_and_is_still_right(server, store, answer):
    server.behaviour.cut_after = len(server.export) // 3
    p = puller(store, server)
    with pytest.raises(PullError):
        poll(p)
    if answer == "ignores Range":
        server.behaviour.ignore_range = True  # a 200 and the whole file
    else:
        server.behaviour.range_answer = answer  # then asked again without Range
    assert poll(p) == "published"
    last = server.downloads()[-1]
    assert last.status == 200 and last.sent == len(server.export)
    assert ("Range" in last.headers) == (answer == "ignores Range")
    assert store.active() == "it-new"


def test_a_hash_mismatch_is_refused_nothing_published_and_not_retried_within_the_interval(server, store, tmp_path,
                                                                                          caplog):
    export_zip(tmp_path, "it-old")
    ModelStore.open(store.root).publish(tmp_path / "export-it-old", "shelf")
    old = store.active()
    server.info["sha256"] = "0" * 64
    p = puller(store, server)
    with pytest.raises(PullError, match="SHA-256 .* is not the description's 0000000000000000") as exc:
        poll(p)
    assert "\n" not in str(exc.value)
    assert store.active() == old and not store.updates
    assert downloads_folder(store) == ["state.json"]  # the bad download was removed
    with pytest.raises(PullError, match="not tried again"):
        poll(p)
    assert len(server.downloads()) == 1


def test_a_server_sending_more_than_size_is_refused(server, store):
    server.behaviour.extra = b"x" * 1000
    p = puller(store, server)
    with pytest.raises(PullError, match="sent more than the"):
        poll(p)
    assert not store.updates and downloads_folder(store) == ["state.json"]


@pytest.mark.timeout(30)
def test_a_server_that_drips_is_cut_at_the_deadline_in_one_line(server, store):
    server.behaviour.drip_s = 0.05  # the whole file would take minutes
    p = puller(store, server, timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(PullError, match=r"no complete answer within 1 s") as exc:
        poll(p)
    assert time.monotonic() - start < 4 and "\n" not in str(exc.value)
    assert not store.updates


def test_a_signature_over_1_mb_is_refused_and_nothing_published(tmp_path, store):
    srv = UpdateServer(export_zip(tmp_path, "it-signed"), signature=b"x" * (MB + 1))
    try:
        with pytest.raises(PullError, match="a signature must be 1 byte to 1 MB"):
            poll(puller(store, srv))
    finally:
        srv.close()
    assert not store.updates


def test_a_full_disk_is_refused_before_any_download(server, store):
    p = puller(store, server, disk_free=lambda path: 10 * MB)
    with pytest.raises(PullError, match="MB free on the disk"):
        poll(p)
    assert server.downloads() == [] and not store.updates


HOSTILE = {
    "too large": (b'{"pad": "' + b"x" * 70_000 + b'"}', "larger than 64 KB"),
    "NaN size": (b'{"name": "a", "version": "1", "sha256": "' + b"a" * 64 + b'", "size": NaN, "url": "m.zip"}',
                 "not JSON"),
    "infinite size": (b'{"name": "a", "version": "1", "sha256": "' + b"a" * 64 + b'", "size": Infinity, '
                      b'"url": "m.zip"}', "not JSON"),
    "negative size": ({"size": -5}, "size"),
    "float size": ({"size": 1.5}, "size"),
    "string size": ({"size": "12"}, "size"),
    "boolean size": ({"size": True}, "size"),
    "huge size": ({"size": 10**30}, "over the 512 MB limit"),
    "name escaping": ({"name": "../x"}, "name"),
    "bad sha256": ({"sha256": "abc"}, "64 hex digits"),
    "ftp url": ({"url": "ftp://127.0.0.1/m.zip"}, "not an absolute http"),
    "ftp signature": ({"signatureUrl": "ftp://127.0.0.1/m.sig"}, "signatureUrl"),
    "control characters": ({"url": "m.zip\r\nX: y"}, "not an absolute http"),
    "not an object": (b"[1, 2]", "valid dictionary"),
    "deeply nested": (b"[" * 50_000 + b"]" * 50_000, "larger than 64 KB"),
    "nested within the cap": (b"[" * 30_000 + b"]" * 30_000, "not JSON|valid dictionary"),
    "not UTF-8": (b'{"name": "\xff"}', "not JSON"),
    "missing hash": ({"sha256": None}, "sha256"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_descriptions_are_refused_in_one_line_and_nothing_is_downloaded(server, store, case):
    body, message = HOSTILE[case]
    if isinstance(body, dict):
        info = {**server.info, **body}
        body = json.dumps({k: v for k, v in info.items() if v is not None}).encode()
    server.behaviour.description = body
    with pytest.raises(PullError, match=message) as exc:
        poll(puller(store, server))
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 400
    assert server.downloads() == [] and not store.updates


def test_redirects_are_followed_three_times_at_most_and_only_to_http(server, store):
    server.behaviour.redirect = {"/model.json": "/model.json"}
    with pytest.raises(PullError, match="more than 3 redirects"):
        poll(puller(store, server))
    server.behaviour.redirect = {"/model.json": "ftp://127.0.0.1/model.json"}
    with pytest.raises(PullError, match="not http or https"):
        poll(puller(store, server))
    server.behaviour.redirect = {"/model.json": "/1.json", "/1.json": "/2.json", "/2.json": "/3.json"}
    assert poll(puller(store, server)) == "published"  # three are fine


def test_a_relative_url_is_taken_from_the_description_after_redirects(server):
    desc = parse_description(json.dumps({**server.info, "url": "../m/x.zip"}).encode(), "http://h:1/a/b/d.json",
                             MB * 512, "here")
    assert desc.url == "http://h:1/a/m/x.zip"
    with pytest.raises(PullError, match="not an absolute"):
        parse_description(json.dumps(server.info).encode(), None, MB, "twin")  # a twin has no base


def test_unknown_keys_are_ignored(server, store):
    server.info["changelog"] = "better at bottles"
    assert poll(puller(store, server)) == "published"


def test_the_headers_file_is_sent_to_its_own_origin_only_and_never_shown(server, store, tmp_path, caplog):
    secret = tmp_path / "headers"
    secret.write_text("Authorization: Bearer s3cr3t-token\n# a comment\n\nX-Fleet: kiosk\n")
    secret.chmod(0o600)
    caplog.set_level(logging.DEBUG)
    assert poll(puller(store, server, headers_file=secret)) == "published"
    assert all(s.headers["Authorization"] == "Bearer s3cr3t-token" for s in server.seen)
    other = UpdateServer(server.export, signature=b"a signature")  # the model on another origin (a CDN, say)
    try:
        server.info.update(url=f"{other.base}/model.zip", signatureUrl=f"{other.base}/model.zip.sig")
        elsewhere = Store(tmp_path / "models-2")
        assert poll(puller(elsewhere, server, headers_file=secret)) == "published"
        assert [s.path for s in other.seen] == ["/model.zip", "/model.zip.sig"]
        assert not any("Authorization" in s.headers for s in other.seen)
        assert elsewhere.signatures == [b"a signature"]
    finally:
        other.close()
    assert "s3cr3t" not in caplog.text
    secret.write_text("Authorization Bearer s3cr3t-token\n")
    with pytest.raises(ConfigError, match="line 1 is not 'Header: value'") as exc:
        models_config = ModelsConfig(path=store.root, sources=[SourceConfig(url=server.url, headers_file=secret)])
        Puller.from_config(models_config, Downloader.from_config(models_config, store))
    assert "s3cr3t" not in str(exc.value)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        pull.read_headers(fifo)


@pytest.mark.parametrize("setting", [{"url": "ftp://h/x.json"}, {"url": "file:///etc/passwd"}, {"url": "http://"},
                                     {"url": "http://h/x", "interval_s": 5}, {"url": "http://h/x", "name": "../x"},
                                     {"url": "http://h/x", "typo": 1}])
def test_source_settings_are_checked(setting):
    with pytest.raises(ValueError):
        SourceConfig(**setting)


def test_sources_are_read_from_the_config_file_and_a_typo_fails_loudly(tmp_path):
    from edge_runtime.config import load_settings

    path = tmp_path / "config.yaml"
    path.write_text("models:\n  max_download_mb: 64\n  sources:\n    - url: https://h/m.json\n      name: shelf\n")
    models_config = load_settings(path, env={}).models
    assert models_config.max_download_mb == 64 and models_config.sources[0].interval_s == 300
    path.write_text("models:\n  sources:\n    - url: https://h/m.json\n      intervl_s: 60\n")
    with pytest.raises(ConfigError, match="intervl_s"):
        load_settings(path, env={})


def test_a_symlinked_part_is_not_followed(server, store, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    folder = store.root / ".downloads"
    folder.mkdir(parents=True)
    stem = f"shelf-{server.info['sha256'][:16]}"
    (folder / f"{stem}.part").symlink_to(victim)
    assert poll(puller(store, server)) == "published"
    assert victim.read_bytes() == b"keep me"


def test_a_damaged_state_file_costs_one_download_not_the_service(server, store):
    folder = store.root / ".downloads"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{not json")
    assert poll(puller(store, server)) == "published"


def test_recover_removes_what_no_description_names(store, tmp_path):
    folder = store.root / ".downloads"
    folder.mkdir(parents=True)
    for name in ("stray-0123456789abcdef.part", "old.zip", ".state.json.1.tmp"):
        (folder / name).write_bytes(b"x")
    (folder / "dir").mkdir()
    Downloader(store.root, store, MB).recover()
    assert downloads_folder(store) == []


def test_the_loop_polls_each_source_and_stops(server, store):
    p = puller(store, server)
    p.start()
    try:
        assert wait_for(lambda: store.active() == "it-new", timeout=20)
    finally:
        p.stop(5)
    assert not p._thread.is_alive()


@pytest.mark.timeout(60)
def test_stop_cuts_a_download_in_flight_and_keeps_its_bytes(server, store):
    server.behaviour.stall_after = len(server.export) // 2
    p = puller(store, server, timeout_s=60)
    p.start()
    folder = store.root / ".downloads"
    assert wait_for(lambda: any(f.stat().st_size for f in folder.glob("*.part")), timeout=20)
    start = time.monotonic()
    p.stop(10)
    assert time.monotonic() - start < 5 and not p._thread.is_alive()
    assert [f.stat().st_size for f in folder.glob("*.part")] == [len(server.export) // 2] and not store.updates


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edge_runtime.publish.config import SourceConfig
    from edge_runtime.publish.description import MB
    from edge_runtime.publish.download import Downloader
    from edge_runtime.publish.pull import Puller
    from edge_runtime.publish.store import ModelStore

    root, url, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    def publish(update):
        if mode == "hang-in-publish":
            print("publishing", flush=True)
            time.sleep(120)
        return ModelStore.open(root).publish(update.path, update.name, update.project)
    downloader = Downloader(root, publish, 512 * MB)
    if mode == "recover":
        print("recovered", downloader.recover(), flush=True)
    source = SourceConfig(url=url, timeout_s=60)
    print(Puller([source], downloader).poll_once(source), flush=True)
""")


def child(root: Path, url: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), url, mode], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill_9_mid_download_keeps_the_old_model_and_the_next_start_finishes_it(server, store, tmp_path):
    export_zip(tmp_path, "it-old")
    ModelStore.open(store.root).publish(tmp_path / "export-it-old", "shelf")  # the old model, served
    old = ModelStore.open(store.root).describe("shelf")
    size = len(server.export)
    server.behaviour.stall_after = size // 2
    proc = child(store.root, server.url, "download")
    folder = store.root / ".downloads"
    assert wait_for(lambda: any(p.name.endswith(".part") and p.stat().st_size == size // 2
                                for p in folder.glob("*.part")), timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    after = ModelStore.open(store.root).describe("shelf")
    assert (after.active, after.versions) == (old.active, old.versions)  # still serving the old model
    server.behaviour.stall_after = None
    proc = child(store.root, server.url, "recover")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "published"
    last = server.downloads()[-1]
    assert last.headers["Range"] == f"bytes={size // 2}-" and last.sent == size - size // 2
    assert ModelStore.open(store.root).describe("shelf").active == old.active + 1
    assert [p.name for p in folder.iterdir()] == ["state.json"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill_9_before_publishing_a_verified_download_is_published_at_the_next_start(server, store):
    proc = child(store.root, server.url, "hang-in-publish")
    assert proc.stdout is not None and proc.stdout.readline().strip() == "publishing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert store.active() is None
    served = len(server.seen)
    server.behaviour.etag = False
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        from pathlib import Path
        from edge_runtime.publish.description import MB
        from edge_runtime.publish.download import Downloader
        from edge_runtime.publish.store import ModelStore
        root = Path(sys.argv[1])
        d = Downloader(root, lambda u: ModelStore.open(root).publish(u.path, u.name, u.project), 512 * MB)
        print(d.recover())
    """), str(store.root)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "source:" in out.stdout and len(server.seen) == served  # from the disk, no request
    assert store.active() == "it-new"
    assert poll(puller(store, server)) == "unchanged"
