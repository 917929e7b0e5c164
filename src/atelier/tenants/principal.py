"""Who is calling, as every API and the engine know it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

# An end user's id, however it is given (X-User-ID, the Responses API's `user`, a token's
# subject): one rule, so that every user is reachable from every API.
USER_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"
# What an end-user token may do: `read` is the safe methods, `write` everything else.
SCOPES = ("read", "write")


@dataclass(frozen=True)
class Grant:
    """What an end-user token allows its user: ``None`` restricts nothing."""

    token_id: str
    scopes: frozenset[str] = frozenset(SCOPES)
    conversation_ids: frozenset[uuid.UUID] | None = None
    agent_ids: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant and key come from the verified API key or token, never
    from headers.

    ``grant`` is set when an end-user token authenticated the call (one Atelier minted,
    or a JWT of the tenant's identity provider): the caller *is* ``user_id`` and reaches
    only that user's resources. Without it a secret key names any user it likes."""

    tenant_id: uuid.UUID
    tenant_name: str
    key_id: uuid.UUID
    user_id: str | None
    grant: Grant | None = None

    @property
    def is_end_user(self) -> bool:
        return self.grant is not None

    @property
    def agents_granted(self) -> frozenset[uuid.UUID] | None:
        """The only agents a token may see and run; ``None``: any of the tenant's."""
        return self.grant.agent_ids if self.grant is not None else None

    def may_use_agent(self, agent_id: uuid.UUID | None) -> bool:
        ids = self.agents_granted
        return ids is None or agent_id in ids
