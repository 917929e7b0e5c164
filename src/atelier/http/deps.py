"""Request dependencies: resources, the caller, and the unit of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.db import undo
from atelier.db.paging import MAX_LIMIT
from atelier.http.errors import ProblemError
from atelier.http.scope import Principal
from atelier.http.scope import principal as principal_of
from atelier.resources import Resources


async def get_resources(request: Request) -> Resources:
    return request.app.state.resources  # type: ignore[no-any-return]


# Dependencies are async: FastAPI runs a plain `def` dependency in a worker thread.
async def get_caller(request: Request) -> Principal:
    """Any verified caller: a secret key, or an end user's token (what such an endpoint
    shows is limited to what the token grants)."""
    principal = principal_of(request.scope)
    if principal is None:  # the authorization middleware lets no such request through
        raise ProblemError(401, "missing_api_key", "an API key is required")
    return principal


async def get_principal(principal: Annotated[Principal, Depends(get_caller)]) -> Principal:
    """A secret key: tenant administration. An end-user token is refused -- the default
    for every endpoint that does not say it serves end users."""
    if principal.is_end_user:
        raise ProblemError(
            403,
            "forbidden_for_user_token",
            "this takes a secret API key: an end user's token does not administer the tenant",
        )
    return principal


async def get_user_principal(principal: Annotated[Principal, Depends(get_caller)]) -> Principal:
    """For endpoints whose resources belong to an end user: ``X-User-ID`` is required."""
    if principal.user_id is None:
        raise ProblemError(400, "user_id_required", "send the end user's id in X-User-ID")
    return principal


async def unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """One session and one commit point per request; services only flush.

    Used with ``scope="function"`` so the commit happens before the response is sent
    (a failed commit is the client's error response, not a log line after a 2xx).
    """
    resources: Resources = request.app.state.resources
    async with resources.sessionmaker() as session:
        try:
            yield session
            await session.commit()
            undo.committed(session)
        except BaseException:
            try:
                await session.rollback()
            finally:
                # Even when the rollback fails too (the connection is gone): objects
                # written for rows that were not committed are removed.
                await undo.not_committed(session)
            raise


ResourcesDep = Annotated[Resources, Depends(get_resources)]
CallerDep = Annotated[Principal, Depends(get_caller)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
UserPrincipalDep = Annotated[Principal, Depends(get_user_principal)]
SessionDep = Annotated[AsyncSession, Depends(unit_of_work, scope="function")]
# A list's page: at most MAX_LIMIT rows after the cursor the previous page gave.
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=1024)]
