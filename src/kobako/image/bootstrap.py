"""Offline image bootstrap, as moby's contrib/mkimage scripts do.

busybox: a rootfs tar built from the host's static busybox (Debian's busybox-static)
  with an applet symlink per command, /etc/passwd, /etc/group and the usual dirs.
debian: `debootstrap --variant=minbase` from the configured Debian mirror into a
  temporary directory, then tarred.

Both feed ImageService.import_image, like `docker import`.
"""

from __future__ import annotations

import glob
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile

from kobako.image.errors import ImageError, NotFound

BUSYBOX_CHANGES = ['CMD ["sh"]']
DEBIAN_CHANGES = [
    'CMD ["bash"]',
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
]

_DIRS = {
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o755, "root": 0o700,
    "sbin": 0o755, "sys": 0o755, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755,
    "usr/sbin": 0o755, "var": 0o755, "var/spool": 0o755, "var/spool/mail": 0o755,
    "var/www": 0o755,
}
_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "bin:x:2:2:bin:/bin:/bin/false\n"
    "sys:x:3:3:sys:/dev:/bin/false\n"
    "sync:x:4:100:sync:/bin:/bin/sync\n"
    "mail:x:8:8:mail:/var/spool/mail:/bin/false\n"
    "www-data:x:33:33:www-data:/var/www:/bin/false\n"
    "operator:x:37:37:Operator:/var:/bin/false\n"
    "nobody:x:65534:65534:nobody:/home:/bin/false\n"
)
_GROUP = (
    "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\ndisk:x:6:\n"
    "wheel:x:10:root\nmail:x:12:\nwww-data:x:33:\noperator:x:37:\nusers:x:100:\n"
    "nogroup:x:65533:\nnobody:x:65534:\n"
)


def find_busybox() -> str:
    for path in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        if path and os.path.isfile(path):
            return path
    raise NotFound("no busybox binary on this host (install busybox-static)")


def _is_static(path: str) -> bool:
    proc = subprocess.run(["ldd", path], capture_output=True, text=True)
    return proc.returncode != 0 or "not a dynamic executable" in (proc.stdout + proc.stderr)


def bootstrap_busybox(busybox: str | None = None) -> bytes:
    """A busybox rootfs as uncompressed tar bytes (deterministic for a given binary)."""
    busybox = busybox or find_busybox()
    if not _is_static(busybox):
        raise ImageError(f"{busybox} is dynamically linked; install busybox-static")
    proc = subprocess.run([busybox, "--list-full"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"{busybox} --list-full failed: {proc.stderr.strip()}")
    applets = sorted({line.strip().lstrip("/") for line in proc.stdout.split() if line.strip()})
    mtime = int(os.stat(busybox).st_mtime)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.linkname = kind, mode, mtime, link
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for d, mode in sorted(_DIRS.items()):
            add(d + "/", tarfile.DIRTYPE, mode)
        with open(busybox, "rb") as f:
            add("bin/busybox", tarfile.REGTYPE, 0o755, f.read())
        for applet in applets:
            if applet in ("bin/busybox", ""):
                continue
            add(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, _PASSWD.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, _GROUP.encode())
        add("etc/shadow", tarfile.REGTYPE, 0o640, b"root:*:10933:0:99999:7:::\n")
        add("etc/hostname", tarfile.REGTYPE, 0o644, b"")
        add("etc/hosts", tarfile.REGTYPE, 0o644, b"")
        add("etc/resolv.conf", tarfile.REGTYPE, 0o644, b"")
    return buf.getvalue()


def debian_mirror(default: str = "http://deb.debian.org/debian") -> str:
    """The Debian archive URI from /etc/apt/sources.list(.d) (one-line or deb822)."""
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in files:
        try:
            text = open(path).read()
        except OSError:
            continue
        for line in text.splitlines():
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and _is_debian_archive(m.group(1), m.group(2)):
                return m.group(1)
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = open(path).read()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (ln.partition(":") for ln in stanza.splitlines()
                                if ln and not ln.startswith("#") and ":" in ln)
            )
            if "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    if _is_debian_archive(uri, suite):
                        return uri
    return default


def _is_debian_archive(uri: str, suite: str) -> bool:
    return "debian" in uri and "security" not in uri and "-" not in suite


def bootstrap_debian(
    suite: str = "bookworm",
    mirror: str | None = None,
    out_path: str | None = None,
    *,
    workdir: str | None = None,
) -> str:
    """Build a minbase Debian rootfs with debootstrap; returns the path of its tar."""
    if shutil.which("debootstrap") is None:
        raise NotFound("debootstrap is not installed")
    mirror = mirror or debian_mirror()
    target = tempfile.mkdtemp(prefix="kobako-debootstrap-", dir=workdir)
    out_path = out_path or target + ".tar"
    try:
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", suite, target, mirror],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
            raise ImageError(f"debootstrap {suite} from {mirror} failed:\n{tail}")
        for leftover in glob.glob(os.path.join(target, "var/cache/apt/archives/*.deb")):
            os.unlink(leftover)
        proc = subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", target,
             "-cf", out_path, "."],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise ImageError(f"tar of the debian rootfs failed: {proc.stderr.strip()}")
    finally:
        _unmount_under(target)  # debootstrap mounts /proc and /sys inside; never rm through them
        shutil.rmtree(target)
    return out_path


def _unmount_under(root: str) -> None:
    from kobako.image.snapshots import unmount

    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p == root or p.startswith(root + "/")),
                        key=len, reverse=True):
        unmount(point)
