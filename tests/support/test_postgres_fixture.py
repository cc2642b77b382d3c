"""Self-test of the throwaway PostgreSQL cluster fixture (tests/support/postgres.py)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import pytest

if TYPE_CHECKING:  # a runtime import here would defeat pytest's assertion rewriting
    from tests.support.postgres import PgCluster


pytestmark = pytest.mark.postgres


def test_cluster_attributes(pg_cluster: PgCluster) -> None:
    assert pg_cluster.host == "127.0.0.1"
    assert isinstance(pg_cluster.port, int) and pg_cluster.port > 0
    assert pg_cluster.user == "postgres"
    assert pg_cluster.password is None
    assert pg_cluster.admin_dsn == f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/postgres"


async def test_create_use_drop_database(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.create_database("fixture_selftest")
    assert dsn.endswith(f":{pg_cluster.port}/fixture_selftest")
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE item (id serial PRIMARY KEY, name text NOT NULL)")
            await conn.execute("INSERT INTO item (name) VALUES ($1)", "hello")
            rows = await conn.fetch("SELECT id, name FROM item")
            assert [(r["id"], r["name"]) for r in rows] == [(1, "hello")]
            settings = {
                name: await conn.fetchval(f"SHOW {name}")
                for name in ("fsync", "synchronous_commit", "full_page_writes", "max_connections")
            }
            assert settings == {
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "200",
            }
        finally:
            await conn.close()
    finally:
        pg_cluster.drop_database("fixture_selftest")

    admin = await asyncpg.connect(pg_cluster.admin_dsn)
    try:
        exists = await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = 'fixture_selftest'"
        )
    finally:
        await admin.close()
    assert exists == 0


def test_create_from_template(pg_cluster: PgCluster) -> None:
    pg_cluster.create_database("fixture_tpl")
    pg_cluster.execute("CREATE TABLE seeded (x int)", database="fixture_tpl")
    pg_cluster.execute("INSERT INTO seeded VALUES (42)", database="fixture_tpl")
    try:
        dsn = pg_cluster.create_database("fixture_from_tpl", template="fixture_tpl")

        async def read() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                return int(await conn.fetchval("SELECT x FROM seeded"))
            finally:
                await conn.close()

        assert asyncio.run(read()) == 42
    finally:
        pg_cluster.drop_database("fixture_from_tpl")
        pg_cluster.drop_database("fixture_tpl")


def test_drop_missing_database_is_noop(pg_cluster: PgCluster) -> None:
    pg_cluster.drop_database("fixture_never_created")
