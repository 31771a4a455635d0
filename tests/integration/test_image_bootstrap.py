"""Offline bootstrap images: busybox from the host's busybox-static, debian via debootstrap."""

import io
import os
import subprocess
import tarfile
import uuid

import pytest

from kobako.image import snapshots
from kobako.image.bootstrap import (
    BUSYBOX_CHANGES,
    DEBIAN_CHANGES,
    bootstrap_busybox,
    bootstrap_debian,
    debian_mirror,
)
from kobako.image.images import ImageService

pytestmark = pytest.mark.root


def test_busybox_rootfs_contents():
    tf = tarfile.open(fileobj=io.BytesIO(bootstrap_busybox()))
    members = {m.name.rstrip("/"): m for m in tf.getmembers()}
    assert members["bin/busybox"].isreg() and members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
    assert members["tmp"].mode == 0o1777
    applets = subprocess.run(["busybox", "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert all(a in members for a in applets if a != "bin/busybox")
    passwd = tf.extractfile("etc/passwd").read().decode()
    assert passwd.startswith("root:x:0:0:root:/root:/bin/sh\n")
    assert "nobody:x:65534:" in tf.extractfile("etc/group").read().decode()


def test_debian_mirror_from_sources():
    mirror = debian_mirror()
    assert mirror.startswith("http") and "security" not in mirror


@pytest.mark.skipif(os.environ.get("KOBAKO_SLOW_TESTS") != "1",
                    reason="downloads ~100MB from the Debian mirror; set KOBAKO_SLOW_TESTS=1")
@pytest.mark.timeout(1800)
def test_debian_bookworm_bootstrap(tmp_path):
    path = bootstrap_debian("bookworm", workdir=str(tmp_path))
    svc = ImageService(tmp_path / "kbtest-deb", str(tmp_path / "kbtest-deb.db"))
    try:
        image_id = svc.import_image(path, reference="kbtest/debian:bookworm",
                                    changes=DEBIAN_CHANGES)
        assert svc.inspect(image_id)["Config"]["Cmd"] == ["bash"]
        cid = f"kbtest-{uuid.uuid4().hex[:8]}"
        spec = svc.prepare(cid, image_id)
        snapshots.mount(spec)
        try:
            out = subprocess.run(["chroot", spec.target, "cat", "/etc/debian_version"],
                                 capture_output=True, text=True, check=True).stdout
            assert out.startswith("12")
        finally:
            snapshots.unmount(spec.target)
            svc.release(cid)
    finally:
        svc.close()
        os.unlink(path)
    assert BUSYBOX_CHANGES == ['CMD ["sh"]']
