"""kobako.network.exposure on the real kernel: /var/run/netns links of namespaces,
removed only while they still hold the namespace that was exposed."""

from __future__ import annotations

import json
import os
import secrets
import subprocess

import pytest

from kobako.linux.syscalls import MNT_DETACH, real
from kobako.network import exposure

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def sleepers():
    procs = []

    def spawn() -> int:
        proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
        procs.append(proc)
        for _ in range(100):  # until unshare has exec'd sleep in the new namespace
            if os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                return proc.pid
            subprocess.run(["sleep", "0.02"])
        raise AssertionError("unshare --net did not take effect")

    yield spawn
    for proc in procs:
        proc.kill()
        proc.wait()


def test_expose_then_unexpose_container(sleepers):
    name, cid = f"kbx-{secrets.token_hex(3)}", secrets.token_hex(32)
    pid = sleepers()
    try:
        exp = exposure.expose(name, cid, pid)
        st, ns = os.stat(exp.link), os.stat(f"/proc/{pid}/ns/net")
        assert (st.st_dev, st.st_ino) == (ns.st_dev, ns.st_ino)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert name in listed.split()
        links = json.loads(subprocess.run(["ip", "netns", "exec", name, "ip", "-j", "link"],
                                          capture_output=True, text=True, check=True).stdout)
        assert [link["ifname"] for link in links] == ["lo"]
        assert exposure.by_name(name) == exp
        assert exposure.expose(name, cid, pid) == exp  # again: the same, no error
        assert exposure.unexpose_container(cid) == [name]
        assert not os.path.exists(exp.link) and exposure.by_name(name) is None
    finally:
        exposure.unexpose_container(cid)


def test_a_reused_name_is_not_removed(sleepers):
    name, cid = f"kbx-{secrets.token_hex(3)}", secrets.token_hex(32)
    first, second = sleepers(), sleepers()
    link = os.path.join(exposure.NETNS_DIR, name)
    try:
        old = exposure.expose(name, cid, first)
        # someone else replaces the link with another namespace of the same name
        real().umount2(link, MNT_DETACH)
        os.unlink(link)
        subprocess.run(["ip", "netns", "attach", name, str(second)], check=True)
        assert exposure.unexpose(old) is False
        assert os.path.exists(link) and exposure.by_name(name) is None
        with pytest.raises(exposure.ExposureError):
            exposure.expose(name, cid, first)  # taken by another namespace
        with pytest.raises(exposure.ExposureError):
            exposure.expose("kbx-self", cid, os.getpid())  # the host's own namespace
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        exposure.unexpose_container(cid)
    assert not os.path.exists(link)
