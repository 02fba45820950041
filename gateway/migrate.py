"""Apply the SQL migrations in db/migrations, in name order, once each.

Usage: python -m gateway.migrate  (reads DATABASE_URL)
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway.config import PROJECT_ROOT, get_settings

MIGRATIONS_DIR = PROJECT_ROOT / "db" / "migrations"
# Any constant works; it only has to be the same for every migrating process.
_LOCK_KEY = 7_240_331_001
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

log = logging.getLogger("gateway.migrate")


async def ensure_database(dsn: str) -> None:
    """Create the target database when the server has not got it yet."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        parts = urlsplit(dsn)
        name = parts.path.lstrip("/")
        if not _DB_NAME.match(name):
            raise ValueError(f"refusing to create database named {name!r}") from None
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            log.info("created database %s", name)
        finally:
            await admin.close()
    else:
        await conn.close()


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name TEXT PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {
            r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")
        }
        for path in sorted(directory.glob("*.sql")):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (name) VALUES ($1)", path.name
                )
            applied.append(path.name)
            log.info("applied migration %s", path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        await conn.close()
    return applied


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    settings = get_settings()
    applied = asyncio.run(apply_migrations(settings.database_url))
    print(f"migrations applied: {len(applied)} ({', '.join(applied) or 'up to date'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
