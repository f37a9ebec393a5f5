"""Signed exports (publish/signing.py, edge-export keygen/sign/train --sign): real keys, the
real demo export, real signatures made by the model-signing package, and hostile ones."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("model_signing")  # the optional `signing` extra; the minimum-versions run has none

from edge_runtime.errors import ConfigError, SignatureError
from edge_runtime.paths import DEMO_MODEL
from edge_runtime.publish import signing
from edge_runtime.publish.config import ModelsConfig
from edge_runtime.publish.signing import (
    MAX_SIGNATURE_BYTES,
    created_of,
    require_signed,
    sign,
    signature_for,
    verify,
)
from edge_runtime.publish.store import ModelStore
from edge_runtime.publish.versions import stage
from exporter.keys import PASSWORD_ENV, SigningKey, generate_keys, key_password
from exporter.package import write_bundle, zip_export
from tests import models


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("other-keys"))


@pytest.fixture(scope="module")
def signed_demo(tmp_path_factory, keys) -> Path:
    """The demo export folder, copied and signed: it carries model.sig inside."""
    folder = tmp_path_factory.mktemp("signed") / "demo"
    shutil.copytree(DEMO_MODEL, folder)
    assert sign(folder, keys[0]) == folder / "model.sig"
    return folder


def staged(export: Path, tmp_path: Path, name: str = "staged") -> Path:
    """What the model store makes of an export before it becomes a version (versions.stage)."""
    folder = tmp_path / name
    folder.mkdir()
    stage(export, folder)
    return folder


def test_a_signed_folder_verifies_as_the_store_stages_it(signed_demo, keys, tmp_path):
    signature = signature_for(signed_demo)
    assert signature == signed_demo / "model.sig" and stat.S_IMODE(signature.stat().st_mode) == 0o644
    body = json.loads(signature.read_text())
    assert body["mediaType"].startswith("application/vnd.dev.sigstore.bundle")  # model-signing's key format
    copy = staged(signed_demo, tmp_path)
    assert (copy / "model.sig").is_file()  # the folder's own signature travels with it, and is not hashed
    verify(copy, signature, keys[1])
    assert require_signed(copy, signature, keys[1]) is True
    assert require_signed(copy, None, None) is False  # no models.public_key: nothing to check


def test_a_zip_is_signed_beside_it_over_the_files_it_unpacks_to(signed_demo, keys, tmp_path):
    export = zip_export(signed_demo, tmp_path / "demo.zip")
    assert signature_for(export) is None
    signature = sign(export, keys[0])
    assert signature == tmp_path / "demo.zip.sig" and signature_for(export) == signature
    unpacked = staged(export, tmp_path)
    verify(unpacked, signature, keys[1])
    # the zip's signature and the folder's are over the same files: each verifies the other's copy
    verify(unpacked, signed_demo / "model.sig", keys[1])
    verify(staged(signed_demo, tmp_path, "folder"), signature, keys[1])


def test_the_model_signing_command_verifies_our_signatures(signed_demo, keys, tmp_path):
    copy = staged(signed_demo, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", str(copy), "--signature",
                           str(signed_demo / "model.sig"), "--public_key", str(keys[1]), "--ignore-paths",
                           str(copy / "model.sig"), "--no-ignore-git-paths"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Verification succeeded" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize(("change", "reason"), [
    (lambda f: (f / "model.onnx").write_bytes((f / "model.onnx").read_bytes()[:-1] + b"\0"),
     "file changed: model.onnx"),
    (lambda f: (f / "labels.txt").write_text("cat\n"), "file changed: labels.txt"),
    (lambda f: (f / "extra.onnx").write_bytes(b"\0"), "file added: extra.onnx"),
    (lambda f: (f / "labels.txt").unlink(), "file removed: labels.txt"),
    (lambda f: (f / ".gitignore").write_text("*\n"), "file added: .gitignore"),  # git files are signed too
])
def test_a_changed_added_or_removed_file_is_refused_in_one_line(signed_demo, keys, tmp_path, change, reason):
    copy = staged(signed_demo, tmp_path)
    change(copy)
    with pytest.raises(SignatureError) as exc:
        verify(copy, signed_demo / "model.sig", keys[1])
    assert "does not match its signature" in one_line(exc) and reason in str(exc.value)
    with pytest.raises(SignatureError):
        require_signed(copy, signed_demo / "model.sig", keys[1])


def test_another_exports_signature_is_refused(signed_demo, keys, tmp_path):
    other = models.write_export(tmp_path / "other", models.color_classifier(), models.COLOR_TAGS)
    swapped = sign(other, keys[0])  # the right key, but over other files
    with pytest.raises(SignatureError) as exc:
        verify(staged(signed_demo, tmp_path), swapped, keys[1])
    text = one_line(exc)
    assert "does not match its signature" in text and "file added" in text and "file changed" in text


def test_a_signature_by_another_key_is_refused(signed_demo, other_keys, tmp_path):
    with pytest.raises(SignatureError) as exc:
        verify(staged(signed_demo, tmp_path), signed_demo / "model.sig", other_keys[1])
    assert "made with another key than models.public_key" in one_line(exc)


def test_a_signature_altered_to_name_another_key_or_other_files_is_refused(signed_demo, keys, other_keys,
                                                                        tmp_path):
    body = json.loads((signed_demo / "model.sig").read_text())
    # claims the other key (its hint), but the envelope is still signed by the first: forged
    other = sign(models.write_export(tmp_path / "other", models.color_classifier(), models.COLOR_TAGS),
                 other_keys[0])
    body["verificationMaterial"]["publicKey"]["hint"] = json.loads(other.read_text())[
        "verificationMaterial"]["publicKey"]["hint"]
    forged = tmp_path / "forged.sig"
    forged.write_text(json.dumps(body))
    copy = staged(signed_demo, tmp_path)
    with pytest.raises(SignatureError) as exc:
        verify(copy, forged, other_keys[1])
    assert "does not verify with models.public_key" in one_line(exc)
    # the payload edited (a digest replaced) under the original signature
    body = json.loads((signed_demo / "model.sig").read_text())
    payload = json.loads(base64.b64decode(body["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "00" * 32
    body["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    forged.write_text(json.dumps(body))
    with pytest.raises(SignatureError) as exc:
        verify(copy, forged, keys[1])
    assert "does not verify with models.public_key" in one_line(exc)


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "empty"),
    (b" \n", "empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "damaged (not JSON)"),
    (b"[1, 2, 3]", "damaged (not a model-signing key signature)"),
    (b'{"verificationMaterial": {"publicKey": {}}}', "damaged (not a model-signing key signature)"),
    (b"[" * 100_000, "damaged (not JSON)"),  # nesting that would exhaust the recursion limit
    (b'{"mediaType": "x", "verificationMaterial": {"publicKey": {"hint": "ab"}}}', "damaged"),
    (b'{"verificationMaterial": {"publicKey": {"hint": "ab"}}, "dsseEnvelope": {"signatures": []}}', "damaged"),
])
def test_a_garbage_or_empty_signature_is_refused_in_one_line(signed_demo, keys, tmp_path, content, reason):
    signature = tmp_path / "model.sig"
    signature.write_bytes(content)
    with pytest.raises(SignatureError) as exc:
        verify(staged(signed_demo, tmp_path), signature, keys[1])
    assert reason in one_line(exc) and len(str(exc.value)) < 500


def test_a_damaged_copy_of_a_real_signature_is_refused(signed_demo, keys, tmp_path):
    real = (signed_demo / "model.sig").read_bytes()
    copy = staged(signed_demo, tmp_path)
    for cut in (len(real) // 3, len(real) // 2, len(real) - 2):
        signature = tmp_path / f"cut-{cut}.sig"
        signature.write_bytes(real[:cut])
        with pytest.raises(SignatureError) as exc:
            verify(copy, signature, keys[1])
        assert "damaged" in one_line(exc)
    body = json.loads(real)
    body["dsseEnvelope"]["payload"] = "not base64 at all!"
    (tmp_path / "bad64.sig").write_text(json.dumps(body))
    with pytest.raises(SignatureError) as exc:
        verify(copy, tmp_path / "bad64.sig", keys[1])
    one_line(exc)


def test_a_huge_signature_is_refused_before_it_is_read(signed_demo, keys, tmp_path):
    signature = tmp_path / "huge.sig"
    with signature.open("wb") as f:  # sparse: the cap is checked on the size, nothing is read
        f.truncate(50 * MAX_SIGNATURE_BYTES)
    with pytest.raises(SignatureError) as exc:
        verify(staged(signed_demo, tmp_path), signature, keys[1])
    assert f"larger than the {MAX_SIGNATURE_BYTES}-byte limit" in one_line(exc)


def test_a_signature_that_is_a_device_fifo_or_folder_is_refused(signed_demo, keys, tmp_path):
    copy = staged(signed_demo, tmp_path)
    fifo = tmp_path / "fifo.sig"
    os.mkfifo(fifo)
    (tmp_path / "folder.sig").mkdir()
    for signature in (Path("/dev/zero"), fifo, tmp_path / "folder.sig"):
        with pytest.raises(SignatureError) as exc:
            verify(copy, signature, keys[1])
        assert "not a regular file" in one_line(exc)


def test_a_symlink_where_the_signature_should_be_is_refused(signed_demo, keys, tmp_path):
    copy = staged(signed_demo, tmp_path)
    (copy / "model.sig").unlink()
    (copy / "model.sig").symlink_to(signed_demo / "model.sig")  # even to the right signature
    assert signature_for(copy) == copy / "model.sig"  # found, so it is refused rather than looking unsigned
    with pytest.raises(SignatureError) as exc:
        verify(copy, copy / "model.sig", keys[1])
    assert "is a symbolic link" in one_line(exc)
    export = zip_export(signed_demo, tmp_path / "demo.zip")
    (tmp_path / "demo.zip.sig").symlink_to("/dev/zero")
    assert signature_for(export) == tmp_path / "demo.zip.sig"
    with pytest.raises(SignatureError) as exc:
        verify(staged(export, tmp_path, "unzipped"), tmp_path / "demo.zip.sig", keys[1])
    assert "is a symbolic link" in one_line(exc)


def test_a_symlink_inside_the_export_is_refused(signed_demo, keys, tmp_path):
    copy = staged(signed_demo, tmp_path)
    (copy / "labels.txt").unlink()
    (copy / "labels.txt").symlink_to(signed_demo / "labels.txt")
    with pytest.raises(SignatureError) as exc:
        verify(copy, signed_demo / "model.sig", keys[1])
    assert "holds a symbolic link" in one_line(exc)


def test_a_missing_signature_is_refused_when_a_key_is_set(signed_demo, keys, tmp_path):
    copy = staged(signed_demo, tmp_path)
    with pytest.raises(SignatureError) as exc:
        require_signed(copy, None, keys[1])
    assert "no signature" in one_line(exc) and "models.public_key" in str(exc.value)
    with pytest.raises(SignatureError) as exc:
        verify(copy, tmp_path / "absent.sig", keys[1])
    assert one_line(exc).startswith("no signature")
    assert signature_for(DEMO_MODEL) is None and signature_for(tmp_path / "absent.zip") is None


def test_a_public_key_that_is_not_an_elliptic_curve_key_is_refused(signed_demo, keys, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    copy = staged(signed_demo, tmp_path)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, public))
    ed_key = tmp_path / "ed25519.pem"
    ed_key.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, public))
    for key in (rsa_key, ed_key):
        with pytest.raises(SignatureError) as exc:
            verify(copy, signed_demo / "model.sig", key)
        assert "not an elliptic-curve public key" in one_line(exc)
    for key, reason in ((keys[0], "not a PEM public key"),  # the private key, named by mistake
                        (tmp_path / "absent.pem", "models.public_key"),
                        (Path("/dev/zero"), "not a regular file")):
        with pytest.raises(SignatureError) as exc:
            verify(copy, signed_demo / "model.sig", key)
        assert reason in one_line(exc)
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 100_000)
    with pytest.raises(SignatureError) as exc:
        verify(copy, signed_demo / "model.sig", huge)
    assert "limit" in one_line(exc)


def test_a_lone_onnx_is_not_signable(keys, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copy(DEMO_MODEL / "model.onnx", model)
    with pytest.raises(SignatureError) as exc:
        sign(model, keys[0])
    assert "a lone .onnx cannot be signed" in one_line(exc)
    with pytest.raises(SignatureError):
        sign(model, keys[0], out=tmp_path / "model.sig")
    assert signature_for(model) is None and not (tmp_path / "model.sig").exists()


def test_without_the_package_signing_and_verifying_say_how_to_install_it(signed_demo, keys, tmp_path,
                                                                         monkeypatch):
    for module in [m for m in sys.modules if m == "model_signing" or m.startswith("model_signing.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "model_signing", None)  # `import model_signing` now fails
    for call in (lambda: sign(signed_demo, keys[0], out=tmp_path / "x.sig"),
                 lambda: verify(signed_demo, signed_demo / "model.sig", keys[1]),
                 lambda: require_signed(signed_demo, signed_demo / "model.sig", keys[1])):
        with pytest.raises(ConfigError) as exc:
            call()
        assert "pip install 'edge-runtime[signing]'" in one_line(exc)
    assert require_signed(signed_demo, None, None) is False  # no key configured: the package is not needed
    assert not (tmp_path / "x.sig").exists()


def test_a_signing_key_is_checked_with_its_password(tmp_path, signed_demo):
    password_file = tmp_path / "password"
    password_file.write_text("correct horse\n")
    password_file.chmod(0o600)
    assert key_password(password_file, {}) == b"correct horse"
    assert key_password(None, {PASSWORD_ENV: "from env"}) == b"from env" and key_password(None, {}) is None
    private, public = generate_keys(tmp_path / "keys", b"correct horse")
    assert b"ENCRYPTED" in private.read_bytes() and stat.S_IMODE(private.stat().st_mode) == 0o600
    key = SigningKey.load(private, password_file)
    assert "correct horse" not in repr(key)
    signature = key.sign(signed_demo, out=tmp_path / "demo.sig")
    verify(staged(signed_demo, tmp_path), signature, public)
    with pytest.raises(ConfigError) as exc:
        signing.check_private_key(private, None, where="X")
    assert "is encrypted and no password was given (it is read from X)" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        signing.check_private_key(private, b"wrong")
    assert "the password is wrong" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        signing.check_private_key(public, None)
    assert "not a PEM private key" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        generate_keys(tmp_path / "keys")
    assert "never replaces a key" in one_line(exc)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError):
        key_password(tmp_path / "empty", {})


def test_a_signature_is_written_whole_and_replaces_the_old_one(signed_demo, keys, other_keys, tmp_path):
    folder = staged(signed_demo, tmp_path)
    first = (folder / "model.sig").read_bytes()
    sign(folder, other_keys[0])  # re-signed with another key
    assert (folder / "model.sig").read_bytes() != first
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no partial file left
    verify(folder, folder / "model.sig", other_keys[1])
    with pytest.raises(SignatureError):
        verify(folder, folder / "model.sig", keys[1])


def test_a_signed_version_published_through_the_store_still_verifies(signed_demo, keys, tmp_path):
    store = ModelStore.open(tmp_path / "models")
    published = store.publish(signed_demo, "demo")
    version = store.version_path("demo", published.active)
    verify(version, signature_for(version) or Path("missing"), keys[1])


def test_write_bundle_signs_a_verified_bundle_before_it_appears(keys, tmp_path):
    export = models.write_export(tmp_path / "export", models.color_classifier(), models.COLOR_TAGS)
    bundle, _ = write_bundle(tmp_path / "out", "colours", export, {"source": {"backend": "test"}},
                             signing_key=SigningKey(keys[0]))
    assert bundle == tmp_path / "out" / "colours" / "v1"
    signature = bundle / "model.sig"
    assert stat.S_IMODE(signature.stat().st_mode) == 0o644  # readable by the service's own user
    verify(bundle, signature, keys[1])  # the version folder itself: its files are the staged ones
    created = created_of(bundle)
    assert created is not None and abs(dt.datetime.now(dt.timezone.utc) - created) < dt.timedelta(minutes=5)


def test_a_bundle_whose_signing_fails_is_not_written(keys, tmp_path):
    export = models.write_export(tmp_path / "export", models.color_classifier(), models.COLOR_TAGS)
    with pytest.raises(ConfigError):
        write_bundle(tmp_path / "out", "colours", export, {}, signing_key=SigningKey(keys[1]))  # a public key
    assert not list((tmp_path / "out" / "colours").glob("v*"))


@pytest.mark.parametrize(("content", "expected"), [
    ('{"created": "2024-05-01T10:00:00+00:00"}', dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc)),
    ('{"created": "2024-05-01T10:00:00Z"}', dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc)),
    ('{"created": "2024-05-01T12:00:00+02:00"}', dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc)),
    ('{"created": "2024-05-01T10:00:00"}', dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc)),  # no zone: UTC
    ('{"created": "yesterday"}', None),
    ('{"created": "2024-13-45T99:00:00"}', None),
    ('{"created": 1714557600}', None),
    ('{"created": NaN}', None),
    ('{"created": null}', None),
    ('{"created": ["2024-05-01"]}', None),
    ('{"created": "' + "9" * 10_000 + '"}', None),
    ('{"name": "no created"}', None),
    ('["2024-05-01T10:00:00Z"]', None),
    ("{not json", None),
    ("[" * 100_000, None),
    ("\udcff", None),
])
def test_created_of_reads_bundle_json_and_gives_none_for_anything_else(tmp_path, content, expected):
    (tmp_path / "bundle.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    assert created_of(tmp_path) == expected


def test_created_of_a_folder_without_a_readable_bundle_json_is_none(tmp_path):
    assert created_of(tmp_path) is None
    assert created_of(tmp_path / "absent") is None
    (tmp_path / "bundle.json").symlink_to("/dev/zero")
    assert created_of(tmp_path) is None
    (tmp_path / "bundle.json").unlink()
    with (tmp_path / "bundle.json").open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    assert created_of(tmp_path) is None


def test_the_public_key_setting_is_a_path_and_strict():
    assert ModelsConfig().public_key is None
    assert ModelsConfig(public_key="keys/public.pem").public_key == Path("keys/public.pem")
    with pytest.raises(ValueError):
        ModelsConfig(public_keys="keys/public.pem")  # a typo fails loudly


# ---- the command line ---------------------------------------------------------------------


def edge_export(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                ) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    return subprocess.run([sys.executable, "-m", "exporter.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**run_env, **(env or {})}, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if " WARNING " not in line]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


def test_keygen_and_sign_through_the_command(tmp_path):
    proc = edge_export("keygen", "--out", str(tmp_path / "keys"), env={PASSWORD_ENV: "s3cret"})
    assert proc.returncode == 0, proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    private, public = tmp_path / "keys" / "private.pem", tmp_path / "keys" / "public.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
    assert "never replaces a key" in one_line_error(
        edge_export("keygen", "--out", str(tmp_path / "keys")))

    export = tmp_path / "demo"
    shutil.copytree(DEMO_MODEL, export)
    assert "is encrypted and no password was given" in one_line_error(
        edge_export("sign", str(export), "--key", str(private)))
    assert "password is wrong" in one_line_error(
        edge_export("sign", str(export), "--key", str(private), env={PASSWORD_ENV: "wrong"}))
    assert not (export / "model.sig").exists()
    proc = edge_export("sign", str(export), "--key", str(private), env={PASSWORD_ENV: "s3cret"})
    assert proc.returncode == 0 and "signed" in proc.stdout, proc.stderr
    verify(staged(export, tmp_path), export / "model.sig", public)

    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")
    password_file.chmod(0o600)
    archive = zip_export(export, tmp_path / "demo.zip")
    proc = edge_export("sign", str(archive), "--key", str(private), "--key-password-file", str(password_file),
                       "--out", str(tmp_path / "elsewhere.sig"))
    assert proc.returncode == 0, proc.stderr
    verify(staged(archive, tmp_path, "unzipped"), tmp_path / "elsewhere.sig", public)
    assert "a lone .onnx cannot be signed" in one_line_error(
        edge_export("sign", str(export / "model.onnx"), "--key", str(private), env={PASSWORD_ENV: "s3cret"}))
    for flag in ("--key-password", "--password", "--key-pass"):  # no flag puts a password where `ps` shows it
        proc = edge_export("sign", str(export), "--key", str(private), flag, "hunter2")
        assert proc.returncode == 2 and "hunter2" not in proc.stderr, proc.stderr
        assert "never given on the command line" in proc.stderr or "ambiguous option" in proc.stderr


def test_train_with_an_unusable_key_stops_before_training(tmp_path):
    dataset = tmp_path / "set"
    (dataset / "a").mkdir(parents=True)
    (tmp_path / "key.pem").write_text("not a key\n")
    proc = edge_export("train", str(dataset), "--sign", str(tmp_path / "key.pem"), "--out", str(tmp_path / "out"))
    assert "signing key" in one_line_error(proc) and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_sign_writes_a_signed_bundle(tmp_path, keys):
    from tests.test_exporter import digits_dataset

    digits = digits_dataset(tmp_path / "digits", per_class=8)
    proc = edge_export("train", str(digits), "--out", str(tmp_path / "out"), "--no-progress", "--sign", str(keys[0]))
    assert proc.returncode == 0, proc.stderr
    bundle = tmp_path / "out" / "digits" / "v1"
    assert "signed" in proc.stdout and (bundle / "model.sig").is_file()
    verify(bundle, bundle / "model.sig", keys[1])
    assert created_of(bundle) is not None
