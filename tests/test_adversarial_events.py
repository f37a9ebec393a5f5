"""The event store against damage and hostile contents, for real: SQLite files with pages
overwritten, rows another program wrote, ids and tags that climb out of --out, a file-size
limit under `events export`, a full tmpfs under the recorder, an event deleted while it is
open, and `?camera=` on /api/events under a real server on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from edge_runtime.events.config import EventsConfig, RuleConfig
from edge_runtime.events.recorder import Recorder
from edge_runtime.events.store import DB_NAME, Budget, EventRecord, EventStore, iso, new_id
from edge_runtime.model.predictor import Predictor
from tests.conftest import wait_for, write_video
from tests.events_util import AUTH, GREY, RED, TOKEN, Feeder, colour_frames, colour_video, events_app
from tests.server_util import make_app, running

T0 = 1_790_000_000.0
EVENTS = 300
JPEG = cv2.imencode(".jpg", np.full((48, 64, 3), (0, 0, 255), np.uint8))[1].tobytes()


def stored(start: float, **fields) -> EventRecord:
    values = dict(id=new_id(start), rule="r", camera="door", tag="red", start=start, end=start + 0.5,
                  last_at=start + 0.5, peak=0.9, peak_at=start, frames=3)
    values.update(fields)
    return EventRecord(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of EVENTS ended events with a snapshot each, closed (so the file holds every page)."""
    folder = tmp_path_factory.mktemp("filled")
    store = EventStore.open(folder, Budget(min_free_bytes=0))
    for i in range(EVENTS):
        store.end_event(stored(T0 + i, tag="green" if i % 2 else "red"), {"snapshot": JPEG})
    store.close()
    return folder


@pytest.fixture()
def data(filled, tmp_path) -> Path:
    return Path(shutil.copytree(filled, tmp_path / "data"))


def cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", "events", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    err = done.stderr.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    return err


