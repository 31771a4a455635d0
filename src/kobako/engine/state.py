"""The daemon's SQLite state database: one file, data-root/state.db.

Shared by every engine component and by the image library; each component owns
its own tables and brings its own ordered list of migrations, recorded per
component in `schema_migrations`, so components evolve their schemas independently.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

STATE_DB_NAME = "state.db"


class StateDBError(Exception):
    """The state database cannot be opened or migrated."""


def state_db_path(data_root: str | Path) -> Path:
    return Path(data_root) / STATE_DB_NAME


def open_state_db(path: str | Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    """Open (creating if needed) the state DB in WAL mode with foreign keys on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component TEXT NOT NULL, version INTEGER NOT NULL, applied_at REAL NOT NULL,"
            " PRIMARY KEY (component, version))"
        )
    except sqlite3.Error as exc:
        raise StateDBError(f"cannot open state database {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    return conn


def schema_version(conn: sqlite3.Connection, component: str) -> int:
    row = conn.execute(
        "SELECT MAX(version) FROM schema_migrations WHERE component = ?", (component,)
    ).fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, component: str, migrations: Sequence[str]) -> int:
    """Apply the not-yet-applied scripts of `migrations` (version i+1 = migrations[i]).

    Each script runs in its own transaction together with its bookkeeping row, so a
    crash leaves either the old or the new schema. Returns the resulting version.
    """
    current = schema_version(conn, component)
    if current > len(migrations):
        raise StateDBError(
            f"state database schema of {component!r} is version {current}, newer than this "
            f"kobako knows ({len(migrations)}); refusing to downgrade"
        )
    for version in range(current + 1, len(migrations) + 1):
        script = migrations[version - 1]
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _split_statements(script):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (component, version, applied_at) VALUES (?,?,?)",
                (component, version, time.time()),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StateDBError(
                f"migration {component} v{version} failed: {exc}"
            ) from exc
    return len(migrations)


def _split_statements(script: str) -> list[str]:
    """Split a script into complete statements (a ';' inside a string does not split)."""
    out: list[str] = []
    buf = ""
    for ch in script:
        buf += ch
        if ch == ";" and sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
