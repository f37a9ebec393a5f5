"""Signed exports: an update from outside is trusted only when its files carry a valid signature.

Signatures are the OpenSSF model-signing package's key-based format (an elliptic-curve key
on P-256, P-384 or P-521; a Sigstore bundle whose DSSE envelope signs a manifest of each
file's SHA-256), so `model_signing verify key` checks them too. The package is the
optional `signing` extra (`pip install 'edge-runtime[signing]'`) and is imported only
here, when a signature is made or checked.

What is signed is the export's files as the model store takes them (versions.stage: the
regular files of a folder, or what a zip unpacks to), and where the signature lies:

    OUT/shelf/v3/                  a folder export carries it inside, as model.sig, which
      model.onnx labels.txt ...    is left out of the hashed files
      bundle.json  model.sig
    export.zip  export.zip.sig     a zip carries it beside, over the files it unpacks to,
                                   so a zip and the folder it unpacks to verify alike
    model.onnx                     a lone .onnx is not signable: sign the folder or a zip

    sign(Path("out/shelf/v3"), Path("keys/private.pem"))       # out/shelf/v3/model.sig
    verify(staged, signature_for(export), Path("keys/public.pem"))

verify() is given the folder the export was staged into (what becomes the new version),
so the files checked are the files published. Every refusal is a SignatureError with a
one-line reason; `require_signed` is the one call that enforces `models.public_key`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import BundleError, ConfigError, SignatureError, first_line
from ..model.bundle import BUNDLE_INFO
from ..model.limits import MAX_JSON_BYTES, read_file_capped
from ..paths import KiB, read_regular_file, read_setting_file
from .versions import FILE_MODE, stage

SIGNATURE_NAME = "model.sig"  # inside a folder export
SIGNATURE_SUFFIX = ".sig"  # beside a zip: export.zip.sig
MAX_SIGNATURE_BYTES = 1024 * KiB  # a signature lists one digest per file: a few KB
MAX_KEY_BYTES = 16 * KiB  # a PEM elliptic-curve key is under 1 KB
CURVES = ("secp256r1", "secp384r1", "secp521r1")  # the curves model-signing accepts
INSTALL = "pip install 'edge-runtime[signing]'"
PUBLIC_KEY = "models.public_key"


def _library() -> SimpleNamespace:
    """model-signing and cryptography (which it depends on), or a ConfigError saying how to install them."""
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from model_signing import hashing, signing, verifying
    except ImportError:
        raise ConfigError(f"signed models need the model-signing package: {INSTALL}") from None
    return SimpleNamespace(hashing=hashing, signing=signing, verifying=verifying, serialization=serialization,
                           ec=ec, InvalidSignature=exceptions.InvalidSignature,
                           UnsupportedAlgorithm=exceptions.UnsupportedAlgorithm)


def _hashing(lib: SimpleNamespace) -> Any:
    """One hashing configuration for signing and verifying: SHA-256 per file, no symlinks, the
    folder's own model.sig left out, and nothing else (git files are signed like any other)."""
    return lib.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME], ignore_git_paths=False)


def signature_for(export: Path) -> Path | None:
    """Where the export's signature is by the convention above, if something is there (a
    symlink too, so that verify() refuses it rather than the export looking unsigned)."""
    if export.is_dir():
        candidate = export / SIGNATURE_NAME
    elif export.suffix.lower() == ".onnx" or not export.is_file():
        return None
    else:
        candidate = export.with_name(export.name + SIGNATURE_SUFFIX)
    return candidate if os.path.lexists(candidate) else None


def _signature_path(export: Path) -> Path:
    if export.is_dir():
        return export / SIGNATURE_NAME
    if export.suffix.lower() == ".onnx":
        raise SignatureError(f"{export}: a lone .onnx cannot be signed; sign the folder holding it with its "
                             "labels.txt, or an export zip")
    if not export.is_file():
        raise SignatureError(f"{export}: no such file or folder")
    return export.with_name(export.name + SIGNATURE_SUFFIX)