def pages(db_path: Path, name: str) -> tuple[int, list[tuple[int, int]]]:
    """(root page, [(page, cells)] of its children): the b-tree of a table or index read from
    the file itself, for damage with a known cost."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    raw = db_path.read_bytes()

    def page(n: int) -> bytes:
        return raw[(n - 1) * size:n * size]

    top = page(root)
    if top[0] in (10, 13):  # the root is a leaf: one page holds them all
        return root, []
    pointers = [int.from_bytes(top[12 + 2 * i:14 + 2 * i], "big") for i in range(int.from_bytes(top[3:5], "big"))]
    children = [int.from_bytes(top[p:p + 4], "big") for p in pointers] + [int.from_bytes(top[8:12], "big")]
    return root, [(c, int.from_bytes(page(c)[3:5], "big")) for c in children]


def damage(db_path: Path, page: int, fill: bytes | None = None) -> None:
    with open(db_path, "r+b") as f:
        f.seek((page - 1) * 4096)
        f.write(fill if fill is not None else random.Random(page).randbytes(4096))


# ---- 1. a damaged store: one line, and what can be read is read --------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["second leaf", "last leaf", "zeroed leaf", "table root", "id index",
                                   "both indexes and a leaf", "truncated file"])
def test_a_damaged_page_loses_its_rows_only_and_says_how_many(data, tmp_path, which):
    db = data / DB_NAME
    root, leaves = pages(db, "events")
    assert len(leaves) > 4
    indexes = [pages(db, name)[0] for name in ("sqlite_autoindex_events_1", "events_start")]
    page, lost = {"second leaf": leaves[1], "last leaf": leaves[-1], "zeroed leaf": leaves[2],
                  "table root": (root, EVENTS), "id index": (indexes[0], 0),
                  "both indexes and a leaf": leaves[3], "truncated file": (0, 0)}[which]
    if which == "truncated file":  # cut before the last leaf: the rows on the pages after the cut are gone
        cut = leaves[-1][0] - 1
        os.truncate(db, cut * 4096)
        lost = sum(cells for leaf, cells in leaves if leaf > cut)
    else:
        damage(db, page, b"\0" * 4096 if which == "zeroed leaf" else None)
    if which == "both indexes and a leaf":  # no index left to list the rowids: the count is an upper bound
        for index in indexes:
            damage(db, index)

    listed = cli("list", "--data", str(data), "--json")
    err = one_line(listed)
    events = json.loads(listed.stdout)
    assert len(events) == EVENTS - lost and [e["id"] for e in events] == sorted(e["id"] for e in events)
    if lost:
        bound = "up to " if which == "both indexes and a leaf" else "(up to )?" if which == "truncated file" else ""
        assert listed.returncode == 1 and re.search(f"is damaged: {bound}{lost} events rows could not be read", err)
    else:
        assert listed.returncode == 0 and err == ""  # a damaged index costs nothing
    table = cli("list", "--data", str(data))
    assert f"\n{EVENTS - lost} events" in table.stdout
    out = tmp_path / "out"
    exported = cli("export", "--data", str(data), "--out", str(out))
    one_line(exported)
    assert f"exported {EVENTS - lost} events" in exported.stdout
    assert len((out / "events.jsonl").read_text().splitlines()) == EVENTS - lost
    assert len(list((out / "media").glob("*.jpg"))) == EVENTS - lost


@pytest.mark.timeout(120)
def test_rows_no_event_can_have_are_left_out_and_counted(data, tmp_path):
    with contextlib.closing(sqlite3.connect(data / DB_NAME)) as db, db:
        ids = [r[0] for r in db.execute("SELECT id FROM events ORDER BY id LIMIT 6")]
        for column, value, event_id in (("box", "{not json", ids[0]), ("start", "yesterday", ids[1]),
                                        ("start", 1e20, ids[2]), ("tag", "re\0d", ids[3]),
                                        ("frames", "many", ids[4]), ("id", b"\xff\xfe", ids[5])):
            db.execute(f"UPDATE events SET {column} = ? WHERE id = ?", (value, event_id))
    for args in (["list"], ["list", "--json"], ["export", "--out", str(tmp_path / "j")],
                 ["export", "--out", str(tmp_path / "c"), "--format", "csv"],
                 ["export", "--out", str(tmp_path / "d"), "--format", "dataset"]):
        done = cli(*args, "--data", str(data))
        assert done.returncode == 1
        assert "3 events rows hold values no record can have" in one_line(done)
    listed = json.loads(cli("list", "--data", str(data), "--json").stdout)
    assert len(listed) == EVENTS - 3
    by_id = {e["id"]: e for e in listed}
    assert by_id[ids[0]]["box"] is None and by_id[ids[3]]["tag"] == "re\0d"
    assert "re\ufffdd" in cli("list", "--data", str(data)).stdout  # a NUL is not sent to the terminal
    assert (tmp_path / "d" / "re_d").is_dir() and len(list((tmp_path / "d").rglob("*.jpg"))) == EVENTS - 3


@pytest.mark.timeout(120)
def test_a_missing_table_or_another_programs_store_is_one_line(data, tmp_path):
    with contextlib.closing(sqlite3.connect(data / DB_NAME)) as db:
        db.execute("DROP TABLE samples")
    done = cli("export", "--data", str(data), "--out", str(tmp_path / "out"), "--samples")
    assert done.returncode == 1 and "the samples table cannot be read (no such table: samples)" in one_line(done)
    assert f"exported {EVENTS} events and 0 samples" in done.stdout

    other = tmp_path / "other"
    other.mkdir()
    with contextlib.closing(sqlite3.connect(other / DB_NAME)) as db, db:
        db.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, title TEXT, happened TEXT)")
        db.execute("INSERT INTO events(title, happened) VALUES ('birthday', 'yesterday')")
    done = cli("list", "--data", str(other))
    assert done.returncode == 1 and "not an edge-runtime event store (no such column" in one_line(done)
    (other / DB_NAME).write_bytes(b"SQLite format 3\0" + os.urandom(4000))
    assert cli("list", "--data", str(other)).returncode == 1 and one_line(cli("list", "--data", str(other)))

    with contextlib.closing(sqlite3.connect(data / DB_NAME)) as db:
        db.execute("DROP TABLE events")
    done = cli("list", "--data", str(data))
    assert done.returncode == 1 and "no such table: events" in one_line(done)


@pytest.mark.parametrize("flag, text", [("--since", "yesterday"), ("--until", "1e20"), ("--until", "nan"),
                                        ("--since", "2026-13-01"), ("--until", "9" * 400)])
def test_a_bad_time_is_one_line_naming_its_flag(data, flag, text):
    done = cli("list", "--data", str(data), flag, text)
    err = one_line(done)
    other = "--until" if flag == "--since" else "--since"
    assert done.returncode == 1 and err.startswith(f"edge-runtime: {flag}: not a time") and other not in err


# ---- 2. names from the store stay inside --out ------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "dataset"])
def test_ids_and_tags_from_the_store_cannot_leave_out(tmp_path, fmt):
    data = tmp_path / "data"
    store = EventStore.open(data, Budget(min_free_bytes=0))
    hostile = [("../../x", "red"), ("/abs/id", "red"), ("ok-id", "../../../escape"), ("dots", ".."),
               ("a" * 600, "b" * 600), ("nul\0id", "nul\0tag"), ("..", "/")]
    for i in range(len(hostile)):
        store.end_event(stored(T0 + i), {"snapshot": JPEG, "thumbnail": JPEG})
    store.add_sample("random", "door", T0, JPEG, {"predictions": [{"tagName": "../../s", "probability": 0.9}]})
    store.close()
    with contextlib.closing(sqlite3.connect(data / DB_NAME)) as db, db:  # as another program could write them
        for (event_id,), (new_id_, tag) in zip(db.execute("SELECT id FROM events ORDER BY id").fetchall(), hostile,
                                               strict=True):
            db.execute("UPDATE events SET id = ?, tag = ? WHERE id = ?", (new_id_, tag, event_id))
        db.execute("UPDATE samples SET id = '../../../sample'")
    out = tmp_path / "deep" / "er" / "out"
    done = cli("export", "--data", str(data), "--out", str(out), "--format", fmt, "--samples")
    assert done.returncode == 0, done.stderr
    assert f"exported {len(hostile)} events and 1 samples" in done.stdout
    written = {p for p in tmp_path.rglob("*") if p.is_file() and data not in p.parents}
    assert written and all(out in p.parents for p in written), written
    pictures = len(hostile) * (1 if fmt == "dataset" else 2) + 1  # the thumbnails too, but in datasets
    assert sum(p.suffix == ".jpg" for p in written) == pictures
    assert all(len(p.name.encode()) <= 255 and "\0" not in str(p) for p in written)
    if fmt == "jsonl":
        files = [json.loads(line)["files"]["snapshot"] for line in (out / "events.jsonl").read_text().splitlines()]
        assert len(set(files)) == len(hostile) and all((out / f).is_file() for f in files)


@pytest.mark.timeout(60)
def test_a_link_in_out_that_leads_elsewhere_is_refused(data, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "red").symlink_to(elsewhere)
    done = cli("export", "--data", str(data), "--out", str(out), "--format", "dataset")
    assert done.returncode == 1 and "leads outside" in one_line(done)
    assert list(elsewhere.iterdir()) == []
    (out / "events.jsonl").symlink_to(elsewhere / "stolen.jsonl")
    done = cli("export", "--data", str(data), "--out", str(out))
    assert done.returncode == 1 and "leads outside" in one_line(done)
    assert list(elsewhere.iterdir()) == []


# ---- 3. a full disk under export ---------------------------------------------------------------------------


def limited(size: int) -> Callable[[], None]:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", ["jsonl", "dataset"])
def test_export_onto_a_full_disk_fails_in_one_line_and_leaves_no_empty_pictures(tmp_path, fmt):
    data = tmp_path / "data"
    store = EventStore.open(data, Budget(min_free_bytes=0))
    big = np.random.default_rng(5).integers(0, 256, (240, 320, 3), np.uint8)  # noise: a JPEG of ~100 kB
    picture = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    assert len(picture) > 64 << 10
    for i in range(55):
        store.end_event(stored(T0 + i), {"snapshot": picture})
    store.close()
    out = tmp_path / "out"
    done = cli("export", "--data", str(data), "--out", str(out), "--format", fmt, preexec_fn=limited(64 << 10))
    err = one_line(done)
    assert done.returncode == 1 and "exported" not in done.stdout
    assert f"export to {out} stopped after 0 events" in err and "File too large" in err
    assert [p for p in out.rglob("*.jpg")] == []  # no empty or half pictures left behind


# ---- 4. an event open while the disk fills ends when space returns ----------------------------------------


@pytest.fixture(scope="module")
def colours(exports) -> Predictor:
    return Predictor.load(exports["modern"])


def fill(disk: Path) -> Path:
    ballast = disk / "ballast"
    with contextlib.suppress(OSError), open(ballast, "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    return ballast


@pytest.mark.timeout(120)
def test_an_event_open_when_the_disk_fills_ends_once_space_returns(colours, tiny_disk):
    now = [0.0]
    published: list[tuple[str, dict]] = []  # type: ignore[type-arg]
    cfg = EventsConfig(rules=[RuleConfig(name="all", tags=["red"], min_frames=1, end_after_s=0.2)],
                       store={"path": tiny_disk / "data", "min_free_mb": 0})
    store = EventStore.open(tiny_disk / "data", Budget(min_free_bytes=0))
    recorder = Recorder(cfg, store, publish=lambda k, c, d: published.append((k, json.loads(d))),
                        clock=lambda: now[0])
    feeder = Feeder(colours)
    for r in colour_frames(feeder, "rrr", size=(320, 240)):
        recorder.process(r)
    (opened,) = store.events()
    assert opened.end is None and opened.snapshot
    ballast = fill(tiny_disk)
    for r in colour_frames(feeder, "....", size=(320, 240)):
        recorder.process(r)
    assert [k for k, _ in published] == ["event-start", "event-end"]  # the end is announced when it happens
    refused = store.get(opened.id)
    assert refused is not None and refused.end is None and store.stats.disk_full  # the disk refused the end

    ballast.unlink()
    now[0] += 5.0  # a few seconds later: the recorder tries again now and then
    recorder.tick()
    ended = store.get(opened.id)
    assert ended is not None and ended.end is not None and iso(ended.end) == published[1][1]["end"]
    assert [(i.kind, i.event_id) for i in store.outbox_after(0)] == [("event-start", opened.id),
                                                                     ("event-end", opened.id)]
    assert ended.snapshot and store.media_path(ended.snapshot).is_file()
    assert [k for k, _ in published] == ["event-start", "event-end"]  # not announced twice
    recorder.close()
    assert len(store.outbox_after(0)) == 2
    store.close()


# ---- 5. an event deleted while it is open stays deleted ---------------------------------------------------


@pytest.mark.timeout(120)
def test_an_event_deleted_while_open_stays_deleted(colours, tmp_path):
    published: list[str] = []
    cfg = EventsConfig(rules=[RuleConfig(name="all", tags=["red"], min_frames=1, end_after_s=0.2)], keep_frames=True,
                       store={"path": tmp_path, "min_free_mb": 0}, clip={"enabled": True, "pre_s": 0.2, "post_s": 0.2})
    store = EventStore.open(tmp_path, Budget(min_free_bytes=0))
    recorder = Recorder(cfg, store, publish=lambda kind, camera, body: published.append(kind))
    feeder = Feeder(colours)
    for r in colour_frames(feeder, "rrr"):
        recorder.process(r)
    (opened,) = store.events()
    assert opened.end is None and store.delete(opened.id)  # what DELETE /api/events/{id} does
    for r in colour_frames(feeder, "." * 10):  # it ends, and its clip's last frames arrive
        recorder.process(r)
    recorder.close()
    assert store.stats.ended == 1 and store.events() == [] and store.get(opened.id) is None
    assert [i for i in store.outbox_after(0) if i.event_id == opened.id] == []
    assert [p for p in (tmp_path / "media").rglob("*") if p.is_file()] == []  # no snapshot, frame or clip kept
    assert published == ["event-start"]
    store.close()
    again = EventStore.open(tmp_path)
    assert again.events() == [] and again.outbox_after(0) == []
    again.close()


@pytest.mark.timeout(120)
def test_delete_over_http_while_open_is_final(colours, tmp_path):
    video = colour_video(tmp_path / "red.avi", [(GREY, 10), (RED, 45), (GREY, 60)])
    data = tmp_path / "data"
    with running(events_app(colours, video, data)) as url:
        def open_event() -> str | None:
            events = httpx.get(f"{url}/api/events", headers=AUTH, timeout=5).json()["events"]
            return next((e["id"] for e in events if e["end"] is None), None)

        assert wait_for(lambda: open_event() is not None, timeout=30)
        event_id = open_event()
        assert httpx.delete(f"{url}/api/events/{event_id}", headers=AUTH, timeout=5).status_code == 204
        assert wait_for(lambda: "edge_events_ended_total 1.0" in httpx.get(f"{url}/metrics", headers=AUTH).text,
                        timeout=30)
        assert httpx.get(f"{url}/api/events", headers=AUTH).json()["events"] == []
        assert httpx.get(f"{url}/api/events/{event_id}", headers=AUTH).status_code == 404
    with contextlib.closing(sqlite3.connect(data / DB_NAME)) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox WHERE event_id = ?", (event_id,)).fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    assert [p for p in (data / "media").rglob("*") if p.is_file()] == []


# ---- 6. ?camera= on /api/events: configured, or with stored events; else 404 -------------------------------


@pytest.mark.timeout(120)
def test_an_unknown_camera_is_404_and_a_retired_one_keeps_its_events(colours, tmp_path):
    data = tmp_path / "data"
    store = EventStore.open(data, Budget(min_free_bytes=0))
    store.end_event(stored(T0, camera="attic"), {"snapshot": JPEG})  # a camera since removed from the config
    store.close()
    video = write_video(tmp_path / "grey.avi", frames=30)
    for app in (events_app(colours, video, data),
                make_app(colours, token=TOKEN, cameras=[{"id": "door", "source": str(video)}])):  # type: ignore[no-untyped-call]
        with running(app) as url:
            def get(camera: str) -> httpx.Response:
                return httpx.get(f"{url}/api/events", params={"camera": camera}, headers=AUTH, timeout=10)

            assert get("door").status_code == 200 and get("door").json()["events"] == []
            assert get("").status_code == 200
            missing = get("nowhere")
            assert missing.status_code == 404 and "no camera 'nowhere'" in missing.json()["message"]
            attic = get("attic")
            if app.state.services.store is not None:
                assert attic.status_code == 200 and [e["camera"] for e in attic.json()["events"]] == ["attic"]
            else:
                assert attic.status_code == 404


@pytest.mark.timeout(120)
def test_a_store_damaged_while_serving_is_a_503_in_one_line_and_the_server_goes_on(colours, data, tmp_path):
    """The API has no salvage: a damaged page is one line (503), and the other routes keep working."""
    video = write_video(tmp_path / "grey.avi", frames=30)
    with running(events_app(colours, video, data)) as url:
        assert httpx.get(f"{url}/api/events", headers=AUTH, timeout=10).status_code == 200
        _, leaves = pages(data / DB_NAME, "events")
        damage(data / DB_NAME, leaves[1][0])  # a page of rows, as a failing SD card would leave it
        broken = httpx.get(f"{url}/api/events", params={"limit": 500}, headers=AUTH, timeout=10)
        assert broken.status_code == 503, broken.text
        message = broken.json()["message"]
        assert "event store cannot be read" in message and "\n" not in message and "Traceback" not in message
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        up = httpx.post(f"{url}/image", content=JPEG, headers=AUTH, timeout=30)
        assert up.status_code == 200, up.text
