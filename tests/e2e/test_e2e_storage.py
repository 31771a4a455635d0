"""Storage through the real docker CLI and docker-py: volumes, binds, tmpfs, --volumes-from,
cp, diff, export, commit and update, against a kobakod of the test's own."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile

import pytest
from daemon_fixture import DOCKER, Daemon, busybox_rootfs_tar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# never pull (the image is imported) and stay off the network
RUN = ("run", "--pull", "never", "--network", "none")


class Engine:
    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def docker(self, *args: str, input: str | None = None, timeout: float = 60,
               check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run([DOCKER, *args], capture_output=True, text=True, input=input,
                                timeout=timeout, env=self.daemon.env())
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}\n{self.daemon.log()}")
        return result

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.docker(*RUN, *args, check=check)

    def raw(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER, *args], capture_output=True, input=input, timeout=60,
                              env=self.daemon.env())

    @property
    def volumes_dir(self) -> str:
        return str(self.daemon.data_root / "volumes")

    def mounts_under_base(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f if str(self.daemon.base) in line.split()[4]]


@pytest.fixture(scope="module")
def engine():
    daemon = Daemon().start()
    eng = Engine(daemon)
    try:
        tar = busybox_rootfs_tar(str(daemon.base / "busybox.tar"))
        eng.docker("import", "--change", 'CMD ["sh"]', tar, "busybox:latest", check=True)
        yield eng
        ids = eng.docker("ps", "-aq").stdout.split()
        if ids:
            eng.docker("rm", "-f", "-v", *ids, timeout=120)
        names = eng.docker("volume", "ls", "-q").stdout.split()
        if names:
            eng.docker("volume", "rm", *names, check=True)
        assert not [e for e in os.listdir(eng.volumes_dir)], os.listdir(eng.volumes_dir)
        assert not eng.mounts_under_base(), eng.mounts_under_base()
    finally:
        daemon.stop()


@pytest.fixture
def hostdir():
    path = tempfile.mkdtemp(prefix="kbk-e2e-host-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _name(kind: str) -> str:
    return f"kbt-{kind}-{secrets.token_hex(3)}"


# -- volumes ---------------------------------------------------------------------------------

def test_named_volume_gets_image_content_and_persists(engine):
    vol = _name("vol")
    engine.docker("volume", "create", "--label", "kbt=1", vol, check=True)
    mode_in_image = engine.run("--rm", "busybox", "stat", "-c", "%a %u", "/etc/shadow").stdout
    out = engine.run("--rm", "-v", f"{vol}:/etc", "busybox", "sh", "-c",
                     "stat -c '%a %u' /etc/shadow; ls /etc; echo kept > /etc/kbt-note").stdout
    assert out.splitlines()[0] == mode_in_image.strip()
    assert "passwd" in out.split()
    # a second container sees what the first wrote, and the copy-up is not redone
    again = engine.run("--rm", "-v", f"{vol}:/data", "busybox", "cat", "/data/kbt-note")
    assert again.stdout == "kept\n"
    data = os.path.join(engine.volumes_dir, vol, "_data")
    assert os.path.isfile(os.path.join(data, "passwd"))
    inspect = engine.docker("volume", "inspect", "-f", "{{.Mountpoint}} {{.Labels}}", vol,
                            check=True).stdout
    assert inspect.split()[0] == data and "kbt:1" in inspect
    engine.docker("volume", "rm", vol, check=True)
    assert not os.path.exists(os.path.join(engine.volumes_dir, vol))


def test_nocopy_volume_stays_empty(engine):
    vol = _name("nocopy")
    out = engine.run("--rm", "-v", f"{vol}:/var:nocopy", "busybox", "ls", "-A", "/var")
    assert out.stdout == ""
    copied = engine.run("--rm", "-v", f"{vol}-c:/var", "busybox", "ls", "-A", "/var")
    assert copied.stdout.split() == ["spool", "www"]
    engine.docker("volume", "rm", f"{vol}-c", check=True)
    engine.docker("volume", "rm", vol, check=True)


def test_anonymous_volume_removed_with_rm_v(engine):
    name = _name("anon")
    engine.run("--name", name, "-v", "/data", "busybox", "sh", "-c", "echo x > /data/x")
    vol = engine.docker("inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", name,
                        check=True).stdout.strip()
    assert len(vol) == 64
    assert vol in engine.docker("volume", "ls", "-q", "--filter", "dangling=false").stdout
    labels = engine.docker("volume", "inspect", "-f", "{{json .Labels}}", vol).stdout
    assert "com.docker.volume.anonymous" in labels
    engine.docker("rm", "-v", name, check=True)
    assert vol not in engine.docker("volume", "ls", "-q").stdout
    assert not os.path.exists(os.path.join(engine.volumes_dir, vol))


def test_anonymous_volume_kept_by_rm_and_pruned(engine):
    name = _name("keep")
    named = _name("named")
    engine.run("--name", name, "-v", "/data", "-v", f"{named}:/n", "busybox", "true")
    vol = engine.docker("inspect", "-f", '{{range .Mounts}}{{if eq .Destination "/data"}}'
                        "{{.Name}}{{end}}{{end}}", name, check=True).stdout.strip()
    engine.docker("rm", name, check=True)
    listed = engine.docker("volume", "ls", "-q", "--filter", "dangling=true").stdout.split()
    assert vol in listed and named in listed
    pruned = engine.docker("volume", "prune", "-f", check=True).stdout
    assert vol in pruned and named not in pruned  # only anonymous ones by default
    pruned = engine.docker("volume", "prune", "-f", "--filter", "all=true",
                           "--filter", "label!=kbt-keep", check=True).stdout
    assert named in pruned
    assert named not in engine.docker("volume", "ls", "-q").stdout


def test_volume_ls_filters(engine):
    a, b = _name("fa"), _name("fb")
    engine.docker("volume", "create", "--label", "kbt-color=red", a, check=True)
    engine.docker("volume", "create", "--label", "kbt-color=blue", b, check=True)
    try:
        red = engine.docker("volume", "ls", "-q", "--filter", "label=kbt-color=red").stdout
        assert red.split() == [a]
        both = engine.docker("volume", "ls", "-q", "--filter", "label=kbt-color").stdout
        assert sorted(both.split()) == sorted([a, b])
        assert engine.docker("volume", "ls", "-q", "--filter", f"name={b}").stdout.split() == [b]
        bad = engine.docker("volume", "ls", "--filter", "bogus=1")
        assert bad.returncode != 0 and "invalid filter" in bad.stderr
    finally:
        engine.docker("volume", "rm", a, b, check=True)


def test_volume_in_use_cannot_be_removed(engine):
    import docker

    vol = _name("busy")
    name = _name("user")
    engine.run("-d", "--name", name, "-v", f"{vol}:/v", "busybox", "sleep", "300")
    try:
        client = engine.daemon.docker_py()
        with pytest.raises(docker.errors.APIError) as err:
            client.volumes.get(vol).remove()
        assert err.value.status_code == 409
        assert "volume is in use" in str(err.value)
        cli = engine.docker("volume", "rm", vol)
        assert cli.returncode != 0 and "volume is in use" in cli.stderr
    finally:
        engine.docker("rm", "-f", name, check=True)
    engine.docker("volume", "rm", vol, check=True)


def test_volume_api_with_docker_py(engine):
    import docker

    client = engine.daemon.docker_py()
    vol = client.volumes.create(name=_name("py"), labels={"kbt": "py"})
    assert vol.attrs["Driver"] == "local" and vol.attrs["Labels"] == {"kbt": "py"}
    assert client.volumes.get(vol.name).attrs["Mountpoint"].endswith(f"/{vol.name}/_data")
    assert vol.name in [v.name for v in client.volumes.list(filters={"label": "kbt=py"})]
    with pytest.raises(docker.errors.APIError) as err:
        client.volumes.create(name="x/../../etc")
    assert err.value.status_code == 400
    vol.remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(vol.name)


def test_local_driver_tmpfs_options(engine):
    vol = _name("tmpfsvol")
    engine.docker("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                  "--opt", "o=size=2m", vol, check=True)
    out = engine.run("--rm", "-v", f"{vol}:/t", "busybox", "grep", " /t ", "/proc/mounts")
    assert "tmpfs" in out.stdout and "size=2048k" in out.stdout
    engine.docker("volume", "rm", vol, check=True)
    bad = engine.docker("volume", "create", "--opt", "color=red", _name("bad"))
    assert bad.returncode != 0 and 'invalid option: "color"' in bad.stderr


# -- binds and tmpfs ---------------------------------------------------------------------------

def test_bind_read_only(engine, hostdir):
    with open(os.path.join(hostdir, "f"), "w") as f:
        f.write("from host\n")
    out = engine.run("--rm", "-v", f"{hostdir}:/h:ro", "busybox", "sh", "-c",
                     "cat /h/f; touch /h/new; echo rc=$?", check=False)
    assert "from host" in out.stdout and "rc=1" in out.stdout
    assert "Read-only file system" in out.stderr
    assert os.listdir(hostdir) == ["f"]
    mounts = engine.run("--rm", "--mount", f"type=bind,source={hostdir},target=/b,readonly",
                        "busybox", "grep", " /b ", "/proc/mounts").stdout
    assert " ro," in mounts


def test_bind_source_created_for_v_error_for_mount(engine, hostdir):
    missing = os.path.join(hostdir, "missing")
    out = engine.run("--rm", "--mount", f"type=bind,source={missing},target=/x", "busybox",
                     "true", check=False)
    assert out.returncode != 0
    assert f"bind source path does not exist: {missing}" in out.stderr
    engine.run("--rm", "-v", f"{missing}:/x", "busybox", "touch", "/x/made")
    assert os.path.exists(os.path.join(missing, "made"))


def test_tmpfs_mounts(engine):
    out = engine.run("--rm", "--mount", "type=tmpfs,target=/t,tmpfs-size=1m", "busybox",
                     "grep", " /t ", "/proc/mounts").stdout
    assert out.startswith("tmpfs /t tmpfs") and "size=1024k" in out
    out = engine.run("--rm", "--tmpfs", "/x:size=1m,mode=1777", "busybox", "sh", "-c",
                     "grep ' /x ' /proc/mounts; stat -c %a /x").stdout
    assert "size=1024k" in out and out.splitlines()[-1] == "1777"


def test_volumes_from(engine, hostdir):
    vol = _name("shared")
    src = _name("src")
    engine.run("--name", src, "-v", f"{vol}:/shared", "-v", f"{hostdir}:/hostdir", "busybox",
               "sh", "-c", "echo from-src > /shared/f")
    try:
        out = engine.run("--rm", "--volumes-from", src, "busybox", "sh", "-c",
                         "cat /shared/f; touch /hostdir/seen").stdout
        assert out == "from-src\n"
        assert os.path.exists(os.path.join(hostdir, "seen"))
        ro = engine.run("--rm", "--volumes-from", f"{src}:ro", "busybox", "touch",
                        "/shared/x", check=False)
        assert ro.returncode != 0 and "Read-only" in ro.stderr
        missing = engine.run("--rm", "--volumes-from", "kbt-no-such", "busybox", "true",
                             check=False)
        assert missing.returncode != 0 and "No such container" in missing.stderr
    finally:
        engine.docker("rm", src, check=True)
    engine.docker("volume", "rm", vol, check=True)


# -- cp ----------------------------------------------------------------------------------------

def test_cp_both_ways_running_and_stopped(engine, hostdir):
    name = _name("cp")
    engine.run("-d", "--name", name, "busybox", "sleep", "300")
    try:
        src = os.path.join(hostdir, "in.txt")
        with open(src, "w") as f:
            f.write("into the container\n")
        os.makedirs(os.path.join(hostdir, "tree", "sub"))
        with open(os.path.join(hostdir, "tree", "sub", "leaf"), "w") as f:
            f.write("leaf\n")
        engine.docker("cp", src, f"{name}:/tmp/", check=True)
        engine.docker("cp", os.path.join(hostdir, "tree"), f"{name}:/opt", check=True)
        out = engine.docker("exec", name, "cat", "/tmp/in.txt", "/opt/sub/leaf", check=True)
        assert out.stdout == "into the container\nleaf\n"
        engine.docker("exec", name, "sh", "-c", "mkdir -p /out/d && echo made > /out/d/f",
                      check=True)
        engine.docker("cp", f"{name}:/out", os.path.join(hostdir, "got"), check=True)
        with open(os.path.join(hostdir, "got", "d", "f")) as f:
            assert f.read() == "made\n"
        engine.docker("stop", "-t", "0", name, check=True)
        # stopped: the rootfs is mounted privately for the copy
        engine.docker("cp", src, f"{name}:/root/stopped.txt", check=True)
        tar = engine.raw("cp", f"{name}:/out/d/f", "-")
        assert tar.returncode == 0
        with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as tf:
            member = tf.getmember("f")
            assert tf.extractfile(member).read() == b"made\n"
        engine.docker("start", name, check=True)
        out = engine.docker("exec", name, "cat", "/root/stopped.txt", check=True)
        assert out.stdout == "into the container\n"
        missing = engine.docker("cp", f"{name}:/no/such", hostdir)
        assert missing.returncode != 0 and "Could not find the file /no/such" in missing.stderr
    finally:
        engine.docker("rm", "-f", name, check=True)
    assert not engine.mounts_under_base() or all(
        "kbt" not in m for m in engine.mounts_under_base())


def test_cp_into_and_from_volumes(engine, hostdir):
    vol = _name("cpvol")
    name = _name("cpv")
    engine.run("--name", name, "-v", f"{vol}:/vol", "-v", f"{hostdir}:/bound", "busybox",
               "true")
    try:
        src = os.path.join(hostdir, "payload")
        with open(src, "w") as f:
            f.write("payload\n")
        engine.docker("cp", src, f"{name}:/vol/", check=True)  # stopped container
        assert os.path.exists(os.path.join(engine.volumes_dir, vol, "_data", "payload"))
        got = engine.raw("cp", f"{name}:/bound/payload", "-")
        with tarfile.open(fileobj=io.BytesIO(got.stdout)) as tf:
            assert tf.extractfile("payload").read() == b"payload\n"
    finally:
        engine.docker("rm", name, check=True)
    engine.docker("volume", "rm", vol, check=True)


def test_cp_symlink_cannot_reach_the_host(engine, hostdir):
    secret = os.path.join(hostdir, "secret")
    with open(secret, "w") as f:
        f.write("host secret\n")
    name = _name("esc")
    # /esc points at the host dir's path; inside the container that path is its own
    engine.run("-d", "--name", name, "busybox", "sh", "-c",
               f"ln -s {hostdir} /esc; ln -s {secret} /esc-file; mkdir -p {hostdir}; "
               "sleep 300")
    try:
        engine.docker("exec", name, "test", "-L", "/esc", check=True)
        read = engine.raw("cp", f"{name}:/esc/secret", "-")
        assert read.returncode != 0 and b"host secret" not in read.stdout
        follow = engine.raw("cp", "-L", f"{name}:/esc-file", "-")
        assert b"host secret" not in follow.stdout
        link = engine.raw("cp", f"{name}:/esc-file", "-")
        with tarfile.open(fileobj=io.BytesIO(link.stdout)) as tf:
            assert tf.getmember("esc-file").issym()
        payload = os.path.join(tempfile.mkdtemp(prefix="kbk-e2e-payload-"), "dropped")
        try:
            with open(payload, "w") as f:
                f.write("dropped\n")
            engine.docker("cp", payload, f"{name}:/esc/", check=True)
        finally:
            shutil.rmtree(os.path.dirname(payload))
        assert sorted(os.listdir(hostdir)) == ["secret"]  # nothing written on the host
        out = engine.docker("exec", name, "cat", f"{hostdir}/dropped", check=True)
        assert out.stdout == "dropped\n"
        # a tar with ../ entries is refused
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo("../../../../../../../../tmp/kbk-evil")
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
        client = engine.daemon.docker_py()
        import docker

        with pytest.raises(docker.errors.APIError):
            client.api.put_archive(name, "/tmp", buf.getvalue())
        assert not os.path.exists("/tmp/kbk-evil")
    finally:
        engine.docker("rm", "-f", name, check=True)


def test_archive_api_with_docker_py(engine):
    client = engine.daemon.docker_py()
    container = client.containers.create("busybox", ["sleep", "300"], network_mode="none")
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo("hello.txt")
            info.size, info.mode, info.uid, info.gid = 6, 0o640, 1234, 5678
            tf.addfile(info, io.BytesIO(b"hello\n"))
        assert container.put_archive("/tmp", buf.getvalue())
        bits, stat = container.get_archive("/tmp/hello.txt")
        assert stat["name"] == "hello.txt" and stat["size"] == 6
        assert stat["mode"] == 0o640
        data = b"".join(bits)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            member = tf.getmember("hello.txt")
            assert (member.uid, member.gid, member.mode) == (1234, 5678, 0o640)
        _, stat = container.get_archive("/tmp")
        assert stat["mode"] & (1 << 31)  # Go's os.ModeDir
    finally:
        container.remove(force=True)


# -- diff, export, commit, update --------------------------------------------------------------

def test_diff_export_commit(engine):
    name = _name("chg")
    engine.run("--name", name, "busybox", "sh", "-c",
               "echo new > /added; echo more >> /etc/passwd; rm /bin/arch; mkdir /newdir")
    try:
        lines = engine.docker("diff", name, check=True).stdout.splitlines()
        assert "A /added" in lines
        assert "A /newdir" in lines
        assert "C /etc" in lines and "C /etc/passwd" in lines
        assert "D /bin/arch" in lines
        listing = engine.raw("export", name)
        assert listing.returncode == 0
        with tarfile.open(fileobj=io.BytesIO(listing.stdout)) as tf:
            names = tf.getnames()
        assert "added" in names and "bin/busybox" in names and "bin/arch" not in names
        tag = f"kbt-commit-{secrets.token_hex(3)}:v1"
        engine.docker("commit", "--change", 'CMD ["cat", "/added"]', "-m", "kbt message",
                      name, tag, check=True)
        assert engine.run("--rm", tag).stdout == "new\n"
        history = engine.docker("history", "--format", "{{.Comment}}", tag, check=True).stdout
        assert "kbt message" in history
        engine.docker("rmi", tag, check=True)
    finally:
        engine.docker("rm", name, check=True)


def _cgroup_file(pid: int, controller: str, name: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                mount = "/sys/fs/cgroup/" + controllers if controllers else "/sys/fs/cgroup"
                if not os.path.isdir(mount):
                    mount = "/sys/fs/cgroup/" + controller
                with open(os.path.join(mount + path, name)) as g:
                    return g.read().strip()
    raise AssertionError(f"no {controller} cgroup for {pid}")


def test_update_running_container(engine):
    name = _name("upd")
    engine.run("-d", "--name", name, "busybox", "sleep", "300")
    try:
        pid = int(engine.docker("inspect", "-f", "{{.State.Pid}}", name, check=True).stdout)
        engine.docker("update", "--memory", "64m", "--cpu-shares", "256", "--restart",
                      "on-failure:2", name, check=True)
        if os.path.isdir("/sys/fs/cgroup/memory"):
            assert _cgroup_file(pid, "memory", "memory.limit_in_bytes") == str(64 << 20)
            assert _cgroup_file(pid, "cpu", "cpu.shares") == "256"
        else:
            assert _cgroup_file(pid, "", "memory.max") == str(64 << 20)
        fmt = "{{.HostConfig.Memory}} {{.HostConfig.CpuShares}} {{.HostConfig.RestartPolicy.Name}}"
        out = engine.docker("inspect", "-f", fmt, name, check=True).stdout.split()
        assert out == [str(64 << 20), "256", "on-failure"]
        bad = engine.docker("update", "--cpu-shares", "-5", name)
        assert bad.returncode != 0
    finally:
        engine.docker("rm", "-f", name, check=True)
