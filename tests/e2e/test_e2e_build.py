"""`docker build` (the classic builder, POST /build) through the real docker CLI and
docker-py against a kobakod of the module's own; every build runs with --network none."""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import urllib.parse

import docker
import pytest
from daemon_fixture import DOCKER


def write(directory, files: dict[str, str | bytes]) -> str:
    for name, content in files.items():
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
    return str(directory)


def build(engine, context: str, *args: str, check: bool = True):
    return engine.run("build", "--network", "none", *args, context, check=check, timeout=120)


def inspect(engine, ref: str) -> dict:
    return json.loads(engine.run("image", "inspect", ref, check=True).stdout)[0]


def no_containers_left(engine) -> bool:
    return engine.run("ps", "-aq", check=True).stdout.strip() == ""


MULTI_STAGE = """\
# parser directives and comments are not steps
ARG BASE=busybox
FROM ${BASE} AS base
ARG GREETING=hello
ENV APP=/app \\
    MODE=test
WORKDIR $APP
COPY hello.txt ./
COPY sub/ ./sub/
RUN echo "$GREETING from $(pwd) in $MODE" > out.txt && chown 77:88 out.txt
LABEL org.example.kind=base
EXPOSE 8080 53/udp
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD test -f /app/out.txt
CMD ["cat", "/app/out.txt"]

FROM busybox
COPY --from=base /app/out.txt /copied.txt
USER 1000:1000
ENTRYPOINT ["cat"]
CMD ["/copied.txt"]
"""


def test_multi_stage_build_and_the_image_it_makes(engine, tmp_path):
    context = write(tmp_path, {"Dockerfile": MULTI_STAGE, "hello.txt": "hi\n",
                               "sub/s.txt": "s\n"})
    out = build(engine, context, "-t", "kbt-build/multi:1", "--build-arg", "GREETING=bonjour")
    assert "Step 1/17 : ARG BASE=busybox" in out.stdout
    assert "Step 17/17 : CMD [\"/copied.txt\"]" in out.stdout
    assert "Successfully tagged kbt-build/multi:1" in out.stdout
    final = engine.run("run", "--rm", "--network", "none", "kbt-build/multi:1", check=True)
    assert final.stdout == "bonjour from /app in test\n"
    owner = engine.run("run", "--rm", "--network", "none", "--entrypoint", "stat",
                       "kbt-build/multi:1", "-c", "%u:%g", "/copied.txt", check=True)
    assert owner.stdout == "77:88\n"  # COPY --from keeps the owners, as dockerd
    cfg = inspect(engine, "kbt-build/multi:1")["Config"]
    assert cfg["User"] == "1000:1000"
    assert cfg["Entrypoint"] == ["cat"] and cfg["Cmd"] == ["/copied.txt"]
    # --target stops at the named stage, whose config is what its instructions made
    build(engine, context, "-t", "kbt-build/multi:base", "--target", "base")
    base = inspect(engine, "kbt-build/multi:base")["Config"]
    assert "APP=/app" in base["Env"] and "MODE=test" in base["Env"]
    assert base["WorkingDir"] == "/app"
    assert base["Labels"] == {"org.example.kind": "base"}
    assert base["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert base["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /app/out.txt"],
                                   "Interval": 5_000_000_000, "Timeout": 2_000_000_000,
                                   "Retries": 4}
    listing = engine.run("run", "--rm", "--network", "none", "kbt-build/multi:base",
                         "ls", "/app", "/app/sub", check=True).stdout.split()
    assert {"hello.txt", "out.txt", "sub", "s.txt"} <= set(listing)
    history = engine.run("history", "--no-trunc", "--format", "{{.CreatedBy}}",
                         "kbt-build/multi:base", check=True).stdout
    assert "|1 GREETING=hello /bin/sh -c echo" in history  # the ARG a RUN saw, as dockerd
    assert no_containers_left(engine)
    engine.run("rmi", "kbt-build/multi:1", "kbt-build/multi:base", check=True)


