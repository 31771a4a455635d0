#!/opt/kobako/bin/python
"""Not a benchmark: the container environment under kobakod next to a real dockerd's.

The same probes (capabilities, seccomp, signal dispositions, rlimits, mounts, /dev,
masked and read-only paths, users, hostnames, tmpfs, sysctls, exec...) run in a busybox
container under each engine (bench_engine's daemons: own sockets and roots, --network
none), and every probe whose normalized output differs is printed as a diff, dockerd's
side first. Needs Debian's docker.io; expected differences on a cgroup v1 host without
CAP_SYS_RESOURCE: dockerd fails --privileged there, kobako mounts the hybrid cgroup2
hierarchy and keeps /sys/fs/cgroup read-only, newer Docker's masks (/proc/interrupts).

    bench/compare_dockerd.py
"""
import difflib
import os
import re
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
    engine.docker("rm", "-f", "probe-exec")
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
    return be.print_problems(problems)


if __name__ == "__main__":
    sys.exit(main())
