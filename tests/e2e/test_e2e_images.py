"""Image operations without a registry, through the docker CLI, docker-py and kobako."""

from __future__ import annotations

import io
import json
import tarfile

import docker
import pytest
from daemon_fixture import busybox_rootfs_tar


@pytest.fixture
def busybox_tar(kobakod):
    return busybox_rootfs_tar(str(kobakod.base / "busybox-rootfs.tar"))


def _repo_tags(kobakod) -> set[str]:
    out = kobakod.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode()
    return {line for line in out.splitlines() if line}


def test_import_images_tag_inspect_history_rmi(kobakod, docker_cli, busybox_tar):
    image_id = kobakod.docker("import", "--change", 'CMD ["sh"]', "--change", "ENV KBK=1",
                              "--message", "kbk e2e", busybox_tar,
                              "kbk-e2e/busybox:1").stdout.decode().strip()
    assert image_id.startswith("sha256:")
    assert _repo_tags(kobakod) == {"kbk-e2e/busybox:1"}
    table = kobakod.docker("images").stdout.decode().splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert table[1].split()[:3] == ["kbk-e2e/busybox", "1", image_id[7:19]]
    kobakod.docker("tag", "kbk-e2e/busybox:1", "127.0.0.1:5999/kbk-e2e/other:v2")
    assert _repo_tags(kobakod) == {"kbk-e2e/busybox:1", "127.0.0.1:5999/kbk-e2e/other:v2"}
    fmt = "{{.Id}}|{{json .Config.Cmd}}|{{json .Config.Env}}|{{.Os}}|{{len .RepoTags}}"
    out = kobakod.docker("image", "inspect", "--format", fmt, "kbk-e2e/busybox:1").stdout
    fields = out.decode().strip().split("|")
    assert fields[0] == image_id and fields[1] == '["sh"]' and fields[3] == "linux"
    assert "KBK=1" in json.loads(fields[2])
    assert fields[4] == "2"
    history = kobakod.docker("history", "--format", "{{.Comment}}", image_id).stdout.decode()
    assert "kbk e2e" in history
    out = kobakod.docker("rmi", "127.0.0.1:5999/kbk-e2e/other:v2").stdout.decode()
    assert out.strip() == "Untagged: 127.0.0.1:5999/kbk-e2e/other:v2"
    proc = kobakod.docker("rmi", "kbk-e2e/nope:1", check=False)
    assert proc.returncode == 1 and b"No such image" in proc.stderr
    out = kobakod.docker("rmi", "kbk-e2e/busybox:1").stdout.decode()
    assert "Untagged: kbk-e2e/busybox:1" in out and f"Deleted: {image_id}" in out
    assert _repo_tags(kobakod) == set()


def test_save_load_round_trip(kobakod, docker_cli, busybox_tar):
    image_id = kobakod.docker("import", busybox_tar, "kbk-e2e/rt:1").stdout.decode().strip()
    kobakod.docker("tag", "kbk-e2e/rt:1", "kbk-e2e/rt:2")
    archive = kobakod.docker("save", "kbk-e2e/rt:1", "kbk-e2e/rt:2").stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
    assert sorted(t for m in manifest for t in m["RepoTags"]) == ["kbk-e2e/rt:1",
                                                                 "kbk-e2e/rt:2"]
    kobakod.docker("rmi", "kbk-e2e/rt:1", "kbk-e2e/rt:2")
    assert _repo_tags(kobakod) == set()
    out = kobakod.docker("load", input=archive).stdout.decode()
    assert "Loaded image: kbk-e2e/rt:1" in out and "Loaded image: kbk-e2e/rt:2" in out
    assert _repo_tags(kobakod) == {"kbk-e2e/rt:1", "kbk-e2e/rt:2"}
    again = kobakod.docker("image", "inspect", "--format", "{{.Id}}", "kbk-e2e/rt:1").stdout
    assert again.decode().strip() == image_id
    out = kobakod.docker("load", "-q", input=archive).stdout.decode()
    assert "Loaded image: kbk-e2e/rt:1" in out
    path = kobakod.base / "single.tar"
    kobakod.docker("save", "-o", str(path), "kbk-e2e/rt:2")
    with tarfile.open(path) as tf:
        assert "manifest.json" in tf.getnames()

    def saved_tags(*names: str) -> list:
        with tarfile.open(fileobj=io.BytesIO(kobakod.docker("save", *names).stdout)) as tf:
            return [m["RepoTags"] for m in json.load(tf.extractfile("manifest.json"))]

    # as dockerd: a bare name saves every tag of its repository, an ID the image alone
    assert saved_tags("kbk-e2e/rt") == [["kbk-e2e/rt:1", "kbk-e2e/rt:2"]]
    assert saved_tags(image_id) == saved_tags(image_id[7:19]) == [None]
    by_id = kobakod.docker("save", image_id).stdout
    assert kobakod.docker("load", input=by_id).stdout.decode() == f"Loaded image ID: {image_id}\n"
    bad = kobakod.docker("load", input=b"abc", check=False)
    assert bad.returncode == 1 and bad.stderr  # the error came in the 200 stream


