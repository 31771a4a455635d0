"""cgroupsPath resolution, systemd layout, host detection and runc's value conversions."""

import pytest

from kobako.linux.cgroups import CgroupError, convert, host, paths


def test_default_path_is_kobako_slash_id():
    assert paths.resolve(None, "abc") == paths.CgroupPath("/kobako/abc", relative=False)
    assert paths.resolve("", "abc") == paths.CgroupPath("/kobako/abc", relative=False)


def test_absolute_and_relative_paths():
    assert paths.resolve("/a/b", "x") == paths.CgroupPath("/a/b", relative=False)
    assert paths.resolve("a/b", "x") == paths.CgroupPath("a/b", relative=True)


@pytest.mark.parametrize("spec, expected", [
    ("system.slice:docker:abc", "/system.slice/docker-abc.scope"),
    ("machine.slice:libpod:abc", "/machine.slice/libpod-abc.scope"),
    ("a-b-c.slice:p:n", "/a.slice/a-b.slice/a-b-c.slice/p-n.scope"),
    (":docker:abc", "/system.slice/docker-abc.scope"),
    ("-.slice:docker:abc", "/docker-abc.scope"),
    ("system.slice:docker:my.slice", "/my.slice"),
    ("", "/system.slice/kobako-cid.scope"),
])
def test_systemd_layout(spec, expected):
    assert paths.resolve(spec, "cid", systemd=True).path == expected


@pytest.mark.parametrize("spec", ["/system.slice/x", "a:b", "bad:docker:x", "a--b.slice:p:n",
                                  "-a.slice:p:n", "x.slice:p/q:n"])
def test_systemd_rejects_malformed(spec):
    with pytest.raises(CgroupError):
        paths.resolve(spec, "cid", systemd=True)


def test_join_never_escapes_mountpoint():
    assert host.join("/sys/fs/cgroup/memory", "/../../etc") == "/sys/fs/cgroup/memory/etc"
    assert host.join("/sys/fs/cgroup/memory", "/") == "/sys/fs/cgroup/memory"


HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""


def test_parse_mountinfo_hybrid_with_comounted_controllers():
    v1, unified = host.parse_mountinfo(HYBRID_MOUNTINFO)
    assert v1["cpu"].mountpoint == v1["cpuacct"].mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    assert v1["name=systemd"].mountpoint == "/sys/fs/cgroup/systemd"
    assert "xattr" not in v1
    assert unified is not None and unified.mountpoint == "/sys/fs/cgroup/unified"


def test_a_name_only_v1_mount_leaves_a_v2_host_v2(tmp_path):
    """An old systemd's name=systemd hierarchy on a v2 host: still v2, as runc sees it."""
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
        "52 24 0:45 / /run/cgsd rw,relatime - cgroup cgroup rw,none,name=systemd\n")
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("1:name=systemd:/\n0::/init.scope\n")
    detected = host.detect(str(mountinfo), str(proc_cgroup))
    assert detected.mode == "v2" and detected.unified.mountpoint == "/sys/fs/cgroup"
    mountinfo.write_text(HYBRID_MOUNTINFO)
    assert host.detect(str(mountinfo), str(proc_cgroup)).mode == "v1"


def test_parse_proc_cgroup():
    parsed = host.parse_proc_cgroup("4:memory:/a/b\n2:cpu,cpuacct:/\n1:name=systemd:/s\n0::/u\n")
    assert parsed == {"memory": "/a/b", "cpu": "/", "cpuacct": "/", "name=systemd": "/s",
                      "": "/u"}


def test_own_cgroup_strips_namespace_root():
    detected = host.Host("v1", {"memory": host.Hierarchy("/m", ("memory",), "/ns")},
                         None, {"memory": "/ns/inner"})
    assert host.own_cgroup(detected, "memory") == "/inner"


@pytest.mark.parametrize("shares, weight", [(2, 1), (1024, 39), (262144, 10000)])
def test_shares_to_weight_matches_runc(shares, weight):
    assert convert.shares_to_weight(shares) == weight


@pytest.mark.parametrize("blkio, io", [(10, 1), (500, 4950), (1000, 10000)])
def test_blkio_weight_to_io_weight_matches_runc(blkio, io):
    assert convert.blkio_weight_to_io_weight(blkio) == io


def test_swap_conversion():
    assert convert.swap_to_v2(200, 100) == 100
    assert convert.swap_to_v2(-1, 100) == -1
    assert convert.swap_to_v2(None, 100) is None
    assert convert.swap_to_v2(None, -1) == -1
    with pytest.raises(CgroupError, match=">= memory limit"):
        convert.swap_to_v2(50, 100)
    with pytest.raises(CgroupError, match="without memory limit"):
        convert.swap_to_v2(50, None)


def test_pids_limit_text():
    assert convert.pids_limit_text(0) == "max"
    assert convert.pids_limit_text(-1) == "max"
    assert convert.pids_limit_text(10) == "10"


def test_device_rules():
    assert convert.device_rule({"allow": False, "access": "rwm"}) == (False, "a *:* rwm")
    assert convert.device_rule({"allow": True, "type": "c", "major": 1, "minor": 3,
                                "access": "rw"}) == (True, "c 1:3 rw")
    assert convert.device_rule({"allow": True, "type": "b", "major": 8, "minor": -1}) == (
        True, "b 8:* rwm")
    with pytest.raises(CgroupError):
        convert.device_rule({"allow": True, "type": "x"})
    with pytest.raises(CgroupError):
        convert.device_rule({"allow": True, "access": "rwx"})


@pytest.mark.parametrize("size, name", [("2MB", "2MB"), ("2M", "2MB"), ("2048kB", "2MB"),
                                        ("1GB", "1GB"), ("64KB", "64KB")])
def test_hugepage_size_names(size, name):
    assert convert.hugepage_size_name(size) == name


def test_root_cgroup_path_is_refused():
    with pytest.raises(CgroupError, match="root cgroup"):
        paths.resolve("/", "x")
    with pytest.raises(CgroupError, match="root cgroup"):
        paths.resolve("/a/..", "x")


def test_fifo_rules_are_skipped_and_u_is_a_char_device():
    assert convert.device_rule({"allow": True, "type": "p", "major": 0, "minor": 0}) is None
    assert convert.device_rule({"allow": True, "type": "u", "major": 4, "minor": 1}) == (
        True, "c 4:1 rwm")
