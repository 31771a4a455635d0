"""Networks and endpoints in the daemon's state database.

`endpoints` is the IPAM record: one row per (network, container) attachment that
holds an address, with UNIQUE(network_id, ip) so no address is ever handed out
twice, across daemon restarts too. Rows are written before the interfaces are made
and removed after they are gone, so a crash leaves rows the next start cleans up.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from kobako.engine.state import migrate
from kobako.network.errors import NetworkConflict

MIGRATIONS = [
    """
    CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        doc TEXT NOT NULL
    );
    CREATE TABLE endpoints (
        network_id TEXT NOT NULL REFERENCES networks(id),
        container_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        ip TEXT NOT NULL,
        mac TEXT NOT NULL,
        ifname TEXT NOT NULL,
        host_ifname TEXT NOT NULL,
        PRIMARY KEY (network_id, container_id),
        UNIQUE (network_id, ip)
    );
    """,
]


@dataclass
class Endpoint:
    network_id: str
    container_id: str
    endpoint_id: str
    ip: str
    mac: str
    ifname: str  # inside the container: eth0, eth1...
    host_ifname: str  # the host side of the veth pair


class NetworkStore:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        migrate(conn, "network", MIGRATIONS)

    # networks
    def networks(self) -> list[dict]:
        return [json.loads(row[0]) for row in
                self.conn.execute("SELECT doc FROM networks ORDER BY rowid")]

    def insert_network(self, doc: dict) -> None:
        try:
            self.conn.execute("INSERT INTO networks (id, name, doc) VALUES (?,?,?)",
                              (doc["Id"], doc["Name"], json.dumps(doc)))
        except sqlite3.IntegrityError:
            raise NetworkConflict(f"network with name {doc['Name']} already exists") from None

    def delete_network(self, network_id: str) -> None:
        self.conn.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    # endpoints
    def endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        sql = "SELECT network_id, container_id, endpoint_id, ip, mac, ifname, host_ifname " \
              "FROM endpoints"
        rows = (self.conn.execute(sql + " WHERE network_id = ?", (network_id,))
                if network_id else self.conn.execute(sql))
        return [Endpoint(*row) for row in rows]

    def insert_endpoint(self, ep: Endpoint) -> None:
        try:
            self.conn.execute(
                "INSERT INTO endpoints (network_id, container_id, endpoint_id, ip, mac, ifname,"
                " host_ifname) VALUES (?,?,?,?,?,?,?)",
                (ep.network_id, ep.container_id, ep.endpoint_id, ep.ip, ep.mac, ep.ifname,
                 ep.host_ifname))
        except sqlite3.IntegrityError as err:
            if "endpoints.ip" in str(err):
                raise NetworkConflict(f"Address already in use: {ep.ip}") from None
            raise NetworkConflict(f"container {ep.container_id} is already attached to network "
                                  f"{ep.network_id}") from None

    def delete_endpoint(self, network_id: str, container_id: str) -> None:
        self.conn.execute("DELETE FROM endpoints WHERE network_id = ? AND container_id = ?",
                          (network_id, container_id))