def test_docker_py_images(kobakod, busybox_tar):
    client = kobakod.docker_py()
    try:
        with open(busybox_tar, "rb") as f:
            client.api.import_image_from_data(f.read(), repository="kbk-e2e/py", tag="1",
                                              changes=['CMD ["sh"]'])
        img = client.images.get("kbk-e2e/py:1")
        assert img.tags == ["kbk-e2e/py:1"]
        assert img.attrs["Config"]["Cmd"] == ["sh"]
        assert img.tag("kbk-e2e/py", "2") is True
        assert {t for i in client.images.list() for t in i.tags} == {"kbk-e2e/py:1",
                                                                    "kbk-e2e/py:2"}
        assert client.images.list(filters={"reference": "kbk-e2e/py:2"})[0].id == img.id
        chunks = b"".join(img.save(named=True))
        client.images.remove("kbk-e2e/py:1")
        client.images.remove("kbk-e2e/py:2")
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("kbk-e2e/py:1")
        loaded = client.images.load(chunks)
        assert loaded[0].id == img.id
        history = img.history()
        assert len(history) >= 1 and "Created" in history[0]
        pruned = client.images.prune()
        assert "SpaceReclaimed" in pruned
    finally:
        client.close()


def test_kobako_cli_bootstrap_images_save_load(kobakod):
    out = kobakod.kobako("image", "bootstrap", "busybox", "--tag", "kbk-e2e/bb:1").stdout
    ref, image_id = out.decode().split()
    assert ref == "kbk-e2e/bb:1" and image_id.startswith("sha256:")
    table = kobakod.kobako("images").stdout.decode().splitlines()
    assert table[0].startswith("REPOSITORY   TAG       IMAGE ID       CREATED")
    assert table[1].split()[:3] == ["kbk-e2e/bb", "1", image_id[7:19]]
    fmt = "{{json .Config.Cmd}}"
    assert kobakod.kobako("image", "inspect", "-f", fmt, "kbk-e2e/bb:1").stdout == b'["sh"]\n'
    path = kobakod.base / "bb-save.tar"
    kobakod.kobako("save", "-o", str(path), "kbk-e2e/bb:1")
    kobakod.kobako("rmi", "kbk-e2e/bb:1")
    assert kobakod.kobako("images", "-q").stdout == b""
    out = kobakod.kobako("load", "-i", str(path)).stdout.decode()
    assert "Loaded image: kbk-e2e/bb:1" in out
    rootfs = busybox_rootfs_tar(str(kobakod.base / "rootfs2.tar"))
    with open(rootfs, "rb") as f:
        out = kobakod.kobako("import", "-", "kbk-e2e/bb:stdin", input=f.read())
    assert out.stdout.decode().strip().startswith("sha256:")
    names = kobakod.kobako("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode()
    assert set(names.split()) == {"kbk-e2e/bb:1", "kbk-e2e/bb:stdin"}
    out = kobakod.kobako("import", "-c", "CMD [\"sh\"]", rootfs, "kbk-e2e/bb:file")
    assert kobakod.kobako("image", "inspect", "-f", "{{json .Config.Cmd}}",
                          "kbk-e2e/bb:file").stdout == b'["sh"]\n'
    assert kobakod.kobako("history", "-q", "kbk-e2e/bb:file").stdout.strip() != b""


def test_rmi_as_dockerd(kobakod, busybox_tar):
    """An image of a stopped container goes with -f (the container keeps its files and
    lists the image by ID); a build's unnamed steps go with the image built on them and
    are not dangling meanwhile."""
    image_id = kobakod.docker("import", busybox_tar, "kbk-e2e/rm:1").stdout.decode().strip()
    cid = kobakod.docker("create", "--name", "kbk-e2e-rm", "--network", "none",
                         "kbk-e2e/rm:1", "true").stdout.decode().strip()
    try:
        refused = kobakod.docker("rmi", "kbk-e2e/rm:1", check=False)
        assert refused.returncode == 1
        assert f"container {cid[:12]} is using its referenced image" in refused.stderr.decode()
        out = kobakod.docker("rmi", "-f", "kbk-e2e/rm:1").stdout.decode().splitlines()
        assert out == ["Untagged: kbk-e2e/rm:1", f"Deleted: {image_id}"]
        ps = kobakod.docker("ps", "-a", "--filter", "name=kbk-e2e-rm", "--format",
                            "{{.Image}}").stdout.decode()
        assert ps == image_id[7:19] + "\n"
        kobakod.docker("start", "-a", "kbk-e2e-rm")
        assert kobakod.docker("diff", "kbk-e2e-rm").stdout == b""
    finally:
        kobakod.docker("rm", "kbk-e2e-rm")
    kobakod.docker("import", busybox_tar, "kbk-e2e/base:1")
    kobakod.docker("build", "-t", "kbk-e2e/chain:1", "-", input=(
        b"FROM kbk-e2e/base:1\nENV A=1\nLABEL b=2\nCMD [\"true\"]\n"))
    assert kobakod.docker("images", "-q", "-f", "dangling=true").stdout == b""
    out = kobakod.docker("rmi", "kbk-e2e/chain:1").stdout.decode().splitlines()
    assert out[0] == "Untagged: kbk-e2e/chain:1"
    assert len(out) == 4 and all(line.startswith("Deleted: ") for line in out[1:])
    assert _repo_tags(kobakod) == {"kbk-e2e/base:1"}
    assert len(kobakod.docker("images", "-aq").stdout.split()) == 1
    kobakod.docker("rmi", "kbk-e2e/base:1")


def test_import_of_nothing_is_an_empty_image(kobakod):
    """As dockerd: an empty input is an empty layer; a broken one is an error."""
    image_id = kobakod.docker("import", "-", "kbk-e2e/empty:1", input=b"").stdout.decode()
    doc = json.loads(kobakod.docker("image", "inspect", "kbk-e2e/empty:1").stdout)[0]
    assert doc["Id"] == image_id.strip() and doc["Size"] == 0
    bad = kobakod.docker("import", "-", "kbk-e2e/bad:1", input=b"abc\n", check=False)
    assert bad.returncode == 1 and b"invalid layer tar" in bad.stderr
    kobakod.docker("rmi", "kbk-e2e/empty:1")
