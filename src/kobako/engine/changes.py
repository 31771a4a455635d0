"""`docker diff`: a container's filesystem changes as Docker's change list.

The image library writes the changes as a layer tar (overlay: the upper dir with its
whiteouts; vfs: a naive diff against the image). Each entry is then Added (1) or
Modified (0) depending on whether the image has that path, and each whiteout is a
Deleted (2) path, as Docker's archive.Changes reports them.
"""

from __future__ import annotations

import posixpath
import tarfile
import tempfile
from typing import Any

from kobako.image.unpack import WHITEOUT_OPAQUE, WHITEOUT_PREFIX, clean_name
from kobako.linux import syscalls

MODIFIED, ADDED, DELETED = 0, 1, 2


def container_changes(images: Any, container_id: str) -> list[dict[str, Any]]:
    from kobako.runtime.mounts import Root

    chains = images.container_image_chains(container_id)
    lowers = [Root(str(images.snapshots.lower_path(c)), syscalls.real()) for c in chains]
    try:
        changes: dict[str, int] = {}
        with tempfile.TemporaryFile(dir=getattr(images, "tmp", None)) as spool:
            images.container_diff(container_id, spool)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r|") as tf:
                for member in tf:
                    rel = clean_name(member.name)
                    if rel == ".":
                        continue
                    parent, base = posixpath.split("/" + rel)
                    if base == WHITEOUT_OPAQUE:
                        continue  # its directory is listed itself
                    if base.startswith(WHITEOUT_PREFIX):
                        changes[posixpath.join(parent, base[len(WHITEOUT_PREFIX):])] = DELETED
                        continue
                    path = "/" + rel
                    in_image = any(lower.lstat(path) is not None for lower in lowers)
                    changes[path] = MODIFIED if in_image else ADDED
    finally:
        for lower in lowers:
            lower.close()
    return [{"Path": path, "Kind": kind} for path, kind in sorted(changes.items())]
