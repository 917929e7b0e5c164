"""aiobotocore sessions prepared off the event loop.

Creating a client reads the AWS config files and botocore's service models from disk,
synchronously. A session that has read them once keeps them, so each is read here on a
worker thread first and the client is then created on the loop without touching the disk.
"""

from __future__ import annotations

import asyncio

from aiobotocore.session import AioSession, get_session


def _preload(session: AioSession, service: str) -> None:
    session.get_scoped_config()
    session.get_component("endpoint_resolver")  # endpoints.json, partitions.json
    loader = session.get_component("data_loader")
    loader.load_data("sdk-default-configuration")
    loader.load_data("_retry")
    loader.load_data("partitions")
    # Called exactly as botocore's client calls them: the loader caches by arguments.
    for kind in ("service-2", "endpoint-rule-set-1", "paginators-1"):
        loader.load_service_model(service, kind, api_version=None)


async def session_for(service: str) -> AioSession:
    session = get_session()
    await asyncio.to_thread(_preload, session, service)
    return session
