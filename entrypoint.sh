#!/bin/sh
# Wait for the database, migrate (safe from N containers at once), then run the command.
set -eu

python - <<'PY'
import asyncio, os, sys, time
from sqlalchemy import text
from atelier.db.engine import create_engine
from atelier.settings import Settings

async def wait() -> None:
    engine = create_engine(Settings())
    deadline = time.monotonic() + float(os.environ.get("ATELIER_DB_WAIT_SECONDS", "60"))
    try:
        while True:
            try:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    sys.exit(f"database not reachable: {exc}")
                print("waiting for the database...", file=sys.stderr)
                await asyncio.sleep(1)
    finally:
        await engine.dispose()

asyncio.run(wait())
PY

atelier migrate
exec "$@"
