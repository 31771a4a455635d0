"""Legacy links: what dockerd stores and what the linking container sees."""

from __future__ import annotations

import pytest

from kobako.engine import links


def test_parse_and_stored_form():
    assert links.parse("db:alias") == ("db", "alias")
    assert links.parse("db") == ("db", "db")
    assert links.parse("/db:/web/alias") == ("db", "alias")
    assert links.stored("db", "web", "alias") == "/db:/web/alias"
    with pytest.raises(ValueError):
        links.parse(":x")


def test_hosts_line_and_environment():
    assert links.hosts_line("172.17.0.2", "db", "0123456789abcdef", "linked") == \
        "172.17.0.2\tdb 0123456789ab linked\n"
    doc = {"Config": {"ExposedPorts": {"53/udp": {}, "8080/tcp": {}, "80/tcp": {}},
                      "Env": ["PATH=/bin", "HOME=/root", "PASSWORD=s3", "EMPTY="]}}
    env = links.environment("my-db", "web", "10.0.0.2", doc)
    assert env[0] == "MY_DB_NAME=/web/my-db"
    assert env[1] == "MY_DB_PORT=tcp://10.0.0.2:80"  # tcp first, then by number
    assert "MY_DB_PORT_8080_TCP_ADDR=10.0.0.2" in env
    assert "MY_DB_PORT_53_UDP=udp://10.0.0.2:53" in env and "MY_DB_PORT_53_UDP_PROTO=udp" in env
    assert "MY_DB_ENV_PASSWORD=s3" in env and "MY_DB_ENV_EMPTY=" in env
    assert not any(e.startswith(("MY_DB_ENV_PATH", "MY_DB_ENV_HOME")) for e in env)
