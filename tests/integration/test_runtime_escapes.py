"""Regression tests modelled on the escapes that hit runc and Docker."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time

import pytest
from bundles import RUNTIME, mounts_mentioning, read


def fds_of(pid: int) -> dict[int, str]:
    return {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}


def test_no_runtime_fd_leaks_into_the_container(rt, bundle):
    container_id, pid = rt.start_detached(bundle.args("sleep", "60"))
    assert sorted(fds_of(pid)) == [0, 1, 2], fds_of(pid)
    with open(bundle.err, "ab") as err:
        rt("exec", "--detach", "--pid-file", f"{bundle.path}/exec.pid", container_id,
           "sleep", "61", stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    exec_pid = int(read(f"{bundle.path}/exec.pid"))
    assert sorted(fds_of(exec_pid)) == [0, 1, 2], fds_of(exec_pid)
    rt.delete(container_id)


def test_preserve_fds_passes_exactly_those(rt, bundle, tmp_path):
    bundle.args("sleep", "60").write()
    container_id = rt.new_id()
    extra = tmp_path / "extra"
    extra.write_text("x")
    # fds 3 and 4 are the ones to keep; 5 must not get through
    script = (f'exec 3<"{extra}" 4<"{extra}" 5<"{extra}"; exec "$@"')
    with open(bundle.out, "wb") as out:  # not pipes: the container keeps its stdio
        proc = subprocess.run(
            ["sh", "-c", script, "sh", *rt.argv("create", "--preserve-fds", "2", "--bundle",
                                                bundle.path, container_id)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True,
            check=False, timeout=60,
        )
    assert proc.returncode == 0, read(bundle.out)
    rt("start", container_id)
    pid = rt.state(container_id)["pid"]
    fds = fds_of(pid)
    assert sorted(fds) == [0, 1, 2, 3, 4], "\n".join(f"{k} {v}" for k, v in fds.items())
    assert fds[3] == fds[4] == str(extra)
    rt.delete(container_id)


def test_cwd_through_a_leaked_fd_never_lands_outside_the_rootfs(rt, bundle):
    # CVE-2024-21626: process.cwd /proc/self/fd/N naming a host directory the runtime held
    # open. Either create fails, or the process is inside its root: ../../.. stays there.
    marker = "kbtuser"  # only in the container's /etc/passwd
    with open("/etc/passwd") as f:
        assert marker not in f.read()
    bundle.sh("cat ../../../../../../../../../etc/passwd")
    outcomes = []
    for fd in range(3, 16):
        bundle.process["cwd"] = f"/proc/self/fd/{fd}"
        proc = rt.run(bundle, check=False)
        if proc.returncode == 0:
            assert marker in proc.stdout, f"cwd fd {fd}: read the host's /etc/passwd"
            outcomes.append("inside")
        else:
            assert "\n" not in proc.stderr.strip(), proc.stderr
            outcomes.append("refused")
    assert outcomes  # one way or the other, every fd was tried


def test_exec_cwd_through_a_leaked_fd_never_lands_outside_the_rootfs(rt, bundle):
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    for fd in range(3, 16):
        proc = rt("exec", "--cwd", f"/proc/self/fd/{fd}", container_id,
                  "cat", "../../../../../../../../../etc/passwd", check=False)
        if proc.returncode == 0:
            assert "kbtuser" in proc.stdout, f"exec cwd fd {fd}: read the host's /etc/passwd"
    rt.delete(container_id)


@pytest.fixture
def host_target():
    """A host directory that container mounts must never touch."""
    path = tempfile.mkdtemp(prefix="kbt-host-target-")
    yield path
    assert not mounts_mentioning(path)
    os.rmdir(path)  # fails if anything was created inside


def test_proc_as_a_symlink_in_the_rootfs_is_refused(rt, bundle, private_rootfs, host_target):
    proc_dir = os.path.join(private_rootfs, "proc")
    os.rmdir(proc_dir)
    os.symlink(host_target, proc_dir)
    bundle.config["root"]["path"] = private_rootfs
    proc = rt.run(bundle, check=False)
    assert proc.returncode != 0
    assert "/proc" in proc.stderr and "\n" not in proc.stderr.strip(), proc.stderr
    assert os.listdir(host_target) == []


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_mount_destination_symlink_to_the_host_stays_inside_the_rootfs(
        rt, bundle, private_rootfs, host_target, link):
    target = host_target if link == "absolute" else "../../../../../../.." + host_target
    os.symlink(target, os.path.join(private_rootfs, "mnt", "evil"))
    bundle.config["root"]["path"] = private_rootfs
    bundle.tmpfs("/mnt/evil/deeper")
    bundle.sh("echo planted > /mnt/evil/deeper/file && cat /mnt/evil/deeper/file;"
              "grep -c ' /mnt/evil/deeper \\| /kbt-host-target' /proc/self/mountinfo;"
              "grep -c ' - tmpfs ' /proc/self/mountinfo")
    out = rt.run(bundle).stdout.split()
    assert out[0] == "planted"
    assert os.listdir(host_target) == []  # nothing created or mounted on the host path
    # the mount landed inside the rootfs, where the symlink resolves within the root
    inside = os.path.join(private_rootfs, host_target.lstrip("/"), "deeper")
    assert os.path.isdir(inside)
    assert os.listdir(inside) == []  # the tmpfs was there, not the rootfs' directory


def test_dev_null_swapped_for_a_symlink_is_not_used_for_masking(rt, bundle, tmp_path):
    # A createContainer hook runs in the container's mount namespace after /dev is made and
    # before maskedPaths are applied: it plays the attacker who swaps /dev/null.
    core_pattern = read("/proc/sys/kernel/core_pattern")
    dev_null = os.path.join(bundle.rootfs, "dev", "null")
    bundle.config["hooks"] = {"createContainer": [{
        "path": "/bin/sh",
        "args": ["sh", "-c", f"/bin/rm {dev_null} && "
                 f"/bin/ln -s /proc/sys/kernel/core_pattern {dev_null}"],
    }]}
    bundle.sh("echo '|/bin/kbt-pwned' > /proc/timer_list; cat /proc/timer_list")
    proc = rt.run(bundle, check=False)
    assert proc.returncode != 0
    assert "/dev/null" in proc.stderr and "\n" not in proc.stderr.strip(), proc.stderr
    assert read("/proc/sys/kernel/core_pattern") == core_pattern
    assert not os.path.islink(dev_null)  # the swap happened in the container's /dev only


def sha256(path: str) -> str:
    with open(os.path.realpath(path), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


ATTACK = r"""
end=$(( $(date +%s) + 3 ))
while [ $(date +%s) -lt $end ]; do
  for exe in /proc/[0-9]*/exe; do
    p=${exe%/exe}
    [ "$p" = /proc/$$ ] && continue
    ( exec 3<"$exe" || exit 0
      target=$(readlink /proc/self/fd/3)
      echo "OPENED $target"
      sleep 0.2
      if echo pwned >/proc/self/fd/3 2>/dev/null; then echo "WROTE $exe $target"; fi
      if echo pwned >"$exe" 2>/dev/null; then echo "WROTE-DIRECT $exe $target"; fi
    ) 2>/dev/null &
  done
  sleep 0.05
