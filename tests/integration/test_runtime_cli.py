"""kobako-runtime's command line as containerd's shim and podman use it: lifecycle and output
shapes (state, list, ps), --console-socket, exec (--process, --tty, --env, --cwd, --user)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading

from bundles import wait_for

STATE_KEYS = {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}


def test_lifecycle_states_and_state_json(rt, bundle):
    bundle.config["annotations"] = {"kbt.test": "state"}
    bundle.write()
    container_id = rt.new_id()
    with open(bundle.out, "wb") as out:
        rt("create", "--bundle", bundle.path, "--pid-file", f"{bundle.path}/pid", container_id,
           stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    bundle.args("sleep", "60")
    created = rt.state(container_id)
    assert set(created) == STATE_KEYS | {"annotations"}
    # runc's layout: Go's MarshalIndent of its containerState struct, fields in this order
    assert list(created) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs",
                             "created", "annotations", "owner"]
    assert rt("state", container_id).stdout.startswith('{\n  "ociVersion": "')
    assert created["id"] == container_id and created["status"] == "created"
    assert created["bundle"] == bundle.path and created["rootfs"] == bundle.rootfs
    assert created["annotations"] == {"kbt.test": "state"}
    assert created["pid"] == int(open(f"{bundle.path}/pid").read())
    assert created["created"].endswith("Z") and created["created"][10] == "T"
    assert os.path.exists(f"/proc/{created['pid']}")

    rt("start", container_id)
    # `true` exits at once: the container goes from running to stopped by itself
    wait_for(lambda: rt.state(container_id)["status"] == "stopped", what="stopped")
    stopped = rt.state(container_id)
    assert stopped["pid"] == 0 and stopped["status"] == "stopped"
    rt("delete", container_id)
    proc = rt("state", container_id, check=False)
    assert proc.returncode != 0 and "does not exist" in proc.stderr


def test_list_formats(rt, bundle):
    ids = [rt.start_detached(bundle.args("sleep", "60"))[0] for _ in range(2)]
    raw = rt("list", "--format", "json").stdout
    assert raw.startswith('[{"ociVersion":"')  # compact, as runc prints it
    docs = json.loads(raw)
    assert sorted(d["id"] for d in docs) == sorted(ids)
    for doc in docs:
        assert STATE_KEYS <= set(doc) and doc["status"] == "running" and doc["pid"] > 0
        assert doc["owner"] == "root"
    table = rt("list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert sorted(line.split()[0] for line in table[1:]) == sorted(ids)
    assert all(line.split()[2] == "running" and line.split()[5] == "root" for line in table[1:])
    assert rt("list", "-q").stdout.split() == sorted(ids)
    for container_id in ids:
        rt.delete(container_id)
    assert json.loads(rt("list", "--format", "json").stdout or "[]") in ([], None)


def test_ps_json_and_table(rt, bundle):
    container_id, pid = rt.start_detached(bundle.args("sleep", "60"))
    # a detached process keeps the stdio it is given: not our capture pipes
    with open(bundle.err, "wb") as err:
        rt("exec", "--detach", "--pid-file", f"{bundle.path}/exec.pid", container_id,
           "sleep", "61", stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    exec_pid = int(open(f"{bundle.path}/exec.pid").read())
    pids = json.loads(rt("ps", "--format", "json", container_id).stdout)
    assert sorted(pids) == sorted([pid, exec_pid])
    table = rt("ps", container_id).stdout.splitlines()
    assert "PID" in table[0].split()
    column = table[0].split().index("PID")
    assert sorted(int(line.split()[column]) for line in table[1:]) == sorted(pids)
    rt.delete(container_id)


def test_kill_and_delete_of_a_running_container(rt, bundle):
    container_id, pid = rt.start_detached(bundle.args("sleep", "60"))
    proc = rt("delete", container_id, check=False)
    assert proc.returncode != 0 and "not stopped" in proc.stderr
    rt("kill", container_id, "KILL")
    wait_for(lambda: rt.state(container_id)["status"] == "stopped", what="stopped")
    proc = rt("kill", container_id, "TERM", check=False)
    assert proc.returncode != 0 and proc.stderr.strip() == "container not running"
    rt("delete", container_id)


class ConsoleServer:
    """A --console-socket: receives the pty master (SCM_RIGHTS) the runtime sends."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.sock.settimeout(20)
        self.master: int | None = None
        self.name = b""
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            self.name, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            self.master = fds[0]

    def read_all(self) -> bytes:
        self.thread.join(20)
        assert self.master is not None, "no pty master received"
        chunks = []
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the last slave fd closed
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def close(self) -> None:
        if self.master is not None:
            os.close(self.master)
        self.sock.close()