def check_private_key(private_key: Path, password: bytes | None = None, *, where: str = "") -> None:
    """A ConfigError unless `private_key` is a PEM elliptic-curve private key that `password`
    opens; `where` says where a password is read from, for the error when none was given."""
    lib = _library()
    data = read_setting_file(private_key, "signing key", MAX_KEY_BYTES, secret=True)
    try:
        key = lib.serialization.load_pem_private_key(data, password)
    except TypeError:  # cryptography: a password for a plain key, or none for an encrypted one
        hint = f" (it is read from {where})" if where else ""
        detail = f"is encrypted and no password was given{hint}" if password is None else \
            "is not encrypted, but a password was given"
        raise ConfigError(f"signing key {private_key}: {detail}") from None
    except (ValueError, lib.UnsupportedAlgorithm):
        raise ConfigError(f"signing key {private_key}: not a PEM private key, or the password is wrong") from None
    if not isinstance(key, lib.ec.EllipticCurvePrivateKey) or key.curve.name not in CURVES:
        raise ConfigError(f"signing key {private_key}: not an elliptic-curve key on P-256, P-384 or P-521 "
                          "(edge-export keygen makes one)")


def sign(export: Path, private_key: Path, *, password: bytes | None = None, out: Path | None = None) -> Path:
    """Sign the export's files with `private_key`; the signature's path (by default the
    convention's: EXPORT/model.sig for a folder, EXPORT.sig beside a zip). It is written whole
    or not at all."""
    lib = _library()
    default = _signature_path(export)  # also refuses a lone .onnx, wherever the signature would go
    target = out if out is not None else default
    check_private_key(private_key, password)
    with tempfile.TemporaryDirectory(prefix="edge-sign-") as tmp:
        files = Path(tmp) / "export"
        files.mkdir()
        stage(export, files)  # the files the store will take, whatever the export's form
        written = Path(tmp) / SIGNATURE_NAME
        try:
            config = lib.signing.Config().use_elliptic_key_signer(private_key=private_key, password=password)
            config.set_hashing_config(_hashing(lib)).sign(files, written)
        except (ValueError, TypeError, OSError) as exc:
            raise SignatureError(f"{export}: cannot be signed: {first_line(exc)}") from exc
        _write_whole(target, written.read_bytes())
    return target


