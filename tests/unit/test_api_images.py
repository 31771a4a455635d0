"""Image routes against an in-test image backend: progress streaming, errors, save/load."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tarfile
import threading

from api_client import serving

from kobako.api.context import Context
from kobako.engine.config import DaemonConfig
from kobako.image.errors import AuthError, InvalidReference, NotFound, RegistryError, UnsafeArchive


class FakeImages:
    driver = "overlay"

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail_pull_early: Exception | None = None
        self.fail_pull_late: Exception | None = None
        self.release_pull = threading.Event()
        self.imported: bytes = b""
        self.loaded: bytes = b""
        self.pull_cancelled = asyncio.Event()

    async def pull(self, ref, *, platform=None, auth=None, progress=None):
        self.calls.append(("pull", ref, platform, auth))
        if self.fail_pull_early:
            raise self.fail_pull_early
        progress({"status": "Pulling from library/busybox", "id": "latest"})
        progress({"status": "Downloading", "id": "abc", "progressDetail": {"current": 5,
                                                                         "total": 10}})
        if self.fail_pull_late:
            raise self.fail_pull_late
        if ref.endswith(":slow"):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.pull_cancelled.set()
                raise
        progress({"status": "Pull complete", "id": "abc"})
        return "sha256:" + "1" * 64

    async def push(self, ref, *, auth=None, progress=None):
        self.calls.append(("push", ref, auth))
        progress({"status": "Pushed", "id": "abc"})

    def tag(self, source, target):
        if source == "missing":
            raise NotFound("No such image: missing:latest")
        if target.startswith("UPPER"):
            raise InvalidReference("invalid reference format: repository name must be lowercase")
        self.calls.append(("tag", source, target))

    def remove(self, name, *, force=False, prune=True):
        self.calls.append(("remove", name, force, prune))
        return [{"Untagged": name}, {"Deleted": "sha256:" + "1" * 64}]

    def list(self, filters=None, all=False):
        self.calls.append(("list", filters, all))
        return [{"Id": "sha256:" + "1" * 64, "RepoTags": ["busybox:latest"], "Size": 10,
                 "Created": 1}]

    def inspect(self, name):
        if name != "busybox:latest" and name != "busybox":
            raise NotFound(f"No such image: {name}")
        return {"Id": "sha256:" + "1" * 64, "RepoTags": ["busybox:latest"]}

    def history(self, name):
        return [{"Id": "sha256:1", "CreatedBy": "import", "Size": 10, "Created": 1}]

    def prune(self, filters=None):
        self.calls.append(("prune", filters))
        return {"ImagesDeleted": [], "SpaceReclaimed": 0}

    def save(self, names, out, ready=None):
        for n in names:
            self.inspect(n)  # an unknown name fails before anything is written
        if ready:
            ready()
        with tarfile.open(fileobj=out, mode="w|") as tf:
            for n in names:
                data = (n * 100000).encode()
                ti = tarfile.TarInfo(n.replace(":", "_"))
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))

    def load(self, source, progress=None):
        self.loaded = source.read()
        if self.loaded == b"abc":
            raise UnsafeArchive("unexpected EOF")
        if progress:
            progress({"status": "Loading layer", "id": "abc"})
            progress({"stream": "Loaded image: busybox:latest\n"})
        return ["Loaded image: busybox:latest"]

    def import_image(self, source, *, reference=None, changes=None, message="", platform=None):
        self.imported = source.read()
        self.calls.append(("import", reference, changes, message, platform))
        return "sha256:" + "2" * 64


def run(test, images: FakeImages, tmp_path):
    async def main():
        ctx = Context(config=DaemonConfig(data_root=str(tmp_path / "data"),
                                          exec_root=str(tmp_path / "exec")),
                      images=images)  # type: ignore[arg-type]
        async with serving(ctx) as client:
            return await test(client, ctx)
    return asyncio.run(main())


def lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def test_pull_streams_progress_and_decodes_registry_auth(tmp_path):
    images = FakeImages()

    async def t(client, ctx):
        auth = base64.urlsafe_b64encode(json.dumps(
            {"username": "u", "password": "p", "serveraddress": "127.0.0.1:5000"}).encode())
        r = await client.post("/v1.45/images/create?fromImage=busybox&tag=1.36&platform=linux/amd64",
                              headers={"X-Registry-Auth": auth.decode().rstrip("=")})
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
        msgs = lines(await r.text())
        assert [m["status"] for m in msgs] == ["Pulling from library/busybox", "Downloading",
                                               "Pull complete"]
        assert msgs[1]["progressDetail"] == {"current": 5, "total": 10}
        _, ref, platform, creds = images.calls[-1]
        assert ref == "busybox:1.36" and platform == "linux/amd64"
        assert (creds.username, creds.password) == ("u", "p")
        r = await client.post("/images/create?fromImage=busybox",
                              headers={"X-Registry-Auth": "e30="})  # {} means anonymous
        assert images.calls[-1][1] == "busybox:latest" and images.calls[-1][3] is None
        r = await client.post("/images/create?fromImage=busybox",
                              headers={"X-Registry-Auth": "!!notbase64"})
        assert r.status == 400
    run(t, images, tmp_path)


def test_pull_error_before_streaming_is_a_status(tmp_path):
    images = FakeImages()
    images.fail_pull_early = RegistryError("manifest unknown", status=404)

    async def t(client, ctx):
        r = await client.post("/images/create?fromImage=nope&tag=latest")
        assert r.status == 404
        assert "manifest unknown" in (await r.json())["message"]
        images.fail_pull_early = InvalidReference("invalid reference format")
        r = await client.post("/images/create?fromImage=UPPER&tag=latest")
        assert r.status == 400
    run(t, images, tmp_path)


def test_registry_refusals_are_never_401(tmp_path):
    """A 401 tells the docker CLI to prompt for a password; dockerd sends it only from
    /auth. A denied pull is its 404, missing credentials a 500."""
    images = FakeImages()

    async def t(client, ctx):
        images.fail_pull_early = AuthError("manifest x/y:1: denied: access denied", status=403)
        r = await client.post("/images/create?fromImage=127.0.0.1:5000/x/y&tag=1")
        assert r.status == 404
        assert (await r.json())["message"] == (
            "pull access denied for 127.0.0.1:5000/x/y, repository does not exist or may "
            "require 'docker login': manifest x/y:1: denied: access denied")
        images.fail_pull_early = AuthError("unauthorized: authentication required", status=401)
        r = await client.post("/images/create?fromImage=127.0.0.1:5000/x/y&tag=1")
        assert r.status == 500
        assert (await r.json())["message"] == "unauthorized: authentication required"
    run(t, images, tmp_path)


def test_pull_error_mid_stream_is_error_detail(tmp_path):
    images = FakeImages()
    images.fail_pull_late = RegistryError("connection dropped")

    async def t(client, ctx):
        r = await client.post("/images/create?fromImage=busybox&tag=latest")
        assert r.status == 200
        msgs = lines(await r.text())
        assert msgs[-1] == {"errorDetail": {"message": "connection dropped"},
                            "error": "connection dropped"}
    run(t, images, tmp_path)


def test_client_disconnect_cancels_the_pull(tmp_path):
    images = FakeImages()

    async def t(client, ctx):
        resp = await client.post("/images/create?fromImage=busybox&tag=slow")
        await resp.content.readline()
        resp.close()
        await asyncio.wait_for(images.pull_cancelled.wait(), 5)
        assert (await client.get("/_ping")).status == 200
    run(t, images, tmp_path)


def test_tag_delete_list_inspect_history_prune(tmp_path):
    images = FakeImages()

    async def t(client, ctx):
        r = await client.post("/images/busybox/tag?repo=127.0.0.1:5000/me/bb&tag=v1")
        assert r.status == 201
        assert images.calls[-1] == ("tag", "busybox", "127.0.0.1:5000/me/bb:v1")
        assert (await client.post("/images/missing/tag?repo=x")).status == 404
        assert (await client.post("/images/busybox/tag?repo=UPPER")).status == 400
        assert (await client.post("/images/busybox/tag")).status == 400
        r = await client.delete("/images/127.0.0.1:5000/me/bb:v1?force=1&noprune=1")
        assert await r.json() == [{"Untagged": "127.0.0.1:5000/me/bb:v1"},
                                  {"Deleted": "sha256:" + "1" * 64}]
        assert images.calls[-1] == ("remove", "127.0.0.1:5000/me/bb:v1", True, False)
        r = await client.get('/images/json?all=1&filters={"dangling":["true"]}')
        assert (await r.json())[0]["RepoTags"] == ["busybox:latest"]
        assert images.calls[-1] == ("list", {"dangling": ["true"]}, True)
        r = await client.get("/images/busybox:latest/json")
        assert (await r.json())["Id"].startswith("sha256:")
        assert (await client.get("/images/nope/json")).status == 404
        r = await client.get("/images/busybox/history")
        assert (await r.json())[0]["CreatedBy"] == "import"
        r = await client.post('/images/prune?filters={"dangling":["false"]}')
        assert (await r.json())["SpaceReclaimed"] == 0
        r = await client.post("/images/busybox/push?tag=latest")
        assert lines(await r.text())[0]["status"] == "Pushed"
        assert images.calls[-1][1] == "busybox:latest"
    run(t, images, tmp_path)


def test_save_streams_a_tar_for_one_and_many(tmp_path):
    images = FakeImages()

    async def t(client, ctx):
        r = await client.get("/images/get?names=busybox&names=busybox:latest")
        assert r.status == 200 and r.headers["Content-Type"] == "application/x-tar"
        data = await r.read()
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            assert tf.getnames() == ["busybox", "busybox_latest"]
            assert tf.extractfile("busybox").read() == b"busybox" * 100000
        r = await client.get("/images/busybox/get")
        assert r.status == 200
        r = await client.get("/images/get?names=nope")
        assert r.status == 404  # resolved before the stream starts
    run(t, images, tmp_path)


def test_load_and_import_from_body(tmp_path):
    images = FakeImages()

    async def t(client, ctx):
        r = await client.post("/images/load", data=b"TARBYTES" * 1000)
        msgs = lines(await r.text())
        assert {"stream": "Loaded image: busybox:latest\n"} in msgs
        assert images.loaded == b"TARBYTES" * 1000
        r = await client.post("/images/load?quiet=1", data=b"x")
        assert lines(await r.text()) == [{"stream": "Loaded image: busybox:latest\n"}]
        for quiet in ("0", "1"):  # as dockerd: a 200 stream that carries the error
            r = await client.post(f"/images/load?quiet={quiet}", data=b"abc")
            assert r.status == 200
            assert lines(await r.text())[-1]["error"] == "unexpected EOF"
        r = await client.post(
            "/images/create?fromSrc=-&repo=myimg&tag=v2&message=hi"
            "&changes=CMD%20%5B%22sh%22%5D&changes=ENV%20A%3D1", data=b"ROOTFS")
        assert lines(await r.text()) == [{"status": "sha256:" + "2" * 64}]
        assert images.imported == b"ROOTFS"
        assert images.calls[-1] == ("import", "myimg:v2", ['CMD ["sh"]', "ENV A=1"], "hi", None)
    run(t, images, tmp_path)


def test_import_from_url_only_on_loopback(tmp_path):
    images = FakeImages()

    async def t(client, ctx):
        r = await client.post("/images/create?fromSrc=http://192.0.2.1/rootfs.tar")
        assert r.status == 400
        assert "loopback" in (await r.json())["message"]
        r = await client.post("/images/create?fromSrc=ftp://127.0.0.1/x")
        assert r.status == 400
        # a loopback URL is fetched: serve the rootfs from the test server itself
        port = client.server.port
        r = await client.post(f"/images/create?fromSrc=http://127.0.0.1:{port}/_ping&repo=u")
        assert r.status == 200
        assert images.imported == b"OK"
    run(t, images, tmp_path)


def test_images_unavailable_is_501(tmp_path):
    async def t(client, ctx):
        ctx.images = None
        r = await client.get("/images/json")
        assert r.status == 501
    run(t, FakeImages(), tmp_path)
