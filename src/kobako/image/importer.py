"""docker import: a rootfs tar becomes a one-layer image; --change lines edit its config."""

from __future__ import annotations

import bz2
import json
import lzma
import os
from typing import TYPE_CHECKING, Any, BinaryIO

from kobako.image import media
from kobako.image.errors import InvalidParameter

if TYPE_CHECKING:
    from kobako.image.images import ImageService

ALLOWED_CHANGES = (
    "CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER",
    "VOLUME", "WORKDIR",
)


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply Dockerfile-style change lines (`--change`) to an image's `config` section,
    with the builder's own rules (kobako.image.config_changes)."""
    from kobako.image import config_changes, dockerfile

    cfg = json.loads(json.dumps(config or {}))
    cmd_set = False
    for line in changes:
        if not line.strip():
            continue
        try:
            ins = dockerfile.parse_line(line)
        except dockerfile.DockerfileError as err:
            raise InvalidParameter(f"invalid change {line!r}: {err.reason}") from None
        if ins.keyword not in ALLOWED_CHANGES:
            raise InvalidParameter(f"{ins.keyword} is not a valid change command")
        try:
            args = config_changes.expanded_args(ins, config_changes.config_env(cfg))
            cmd_set = config_changes.apply(cfg, ins, args, cmd_set=cmd_set)
        except ValueError as err:
            raise InvalidParameter(f"invalid change {line!r}: {err}") from None
    return cfg


def _decompressing(raw: BinaryIO) -> BinaryIO:
    """docker import takes plain, gzip, bzip2, xz and zstd tars."""
    import io

    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw, 1 << 20)
    head = buffered.peek(6)[:6]
    if head[:3] == b"BZh":
        return bz2.BZ2File(buffered)  # type: ignore[return-value]
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(buffered)  # type: ignore[return-value]
    return media.decompressed(buffered)


def import_rootfs(
    service: ImageService,
    source: BinaryIO | str,
    *,
    reference: str | None = None,
    changes: list[str],
    message: str = "",
    platform: str | None = None,
) -> str:
    """Import a rootfs tar (file object or path) as a new image; returns its ID."""
    from kobako.image.images import now_rfc3339

    config_section = apply_changes({}, changes)
    plat = media.parse_platform(platform)  # none given: the host's, as dockerd
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            desc, diff_id = service.put_layer_tar(_decompressing(f))
    else:
        desc, diff_id = service.put_layer_tar(_decompressing(source))
    created = now_rfc3339()
    cfg: dict[str, Any] = {
        "architecture": plat.architecture,
        "os": plat.os,
        "created": created,
        "config": config_section,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "", "comment": message
                     or "Imported from -"}],
    }
    if plat.variant:
        cfg["variant"] = plat.variant
    if message:
        cfg["comment"] = message
    refs = [reference] if reference else []
    return service.create_image(cfg, [desc], refs=refs)


