"""Write-only secrets (an MCP server's headers, a webhook's signing secret), sealed at
rest with Fernet keys from the settings: never logged, never returned (a webhook's secret
once, when it is made)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from atelier.settings import Settings


class SecretsUnavailable(Exception):
    """No key to seal with (production without ATELIER_SECRETS_KEY), or a sealed value
    no configured key opens."""


class Sealer:
    def __init__(self, keys: list[str]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys]) if keys else None

    @classmethod
    def for_settings(cls, settings: Settings) -> Sealer:
        """Touches the disk outside production (the made key): call it on a worker thread."""
        if settings.secrets_key is not None:
            keys = settings.secrets_key.get_secret_value().split(",")
            return cls([key.strip() for key in keys if key.strip()])
        if settings.environment == "production":
            return cls([])
        return cls([_made_key(settings.secrets_key_file)])

    def seal(self, value: dict[str, dict[str, str]]) -> str:
        return self.seal_text(json.dumps(value))

    def open(self, sealed: str | None) -> dict[str, dict[str, str]]:
        return {} if sealed is None else dict(json.loads(self.open_text(sealed)))

    def seal_text(self, value: str) -> str:
        if self._fernet is None:
            raise SecretsUnavailable("set ATELIER_SECRETS_KEY to store secrets")
        return self._fernet.encrypt(value.encode()).decode()

    def open_text(self, sealed: str) -> str:
        if self._fernet is None:
            raise SecretsUnavailable("ATELIER_SECRETS_KEY is not set")
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise SecretsUnavailable("no configured key opens these secrets") from exc


def _made_key(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    try:  # created exclusively, readable by us only: two processes agree on the first
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key)
    return key
