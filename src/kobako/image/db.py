"""Image metadata in the engine's SQLite database (tables prefixed image_/layer_).

The engine may own the same database file; every table here is ours alone. WAL mode,
one connection shared by threads behind a lock, each change in a transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS image_images (
    id TEXT PRIMARY KEY,              -- config digest = image ID
    manifest_digest TEXT NOT NULL,
    manifest_media_type TEXT NOT NULL,
    index_digest TEXT,
    created TEXT,                     -- from the config (RFC 3339)
    size INTEGER NOT NULL DEFAULT 0,  -- unpacked bytes
    parent TEXT,                      -- image this one was committed from
    top_chain TEXT,                   -- chain id of the top layer (NULL: no layers)
    os TEXT, architecture TEXT, variant TEXT,
    added REAL NOT NULL               -- when it arrived here (before/since order)
);
CREATE TABLE IF NOT EXISTS image_refs (
    name TEXT PRIMARY KEY,            -- "docker.io/library/busybox:latest" or "...@sha256:..."
    image_id TEXT NOT NULL REFERENCES image_images(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('tag', 'digest'))
);
CREATE INDEX IF NOT EXISTS image_refs_image ON image_refs(image_id);
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL REFERENCES image_images(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    diff_id TEXT NOT NULL,
    chain_id TEXT NOT NULL,
    blob_digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    blob_size INTEGER NOT NULL,
    PRIMARY KEY (image_id, position)
);
CREATE INDEX IF NOT EXISTS image_layers_chain ON image_layers(chain_id);
CREATE INDEX IF NOT EXISTS image_layers_blob ON image_layers(blob_digest);
CREATE TABLE IF NOT EXISTS layer_snapshots (
    chain_id TEXT NOT NULL,
    driver TEXT NOT NULL,
    parent TEXT,
    diff_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (chain_id, driver)
);
CREATE TABLE IF NOT EXISTS build_cache (
    parent TEXT NOT NULL,             -- the image a build step started from ("" for scratch)
    key TEXT NOT NULL,                -- what the step did (kobako.engine.build)
    image_id TEXT NOT NULL,           -- the image it made
    PRIMARY KEY (parent, key)
);
CREATE TABLE IF NOT EXISTS layer_containers (
    container_id TEXT PRIMARY KEY,
    image_id TEXT,
    top_chain TEXT,
    driver TEXT NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass
class ImageRow:
    id: str
    manifest_digest: str
    manifest_media_type: str
    index_digest: str | None
    created: str | None
    size: int
    parent: str | None
    top_chain: str | None
    os: str | None
    architecture: str | None
    variant: str | None
    added: float


@dataclass
class LayerRow:
    position: int
    diff_id: str
    chain_id: str
    blob_digest: str
    media_type: str
    blob_size: int


class ImageDB:
    def __init__(self, path: str):
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                    timeout=30)
        self.conn.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        with self.lock:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _q(self, sql: str, *args) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, args).fetchall()

    # images --------------------------------------------------------------------------------

    def add_image(self, row: ImageRow, layers: list[LayerRow]) -> None:
        with self.tx() as c:
            old = c.execute("SELECT added FROM image_images WHERE id=?", (row.id,)).fetchone()
            if old is not None:
                return  # already known: keep its arrival time and layers
            c.execute(
                "INSERT INTO image_images VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (row.id, row.manifest_digest, row.manifest_media_type, row.index_digest,
                 row.created, row.size, row.parent, row.top_chain, row.os, row.architecture,
                 row.variant, row.added or time.time()),
            )
            c.executemany(
                "INSERT INTO image_layers VALUES (?,?,?,?,?,?,?)",
                [(row.id, la.position, la.diff_id, la.chain_id, la.blob_digest, la.media_type,
                  la.blob_size) for la in layers],
            )

    def get_image(self, image_id: str) -> ImageRow | None:
        rows = self._q("SELECT * FROM image_images WHERE id=?", image_id)
        return ImageRow(**dict(rows[0])) if rows else None

    def images(self) -> list[ImageRow]:
        return [ImageRow(**dict(r)) for r in self._q("SELECT * FROM image_images ORDER BY added")]

    def image_ids_with_prefix(self, prefix: str) -> list[str]:
        return [r[0] for r in self._q(
            "SELECT id FROM image_images WHERE id >= ? AND id < ?", prefix, prefix + "\uffff"
        )]

    def delete_image(self, image_id: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM build_cache WHERE image_id=? OR parent=?",
                      (image_id, image_id))
            c.execute("DELETE FROM image_refs WHERE image_id=?", (image_id,))
            c.execute("DELETE FROM image_layers WHERE image_id=?", (image_id,))
            c.execute("DELETE FROM image_images WHERE id=?", (image_id,))

    def layers(self, image_id: str) -> list[LayerRow]:
        return [LayerRow(**{k: r[k] for k in r.keys() if k != "image_id"}) for r in self._q(
            "SELECT * FROM image_layers WHERE image_id=? ORDER BY position", image_id
        )]

    def cached_step(self, parent: str, key: str) -> str | None:
        rows = self._q("SELECT image_id FROM build_cache WHERE parent=? AND key=?", parent, key)
        return rows[0][0] if rows else None

    def cache_step(self, parent: str, key: str, image_id: str) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO build_cache (parent, key, image_id) "
                      "VALUES (?, ?, ?)", (parent, key, image_id))

    def children(self, image_id: str) -> list[str]:
        return [r[0] for r in self._q("SELECT id FROM image_images WHERE parent=?", image_id)]

    def layer_by_blob(self, blob_digest: str) -> LayerRow | None:
        rows = self._q("SELECT * FROM image_layers WHERE blob_digest=? LIMIT 1", blob_digest)
        if not rows:
            return None
        return LayerRow(**{k: rows[0][k] for k in rows[0].keys() if k != "image_id"})

    # references ----------------------------------------------------------------------------

    def set_ref(self, name: str, image_id: str, kind: str) -> str | None:
        """Point `name` at `image_id`; returns the image it pointed to before."""
        with self.tx() as c:
            old = c.execute("SELECT image_id FROM image_refs WHERE name=?", (name,)).fetchone()
            c.execute("INSERT OR REPLACE INTO image_refs VALUES (?,?,?)", (name, image_id, kind))
        return old[0] if old and old[0] != image_id else None

    def get_ref(self, name: str) -> str | None:
        rows = self._q("SELECT image_id FROM image_refs WHERE name=?", name)
        return rows[0][0] if rows else None

    def delete_ref(self, name: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM image_refs WHERE name=?", (name,))

    def refs(self, image_id: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self._q(
            "SELECT name, kind FROM image_refs WHERE image_id=? ORDER BY name", image_id
        )]

    def all_refs(self) -> list[tuple[str, str, str]]:
        return [(r[0], r[1], r[2]) for r in self._q("SELECT name, image_id, kind FROM image_refs")]

    # snapshots -----------------------------------------------------------------------------

    def add_snapshot(self, chain_id: str, driver: str, parent: str | None, diff_id: str,
                     size: int) -> None:
        with self.tx() as c:
            c.execute("INSERT OR IGNORE INTO layer_snapshots VALUES (?,?,?,?,?,?)",
                      (chain_id, driver, parent, diff_id, size, time.time()))

    def snapshot(self, chain_id: str, driver: str) -> sqlite3.Row | None:
        rows = self._q("SELECT * FROM layer_snapshots WHERE chain_id=? AND driver=?",
                       chain_id, driver)
        return rows[0] if rows else None

    def snapshots(self, driver: str) -> list[sqlite3.Row]:
        return self._q("SELECT * FROM layer_snapshots WHERE driver=?", driver)

    def delete_snapshot(self, chain_id: str, driver: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM layer_snapshots WHERE chain_id=? AND driver=?",
                      (chain_id, driver))

    def add_container(self, container_id: str, image_id: str | None, top_chain: str | None,
                      driver: str) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO layer_containers VALUES (?,?,?,?,?)",
                      (container_id, image_id, top_chain, driver, time.time()))

    def delete_container(self, container_id: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM layer_containers WHERE container_id=?", (container_id,))

    def containers(self, driver: str) -> list[sqlite3.Row]:
        return self._q("SELECT * FROM layer_containers WHERE driver=?", driver)

    def used_chains(self, driver: str) -> set[str]:
        """Chain ids still needed: every image's layers and every container's chain."""
        used = {r[0] for r in self._q("SELECT chain_id FROM image_layers")}
        parents = {r["chain_id"]: r["parent"] for r in self.snapshots(driver)}
        for r in self.containers(driver):
            c = r["top_chain"]
            while c and c not in used:
                used.add(c)
                c = parents.get(c)
        return used

    def used_blobs(self) -> set[str]:
        used: set[str] = set()
        for r in self._q("SELECT id, manifest_digest, index_digest FROM image_images"):
            used.update(x for x in r if x)
        used.update(r[0] for r in self._q("SELECT blob_digest FROM image_layers"))
        return used
