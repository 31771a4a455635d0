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
from daemon_fixture import DOCKER, Daemon, busybox_daemon, cgroup_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# never pull (the image is imported) and stay off the network
RUN = ("run", "--pull", "never", "--network", "none")


def run(engine: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return engine.run(*RUN, *args, check=check)


def raw(engine: Daemon, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    """The docker CLI with bytes in and out (archives)."""
    return subprocess.run([DOCKER, *args], capture_output=True, input=input, timeout=60,
                          env=engine.env())


def volumes_dir(engine: Daemon) -> str:
    return str(engine.data_root / "volumes")


@pytest.fixture(scope="module")
def engine():
    with busybox_daemon() as daemon:
        yield daemon
        daemon.remove_all_containers(volumes=True)
        names = daemon.run("volume", "ls", "-q").stdout.split()
        if names:
            daemon.run("volume", "rm", *names, check=True)
        assert not os.listdir(volumes_dir(daemon)), os.listdir(volumes_dir(daemon))


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
    engine.run("volume", "create", "--label", "kbt=1", vol, check=True)
    mode_in_image = run(engine, "--rm", "busybox", "stat", "-c", "%a %u", "/etc/shadow").stdout
    out = run(engine, "--rm", "-v", f"{vol}:/etc", "busybox", "sh", "-c",
              "stat -c '%a %u' /etc/shadow; ls /etc; echo kept > /etc/kbt-note").stdout
    assert out.splitlines()[0] == mode_in_image.strip()
    assert "passwd" in out.split()
    # a second container sees what the first wrote, and the copy-up is not redone
    again = run(engine, "--rm", "-v", f"{vol}:/data", "busybox", "cat", "/data/kbt-note")
    assert again.stdout == "kept\n"
    data = os.path.join(volumes_dir(engine), vol, "_data")
    assert os.path.isfile(os.path.join(data, "passwd"))
    inspect = engine.run("volume", "inspect", "-f", "{{.Mountpoint}} {{.Labels}}", vol,
                         check=True).stdout
    assert inspect.split()[0] == data and "kbt:1" in inspect
    engine.run("volume", "rm", vol, check=True)
    assert not os.path.exists(os.path.join(volumes_dir(engine), vol))


def test_nocopy_volume_stays_empty(engine):
    vol = _name("nocopy")
    out = run(engine, "--rm", "-v", f"{vol}:/var:nocopy", "busybox", "ls", "-A", "/var")
    assert out.stdout == ""
    copied = run(engine, "--rm", "-v", f"{vol}-c:/var", "busybox", "ls", "-A", "/var")
    assert copied.stdout.split() == ["spool", "www"]
    engine.run("volume", "rm", f"{vol}-c", check=True)
    engine.run("volume", "rm", vol, check=True)


def test_anonymous_volume_removed_with_rm_v(engine):
    name = _name("anon")
    run(engine, "--name", name, "-v", "/data", "busybox", "sh", "-c", "echo x > /data/x")
    vol = engine.run("inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", name,
                     check=True).stdout.strip()
    assert len(vol) == 64
    assert vol in engine.run("volume", "ls", "-q", "--filter", "dangling=false").stdout
    labels = engine.run("volume", "inspect", "-f", "{{json .Labels}}", vol).stdout
    assert "com.docker.volume.anonymous" in labels
    engine.run("rm", "-v", name, check=True)
    assert vol not in engine.run("volume", "ls", "-q").stdout
    assert not os.path.exists(os.path.join(volumes_dir(engine), vol))


def test_anonymous_volume_kept_by_rm_and_pruned(engine):
    name = _name("keep")
    named = _name("named")
    run(engine, "--name", name, "-v", "/data", "-v", f"{named}:/n", "busybox", "true")
    vol = engine.run("inspect", "-f", '{{range .Mounts}}{{if eq .Destination "/data"}}'
                     "{{.Name}}{{end}}{{end}}", name, check=True).stdout.strip()
    engine.run("rm", name, check=True)
    listed = engine.run("volume", "ls", "-q", "--filter", "dangling=true").stdout.split()
    assert vol in listed and named in listed
    pruned = engine.run("volume", "prune", "-f", check=True).stdout
    assert vol in pruned and named not in pruned  # only anonymous ones by default
    pruned = engine.run("volume", "prune", "-f", "--filter", "all=true",
                        "--filter", "label!=kbt-keep", check=True).stdout
    assert named in pruned
    assert named not in engine.run("volume", "ls", "-q").stdout


def test_volume_ls_filters(engine):
    a, b = _name("fa"), _name("fb")
    engine.run("volume", "create", "--label", "kbt-color=red", a, check=True)
    engine.run("volume", "create", "--label", "kbt-color=blue", b, check=True)
    try:
        red = engine.run("volume", "ls", "-q", "--filter", "label=kbt-color=red").stdout
        assert red.split() == [a]
        both = engine.run("volume", "ls", "-q", "--filter", "label=kbt-color").stdout
        assert sorted(both.split()) == sorted([a, b])
        assert engine.run("volume", "ls", "-q", "--filter", f"name={b}").stdout.split() == [b]
        bad = engine.run("volume", "ls", "--filter", "bogus=1")
        assert bad.returncode != 0 and "invalid filter" in bad.stderr
    finally:
        engine.run("volume", "rm", a, b, check=True)


def test_volume_in_use_cannot_be_removed(engine):
    import docker

    vol = _name("busy")
    name = _name("user")
    run(engine, "-d", "--name", name, "-v", f"{vol}:/v", "busybox", "sleep", "300")
    try:
        client = engine.docker_py()
        with pytest.raises(docker.errors.APIError) as err:
            client.volumes.get(vol).remove()
        assert err.value.status_code == 409
        assert "volume is in use" in str(err.value)
        cli = engine.run("volume", "rm", vol)
        assert cli.returncode != 0 and "volume is in use" in cli.stderr
    finally:
        engine.run("rm", "-f", name, check=True)
    engine.run("volume", "rm", vol, check=True)


def test_volume_api_with_docker_py(engine):
    import docker

    client = engine.docker_py()
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
    engine.run("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
               "--opt", "o=size=2m", vol, check=True)
    out = run(engine, "--rm", "-v", f"{vol}:/t", "busybox", "grep", " /t ", "/proc/mounts")
    assert "tmpfs" in out.stdout and "size=2048k" in out.stdout
    engine.run("volume", "rm", vol, check=True)
    bad = engine.run("volume", "create", "--opt", "color=red", _name("bad"))
    assert bad.returncode != 0 and 'invalid option: "color"' in bad.stderr


def test_local_driver_bind_volume_is_unmounted(engine, hostdir):
    """A `-o bind` volume of a directory on the same filesystem as the data root: its
    mount is undone when no container uses it (a same-device bind is a mount point that
    os.path.ismount does not see)."""
    vol = _name("bindvol")
    engine.run("volume", "create", "--opt", "type=none", "--opt", f"device={hostdir}",
               "--opt", "o=bind", vol, check=True)
    run(engine, "--rm", "-v", f"{vol}:/b", "busybox", "sh", "-c", "echo hi > /b/f")
    with open(os.path.join(hostdir, "f")) as f:
        assert f.read() == "hi\n"
    mountpoint = engine.run("volume", "inspect", "-f", "{{.Mountpoint}}", vol,
                            check=True).stdout.strip()
    engine.run("volume", "rm", vol, check=True)
    assert not any(mountpoint.rsplit("/", 2)[0] in point for point in engine.mounts())
    assert os.listdir(hostdir) == ["f"]  # the volume's removal left the host's files alone


# -- binds and tmpfs ---------------------------------------------------------------------------

def test_bind_read_only(engine, hostdir):
    with open(os.path.join(hostdir, "f"), "w") as f:
        f.write("from host\n")
    out = run(engine, "--rm", "-v", f"{hostdir}:/h:ro", "busybox", "sh", "-c",
              "cat /h/f; touch /h/new; echo rc=$?", check=False)
    assert "from host" in out.stdout and "rc=1" in out.stdout
    assert "Read-only file system" in out.stderr
    assert os.listdir(hostdir) == ["f"]
    mounts = run(engine, "--rm", "--mount", f"type=bind,source={hostdir},target=/b,readonly",
                 "busybox", "grep", " /b ", "/proc/mounts").stdout
    assert " ro," in mounts


def test_bind_source_created_for_v_error_for_mount(engine, hostdir):
    missing = os.path.join(hostdir, "missing")
    out = run(engine, "--rm", "--mount", f"type=bind,source={missing},target=/x", "busybox",
              "true", check=False)
    assert out.returncode != 0
    assert f"bind source path does not exist: {missing}" in out.stderr
    run(engine, "--rm", "-v", f"{missing}:/x", "busybox", "touch", "/x/made")
    assert os.path.exists(os.path.join(missing, "made"))


def test_tmpfs_mounts(engine):
    out = run(engine, "--rm", "--mount", "type=tmpfs,target=/t,tmpfs-size=1m", "busybox",
              "grep", " /t ", "/proc/mounts").stdout
    assert out.startswith("tmpfs /t tmpfs") and "size=1024k" in out
    out = run(engine, "--rm", "--tmpfs", "/x:size=1m,mode=1777", "busybox", "sh", "-c",
              "grep ' /x ' /proc/mounts; stat -c %a /x").stdout
    assert "size=1024k" in out and out.splitlines()[-1] == "1777"


def test_volumes_from(engine, hostdir):
    vol = _name("shared")
    src = _name("src")
    run(engine, "--name", src, "-v", f"{vol}:/shared", "-v", f"{hostdir}:/hostdir", "busybox",
        "sh", "-c", "echo from-src > /shared/f")
    try:
        out = run(engine, "--rm", "--volumes-from", src, "busybox", "sh", "-c",
                  "cat /shared/f; touch /hostdir/seen").stdout
        assert out == "from-src\n"
        assert os.path.exists(os.path.join(hostdir, "seen"))
        ro = run(engine, "--rm", "--volumes-from", f"{src}:ro", "busybox", "touch",
                 "/shared/x", check=False)
        assert ro.returncode != 0 and "Read-only" in ro.stderr
        missing = run(engine, "--rm", "--volumes-from", "kbt-no-such", "busybox", "true",
                      check=False)
        assert missing.returncode != 0 and "No such container" in missing.stderr
    finally:
        engine.run("rm", src, check=True)
    engine.run("volume", "rm", vol, check=True)


# -- cp ----------------------------------------------------------------------------------------

def test_cp_both_ways_running_and_stopped(engine, hostdir):
    name = _name("cp")
    run(engine, "-d", "--name", name, "busybox", "sleep", "300")
    try:
        src = os.path.join(hostdir, "in.txt")
        with open(src, "w") as f:
            f.write("into the container\n")
        os.makedirs(os.path.join(hostdir, "tree", "sub"))
        with open(os.path.join(hostdir, "tree", "sub", "leaf"), "w") as f:
            f.write("leaf\n")
        engine.run("cp", src, f"{name}:/tmp/", check=True)
        engine.run("cp", os.path.join(hostdir, "tree"), f"{name}:/opt", check=True)
        out = engine.run("exec", name, "cat", "/tmp/in.txt", "/opt/sub/leaf", check=True)
        assert out.stdout == "into the container\nleaf\n"
        engine.run("exec", name, "sh", "-c", "mkdir -p /out/d && echo made > /out/d/f",
                   check=True)
        engine.run("cp", f"{name}:/out", os.path.join(hostdir, "got"), check=True)
        with open(os.path.join(hostdir, "got", "d", "f")) as f:
            assert f.read() == "made\n"
        engine.run("stop", "-t", "0", name, check=True)
        # stopped: the rootfs is mounted privately for the copy
        engine.run("cp", src, f"{name}:/root/stopped.txt", check=True)
        tar = raw(engine, "cp", f"{name}:/out/d/f", "-")
        assert tar.returncode == 0
        with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as tf:
            member = tf.getmember("f")
            assert tf.extractfile(member).read() == b"made\n"
        engine.run("start", name, check=True)
        out = engine.run("exec", name, "cat", "/root/stopped.txt", check=True)
        assert out.stdout == "into the container\n"
        missing = engine.run("cp", f"{name}:/no/such", hostdir)
        assert missing.returncode != 0 and "Could not find the file /no/such" in missing.stderr
        # a trailing "/" names a directory (a last symlink followed), as dockerd
        engine.run("exec", name, "sh", "-c", "ln -s d /out/rel", check=True)
        not_dir = engine.run("cp", src, f"{name}:/root/stopped.txt/")
        assert not_dir.returncode != 0
        engine.run("cp", f"{name}:/out/rel/", os.path.join(hostdir, "viadir"), check=True)
        with open(os.path.join(hostdir, "viadir", "f")) as f:
            assert f.read() == "made\n"
        assert engine.run("exec", name, "cat", "/root/stopped.txt").stdout == \
            "into the container\n"
    finally:
        engine.run("rm", "-f", name, check=True)
    assert not engine.mounts() or all(
        "kbt" not in m for m in engine.mounts())


def test_cp_into_and_from_volumes(engine, hostdir):
    vol = _name("cpvol")
    name = _name("cpv")
    run(engine, "--name", name, "-v", f"{vol}:/vol", "-v", f"{hostdir}:/bound", "busybox",
        "true")
    try:
        src = os.path.join(hostdir, "payload")
        with open(src, "w") as f:
            f.write("payload\n")
        engine.run("cp", src, f"{name}:/vol/", check=True)  # stopped container
        assert os.path.exists(os.path.join(volumes_dir(engine), vol, "_data", "payload"))
        got = raw(engine, "cp", f"{name}:/bound/payload", "-")
        with tarfile.open(fileobj=io.BytesIO(got.stdout)) as tf:
            assert tf.extractfile("payload").read() == b"payload\n"
    finally:
        engine.run("rm", name, check=True)
    engine.run("volume", "rm", vol, check=True)


def test_cp_symlink_cannot_reach_the_host(engine, hostdir):
    secret = os.path.join(hostdir, "secret")
    with open(secret, "w") as f:
        f.write("host secret\n")
    name = _name("esc")
    # /esc points at the host dir's path; inside the container that path is its own
    run(engine, "-d", "--name", name, "busybox", "sh", "-c",
        f"ln -s {hostdir} /esc; ln -s {secret} /esc-file; mkdir -p {hostdir}; "
        "sleep 300")
    try:
        engine.run("exec", name, "test", "-L", "/esc", check=True)
        read = raw(engine, "cp", f"{name}:/esc/secret", "-")
        assert read.returncode != 0 and b"host secret" not in read.stdout
        follow = raw(engine, "cp", "-L", f"{name}:/esc-file", "-")
        assert b"host secret" not in follow.stdout
        link = raw(engine, "cp", f"{name}:/esc-file", "-")
        with tarfile.open(fileobj=io.BytesIO(link.stdout)) as tf:
            assert tf.getmember("esc-file").issym()
        payload = os.path.join(tempfile.mkdtemp(prefix="kbk-e2e-payload-"), "dropped")
        try:
            with open(payload, "w") as f:
                f.write("dropped\n")
            engine.run("cp", payload, f"{name}:/esc/", check=True)
        finally:
            shutil.rmtree(os.path.dirname(payload))
        assert sorted(os.listdir(hostdir)) == ["secret"]  # nothing written on the host
        out = engine.run("exec", name, "cat", f"{hostdir}/dropped", check=True)
        assert out.stdout == "dropped\n"
        # a tar with ../ entries is refused
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo("../../../../../../../../tmp/kbk-evil")
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
        client = engine.docker_py()
        import docker

        with pytest.raises(docker.errors.APIError):
            client.api.put_archive(name, "/tmp", buf.getvalue())
        assert not os.path.exists("/tmp/kbk-evil")
    finally:
        engine.run("rm", "-f", name, check=True)


def test_archive_api_with_docker_py(engine):
    client = engine.docker_py()
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

def test_sizes_of_ps_and_inspect(engine):
    """`ps -s` and `inspect -s` (?size=1): the writable layer, and that plus the image."""
    name = _name("size")
    run(engine, "--name", name, "busybox", "sh", "-c", "head -c 100000 /dev/zero > /big")
    try:
        rw, rootfs = engine.run("inspect", "-s", "--format", "{{.SizeRw}} {{.SizeRootFs}}",
                                name, check=True).stdout.split()
        assert int(rw) >= 100000 and int(rootfs) > int(rw)
        unasked = engine.run("inspect", "--format", "{{.SizeRw}}", name, check=True).stdout
        assert not unasked.strip().isdigit()  # measured only when asked
        size = engine.run("ps", "-a", "-s", "--filter", f"name={name}", "--format",
                          "{{.Size}}", check=True).stdout.strip()
        assert size.startswith("100kB (virtual "), size
    finally:
        engine.run("rm", "-f", name)


def test_diff_export_commit(engine):
    name = _name("chg")
    out = run(engine, "--name", name, "busybox", "sh", "-c",
              "echo new > /added; echo more >> /etc/passwd; rm /bin/arch; mkdir /newdir;"
              "test -f /.dockerenv && readlink /etc/mtab").stdout
    assert out == "/proc/mounts\n"  # Docker's init layer
    try:
        lines = engine.run("diff", name, check=True).stdout.splitlines()
        assert "A /added" in lines
        assert "A /newdir" in lines
        assert "C /etc" in lines and "C /etc/passwd" in lines
        assert "D /bin/arch" in lines
        assert not any(line.endswith(("/.dockerenv", "/etc/mtab")) for line in lines)
        listing = raw(engine, "export", name)
        assert listing.returncode == 0
        with tarfile.open(fileobj=io.BytesIO(listing.stdout)) as tf:
            names = tf.getnames()
        assert "added" in names and "bin/busybox" in names and "bin/arch" not in names
        assert ".dockerenv" in names and "etc/mtab" in names
        tag = f"kbt-commit-{secrets.token_hex(3)}:v1"
        engine.run("commit", "--change", 'CMD ["cat", "/added"]', "-m", "kbt message",
                   name, tag, check=True)
        assert run(engine, "--rm", tag).stdout == "new\n"
        history = engine.run("history", "--format", "{{.Comment}}", tag, check=True).stdout
        assert "kbt message" in history
        engine.run("rmi", tag, check=True)
    finally:
        engine.run("rm", name, check=True)


def test_update_running_container(engine):
    name = _name("upd")
    run(engine, "-d", "--name", name, "busybox", "sleep", "300")
    try:
        pid = int(engine.run("inspect", "-f", "{{.State.Pid}}", name, check=True).stdout)
        engine.run("update", "--memory", "64m", "--cpu-shares", "256", "--restart",
                   "on-failure:2", name, check=True)
        if os.path.isdir("/sys/fs/cgroup/memory"):
            assert cgroup_file(pid, "memory", "memory.limit_in_bytes") == str(64 << 20)
            assert cgroup_file(pid, "cpu", "cpu.shares") == "256"
        else:
            assert cgroup_file(pid, "", "memory.max") == str(64 << 20)
        fmt = "{{.HostConfig.Memory}} {{.HostConfig.CpuShares}} {{.HostConfig.RestartPolicy.Name}}"
        out = engine.run("inspect", "-f", fmt, name, check=True).stdout.split()
        assert out == [str(64 << 20), "256", "on-failure"]
        bad = engine.run("update", "--cpu-shares", "-5", name)
        assert bad.returncode != 0
    finally:
        engine.run("rm", "-f", name, check=True)
