"""Engine creation and migrations.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL``, so a committed journal row
survives a power cut before the source is acknowledged, and a busy timeout so concurrent writers wait
instead of failing. PostgreSQL URLs work unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from ..errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_MS = 15000


def check_driver(url: str) -> None:
    """ConfigError when the URL is not understood or its database driver is not installed: a setting
    to fix (``pip install 'svcbridge[postgres]'``), not an outage to retry (``ingest`` exits 2, not 75)."""
    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError([("database_url", f"not a database URL SQLAlchemy knows: {exc}")]) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        hint = (
            "install svcbridge with the postgres extra: pip install 'svcbridge[postgres]'"
            if dialect.name == "postgresql"
            else f"install the {dialect.driver} driver"
        )
        raise ConfigError([("database_url", f"{dialect.name}+{dialect.driver}: {exc}; {hint}")]) from None


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite make the parent directory and set the pragmas on each connection.

    A URL whose driver is missing is a ConfigError (``check_driver``)."""
    if not url.startswith("sqlite"):
        check_driver(url)
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # a new file gives pages back (retention and erasure run incremental_vacuum): said before
    # anything writes the file (WAL does); on an existing file a no-op, upgrade rebuilds it once
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def alembic_config(engine: Engine, blobs: Any = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    cfg.attributes["blobs"] = blobs  # migration 0012 moves stored bytes into it (store/blobmove.py)
    return cfg


def head_revision() -> str:
    """The newest migration, by the naming rule ``NNNN_what.py`` with ``revision = "NNNN"``.

    ``tests/test_cli.py`` checks it against Alembic's own idea of the head, so a migration that breaks
    the rule fails a test instead of being skipped here.
    """
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def upgrade(engine: Engine, revision: str = "head", blobs: Any = None) -> None:
    """Run migrations up to `revision` (idempotent; runs on every daemon start and every ``ingest``).

    A store already at the head is left alone without importing Alembic: that import is a fifth of
    the start-up of a short-lived process such as an MTA's ``svcbridge ingest`` per mail. An empty
    database is created at the head directly (``create_at_head``), as Alembic's own cookbook does
    ("create_all, then stamp"): replaying every migration imports Alembic, Mako and Pygments and took
    about a second of a fresh ``run --once``.
    """
    if revision == "head":
        current = current_revision(engine)
        if current == head_revision():
            return
        if current is None and _empty(engine):
            try:
                create_at_head(engine)
                return
            except Exception:
                if current_revision(engine) == head_revision():
                    return  # another process (a second replica) created it at the same moment
                raise
    from alembic import command

    command.upgrade(alembic_config(engine, blobs), revision)
    vacuum_for_retention(engine)


def vacuum_for_retention(engine: Engine) -> None:
    """SQLite: a store made before auto_vacuum=INCREMENTAL is rebuilt with it once (VACUUM, outside
    any transaction), so what retention deletes is given back to the file system from then on."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        incremental = conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        assert dbapi is not None
        if incremental:  # what a migration freed (0012: the bytes moved out) goes back now
            dbapi.executescript("PRAGMA incremental_vacuum;")
            return
        saved, dbapi.isolation_level = dbapi.isolation_level, None
        try:
            dbapi.execute("PRAGMA auto_vacuum=INCREMENTAL")
            dbapi.execute("VACUUM")
        finally:
            dbapi.isolation_level = saved
    finally:
        raw.close()


def _empty(engine: Engine) -> bool:
    from . import schema

    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
    return not present & set(schema.metadata.tables)


def create_at_head(engine: Engine) -> None:
    """Create every table and index of ``schema.py`` and record the head revision, in one transaction.

    ``tests/test_store_schema.py`` proves the result equal to replaying the migrations (tables,
    columns, types, keys, indexes), on SQLite and PostgreSQL, so the two ways cannot drift apart.
    A leftover empty ``alembic_version`` (after ``alembic downgrade base``) is reused. On SQLite the
    DDL runs inside an explicit BEGIN on the raw connection: Python's sqlite3 module commits each
    CREATE on its own otherwise, and a crash half-way would leave tables without a revision.
    """
    from sqlalchemy.schema import CreateIndex, CreateTable

    from . import schema

    statements = [
        str(CreateTable(tb).compile(dialect=engine.dialect)) for tb in schema.metadata.sorted_tables
    ]
    statements += [
        str(CreateIndex(ix).compile(dialect=engine.dialect))
        for tb in schema.metadata.sorted_tables
        for ix in sorted(tb.indexes, key=lambda i: str(i.name))
    ]
    statements += [
        "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
        "DELETE FROM alembic_version",
    ]
    head = head_revision()
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            dbapi = raw.driver_connection
            assert dbapi is not None
            saved, dbapi.isolation_level = dbapi.isolation_level, None  # we say BEGIN and COMMIT
            try:
                cur = dbapi.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    for sql in statements:
                        cur.execute(sql)
                    cur.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (head,))
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
            finally:
                dbapi.isolation_level = saved
        finally:
            raw.close()
        return
    with engine.begin() as conn:  # PostgreSQL: DDL is transactional as it is
        for sql in statements:
            conn.exec_driver_sql(sql)
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (%(v)s)", {"v": head})


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return row[0] if row else None
