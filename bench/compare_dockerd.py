#!/opt/kobako/bin/python
"""Not a benchmark: the container environment under kobakod next to a real dockerd's.

The same probes (capabilities, seccomp, signal dispositions, rlimits, mounts, /dev,
masked and read-only paths, users, hostnames, tmpfs, sysctls, exec...) run in a busybox
container under each engine (bench_engine's daemons: own sockets and roots, --network
none), and every probe whose normalized output differs is printed as a diff, dockerd's
side first; then bad API requests whose status differs (the API at v1.41, dockerd 20.10's). Needs Debian's docker.io; expected differences on a cgroup v1 host without
CAP_SYS_RESOURCE: dockerd fails --privileged there, kobako mounts the hybrid cgroup2
hierarchy and keeps /sys/fs/cgroup read-only, newer Docker's masks (/proc/interrupts).

    bench/compare_dockerd.py
"""
import difflib
import http.client
import json
import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_engine as be  # noqa: E402

STATUS = "grep -E '^(Cap|NoNewPrivs|Seccomp|Sig(Ign|Blk))' /proc/self/status"
MASKED = ("/proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/latency_stats "
          "/proc/asound /proc/acpi /proc/scsi /sys/firmware /sys/devices/virtual/powercap "
          "/proc/interrupts /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger")
READ_ONLY = ("/proc/sys/kernel/domainname /proc/sysrq-trigger /sys/kernel/mm "
             "/proc/irq/default_smp_affinity")

# name: (docker run options, the script sh -c runs in the container)
PROBES = {
    "status": ([], STATUS),
    "ulimit": ([], "ulimit -a"),
    "ids": ([], "umask; pwd; id; env | grep -v HOSTNAME | sort"),
    "mounts": ([], "awk '{print $5, $6, $9, $11}' /proc/self/mountinfo"
                   " | sed 's/,size=[0-9k]*//; s/,nr_inodes=[0-9]*//'"),
    "dev": ([], "ls -la /dev | awk '{print $1, $3, $4, $5, $6, $NF}';"
                " ls -la /dev/pts /dev/shm /dev/mqueue | awk '{print $1, $NF}'"),
    "masked": ([], f"for f in {MASKED}; do echo \"$f $(stat -c '%F %s' $f 2>&1)"
                   " $(ls $f 2>/dev/null | head -3 | tr '\\n' ' ')\"; done"),
    "read-only": ([], f"for f in {READ_ONLY}; do (echo x > $f) 2>&1 | sed 's/.*: //'; done;"
                      " touch /x && echo rootfs-rw; touch /dev/shm/x && echo shm-rw;"
                      " mount -t tmpfs t /mnt 2>&1"),
    "proc": ([], "cat /proc/self/oom_score_adj /proc/sys/net/ipv4/ip_unprivileged_port_start"
                 " /proc/sys/net/ipv4/ping_group_range 2>&1; ps -o pid,user,args"),
    "files": ([], "ls -la /etc/hosts /etc/resolv.conf /etc/hostname | awk '{print $1, $3, $5}';"
                  " grep -v '^#' /etc/resolv.conf; cat /etc/hosts"),
    "user": (["--user", "1000:1000"], STATUS + "; id; umask; pwd; echo HOME=$HOME"),
    "user-name": (["--user", "nobody"], "id; echo HOME=$HOME"),
    "readonly-rootfs": (["--read-only"], "touch /x 2>&1; touch /tmp/x 2>&1 && echo tmp-ok;"
                                         " awk '$5==\"/\"{print $6}' /proc/self/mountinfo"),
    "privileged": (["--privileged"], STATUS + "; awk '{print $5, $6, $9}' /proc/self/mountinfo"
                                              " | grep -E ' /(proc|sys|dev)' | head; ls /dev | wc -l"),
    "capabilities": (["--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN"], STATUS),
    "no-new-privileges": (["--security-opt", "no-new-privileges"], STATUS),
    "seccomp-unconfined": (["--security-opt", "seccomp=unconfined"], STATUS),
    "tty": (["-t"], "tty; stty -a | head -1; " + STATUS),
    "init": (["--init"], "ps -o args"),
    "shm-size": (["--shm-size", "1m"], "df -k /dev/shm | tail -1 | awk '{print $2}'"),
    "workdir": (["-w", "/nonexist/deep"], "pwd; ls -ld /nonexist/deep | awk '{print $1, $3}'"),
    "env": (["-e", "FOO=bar", "-e", "PATH=/x:/bin"], "echo $FOO $PATH $HOME"),
    "sysctl": (["--sysctl", "net.ipv4.ip_forward=1"], "cat /proc/sys/net/ipv4/ip_forward"),
    "ulimit-set": (["--ulimit", "nofile=100:200"], "ulimit -n; ulimit -Hn"),
    "hostname": (["--hostname", "myhost", "--domainname", "example.com"],
                 "hostname; cat /proc/sys/kernel/domainname /etc/hostname; grep myhost /etc/hosts"),
    "group-add": (["--user", "1000", "--group-add", "audio", "--group-add", "50"], "id"),
    "tmpfs": (["--tmpfs", "/run:rw,size=1m,mode=1777"],
              "awk '$5==\"/run\"{print $6, $9, $11}' /proc/self/mountinfo; ls -ld /run"),
    "oom-score-adj": (["--oom-score-adj", "500"], "cat /proc/self/oom_score_adj"),
    "trap-term": ([], "trap 'echo trapped' TERM; kill -TERM $$; echo after"),
}
# name: (docker exec options, script), in a running `sleep`
EXEC = {
    "exec-status": ([], STATUS + "; ps -o pid,user,args | grep -v ps"),
    "exec-user": (["-u", "1000"], "id; " + STATUS),
    "exec-env": (["-e", "A=1", "-w", "/tmp"], "echo $A; pwd; env | grep -v HOSTNAME | sort"),
    "exec-privileged": (["--privileged"], STATUS),
    "exec-tty": (["-t"], "tty; " + STATUS),
}


