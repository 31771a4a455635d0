"""VolumeService (records, filters, references, container mounts) and the cp archive helpers,
on temp dirs: no root needed."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import stat
import tarfile

import pytest

from kobako.engine import archive
from kobako.engine.errors import Conflict, InvalidParameter, NotFound
from kobako.engine.state import open_state_db
from kobako.engine.volumes import ANONYMOUS_LABEL, VolumeService, copy_up


class FakeContainers:
    def __init__(self):
        self.containers: dict[str, object] = {}


@pytest.fixture
def service(tmp_path):
    conn = open_state_db(tmp_path / "state.db")
    svc = VolumeService(data_root=str(tmp_path), conn=conn, containers=FakeContainers())
    yield svc
    conn.close()


def run(coro):
    return asyncio.run(coro)


def _doc(cid: str, **host_config) -> dict:
    return {"Id": cid, "Config": {}, "HostConfig": host_config, "Kobako": {}}


def test_create_inspect_list_remove(service, tmp_path):
    doc = run(service.create("kbt-one", labels={"a": "b"}))
    assert doc["Mountpoint"] == str(tmp_path / "volumes" / "kbt-one" / "_data")
    assert os.path.isdir(doc["Mountpoint"])
    assert doc["Labels"] == {"a": "b"} and doc["Driver"] == "local"
    assert run(service.create("kbt-one")) == doc  # idempotent, as Docker
    assert run(service.inspect("kbt-one")) == doc
    assert [v["Name"] for v in run(service.list())["Volumes"]] == ["kbt-one"]
    run(service.remove("kbt-one"))
    assert not os.path.exists(tmp_path / "volumes" / "kbt-one")
    with pytest.raises(NotFound, match="no such volume"):
        run(service.inspect("kbt-one"))
    run(service.remove("kbt-one", force=True))  # force: a missing volume is fine


@pytest.mark.parametrize("name,message", [
    ("a", "too short"), ("../x", "invalid characters"), ("a b", "invalid characters")])
def test_bad_names(service, name, message):
    with pytest.raises(InvalidParameter, match=message):
        run(service.create(name))


def test_options_are_checked(service):
    with pytest.raises(InvalidParameter, match='invalid option: "size2"'):
        run(service.create("kbt-o", options={"size2": "1"}))
    with pytest.raises(InvalidParameter, match='missing required option: "device"'):
        run(service.create("kbt-o", options={"type": "tmpfs"}))
    with pytest.raises(NotFound, match="plugin"):
        run(service.create("kbt-o", driver="nfs-plugin"))


def test_list_filters(service):
    run(service.create("kbt-red", labels={"color": "red"}))
    run(service.create("kbt-blue", labels={"color": "blue"}))
    names = lambda f: sorted(v["Name"] for v in run(service.list(f))["Volumes"])  # noqa: E731
    assert names({"label": ["color=red"]}) == ["kbt-red"]
    assert names({"label": ["color"]}) == ["kbt-blue", "kbt-red"]
    assert names({"name": ["blu"]}) == ["kbt-blue"]
    assert names({"driver": ["local"]}) == ["kbt-blue", "kbt-red"]
    assert names({"dangling": ["true"]}) == ["kbt-blue", "kbt-red"]
    assert names({"dangling": ["false"]}) == []
    with pytest.raises(InvalidParameter, match="invalid filter 'color'"):
        run(service.list({"color": ["x"]}))


def test_container_mounts_refs_and_rm_v(service):
    service.containers.containers["c1"] = object()
    doc = _doc("c1", Binds=["kbt-named:/n:ro", "/host/dir:/h"],
               Mounts=[{"Type": "volume", "Target": "/m"},
                       {"Type": "tmpfs", "Target": "/t"}])
    doc["Config"]["Volumes"] = {"/anon": {}, "/h": {}}
    service.resolve_mounts(doc, {"Volumes": {"/img": {}}})
    by_dest = {m["Destination"]: m for m in doc["Mounts"]}
    assert set(by_dest) == {"/n", "/h", "/m", "/t", "/anon", "/img"}
    assert by_dest["/n"]["Name"] == "kbt-named" and by_dest["/n"]["RW"] is False
    assert by_dest["/h"]["Type"] == "bind"  # the bind wins over the Config.Volumes entry
    anonymous = [by_dest[d]["Name"] for d in ("/m", "/anon", "/img")]
    for name in anonymous:
        assert ANONYMOUS_LABEL in run(service.inspect(name))["Labels"]
    with pytest.raises(Conflict, match=r"volume is in use - \[c1\]"):
        run(service.remove("kbt-named"))
    mounts = service.oci_mounts(doc)
    assert {m["destination"] for m in mounts} == {"/n", "/m", "/anon", "/img"}
    ro = next(m for m in mounts if m["destination"] == "/n")
    assert ro["options"] == ["rbind", "ro", "rprivate"]
    run(service.on_remove(doc, True))
    left = [v["Name"] for v in run(service.list())["Volumes"]]
    assert left == ["kbt-named"]  # named volumes survive rm -v
    run(service.remove("kbt-named"))


def test_prune_anonymous_only_unless_all(service):
    run(service.create("kbt-keep"))
    run(service.create(None, labels={ANONYMOUS_LABEL: ""}))
    result = run(service.prune())
    assert len(result["VolumesDeleted"]) == 1 and "kbt-keep" not in result["VolumesDeleted"]
    assert run(service.prune({"all": ["true"], "label!": ["x"]}))["VolumesDeleted"] == [
        "kbt-keep"]


def test_references_of_unknown_containers_do_not_hold(service):
    doc = _doc("ghost", Binds=["kbt-held:/x"])
    service.resolve_mounts(doc, {})
    with pytest.raises(Conflict):  # being created: held
        run(service.remove("kbt-held"))
    service._creating.clear()  # the create failed and the container never existed
    run(service.remove("kbt-held"))


def test_volumes_from_copies_mounts(service):
    class C:
        def __init__(self, doc):
            self.doc = doc

    src = _doc("src", Binds=["kbt-shared:/s", "/host:/h"])
    service.resolve_mounts(src, {})
    containers = service.containers
    containers.containers["src"] = C(src)
    containers.get = lambda ref: containers.containers[ref]
    doc = _doc("dst", VolumesFrom=["src:ro"])
    service.resolve_mounts(doc, {})
    assert {m["Destination"]: m["RW"] for m in doc["Mounts"]} == {"/s": False, "/h": False}
    mounts = {m["destination"]: m for m in service.oci_mounts(doc)}
    assert mounts["/h"]["source"] == "/host" and "ro" in mounts["/h"]["options"]
    with pytest.raises(InvalidParameter, match="invalid mode"):
        service.resolve_mounts(_doc("bad", VolumesFrom=["src:rx"]), {})


def test_repair_drops_trash_and_recreates_dirs(tmp_path):
    conn = open_state_db(tmp_path / "state.db")
    svc = VolumeService(data_root=str(tmp_path), conn=conn)
    run(svc.create("kbt-r"))
    os.rename(tmp_path / "volumes" / "kbt-r", tmp_path / "volumes" / ".trash-x")
    os.makedirs(tmp_path / "volumes" / "kbt-stray" / "_data")
    VolumeService(data_root=str(tmp_path), conn=conn)
    assert sorted(os.listdir(tmp_path / "volumes")) == ["kbt-r"]
    assert os.path.isdir(tmp_path / "volumes" / "kbt-r" / "_data")
    conn.close()


def test_copy_up_stays_in_the_rootfs(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "data").mkdir(parents=True)
    (rootfs / "data" / "f").write_text("image content")
    os.chmod(rootfs / "data", 0o750)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host")
    os.symlink(str(outside), rootfs / "evil")
    target = tmp_path / "vol"
    target.mkdir()
    assert copy_up(str(rootfs), "/data", str(target))
    assert (target / "f").read_text() == "image content"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o750
    assert not copy_up(str(rootfs), "/data", str(target))  # not empty any more
    other = tmp_path / "vol2"
    other.mkdir()
    # /evil -> <host path>: resolved inside the rootfs, where it does not exist
    assert not copy_up(str(rootfs), "/evil", str(other))
    assert os.listdir(other) == []


# -- archive -----------------------------------------------------------------------------------

@pytest.fixture
def root(tmp_path):
    base = tmp_path / "root"
    (base / "dir" / "sub").mkdir(parents=True)
    (base / "dir" / "sub" / "file").write_text("content")
    os.chmod(base / "dir" / "sub" / "file", 0o640)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    os.symlink(str(outside), base / "abs-escape")
    os.symlink("../../../../outside", base / "rel-escape")
    os.symlink("dir/sub", base / "inner")
    fd = os.open(base, os.O_PATH | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_go_file_mode():
    assert archive.go_file_mode(stat.S_IFDIR | 0o755) == (1 << 31) | 0o755
    assert archive.go_file_mode(stat.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert archive.go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == (1 << 23) | 0o755
    assert archive.go_file_mode(stat.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666


def test_stat_and_scoped_links(root):
    st = archive.stat_path(root, "/dir/sub/file", "c")
    assert (st.name, st.size, st.mode, st.link_target) == ("file", 7, 0o640, "")
    header = json.loads(base64.b64decode(st.header()))
    assert set(header) == {"name", "size", "mode", "mtime", "linkTarget"}
    assert archive.stat_path(root, "/inner", "c").link_target == "/dir/sub"
    # links pointing out of the root resolve inside it
    assert archive.stat_path(root, "/rel-escape", "c").link_target == "/outside"
    with pytest.raises(NotFound, match="Could not find the file /abs-escape/secret"):
        archive.stat_path(root, "/abs-escape/secret", "c")


def test_write_tar_rebases_and_never_follows(root):
    out = io.BytesIO()
    archive.write_tar(root, "/dir", out, "c")
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        assert sorted(tf.getnames()) == ["dir", "dir/sub", "dir/sub/file"]
    out = io.BytesIO()
    archive.write_tar(root, "/dir/.", out, "c")
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        assert "./sub/file" in tf.getnames()
    out = io.BytesIO()
    archive.write_tar(root, "/abs-escape", out, "c")
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        (member,) = tf.getmembers()
        assert member.issym()
    with pytest.raises(NotFound):
        archive.write_tar(root, "/rel-escape/secret", io.BytesIO(), "c")


def _tar(entries: dict[str, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.uid, info.gid = os.getuid(), os.getgid()
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_extract_into_dir_stays_inside(root, tmp_path):
    archive.extract_tar(root, "/dir", _tar({"new": b"x", "nd": None, "nd/f": b"y"}), "c")
    assert (tmp_path / "root" / "dir" / "nd" / "f").read_text() == "y"
    # through a symlink that points out of the root: lands inside the root
    (tmp_path / "root" / "outside").mkdir()
    archive.extract_tar(root, "/rel-escape", _tar({"dropped": b"z"}), "c")
    assert (tmp_path / "root" / "outside" / "dropped").read_text() == "z"
    assert sorted(os.listdir(tmp_path / "outside")) == ["secret"]
    with pytest.raises(InvalidParameter):
        archive.extract_tar(root, "/dir", _tar({"../../evil": b"e"}), "c")
    with pytest.raises(InvalidParameter, match="not a directory"):
        archive.extract_tar(root, "/dir/sub/file", _tar({"x": b"x"}), "c")
    with pytest.raises(NotFound):
        archive.extract_tar(root, "/missing", _tar({"x": b"x"}), "c")
    with pytest.raises(InvalidParameter, match="cannot overwrite directory"):
        archive.extract_tar(root, "/dir", _tar({"sub": b"file now"}), "c",
                            no_overwrite_dir_non_dir=True)
    archive.extract_tar(root, "/dir", io.BytesIO(b""), "c")  # no bytes: an empty archive
    with pytest.raises(InvalidParameter, match="invalid tar"):
        archive.extract_tar(root, "/dir", io.BytesIO(b"x" * 10), "c")


def test_thread_stream_reports_errors_before_and_after_the_head():
    async def main():
        def work(out, ready):
            ready({"ok": 1})
            out.write(b"abc")

        head, chunks = await archive.thread_stream(work)
        assert head == {"ok": 1}
        assert b"".join([c async for c in chunks]) == b"abc"

        def early(out, ready):
            raise NotFound("early")

        with pytest.raises(NotFound):
            await archive.thread_stream(early)

        def late(out, ready):
            ready(None)
            out.write(b"x" * (1 << 20))
            raise RuntimeError("late")

        _, chunks = await archive.thread_stream(late)
        with pytest.raises(RuntimeError):
            async for _ in chunks:
                pass

    asyncio.run(main())
