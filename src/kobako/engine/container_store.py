"""Container records in the state database: one row per container, its document as JSON.

The document is the inspect document Docker returns (Id, Name, Config, HostConfig,
State, ...) plus a few private fields under "Kobako". Every change is one UPDATE in
its own transaction, so a daemon killed at any moment leaves each record whole.
"""

from __future__ import annotations

import json
import sqlite3
import threading

from kobako.engine.state import migrate

MIGRATIONS = [
    """
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        doc TEXT NOT NULL
    );
    """,
]


class ContainerStore:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.lock = threading.Lock()
        migrate(conn, "containers", MIGRATIONS)

    def insert(self, doc: dict, created: float) -> None:
        with self.lock:
            self.conn.execute(
                "INSERT INTO containers (id, name, created, doc) VALUES (?, ?, ?, ?)",
                (doc["Id"], doc["Name"], created, json.dumps(doc)),
            )

    def update(self, doc: dict) -> None:
        with self.lock:
            self.conn.execute("UPDATE containers SET name = ?, doc = ? WHERE id = ?",
                              (doc["Name"], json.dumps(doc), doc["Id"]))

    def delete(self, container_id: str) -> None:
        with self.lock:
            self.conn.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def all(self) -> list[dict]:
        with self.lock:
            rows = self.conn.execute("SELECT doc FROM containers ORDER BY created").fetchall()
        return [json.loads(row[0]) for row in rows]