# Bad requests, each answered with a status and a message; {cid} is a running container.
# Only the status codes are compared: dockerd's wording changes between its versions.
API = [
    ("POST", "/containers/create", {"Image": "nosuchimage"}),
    ("POST", "/containers/create", {"Image": "busybox", "HostConfig": {"Memory": 1}}),
    ("POST", "/containers/create", {"Image": "busybox", "HostConfig": {"CapAdd": ["BOGUS"]}}),
    ("POST", "/containers/create", {"Image": "busybox", "HostConfig": {
        "PortBindings": {"80/tcp": [{"HostPort": "abc"}]}}}),
    ("POST", "/containers/create", {"Image": "busybox", "Cmd": "notalist"}),
    ("POST", "/containers/create", {"Image": "busybox", "Env": ["=x"]}),
    ("POST", "/containers/create", {"Image": "busybox", "HostConfig": {
        "RestartPolicy": {"Name": "bogus"}}}),
    ("POST", "/containers/create", "notjson"),
    ("POST", "/containers/create?name=probe-api", {"Image": "busybox"}),
    ("POST", "/containers/create?name=bad%2Fname", {"Image": "busybox"}),
    ("GET", "/containers/nosuch/json", None),
    ("POST", "/containers/{cid}/start", None),
    ("POST", "/containers/{cid}/kill?signal=BOGUS", None),
    ("POST", "/containers/{cid}/kill?signal=0", None),
    ("GET", "/containers/{cid}/logs", None),
    ("GET", "/containers/{cid}/archive?path=/nonexist", None),
    ("POST", "/containers/{cid}/resize?h=a&w=b", None),
    ("POST", "/containers/{cid}/rename?name=probe-api", None),
    ("POST", "/containers/{cid}/rename?name=bad%20name", None),
    ("POST", "/containers/{cid}/exec", {"Cmd": []}),
    ("POST", "/containers/{cid}/update", {"Memory": 1}),
    ("POST", "/containers/{cid}/update", {"CpusetCpus": "99"}),
    ("POST", "/containers/{cid}/unpause", None),
    ("DELETE", "/containers/{cid}", None),
    ("GET", "/containers/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D", None),
    ("GET", "/containers/json?filters=%7B%22status%22%3A%5B%22bogus%22%5D%7D", None),
    ("GET", "/images/nosuch/json", None),
    ("DELETE", "/images/busybox", None),
    ("GET", "/images/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D", None),
    ("GET", "/volumes/nosuch", None),
    ("POST", "/volumes/create", {"Name": "bad/name"}),
    ("GET", "/networks/nosuch", None),
    ("POST", "/networks/create", {"Name": "none"}),
    ("POST", "/networks/create", {"Name": "x", "IPAM": {"Config": [{"Subnet": "bad"}]}}),
    ("GET", "/exec/nosuch/json", None),
    ("GET", "/nosuch/endpoint", None),
]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def _request(sock: str, method: str, path: str, body: object) -> tuple[int, str]:
    conn = _UnixConnection(sock)
    data = body if isinstance(body, str) else json.dumps(body) if body is not None else None
    conn.request(method, "/v1.41" + path, body=data,
                 headers={"Content-Type": "application/json"} if data is not None else {})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    try:
        message = json.loads(raw).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return response.status, normalize(message)