done
wait
echo attack-done
"""


def test_proc_self_exe_cannot_overwrite_the_interpreter_or_the_stub(rt, bundle,
                                                                    private_rootfs):
    # CVE-2019-5736: the container's program is a script whose interpreter is
    # /proc/self/exe, so it starts as whatever executed it (the sealed stub, never the
    # host's Python); meanwhile every process the runtime puts in the container is a
    # target for a write through /proc/<pid>/exe.
    from kobako.runtime import process as runtime_process

    stub = runtime_process.STUB_PATH
    python = os.path.realpath("/opt/kobako/bin/python")
    runtime_script = os.path.realpath(RUNTIME)
    before = {path: sha256(path) for path in (python, stub, runtime_script)}

    # named sh: busybox picks its applet by the name it is run as
    os.mkdir(os.path.join(private_rootfs, "evil"))
    evil = os.path.join(private_rootfs, "evil", "sh")
    with open(evil, "w") as f:
        f.write("#!/proc/self/exe /bin/sh\n")
    os.chmod(evil, 0o755)
    bundle.config["root"]["path"] = private_rootfs
    bundle.args("/evil/sh", "-c", ATTACK)
    container_id, _ = rt.start_detached(bundle)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # runtime processes enter the container meanwhile,
        # each one runs the script too, and stays a little as a target in its last form
        rt("exec", container_id, "/evil/sh", "-c", "sleep 0.3", check=False)
    for _ in range(100):
        if rt.state(container_id)["status"] == "stopped":
            break
        time.sleep(0.1)
    output = read(bundle.out)
    rt.delete(container_id)
    assert "attack-done" in output, output
    assert "WROTE" not in output, output
    assert {path: sha256(path) for path in before} == before
    opened = {line.split(" ", 1)[1] for line in output.splitlines() if line.startswith("OPENED")}
    assert opened, f"the attack never opened anything: it tested nothing\n{output}"
    # the container's own busybox, at most the sealed stub: never a host file
    assert opened <= {"/bin/busybox", "/evil/sh", "/memfd:kobako-stub (deleted)"}, opened


def test_the_init_is_out_of_reach_before_start_and_the_stub_is_sealed(rt, bundle):
    bundle.args("sleep", "60").write()
    container_id = rt.new_id()
    with open(bundle.out, "wb") as out:
        rt("create", "--bundle", bundle.path, container_id, stdin=subprocess.DEVNULL,
           stdout=out, stderr=out)
    pid = rt.state(container_id)["pid"]
    stubs = [fd for fd, target in fds_of(pid).items() if target.startswith("/memfd:kobako-stub")]
    assert stubs
    # the waiting init is the host's Python: non-dumpable, so nothing inside can reach its
    # exe or open its fds (uid 0 in the container has no CAP_SYS_PTRACE)
    script = (f"readlink /proc/1/exe; echo rc=$?; readlink /proc/1/fd/{stubs[0]}; echo rc=$?;"
              f"cat /proc/1/fd/{stubs[0]} > /dev/null; echo rc=$?")
    out = rt("exec", container_id, "sh", "-c", script, check=False).stdout
    assert out.split().count("rc=1") == 3, out
    assert "python" not in out and "memfd" not in out, out
    # the stub it will exec is a sealed memfd: even the host's root cannot change it
    fd = os.open(f"/proc/{pid}/fd/{stubs[0]}", os.O_WRONLY)
    try:
        with pytest.raises(PermissionError):
            os.write(fd, b"pwned")
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    rt.delete(container_id)


def test_dev_null_symlink_in_the_rootfs_is_replaced_by_the_device(rt, bundle, private_rootfs,
                                                                   host_target):
    # no tmpfs on /dev: the rootfs' own /dev is used, and its "null" points elsewhere
    victim = os.path.join(host_target, "victim")
    dev_null = os.path.join(private_rootfs, "dev", "null")
    os.symlink(victim, dev_null)
    bundle.config["root"] = {"path": private_rootfs, "readonly": False}
    bundle.config["mounts"] = [m for m in bundle.config["mounts"] if m["destination"] != "/dev"]
    bundle.sh("stat -c '%F %t:%T' /dev/null; wc -c < /proc/timer_list; echo x > /dev/null")
    assert rt.run(bundle).stdout.split("\n")[:2] == ["character special file 1:3", "0"]
    assert os.listdir(host_target) == []
