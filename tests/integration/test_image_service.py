"""ImageService against the real kernel (overlay and vfs), skopeo and umoci."""

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid

import pytest

from kobako.image import snapshots
from kobako.image.bootstrap import BUSYBOX_CHANGES, bootstrap_busybox
from kobako.image.errors import Conflict, NotFound
from kobako.image.images import ImageService

pytestmark = pytest.mark.root


def make_tar(entries) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


LAYERS = [
    [("a", None), ("a/one", b"1"), ("a/two", b"2"), ("b", None), ("b/x", b"x"),
     ("b/sub", None), ("b/sub/y", b"y"), ("keep", b"k")],
    [("a/.wh.one", b""), ("b", None), ("b/.wh..wh..opq", b""), ("b/new", b"n"),
     ("added", b"+")],
    [("keep", b"k2"), ("a/.wh.two", b"")],
]
EXPECTED = {"a": None, "added": b"+", "b": None, "b/new": b"n", "keep": b"k2"}


@pytest.fixture(params=["overlay2", "vfs"])
def svc(request, tmp_path):
    root = tmp_path / f"kbtest-img-{uuid.uuid4().hex[:8]}"
    used: set[str] = set()
    s = ImageService(root, str(root / "state.db"), driver=request.param,
                     users=lambda i: [("c" * 64, False)] if i in used else [])
    s.test_used = used
    yield s
    for cid in s.snapshots.container_ids():
        s.release(cid)
    s.close()
    mounts = open("/proc/self/mountinfo").read()
    assert str(root) not in mounts
    shutil.rmtree(root)


def build_multilayer(s: ImageService, ref: str) -> str:
    descs, diffs = [], []
    for entries in LAYERS:
        d, diff = s.put_layer_tar(make_tar(entries))
        descs.append(d)
        diffs.append(diff)
    cfg = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
           "config": {"Cmd": ["sh"], "Labels": {"t": "multi"}},
           "rootfs": {"type": "layers", "diff_ids": diffs},
           "history": [{"created_by": f"layer {i}"} for i in range(3)]}
    return s.create_image(cfg, descs, refs=[ref])


def merged_view(s: ImageService, image: str) -> dict:
    """The image's files in a container's root, without what the init layer adds."""
    cid = f"kbtest-{uuid.uuid4().hex[:8]}"
    spec = s.prepare(cid, image)
    init = s.snapshots.init_dir(cid)
    snapshots.mount(spec)
    try:
        out = {}
        for dirpath, dirnames, filenames in os.walk(spec.target):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                rel = os.path.relpath(p, spec.target)
                if not os.path.lexists(init / rel):
                    out[rel] = None if os.path.isdir(p) else open(p, "rb").read()
        return out
    finally:
        snapshots.unmount(spec.target)
        s.release(cid)


def test_multilayer_whiteouts_and_opaque(svc):
    image_id = build_multilayer(svc, "kbtest/multi:1")
    assert merged_view(svc, "kbtest/multi:1") == EXPECTED
    info = svc.inspect("kbtest/multi:1")
    assert info["Id"] == image_id and len(info["RootFS"]["Layers"]) == 3
    assert info["RepoTags"] == ["kbtest/multi:1"] and info["Config"]["Labels"] == {"t": "multi"}
    hist = svc.history(image_id)
    assert [h["CreatedBy"] for h in hist] == ["layer 2", "layer 1", "layer 0"]
    assert hist[0]["Id"] == image_id and hist[1]["Id"] == "<missing>"


def test_save_load_roundtrip_and_skopeo_umoci(svc, tmp_path):
    image_id = build_multilayer(svc, "kbtest/multi:1")
    archive = tmp_path / "kbtest-save.tar"
    with open(archive, "wb") as f:
        svc.save(["kbtest/multi:1"], f)
    with tarfile.open(archive) as tf:
        names = set(tf.getnames())
        manifest = json.load(tf.extractfile("manifest.json"))
        repos = json.load(tf.extractfile("repositories"))
    assert {"manifest.json", "repositories", "index.json", "oci-layout"} <= names
    assert manifest[0]["RepoTags"] == ["kbtest/multi:1"] and "kbtest/multi" in repos
    # independent tools accept it
    out = subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"],
                         capture_output=True, text=True, check=True).stdout
    assert len(json.loads(out)["Layers"]) == 3
    layout = tmp_path / "layout"
    layout.mkdir()
    subprocess.run(["tar", "xf", str(archive), "-C", str(layout)], check=True)
    out = subprocess.run(["umoci", "ls", "--layout", str(layout)], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["1"]
    subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}:1", f"oci:{tmp_path}/oci2:t"],
                   check=True)
    # skopeo writes a docker-archive from the layout; we load it back
    sk = tmp_path / "kbtest-skopeo.tar"
    subprocess.run(["skopeo", "copy", "-q", f"docker-archive:{archive}",
                    f"docker-archive:{sk}:kbtest/fromskopeo:2"], check=True)
    # delete the original entirely, then load both archives
    assert {"Deleted": image_id} in svc.remove("kbtest/multi:1")
    assert svc.gc()["blobs"] == 0 and list(svc.store.digests()) == []
    assert svc.load(str(archive)) == ["Loaded image: kbtest/multi:1"]
    assert svc.resolve("kbtest/multi:1") == image_id
    assert merged_view(svc, "kbtest/multi:1") == EXPECTED
    assert svc.load(str(sk)) == ["Loaded image: kbtest/fromskopeo:2"]
    assert merged_view(svc, "kbtest/fromskopeo:2") == EXPECTED
    # an OCI layout tar (as skopeo wrote it) loads too
    oci_tar = tmp_path / "kbtest-oci.tar"
    subprocess.run(["tar", "cf", str(oci_tar), "-C", f"{tmp_path}/oci2", "."], check=True)
    lines = svc.load(open(oci_tar, "rb"))
    assert lines[0].startswith("Loaded image ID: sha256:")
    assert merged_view(svc, lines[0].split(": ")[1]) == EXPECTED


