"""Signing keys for `edge-export keygen`, `sign` and `train --sign`.

A key's password never comes from the command line, where `ps` and the shell's history
would show it: it is read from EDGE_EXPORT_KEY_PASSWORD or from `--key-password-file`.

    password = key_password(args.key_password_file)
    private, public = generate_keys(Path("keys"), password)   # keys/private.pem (0600), keys/public.pem
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.errors import ConfigError
from edge_runtime.paths import SECRET_FILE_BYTES, read_setting_file
from edge_runtime.publish.signing import INSTALL

PASSWORD_ENV = "EDGE_EXPORT_KEY_PASSWORD"
PRIVATE = "private.pem"
PUBLIC = "public.pem"


@dataclass(frozen=True)
class SigningKey:
    """A private key and its password, checked before anything long (training) starts."""

    path: Path
    password: bytes | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path, password_file: Path | None = None) -> SigningKey:
        from edge_runtime.publish.signing import check_private_key

        key = cls(path, key_password(password_file))
        check_private_key(key.path, key.password, where=f"{PASSWORD_ENV} or --key-password-file")
        return key

    def sign(self, export: Path, out: Path | None = None) -> Path:
        from edge_runtime.publish.signing import sign

        return sign(export, self.path, password=self.password, out=out)


def key_password(password_file: Path | None, env: Mapping[str, str] | None = None) -> bytes | None:
    """The signing key's password: the file's first line when a file is named, else the
    environment variable; None when neither gives one."""
    env = os.environ if env is None else env
    if password_file is not None:
        text = read_setting_file(password_file, "--key-password-file", SECRET_FILE_BYTES, secret=True)
        line = text.splitlines()[0] if text.strip() else b""
        if not line:
            raise ConfigError(f"--key-password-file {password_file}: empty")
        return line
    value = env.get(PASSWORD_ENV, "")
    return value.encode() if value else None


def generate_keys(folder: Path, password: bytes | None = None) -> tuple[Path, Path]:
    """A new P-256 key pair in `folder`: private.pem (owner-only, encrypted when a password is
    given) and public.pem (for models.public_key). Existing keys are never overwritten."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        raise ConfigError(f"keygen needs the model-signing package: {INSTALL}") from None
    private, public = folder / PRIVATE, folder / PUBLIC
    for path in (private, public):
        if os.path.lexists(path):
            raise ConfigError(f"--out {folder}: {path.name} exists; keygen never replaces a key")
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    folder.mkdir(parents=True, exist_ok=True)
    _write_new(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          encryption), 0o600)
    _write_new(public, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    return private, public


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (a private key is never readable by others,
    not even for an instant), refusing one that appeared meanwhile."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask may have taken bits off the public key
        f.write(data)