def test_terminal_through_the_console_socket(rt, bundle, tmp_path):
    server = ConsoleServer(str(tmp_path / "console.sock"))
    try:
        bundle.process["terminal"] = True
        bundle.process["consoleSize"] = {"height": 33, "width": 101}
        bundle.sh("tty; stty size; echo hello-from-the-tty")
        bundle.write()
        container_id = rt.new_id()
        rt("create", "--bundle", bundle.path, "--console-socket", server.path, container_id)
        rt("start", container_id)
        output = server.read_all().decode()
        assert server.name.startswith(b"/dev/pts/")
        lines = output.replace("\r", "").split("\n")
        assert lines[0].startswith("/dev/pts/") or lines[0] == "/dev/console", output
        assert lines[1] == "33 101"
        assert "hello-from-the-tty" in lines
        rt.delete(container_id)
    finally:
        server.close()


def test_terminal_without_a_console_socket_is_refused_for_create(rt, bundle):
    bundle.process["terminal"] = True
    bundle.write()
    proc = rt("create", "--bundle", bundle.path, rt.new_id(), check=False)
    assert proc.returncode != 0 and "console socket" in proc.stderr
    assert rt.state_dirs() == []


def test_exec_with_env_cwd_and_user(rt, bundle):
    bundle.tmpfs("/tmp")
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    out = rt("exec", "--env", "KBT_VAR=hello", "--cwd", "/tmp", "--user", "1000:1000",
             container_id, "sh", "-c", 'echo "$KBT_VAR"; pwd; id -u; id -g').stdout.split()
    assert out == ["hello", "/tmp", "1000", "1000"]
    proc = rt("exec", container_id, "sh", "-c", "exit 7", check=False)
    assert proc.returncode == 7
    rt.delete(container_id)


def _ignored_and_blocked(status: str) -> list[str]:
    return [line.split()[1] for line in status.splitlines()
            if line.startswith(("SigIgn:", "SigBlk:"))]


def test_container_processes_start_with_default_signals(rt, bundle):
    # our Python ignores SIGPIPE and SIGXFSZ, the monitor SIGTERM and more: none of that
    # may reach the container (a shell there could not trap TERM)
    container_id, pid = rt.start_detached(bundle.args("sleep", "60"))
    with open(f"/proc/{pid}/status") as f:
        assert _ignored_and_blocked(f.read()) == ["0" * 16] * 2
    out = rt("exec", container_id, "cat", "/proc/self/status").stdout
    assert _ignored_and_blocked(out) == ["0" * 16] * 2
    rt.delete(container_id)


def test_exec_with_a_process_file(rt, bundle, tmp_path):
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    process = {
        "args": ["sh", "-c", 'echo "$KBT_A"; pwd; id -u; grep CapEff /proc/self/status'],
        "env": ["PATH=/bin", "KBT_A=from-process-json"],
        "cwd": "/etc",
        "user": {"uid": 1, "gid": 1},
        "terminal": False,
    }
    (tmp_path / "process.json").write_text(json.dumps(process))
    out = rt("exec", "--process", str(tmp_path / "process.json"), container_id).stdout.split()
    assert out[:4] == ["from-process-json", "/etc", "1", "CapEff:"]
    assert int(out[4], 16) == 0  # no capabilities asked for
    rt.delete(container_id)


def test_exec_with_a_tty(rt, bundle):
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    proc = rt("exec", "--tty", container_id, "sh", "-c", "tty; echo tty-ok",
              stdin=subprocess.DEVNULL)
    lines = proc.stdout.replace("\r", "").split("\n")
    assert lines[0].startswith("/dev/pts/"), proc.stdout
    assert "tty-ok" in lines
    rt.delete(container_id)


def test_exec_tty_detached_through_a_console_socket(rt, bundle, tmp_path):
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    server = ConsoleServer(str(tmp_path / "exec-console.sock"))
    try:
        rt("exec", "--tty", "--detach", "--console-socket", server.path, container_id,
           "sh", "-c", "echo detached-tty", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
           stderr=subprocess.PIPE)
        assert "detached-tty" in server.read_all().decode()
    finally:
        server.close()
    rt.delete(container_id)


def test_update_changes_the_cgroup(rt, bundle, tmp_path):
    from bundles import CGROUP_V2, cgroup_file, read

    bundle.linux["resources"].update({"memory": {"limit": 64 << 20}, "pids": {"limit": 50}})
    container_id, pid = rt.start_detached(bundle.args("sleep", "60"))
    memory = cgroup_file(pid, "memory/memory.limit_in_bytes", "memory.max")
    shares = cgroup_file(pid, "cpu/cpu.shares", "cpu.weight")
    pids = cgroup_file(pid, "pids/pids.max", "pids.max")
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"memory": {"limit": 96 << 20}, "cpu": {"shares": 256}}))
    rt("update", "--resources", str(resources), container_id)
    assert read(memory) == str(96 << 20)
    assert read(shares) == ("10" if CGROUP_V2 else "256")
    rt("update", "--resources", "-", container_id, input=json.dumps({"pids": {"limit": 30}}))
    assert read(pids) == "30"
    rt("update", "--pids-limit", "40", container_id)
    assert read(pids) == "40"
    rt("update", "--memory", "80m", container_id)  # units, as runc takes them
    assert read(memory) == str(80 << 20)
    proc = rt("update", "--cpu-shares", "lots", container_id, check=False)
    assert proc.returncode != 0 and proc.stderr.strip() == "invalid value for --cpu-shares: 'lots'"
    rt.delete(container_id)


