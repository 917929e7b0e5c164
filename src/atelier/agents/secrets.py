"""Write-only secrets (an MCP server's headers, a webhook's signing secret), sealed at
rest with Fernet keys from the settings: never logged, never returned (a webhook's secret
once, when it is made)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from atelier.settings import Settings


class SecretsUnavailable(Exception):
    """No key to seal with (production without ATELIER_SECRETS_KEY), or a sealed value
    no configured key opens."""


class Sealer:
    def __init__(self, keys: list[str]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys]) if keys else None
        self._keys = keys

    def derived(self, purpose: str) -> list[bytes]:
        """A key per configured key for ``purpose`` (signing end-user tokens, say), the
        sealing key's first: derived, so one setting serves both and neither reveals the
        other."""
        if not self._keys:
            raise SecretsUnavailable("set ATELIER_SECRETS_KEY to sign tokens")
        return [
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
                key.encode()
            )
            for key in self._keys
        ]

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
    """The development key in `path`, made on first use. Processes starting together
    (`--workers`, a fresh clone's test servers) agree on one: the key is written whole
    to a private file first and linked into place, so `path` never exists half-written
    and the first link wins."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(Fernet.generate_key().decode())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process linked its key first
            os.link(draft, path)
    finally:
        draft.unlink()
    return path.read_text().strip()