def test_copy_rules_chown_chmod_wildcards_and_add_archives(engine, tmp_path):
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w:gz") as tf:
        data = b"from the archive\n"
        info = tarfile.TarInfo("inner/file.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    dockerfile = """\
FROM busybox
COPY a.txt /file-named-so
COPY *.log /logs/
COPY --chown=1000:1000 --chmod=640 a.txt /owned/
COPY --chown=nobody:nogroup a.txt /named/a.txt
ADD bundle.tar.gz /unpacked/
COPY a.txt /tmp/inside-tmp
COPY --chown=1234:1234 sub /new/deep/
COPY --chown=1234:1234 sub /tmp/
"""
    context = write(tmp_path, {"Dockerfile": dockerfile, "a.txt": "a\n", "x.log": "x\n",
                               "y.log": "y\n", "bundle.tar.gz": layer.getvalue(),
                               "sub/s.txt": "s\n"})
    build(engine, context, "-t", "kbt-build/copy:1")
    script = ("cat /file-named-so; ls /logs; stat -c '%u:%g %a' /owned/a.txt; "
              "stat -c '%U:%G' /named/a.txt; cat /unpacked/inner/file.txt; "
              "stat -c '%a' /tmp; stat -c '%u %a' /new /new/deep /new/deep/s.txt /tmp")
    out = engine.run("run", "--rm", "--network", "none", "kbt-build/copy:1", "sh", "-c",
                     script, check=True).stdout.split("\n")
    assert out[:7] == ["a", "x.log", "y.log", "1000:1000 640", "nobody:nogroup",
                       "from the archive", "1777"]  # an existing /tmp keeps its mode
    # --chown: the directories the copy made are the user's, those that were there not
    assert out[7:11] == ["1234 755", "1234 755", "1234 644", "0 1777"]
    engine.run("rmi", "kbt-build/copy:1", check=True)


def test_from_scratch_onbuild_and_shell(engine, tmp_path):
    busybox = write(tmp_path / "trigger", {"Dockerfile": (
        "FROM busybox\nONBUILD RUN echo triggered > /triggered\n"
        'SHELL ["/bin/sh", "-ec"]\n')})
    build(engine, busybox, "-t", "kbt-build/onbuild:1")
    child = write(tmp_path / "child", {"Dockerfile": "FROM kbt-build/onbuild:1\nRUN true\n"})
    out = build(engine, child, "-t", "kbt-build/onbuild:child")
    assert "Executing 1 build trigger" in out.stdout
    assert engine.run("run", "--rm", "--network", "none", "kbt-build/onbuild:child", "cat",
                      "/triggered", check=True).stdout == "triggered\n"
    assert inspect(engine, "kbt-build/onbuild:child")["Config"].get("OnBuild") in (None, [])
    assert inspect(engine, "kbt-build/onbuild:1")["Config"]["Shell"] == ["/bin/sh", "-ec"]
    scratch = write(tmp_path / "scratch", {"Dockerfile": "FROM scratch\nCOPY f /f\n",
                                           "f": "only me\n"})
    build(engine, scratch, "-t", "kbt-build/scratch:1")
    exported = engine.run("create", "--name", "kbt-build-scratch", "kbt-build/scratch:1",
                          "x", check=True)
    assert exported.returncode == 0
    engine.run("rm", "kbt-build-scratch", check=True)
    assert len(inspect(engine, "kbt-build/scratch:1")["RootFS"]["Layers"]) == 1
    engine.run("rmi", "kbt-build/onbuild:child", "kbt-build/onbuild:1", "kbt-build/scratch:1",
               check=True)


def test_failures_and_what_they_leave(engine, tmp_path):
    context = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo partial; exit 3\n"})
    failed = build(engine, context, check=False)
    assert failed.returncode == 3  # the docker CLI exits with the RUN's code
    assert "partial" in failed.stdout
    assert "The command '/bin/sh -c echo partial; exit 3' returned a non-zero code: 3" \
        in failed.stderr
    kept = engine.run("ps", "-aq", check=True).stdout.split()
    assert len(kept) == 1  # as dockerd: the failed step's container stays for a look
    engine.run("rm", kept[0], check=True)
    assert build(engine, context, "--force-rm", check=False).returncode == 3
    assert no_containers_left(engine)

    cases = {
        "FROM busybox\nCOPY missing.txt /\n": "file not found in build context",
        "FROM busybox\nFORM x\n": "unknown instruction: FORM",
        "FROM busybox\nCOPY link /\n": "forbidden path outside the build context",
        "FROM scratch\nRUN true\n": "RUN on an empty image",
        "FROM busybox AS a\nFROM a\n": None,  # a stage as a base: fine
    }
    for number, (dockerfile, message) in enumerate(cases.items()):
        directory = tmp_path / f"case{number}"
        write(directory, {"Dockerfile": dockerfile})
        os.symlink("/etc/passwd", directory / "link")
        result = build(engine, str(directory), check=False)
        if message is None:
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode != 0 and message in result.stderr, (dockerfile, result)
    bad_tag = build(engine, context, "-t", "UPPER:case", check=False)
    assert bad_tag.returncode != 0 and "invalid" in bad_tag.stderr.lower()
    assert no_containers_left(engine)


def test_hostile_context_is_refused(engine):
    """A context tar that climbs out of its directory: refused before any step runs."""
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tf:
        for name, data in (("Dockerfile", b"FROM busybox\n"), ("../escaped", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    body.seek(0)
    client = engine.docker_py()
    try:
        with pytest.raises(docker.errors.APIError) as err:
            list(client.api.build(fileobj=body, custom_context=True, network_mode="none",
                                  decode=True))
        assert err.value.response.status_code == 400
        assert "invalid build context" in str(err.value)
        with pytest.raises(docker.errors.APIError):
            client.api._result(client.api._post(  # BuildKit is refused with a clear error
                client.api._url("/build") + "?" + urllib.parse.urlencode({"version": "2"}),
                data=b""))
    finally:
        client.close()


def test_docker_py_build(engine, tmp_path):
    context = write(tmp_path, {"Dockerfile": "FROM busybox\nARG WHO\nRUN echo $WHO > /who\n"})
    client = engine.docker_py()
    try:
        # docker-py keeps the old default rm=False: its intermediate containers stay
        image, logs = client.images.build(path=context, tag="kbt-build/py:1", rm=True,
                                          network_mode="none", buildargs={"WHO": "py"},
                                          labels={"built.by": "docker-py"})
        assert "kbt-build/py:1" in image.tags
        assert image.labels == {"built.by": "docker-py"}
        assert any("Successfully built" in m.get("stream", "") for m in logs)
        out = client.containers.run("kbt-build/py:1", "cat /who", remove=True,
                                    network_mode="none")
        assert out == b"py\n"
        with pytest.raises(docker.errors.BuildError) as err:
            client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN exit 7\n"),
                                network_mode="none", forcerm=True)
        assert "returned a non-zero code: 7" in err.value.msg
        client.images.remove("kbt-build/py:1")
    finally:
        client.close()
    assert no_containers_left(engine)


def test_kobako_cli_build_with_dockerignore_and_outside_dockerfile(engine, tmp_path):
    context = write(tmp_path / "ctx", {
        "keep.txt": "kept\n", "secret.key": "no\n", "logs/a.log": "x\n", "logs/keep.log": "y\n",
        ".dockerignore": "*.key\nlogs/*\n!logs/keep.log\n"})
    dockerfile = write(tmp_path / "elsewhere", {"build.Dockerfile": (
        "FROM busybox\nCOPY . /ctx/\nRUN exit 0\n")})
    out = engine.kobako("build", "--network", "none", "-t", "kbt-build/cli:1", "-f",
                        os.path.join(dockerfile, "build.Dockerfile"), context)
    assert "Successfully tagged kbt-build/cli:1" in out.stdout.decode()
    files = engine.run("run", "--rm", "--network", "none", "kbt-build/cli:1", "find", "/ctx",
                       "-type", "f", check=True).stdout.split()
    assert "/ctx/keep.txt" in files and "/ctx/logs/keep.log" in files
    assert "/ctx/secret.key" not in files and "/ctx/logs/a.log" not in files
    failed = engine.kobako("build", "--network", "none", "--force-rm", "-f", "-", context,
                           input=b"FROM busybox\nRUN exit 4\n", check=False)
    assert failed.returncode == 4
    assert b"returned a non-zero code: 4" in failed.stderr
    engine.run("rmi", "kbt-build/cli:1", check=True)
    assert no_containers_left(engine)


def test_build_cache(engine, tmp_path):
    """A step is taken from the cache when what it starts from and what it does are the
    same: file times do not count, file contents and build args do; --no-cache runs all.
    As dockerd's classic builder, every step is an image and a cache point."""
    context = write(tmp_path, {"Dockerfile": (
        "FROM busybox\nARG V=1\nCOPY f /f\nRUN cat /f > /g; echo $V >> /g\nCMD [\"cat\", \"/g\"]\n"),
        "f": "one\n"})
    first = build(engine, context, "-t", "kbt-build/cache:1")
    assert "Using cache" not in first.stdout
    image = inspect(engine, "kbt-build/cache:1")["Id"]
    again = build(engine, context, "-t", "kbt-build/cache:1")
    assert again.stdout.count("Using cache") == 4  # ARG, COPY, RUN, CMD
    assert inspect(engine, "kbt-build/cache:1")["Id"] == image
    os.utime(os.path.join(context, "f"), (1, 1))
    assert build(engine, context).stdout.count("Using cache") == 4
    assert build(engine, context, "--build-arg", "V=2").stdout.count("Using cache") == 2
    write(tmp_path, {"f": "two\n"})
    changed = build(engine, context, "-t", "kbt-build/cache:1")
    assert changed.stdout.count("Using cache") == 1  # the ARG only
    assert engine.run("run", "--rm", "--network", "none", "kbt-build/cache:1",
                      check=True).stdout == "two\n1\n"
    assert "Using cache" not in build(engine, context, "--no-cache").stdout
    engine.run("rmi", "kbt-build/cache:1", check=True)
    assert no_containers_left(engine)


def test_add_from_a_url(engine, tmp_path):
    """ADD <url> downloads (a server on loopback here): mode 600, never unpacked; COPY
    refuses URLs; a failing download fails the build."""
    served = write(tmp_path / "www", {"file.txt": "downloaded\n"})

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=served, **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        context = write(tmp_path / "ctx", {"Dockerfile": (
            f"FROM busybox\nADD {base}/file.txt /dl/\nADD {base}/file.txt /renamed\n")})
        build(engine, context, "-t", "kbt-build/url:1")
        out = engine.run("run", "--rm", "--network", "none", "kbt-build/url:1", "sh", "-c",
                         "cat /dl/file.txt /renamed; stat -c %a /dl/file.txt",
                         check=True).stdout
        assert out == "downloaded\ndownloaded\n600\n"
        for dockerfile, message in ((f"FROM busybox\nCOPY {base}/file.txt /\n",
                                     "source can't be a URL for COPY"),
                                    (f"FROM busybox\nADD {base}/missing /\n", "404")):
            write(tmp_path / "ctx", {"Dockerfile": dockerfile})
            failed = build(engine, context, check=False)
            assert failed.returncode != 0 and message in failed.stderr, failed
    finally:
        server.shutdown()
        server.server_close()
    engine.run("rmi", "kbt-build/url:1", check=True)
    assert no_containers_left(engine)


def test_build_is_seen_in_events(engine, tmp_path):
    context = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN true\n"})
    start = str(int(time.time()) - 1)
    build(engine, context, "-t", "kbt-build/events:1")
    until = str(int(time.time()) + 1)
    events = engine.run("events", "--since", start, "--until", until, "--format",
                        "{{.Type}} {{.Action}}", check=True).stdout.splitlines()
    # the RUN's container went through its life, and the image was tagged
    assert "container create" in events and "container destroy" in events
    assert "image tag" in events
    engine.run("rmi", "kbt-build/events:1", check=True)


def test_run_options_of_the_build(engine, tmp_path):
    """--add-host and --ulimit reach the RUN containers (not the image)."""
    context = write(tmp_path, {"Dockerfile": (
        "FROM busybox\nRUN grep -q kbt-host /etc/hosts && test \"$(ulimit -n)\" = 512\n")})
    ok = build(engine, context, "--no-cache", "--add-host", "kbt-host:10.1.2.3",
               "--ulimit", "nofile=512:512", check=False)
    assert ok.returncode == 0, ok.stderr
    assert build(engine, context, "--no-cache", check=False).returncode == 1
    assert engine.run("ps", "-aq", "--filter", "status=exited", check=True).stdout.strip()
    engine.run("container", "prune", "-f", check=True)


def test_a_build_cancelled_by_its_client_leaves_nothing_running(engine, tmp_path):
    context = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo started; sleep 300\n"})
    proc = subprocess.Popen([DOCKER, "build", "--network", "none", context],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=engine.env())
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"started" in line:
                break
    finally:
        proc.kill()  # as a Ctrl-C would: the connection drops
        proc.wait()
    deadline = time.monotonic() + 20
    while engine.run("ps", "-aq", check=True).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert no_containers_left(engine)


def test_history_records_steps_as_dockerd(engine, tmp_path):
    """The classic builder's words for config steps: Go's list formats, the stage's
    shell, WORKDIR's single space."""
    context = write(tmp_path, {"Dockerfile": (
        'FROM busybox\nENV A=1 B="two words"\nWORKDIR app\nVOLUME /data /d2\n'
        'CMD echo hi\nENTRYPOINT ["cat"]\nSHELL ["/bin/sh", "-xc"]\nUSER 1000\n')})
    build(engine, context, "-t", "kbt-build/hist:1")
    history = engine.run("history", "--no-trunc", "--format", "{{.CreatedBy}}",
                         "kbt-build/hist:1", check=True).stdout.splitlines()
    assert history[:7] == [
        "/bin/sh -xc #(nop)  USER 1000",
        "/bin/sh -xc #(nop)  SHELL [/bin/sh -xc]",  # its own shell already
        '/bin/sh -c #(nop)  ENTRYPOINT ["cat"]',
        '/bin/sh -c #(nop)  CMD ["/bin/sh" "-c" "echo hi"]',
        "/bin/sh -c #(nop)  VOLUME [/data /d2]",
        "/bin/sh -c #(nop) WORKDIR /app",
        "/bin/sh -c #(nop)  ENV A=1 B=two words",
    ]
    engine.run("rmi", "kbt-build/hist:1", check=True)
