"""Who is calling, as every API and the engine know it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

# An end user's id, however it is given (X-User-ID, the Responses API's `user`, ...): one
# rule, so that every user is reachable from every API.
USER_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant and key come from the verified API key, never from headers."""

    tenant_id: uuid.UUID
    tenant_name: str
    key_id: uuid.UUID
    user_id: str | None
