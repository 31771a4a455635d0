"""A second container joins the first's pid and network namespaces by path."""

from __future__ import annotations

import os

PORT = 18080


def test_second_container_sees_the_firsts_processes_and_reaches_its_server(rt, make_bundle):
    first = make_bundle("first", "httpd", "-f", "-p", f"127.0.0.1:{PORT}", "-h", "/etc")
    first_id, first_pid = rt.start_detached(first)

    second = make_bundle("second")
    second.namespace("pid", f"/proc/{first_pid}/ns/pid")
    second.namespace("network", f"/proc/{first_pid}/ns/net")
    second.sh(
        "ps -o pid,args; echo --;"
        f"for i in $(seq 50); do wget -q -O - http://127.0.0.1:{PORT}/hostname && break;"
        " sleep 0.1; done"
    )
    processes, served = rt.run(second).stdout.split("--\n")
    rows = dict(line.split(None, 1) for line in processes.splitlines()[1:])
    assert rows["1"].startswith("httpd -f -p"), processes
    assert len(rows) >= 3, processes  # httpd, this sh and its ps
    assert served.strip() == "kbt"  # the rootfs' /etc/hostname, through the shared loopback

    # both really are in the same namespaces, and the host is not
    second_bundle = make_bundle("third", "sh", "-c", "readlink /proc/1/ns/net")
    second_bundle.namespace("pid", f"/proc/{first_pid}/ns/pid")
    second_bundle.namespace("network", f"/proc/{first_pid}/ns/net")
    assert rt.run(second_bundle).stdout.strip() == os.readlink(f"/proc/{first_pid}/ns/net")
    assert os.readlink(f"/proc/{first_pid}/ns/net") != os.readlink("/proc/self/ns/net")
    rt.delete(first_id)


def test_joining_a_namespace_that_does_not_exist_fails_cleanly(rt, bundle):
    bundle.namespace("network", "/proc/999999999/ns/net")
    proc = rt.run(bundle, check=False)
    assert proc.returncode != 0
    assert "network namespace" in proc.stderr and "\n" not in proc.stderr.strip()