def test_events_stats(rt, bundle):
    bundle.linux["resources"]["pids"] = {"limit": 50}
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    doc = json.loads(rt("events", "--stats", container_id).stdout)
    assert doc["type"] == "stats" and doc["id"] == container_id
    data = doc["data"]
    assert data["pids"]["current"] >= 1 and data["pids"]["limit"] == 50
    assert data["memory"]["usage"]["usage"] > 0
    assert "cpu" in data and data["cpu"]["usage"]["total"] >= 0
    rt.delete(container_id)


def test_kill_all_and_delete_force_of_a_paused_container(rt, bundle):
    container_id, pid = rt.start_detached(bundle.sh("sleep 60 & sleep 61 & wait"))
    wait_for(lambda: len(json.loads(rt("ps", "--format", "json", container_id).stdout)) == 3,
             what="three processes")
    rt("pause", container_id)
    assert rt.state(container_id)["status"] == "paused"
    rt("delete", "--force", container_id)
    assert rt.state_dirs() == []
    assert not os.path.exists(f"/proc/{pid}/status") or "Z" in open(f"/proc/{pid}/stat").read()


def test_kill_all_signals_every_process(rt, bundle):
    # the init handles TERM (and lives on); its children keep the default action and die
    container_id, pid = rt.start_detached(
        bundle.sh("trap 'echo got-term' TERM; sleep 60 & sleep 61 & while :; do sleep 1; done"))

    def long_sleeps() -> int:
        return sum("sleep 6" in line for line in rt("ps", container_id).stdout.splitlines())

    wait_for(lambda: long_sleeps() == 2, what="the children")
    rt("kill", "--all", container_id, "TERM")
    wait_for(lambda: long_sleeps() == 0, what="the children to die")
    wait_for(lambda: "got-term" in open(bundle.out).read(), what="the init's trap")
    assert rt.state(container_id)["status"] == "running"
    rt("kill", container_id, "9")
    wait_for(lambda: rt.state(container_id)["status"] == "stopped", what="stopped")
    rt("delete", container_id)


def test_run_with_a_terminal_relays_through_our_stdio(rt, bundle):
    bundle.process["terminal"] = True
    proc = rt.run(bundle.sh("tty; echo relayed; exit 3"), check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 3
    lines = proc.stdout.replace("\r", "").split("\n")
    assert lines[0].startswith("/dev/pts/") and "relayed" in lines, proc.stdout


def test_delete_of_a_created_container_and_kill_before_start(rt, bundle):
    bundle.args("sleep", "60").write()
    first, second = rt.new_id(), rt.new_id()
    for container_id in (first, second):
        with open(bundle.out, "ab") as out:
            rt("create", "--bundle", bundle.path, container_id, stdin=subprocess.DEVNULL,
               stdout=out, stderr=out)
    rt("delete", first)  # created, never started: deleting it is allowed (as in runc)
    pid = rt.state(second)["pid"]
    rt("kill", second, "KILL")
    wait_for(lambda: rt.state(second)["status"] == "stopped", what="stopped")
    proc = rt("start", second, check=False)
    assert proc.returncode != 0 and "stopped" in proc.stderr
    rt("delete", second)
    assert rt.state_dirs() == []
    assert not os.path.exists(f"/proc/{pid}/cmdline") or open(f"/proc/{pid}/cmdline").read() == ""


def test_exec_preserve_fds(rt, bundle, tmp_path):
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    extra = tmp_path / "extra"
    extra.write_text("through-fd-3\n")
    proc = subprocess.run(
        ["sh", "-c", f'exec 3<"{extra}" 4<"{extra}"; exec "$@"', "sh",
         *rt.argv("exec", "--preserve-fds", "1", container_id, "sh", "-c",
                  "cat <&3; [ -e /proc/$$/fd/4 ] && echo fd-4-leaked; echo done")],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["through-fd-3", "done"]  # fd 4 was not asked for
    rt.delete(container_id)


def test_delete_without_a_pid_namespace_kills_what_the_init_left(rt, bundle):
    # no pid namespace: the init's exit does not take its children with it
    bundle.drop_namespace("pid")
    container_id, pid = rt.start_detached(bundle.sh("sleep 60 & echo started"))
    wait_for(lambda: rt.state(container_id)["status"] == "stopped", what="the init to exit")
    left = json.loads(rt("ps", "--format", "json", container_id).stdout)
    assert len(left) == 1 and left[0] != pid
    rt("delete", container_id, timeout=20)
    assert rt.state_dirs() == []
    wait_for(lambda: not os.path.exists(f"/proc/{left[0]}/cmdline")
             or open(f"/proc/{left[0]}/cmdline").read() == "", what="the orphan to die")
