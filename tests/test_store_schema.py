"""An empty store is created at the head directly (``db.create_at_head``); it must be exactly what
replaying every migration gives: same tables, columns, types, nullability, keys and indexes, on SQLite
and on PostgreSQL. Otherwise a fresh install and an upgraded install would differ in ways nobody sees
until a query plan or a constraint does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, inspect

from conftest import fresh_pg_database
from svcbridge.store import db


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything about the schema that a query or a constraint can notice, in a comparable form."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        ins = inspect(conn)
        for name in sorted(ins.get_table_names()):
            out[name] = {
                "columns": sorted(
                    [
                        (c["name"], str(c["type"]).split("(")[0].upper(), c["nullable"])
                        for c in ins.get_columns(name)
                    ]
                ),  # order aside: a migration adds columns at the end
                "pk": ins.get_pk_constraint(name)["constrained_columns"],
                "fks": sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                    for f in ins.get_foreign_keys(name)
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in ins.get_indexes(name)
                ),
                "uniques": sorted(tuple(u["column_names"]) for u in ins.get_unique_constraints(name)),
            }
        out["revision"] = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    return out


def migrated(url: str) -> Engine:
    engine = db.make_engine(url)
    command.upgrade(db.alembic_config(engine), "head")  # the long way, every migration in turn
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def two_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    with fresh_pg_database() as first, fresh_pg_database() as second:
        yield first, second


def test_a_fresh_store_equals_the_migrated_one(two_urls: tuple[str, str]) -> None:
    long_way, short_way = two_urls
    a = migrated(long_way)
    b = db.make_engine(short_way)
    db.upgrade(b)  # empty: created at the head without Alembic
    assert db.current_revision(b) == db.head_revision()
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    for table in sa:
        assert sa[table] == sb[table], table
    a.dispose()
    b.dispose()


def test_a_store_with_tables_but_no_revision_is_left_to_alembic(tmp_path: Path) -> None:
    """Tables without alembic_version (a half-made store, a foreign database) are never created over."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE journal (id INTEGER PRIMARY KEY)")
    with pytest.raises(Exception):  # Alembic's 0001 meets the existing table
        db.upgrade(engine)
    assert db.current_revision(engine) is None


def test_an_empty_revision_table_left_by_a_downgrade_is_reused(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    db.upgrade(engine)
    command.downgrade(db.alembic_config(engine), "base")  # leaves an empty alembic_version behind
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()


def test_a_creation_that_fails_half_way_leaves_nothing_behind_on_sqlite(tmp_path: Path) -> None:
    """SQLite commits each CREATE on its own unless told otherwise: all of it, or none of it."""
    from svcbridge.store import schema

    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:  # a foreign object whose index name collides with one of ours
        conn.exec_driver_sql("CREATE TABLE other (x)")
        conn.exec_driver_sql("CREATE INDEX ix_tickets_state ON other (x)")
    with pytest.raises(Exception, match="ix_tickets_state"):
        db.upgrade(engine)
    with engine.connect() as conn:
        left = set(inspect(conn).get_table_names())
    assert left == {"other"}  # no table of ours, no revision: the next start begins afresh
    assert not left & set(schema.metadata.tables)