def test_busybox_bootstrap_run_commit_export_rmi(svc, tmp_path):
    tar = bootstrap_busybox()
    assert bootstrap_busybox() == tar  # deterministic: same rootfs, same image
    image_id = svc.import_image(io.BytesIO(tar), reference="kbtest/busybox:latest",
                                changes=BUSYBOX_CHANGES + ["ENV FOO=bar"], message="boot")
    cfg = svc.inspect("kbtest/busybox")["Config"]
    assert cfg["Cmd"] == ["sh"] and cfg["Env"] == ["FOO=bar"]
    cid = f"kbtest-{uuid.uuid4().hex[:8]}"
    spec = svc.prepare(cid, "kbtest/busybox")
    snapshots.mount(spec)
    try:
        run = subprocess.run(
            ["chroot", spec.target, "/bin/sh", "-c",
             "echo hello > /root/greeting && rm -r /usr/sbin && cat /etc/passwd | head -1"],
            capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "root:x:0:0:root:/root:/bin/sh"
    finally:
        snapshots.unmount(spec.target)
    svc.test_used.add(image_id)
    with pytest.raises(Conflict):
        svc.remove(image_id)
    changes = io.BytesIO()
    svc.container_diff(cid, changes)
    changes.seek(0)
    changed = tarfile.open(fileobj=changes).getnames()
    # the init layer is under the container's changes (both drivers), never in them
    assert "root/greeting" in changed
    assert not {".dockerenv", "etc/mtab", "proc", "dev/console"} & set(changed)
    new_id = svc.commit(cid, reference="kbtest/committed:1", changes=["CMD [\"cat\"]"])
    assert svc.get(new_id).parent == image_id
    view = merged_view(svc, "kbtest/committed:1")
    assert view["root/greeting"] == b"hello\n" and "usr/sbin" not in view
    assert "bin/busybox" in view
    buf = io.BytesIO()
    svc.export(cid, buf)
    buf.seek(0)
    names = tarfile.open(fileobj=buf).getnames()
    assert "root/greeting" in names and not any(n.startswith("usr/sbin") for n in names)
    assert ".dockerenv" in names  # an export is what the container sees
    svc.release(cid)
    svc.test_used.discard(image_id)
    with pytest.raises(Conflict):  # child image depends on it
        svc.remove(image_id)
    out = svc.remove("kbtest/committed:1")
    assert {"Deleted": new_id} in out and {"Deleted": image_id} not in out  # still tagged
    assert svc.remove("kbtest/busybox") == [{"Untagged": "kbtest/busybox:latest"},
                                            {"Deleted": image_id}]
    with pytest.raises(NotFound):
        svc.resolve(image_id)
    assert list(svc.store.digests()) == [] and svc.snapshots.layer_ids() == []


def test_tag_list_filters_prune(svc):
    a = svc.import_image(make_tar([("f", b"a")]), reference="kbtest/a:1",
                         changes=["LABEL color=red"])
    b = svc.import_image(make_tar([("f", b"b")]))
    svc.tag("kbtest/a:1", "kbtest/a:2")
    svc.tag(a[7:19], "kbtest/other:x")
    ids = lambda **f: [e["Id"] for e in svc.list(f)]  # noqa: E731
    assert set(ids()) == {a, b}
    assert ids(dangling=["true"]) == [b]
    assert ids(label=["color=red"]) == [a] and ids(label=["color=blue"]) == []
    entry = svc.list({"reference": ["kbtest/a"]})[0]
    assert entry["RepoTags"] == ["kbtest/a:1", "kbtest/a:2"]
    with pytest.raises(Conflict):  # referenced in several repositories
        svc.remove(a)
    assert svc.remove("kbtest/a:1") == [{"Untagged": "kbtest/a:1"}]
    pr = svc.prune()
    assert pr["ImagesDeleted"] == [{"Deleted": b}] and pr["SpaceReclaimed"] > 0
    assert len(svc.remove(a, force=True)) == 3


def test_crash_leftovers_cleaned(svc, tmp_path):
    root = svc.root
    svc.import_image(make_tar([("f", b"a")]), reference="kbtest/a:1")
    tmp = svc.snapshots.root / "tmp-deadbeef"
    (tmp / "diff").mkdir(parents=True)
    stray = svc.snapshots.root / ("f" * 64)
    (stray / "diff").mkdir(parents=True)
    driver = svc.driver
    svc.close()
    s2 = ImageService(root, str(root / "state.db"), driver=driver)
    assert not tmp.exists()
    s2.gc()
    assert not stray.exists() and s2.resolve("kbtest/a:1")
    s2.close()
    svc.db = s2.db  # the fixture closes it again harmlessly
    svc._pool = s2._pool
