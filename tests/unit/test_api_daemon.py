"""Daemon settings, state DB, data-root lock, host parsing and TLS refusal."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from kobako.engine.config import ConfigError, build_config, parse_address_pool
from kobako.engine.daemon import (
    DataRootLock,
    StartupError,
    build_parser,
    config_from_args,
    parse_host,
    tls_context,
    write_pidfile,
)
from kobako.engine.state import StateDBError, migrate, open_state_db, schema_version


def test_flags_and_defaults(tmp_path):
    args = build_parser().parse_args([
        "-H", "unix:///tmp/a.sock", "-H", "unix:///tmp/b.sock", "--data-root", str(tmp_path),
        "--exec-root", str(tmp_path / "run"), "--insecure-registry", "127.0.0.1:5000",
        "--registry-mirror", "http://127.0.0.1:5001", "--log-level", "debug",
        "--group", "docker", "--bip", "172.30.0.1/16",
        "--default-address-pool", "base=10.10.0.0/16,size=24"])
    cfg = config_from_args(args)
    assert cfg.hosts == ["unix:///tmp/a.sock", "unix:///tmp/b.sock"]
    assert cfg.insecure_registries == ["127.0.0.1:5000"]
    assert cfg.default_address_pools == [{"base": "10.10.0.0/16", "size": 24}]
    assert cfg.group == "docker" and cfg.bip == "172.30.0.1/16" and cfg.log_level == "debug"
    assert cfg.effective_pidfile() == str(tmp_path / "run" / "kobakod.pid")
    default = build_config({}, None)
    assert default.effective_hosts() == ["unix:///run/kobako.sock"]
    assert default.data_root == "/var/lib/kobako" and default.exec_root == "/run/kobako"
    assert default.effective_pidfile() == "/run/kobako.pid"
    assert default.group == "kobako"


def test_config_file_merges_and_conflicts(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"data-root": str(tmp_path / "d"), "log-level": "warn",
                                "insecure-registries": ["r:5000"],
                                "log-opts": {"max-size": "10m"}}))
    cfg = build_config({"hosts": ["unix:///x.sock"]}, str(path))
    assert cfg.data_root == str(tmp_path / "d") and cfg.log_level == "warn"
    assert cfg.insecure_registries == ["r:5000"] and cfg.log_opts == {"max-size": "10m"}
    with pytest.raises(ConfigError, match="both as a flag and in the configuration file"):
        build_config({"log_level": "debug"}, str(path))
    path.write_text('{"data-rot": "/x"}')
    with pytest.raises(ConfigError, match="don't match any configuration option"):
        build_config({}, str(path))
    path.write_text('{"hosts": "unix:///x"}')
    with pytest.raises(ConfigError, match="wrong type"):
        build_config({}, str(path))
    path.write_text("{broken")
    with pytest.raises(ConfigError, match="invalid configuration file"):
        build_config({}, str(path))
    with pytest.raises(ConfigError, match="logging level"):
        build_config({"log_level": "loud"}, None)
    with pytest.raises(ConfigError, match="absolute"):
        build_config({"data_root": "relative"}, None)


def test_address_pool_parsing():
    assert parse_address_pool("base=10.0.0.0/8,size=24") == {"base": "10.0.0.0/8", "size": 24}
    for bad in ("base=10.0.0.0/8", "size=x,base=1", "junk"):
        with pytest.raises(ConfigError):
            parse_address_pool(bad)


def test_host_parsing_and_tcp_requires_verified_tls(tmp_path):
    assert parse_host("unix:///run/x.sock").address == "/run/x.sock"
    assert parse_host("unix://").address == "/run/kobako.sock"
    tcp = parse_host("tcp://127.0.0.1:2376")
    assert (tcp.kind, tcp.address, tcp.port) == ("tcp", "127.0.0.1", 2376)
    with pytest.raises(ConfigError):
        parse_host("http://x")
    with pytest.raises(ConfigError):
        parse_host("unix://relative.sock")
    cfg = build_config({}, None)
    with pytest.raises(ConfigError, match="verified client certificates"):
        tls_context(cfg, tcp)
    cfg.tls.verify = True
    cfg.tls.cacert = str(tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match="missing --tlscert, --tlskey"):
        tls_context(cfg, tcp)
    cfg.tls.cert, cfg.tls.key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    with pytest.raises(ConfigError, match="cannot load TLS material"):
        tls_context(cfg, tcp)


def test_data_root_lock_is_exclusive(tmp_path):
    first = DataRootLock(str(tmp_path))
    first.acquire()
    second = DataRootLock(str(tmp_path))
    with pytest.raises(StartupError, match=f"pid {os.getpid()}"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_pidfile_written_atomically(tmp_path):
    path = tmp_path / "run" / "kobakod.pid"
    write_pidfile(str(path))
    assert path.read_text() == str(os.getpid())
    path.write_text("999999999")  # a stale pid from a dead daemon is replaced
    write_pidfile(str(path))
    assert path.read_text() == str(os.getpid())


def test_state_db_wal_and_migrations(tmp_path):
    conn = open_state_db(tmp_path / "state.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    migs = ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
            "ALTER TABLE t ADD COLUMN w TEXT; CREATE INDEX t_v ON t(v);"]
    assert migrate(conn, "test", migs) == 2
    assert schema_version(conn, "test") == 2
    assert migrate(conn, "test", migs) == 2  # idempotent
    assert schema_version(conn, "other") == 0
    conn.execute("INSERT INTO t (v, w) VALUES ('a', 'b')")
    with pytest.raises(StateDBError, match="refusing to downgrade"):
        migrate(conn, "test", migs[:1])
    with pytest.raises(StateDBError, match="migration test v3 failed"):
        migrate(conn, "test", migs + ["CREATE TABLE t (x);"])
    assert schema_version(conn, "test") == 2  # the failed step left no trace
    conn.close()
    again = sqlite3.connect(tmp_path / "state.db")
    assert again.execute("SELECT v, w FROM t").fetchall() == [("a", "b")]
    again.close()
