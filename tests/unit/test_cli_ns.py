"""kobako ns: namespace inodes from /proc and which of them are shared."""

from __future__ import annotations

import os

from kobako.cli.commands.ns import KINDS, namespaces, shared


def test_namespaces_of_this_process_match_proc():
    ours = namespaces(os.getpid())
    assert set(ours) == set(KINDS)
    net = int(os.readlink("/proc/self/ns/net").split("[")[1].rstrip("]"))
    assert ours["net"] == net


def test_namespaces_of_a_missing_process_are_none():
    assert set(namespaces(2**22 + 7).values()) == {None}


def test_shared_groups_only_namespaces_with_several_members():
    entries = [
        {"name": "host", "namespaces": {"pid": 1, "net": 10, "time": None}},
        {"name": "a", "namespaces": {"pid": 2, "net": 20, "time": None}},
        {"name": "b", "namespaces": {"pid": 3, "net": 20, "time": None}},
        {"name": "c", "namespaces": {"pid": 1, "net": 30, "time": None}},
    ]
    groups = {(g["type"], g["inode"]): g["members"] for g in shared(entries)}
    assert groups == {("net", 20): ["a", "b"], ("pid", 1): ["host", "c"]}
