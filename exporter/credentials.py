"""Custom Vision credentials: from the environment or a file, never from the command line,
and never in logs or error messages."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.errors import ConfigError

ENDPOINT_ENV = "CUSTOMVISION_ENDPOINT"
TRAINING_KEY_ENV = "CUSTOMVISION_TRAINING_KEY"
PREDICTION_RESOURCE_ENV = "CUSTOMVISION_PREDICTION_RESOURCE_ID"
CREDENTIALS_FILE_ENV = "CUSTOMVISION_CREDENTIALS_FILE"


@dataclass(frozen=True)
class Credentials:
    endpoint: str
    training_key: str = field(repr=False)
    prediction_resource_id: str = ""

    def __repr__(self) -> str:  # the key stays out of tracebacks and debug prints
        return f"Credentials(endpoint={self.endpoint!r}, training_key='***')"


def load_credentials(file: Path | None = None, env: Mapping[str, str] | None = None) -> Credentials:
    """Environment first (CUSTOMVISION_ENDPOINT, CUSTOMVISION_TRAINING_KEY), then a JSON file
    with `endpoint`, `training_key` and optionally `prediction_resource_id`."""
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    path = file or (Path(env[CREDENTIALS_FILE_ENV]) if env.get(CREDENTIALS_FILE_ENV) else None)
    if path is not None:
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"credentials file {path}: cannot read it as JSON") from exc
        values.update({k: str(v) for k, v in loaded.items() if isinstance(v, str | int)})
    endpoint = env.get(ENDPOINT_ENV) or values.get("endpoint", "")
    key = env.get(TRAINING_KEY_ENV) or values.get("training_key", "")
    if not endpoint or not key:
        raise ConfigError(f"Custom Vision needs {ENDPOINT_ENV} and {TRAINING_KEY_ENV} in the environment, "
                          "or a credentials file (--credentials) with endpoint and training_key")
    resource = env.get(PREDICTION_RESOURCE_ENV) or values.get("prediction_resource_id", "")
    return Credentials(endpoint.rstrip("/"), key.strip(), resource)


class RedactSecrets(logging.Filter):
    """Replaces each secret with *** in every record a handler emits."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True


def guard_logs(*secrets: str) -> None:
    """Redact the secrets in every root handler's output, and keep the SDK's HTTP layer from
    logging request headers and bodies (it prints the Training-key header at DEBUG)."""
    redact = RedactSecrets(*secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    for name in ("msrest", "urllib3", "requests_oauthlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