def _write_whole(path: Path, data: bytes) -> None:
    """`data` at `path` (readable by every user, as bundles are), through a rename."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(partial, FILE_MODE)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def read_signature(path: Path) -> bytes:
    """The bytes of a signature file: a regular file itself (not a symlink, which could
    point anywhere), not empty and within MAX_SIGNATURE_BYTES, or a SignatureError."""
    if not os.path.lexists(path):
        raise SignatureError(f"no signature: {path} does not exist")
    data, _ = read_regular_file(path, "signature", MAX_SIGNATURE_BYTES, SignatureError, follow_symlinks=False)
    if not data.strip():
        raise SignatureError(f"signature {path}: empty")
    return data


def _public_key_pem(lib: SimpleNamespace, public_key: Path) -> bytes:
    try:
        data = read_setting_file(public_key, PUBLIC_KEY, MAX_KEY_BYTES)
    except ConfigError as exc:
        raise SignatureError(str(exc)) from None
    try:
        key = lib.serialization.load_pem_public_key(data)
    except (ValueError, lib.UnsupportedAlgorithm):
        raise SignatureError(f"{PUBLIC_KEY} {public_key}: not a PEM public key") from None
    if not isinstance(key, lib.ec.EllipticCurvePublicKey):
        raise SignatureError(f"{PUBLIC_KEY} {public_key}: not an elliptic-curve public key "
                             "(edge-export keygen makes one)")
    if key.curve.name not in CURVES:
        raise SignatureError(f"{PUBLIC_KEY} {public_key}: curve {key.curve.name} is not P-256, P-384 or P-521")
    return data


def _check_shape(data: bytes, signature: Path) -> None:
    """A model-signing key signature is a JSON object whose verification material names the
    key by a hint; the package itself would only print a warning for one without."""
    try:
        bundle = json.loads(data)
    except (ValueError, RecursionError):
        raise SignatureError(f"signature {signature}: damaged (not JSON)") from None
    material = bundle.get("verificationMaterial") if isinstance(bundle, dict) else None
    key = material.get("publicKey") if isinstance(material, dict) else None
    if not isinstance(key, dict) or not isinstance(key.get("hint"), str) or not key["hint"]:
        raise SignatureError(f"signature {signature}: damaged (not a model-signing key signature)")


def _mismatch(hashing_config: Any, folder: Path, data: bytes) -> str:
    """Which files differ from the signed manifest, in one line. Only called once model-signing
    has checked the signature and found the files differ, so the manifest in it is authentic;
    the files are hashed again with the same settings (its ignored paths included)."""
    try:
        payload = json.loads(base64.b64decode(json.loads(data)["dsseEnvelope"]["payload"]))
        signed = {str(r["name"]): str(r["digest"]) for r in payload["predicate"]["resources"]}
        actual = {d.identifier: d.digest.digest_hex for d in hashing_config.hash(folder).resource_descriptors()}
    except (ValueError, KeyError, TypeError, OSError):
        return f"{folder}: does not match its signature"
    parts = [f"file {word}: {', '.join(sorted(names))}" for word, names in (
        ("added", actual.keys() - signed.keys()), ("removed", signed.keys() - actual.keys()),
        ("changed", {n for n in actual.keys() & signed.keys() if actual[n] != signed[n]})) if names]
    return f"{folder}: does not match its signature" + (f" ({'; '.join(parts)})" if parts else "")


def _refusal(exc: ValueError, folder: Path, signature: Path, public_key: Path) -> str:
    message = str(exc)
    if message.startswith("Key mismatch"):
        return f"signature {signature}: made with another key than {PUBLIC_KEY} {public_key}"
    if "because it is a symlink" in message:
        return f"{folder}: holds a symbolic link; a signed export is regular files only"
    if "as file or directory" in message:
        return f"{folder}: holds something that is neither a file nor a folder"
    return f"signature {signature}: damaged ({first_line(exc)[:200]})"


def verify(folder: Path, signature: Path, public_key: Path) -> None:
    """Check the unpacked export in `folder` against `signature` made by the key whose public
    half is `public_key` (the folder's own model.sig is not hashed); a SignatureError says why not."""
    lib = _library()
    key_pem = _public_key_pem(lib, public_key)
    data = read_signature(signature)
    _check_shape(data, signature)
    if not folder.is_dir():
        raise SignatureError(f"{folder}: not a folder to verify")
    with tempfile.TemporaryDirectory(prefix="edge-verify-") as tmp:
        # the library reads files by name: give it the bytes checked above, not the originals again
        (Path(tmp) / SIGNATURE_NAME).write_bytes(data)
        (Path(tmp) / "public.pem").write_bytes(key_pem)
        config = lib.verifying.Config().use_elliptic_key_verifier(public_key=Path(tmp) / "public.pem")
        hashing_config = _hashing(lib)
        try:
            config.set_hashing_config(hashing_config).verify(folder, Path(tmp) / SIGNATURE_NAME)
        except lib.InvalidSignature:
            raise SignatureError(f"signature {signature}: does not verify with {PUBLIC_KEY} {public_key} "
                                 "(altered, or made by another key)") from None
        except ValueError as exc:  # pydantic's and json's errors are ValueErrors too
            if str(exc).startswith("Signature mismatch"):  # signed by the key, over other files
                raise SignatureError(_mismatch(hashing_config, folder, data)) from None
            raise SignatureError(_refusal(exc, folder, signature, public_key)) from None
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise SignatureError(f"signature {signature}: damaged ({type(exc).__name__} {first_line(exc)[:200]})") \
                from None


def require_signed(folder: Path, signature: Path | None, public_key: Path | None) -> bool:
    """The `models.public_key` rule in one call: False when no key is set (nothing to check),
    True when `folder` verifies against `signature`, else a SignatureError."""
    if public_key is None:
        return False
    if signature is None:
        raise SignatureError(f"no signature: {PUBLIC_KEY} is set, so every update must be signed "
                             "(edge-export sign EXPORT --key KEY)")
    verify(folder, signature, public_key)
    return True


def created_of(folder: Path) -> dt.datetime | None:
    """When the export was made (bundle.json's `created`, timezone-aware; a time without a
    zone is taken as UTC), for refusing a replayed old release; None when bundle.json is
    missing, damaged, too large, or holds no ISO 8601 time."""
    try:
        info = json.loads(read_file_capped(folder / BUNDLE_INFO, MAX_JSON_BYTES, BundleError))
    except (BundleError, ValueError, RecursionError):
        return None
    created = info.get("created") if isinstance(info, dict) else None
    if not isinstance(created, str) or len(created) > 64:
        return None
    text = created.strip()
    if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not read the Z suffix
        text = text[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)