def normalize(text: str) -> str:
    text = re.sub(r"[0-9a-f]{64}", "CID", text)
    text = re.sub(r"\b[0-9a-f]{12}\b", "ID", text)
    return re.sub(r"lowerdir=\S*", "", text)  # each engine's own layer paths


def run_all(engine: be.Engine, tar: str) -> dict[str, str]:
    """Every probe's normalized output (and exit status) on one engine."""
    def probe(*argv: str) -> str:
        result = engine.docker(*argv, check=False)
        return normalize(f"{result.stdout}{result.stderr}[exit {result.returncode}]")

    engine.start()
    engine.load_image(tar)
    out = {name: probe("run", "--rm", "--network", "none", *options, "busybox", "sh", "-c",
                       script) for name, (options, script) in PROBES.items()}
    engine.docker("run", "-d", "--name", "probe-exec", "--network", "none", "busybox",
                  "sleep", "1000")
    out.update({name: probe("exec", *options, "probe-exec", "sh", "-c", script)
                for name, (options, script) in EXEC.items()})
    cid = engine.docker("inspect", "-f", "{{.Id}}", "probe-exec").stdout.strip()
    engine.docker("rename", "probe-exec", "probe-api")
    for method, path, body in API:
        status, message = _request(engine.sock, method, path.replace("{cid}", cid), body)
        out[f"{method} {path} {json.dumps(body)[:50]}"] = f"{status} {message}"
    engine.docker("rm", "-f", "probe-api")
    return out


def main() -> int:
    if os.geteuid() != 0 or not os.path.exists(be.DOCKERD):
        print("compare_dockerd: needs root and Debian's docker.io", file=sys.stderr)
        return 2
    results, problems = be.measure_engines([be.Kobako, be.Dockerd], run_all)
    ours, theirs = results.get("kobakod", {}), results.get("dockerd", {})
    same = 0
    for name in [*PROBES, *EXEC]:
        if ours.get(name) == theirs.get(name):
            same += 1
            continue
        print(f"===== {name}")
        print("\n".join(difflib.unified_diff((theirs.get(name) or "").splitlines(),
                                             (ours.get(name) or "").splitlines(),
                                             "dockerd", "kobako", lineterm="")))
    print(f"{same} of {len(PROBES) + len(EXEC)} probes alike")
    api_same = 0
    for name in (key for key in theirs if key not in PROBES and key not in EXEC):
        if ours.get(name, "").split()[:1] == theirs[name].split()[:1]:
            api_same += 1
        else:
            print(f"===== {name}\n  dockerd: {theirs[name]}\n  kobako:  {ours.get(name)}")
    print(f"{api_same} of {len(API)} bad requests answered with dockerd's status")
    return be.print_problems(problems)


if __name__ == "__main__":
    sys.exit(main())
