"""User resolution from the image's /etc/passwd and /etc/group (Docker/runc semantics)."""

from __future__ import annotations

import os

import pytest

from kobako.engine import users
from kobako.engine.errors import InvalidParameter

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:100::/home/bob:/bin/sh
"""
GROUP = """\
root:x:0:
daemon:x:1:
users:x:100:alice
wheel:x:10:alice,root
alice:x:1000:
video:x:44:bob
"""


@pytest.fixture
def rootfs(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    return str(tmp_path)


@pytest.mark.parametrize("user, group_add, expected", [
    ("", [], (0, 0, [0, 10])),                       # root's supplementary group wheel
    ("root", [], (0, 0, [0, 10])),
    ("alice", [], (1000, 1000, [1000, 100, 10])),    # passwd gid, then /etc/group membership
    ("1000", [], (1000, 1000, [1000, 100, 10])),     # a uid finds its passwd entry
    ("alice:video", [], (1000, 44, [44])),           # explicit group: no supplementary ones
    ("alice:44", [], (1000, 44, [44])),
    ("1000:5000", [], (1000, 5000, [5000])),         # unknown numeric group is fine
    ("4242", [], (4242, 0, [0])),                    # unknown numeric user: gid 0
    ("4242:users", [], (4242, 100, [100])),
    ("bob", ["video", "wheel", "777", "video"], (1001, 100, [100, 44, 44, 10, 777])),
])
def test_resolve_user(rootfs, user, group_add, expected):
    assert users.resolve_user(rootfs, user, group_add) == expected


@pytest.mark.parametrize("user, group_add, message", [
    ("foo", [], "unable to find user foo: no matching entries in passwd file"),
    ("alice:nogroup", [], "unable to find group nogroup: no matching entries in group file"),
    ("alice", ["nogroup"], "Unable to find group nogroup: no matching entries in group file"),
    ("-1", [], "uids and gids must be in range 0-2147483647"),
    ("1:2147483648", [], "uids and gids must be in range 0-2147483647"),
])
def test_resolve_user_errors(rootfs, user, group_add, message):
    with pytest.raises(InvalidParameter) as err:
        users.resolve_user(rootfs, user, group_add)
    assert str(err.value) == message


def test_no_passwd_file(tmp_path):
    # An image without /etc: numbers work, names do not.
    assert users.resolve_user(str(tmp_path), "123:456", []) == (123, 456, [456])
    assert users.resolve_user(str(tmp_path), "", []) == (0, 0, [0])
    with pytest.raises(InvalidParameter, match="unable to find user nobody"):
        users.resolve_user(str(tmp_path), "nobody", [])


def test_symlink_cannot_reach_host_files(tmp_path):
    # /etc/passwd -> /etc/host-secret must resolve inside the rootfs, not on the host.
    host_file = tmp_path / "host-passwd"
    host_file.write_text("evil:x:0:0::/:/bin/sh\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(host_file), root / "etc" / "passwd")
    with pytest.raises(InvalidParameter, match="unable to find user evil"):
        users.resolve_user(str(root), "evil", [])
    # A relative escape through .. is clamped at the root as well.
    os.unlink(root / "etc" / "passwd")
    os.symlink("../../host-passwd", root / "etc" / "passwd")
    with pytest.raises(InvalidParameter, match="unable to find user evil"):
        users.resolve_user(str(root), "evil", [])


def test_absolute_symlink_resolves_inside_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    (root / "real" / "passwd").write_text("carol:x:77:88::/:/bin/sh\n")
    os.symlink("/real/passwd", root / "etc" / "passwd")
    assert users.resolve_user(str(root), "carol", []) == (77, 88, [88])


def test_fifo_is_refused_without_blocking(tmp_path):
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc" / "passwd")
    with pytest.raises(InvalidParameter, match="not a regular file"):
        users.resolve_user(str(tmp_path), "alice", [])


def test_exec_user_first_match_wins_and_tolerates_junk():
    passwd = "\n  \nbroken\ndup:x:5:6::/:/bin/sh\ndup:x:7:8::/:/bin/sh\nodd:x:abc:9::/:\n"
    assert users.exec_user("dup", passwd, None) == (5, 6, [])
    assert users.exec_user("odd", passwd, None) == (0, 9, [])  # a bad uid reads as 0
