"""docker import: a rootfs tar becomes a one-layer image; --change lines edit its config."""

from __future__ import annotations

import bz2
import json
import lzma
import os
import shlex
from typing import TYPE_CHECKING, Any, BinaryIO

from kobako.image import media
from kobako.image.errors import InvalidParameter

if TYPE_CHECKING:
    from kobako.image.images import ImageService

ALLOWED_CHANGES = (
    "CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER",
    "VOLUME", "WORKDIR",
)


def _json_or_shell(rest: str) -> list[str]:
    """Dockerfile's exec form (a JSON array) or shell form (wrapped in /bin/sh -c)."""
    text = rest.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", text]


def _key_values(rest: str, instr: str) -> list[tuple[str, str]]:
    """`k=v k2="v 2"` pairs, or the legacy `KEY value with spaces` form."""
    words = shlex.split(rest, posix=True)
    if not words:
        raise InvalidParameter(f"{instr} requires at least one argument")
    if "=" not in words[0]:
        parts = rest.strip().split(None, 1)
        if len(parts) != 2:
            raise InvalidParameter(f"{instr} must have two arguments")
        return [(parts[0], parts[1])]
    out = []
    for w in words:
        if "=" not in w:
            raise InvalidParameter(f"{instr} names can not be blank: {w!r}")
        k, v = w.split("=", 1)
        if not k:
            raise InvalidParameter(f"{instr} names can not be blank")
        out.append((k, v))
    return out


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply Dockerfile-style change lines to an image's `config` section."""
    cfg = json.loads(json.dumps(config or {}))
    cmd_set = False
    for line in changes:
        line = line.strip()
        if not line:
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr not in ALLOWED_CHANGES:
            raise InvalidParameter(f"{instr} is not a valid change command")
        if instr == "CMD":
            cfg["Cmd"] = _json_or_shell(rest)
            cmd_set = True
        elif instr == "ENTRYPOINT":
            cfg["Entrypoint"] = _json_or_shell(rest)
            if not cmd_set:  # as in a Dockerfile: a new entrypoint drops the inherited CMD
                cfg["Cmd"] = None
        elif instr == "ENV":
            env = list(cfg.get("Env") or [])
            for k, v in _key_values(rest, "ENV"):
                env = [e for e in env if e.split("=", 1)[0] != k] + [f"{k}={v}"]
            cfg["Env"] = env
        elif instr == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            for k, v in _key_values(rest, "LABEL"):
                labels[k] = v
            cfg["Labels"] = labels
        elif instr == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in rest.split():
                port, _, proto = p.partition("/")
                if not port or not all(x.isdigit() for x in port.split("-")):
                    raise InvalidParameter(f"invalid port {p!r} in EXPOSE")
                ports[f"{port}/{(proto or 'tcp').lower()}"] = {}
            cfg["ExposedPorts"] = ports
        elif instr == "VOLUME":
            text = rest.strip()
            vols = json.loads(text) if text.startswith("[") else text.split()
            if not vols or not all(isinstance(v, str) and v for v in vols):
                raise InvalidParameter("VOLUME requires at least one argument")
            volumes = dict(cfg.get("Volumes") or {})
            volumes.update({v: {} for v in vols})
            cfg["Volumes"] = volumes
        elif instr == "WORKDIR":
            wd = rest.strip()
            if not wd:
                raise InvalidParameter("WORKDIR requires exactly one argument")
            if not wd.startswith("/"):
                wd = os.path.join(cfg.get("WorkingDir") or "/", wd)
            cfg["WorkingDir"] = wd
        elif instr == "USER":
            if not rest.strip():
                raise InvalidParameter("USER requires exactly one argument")
            cfg["User"] = rest.strip()
        elif instr == "STOPSIGNAL":
            if not rest.strip():
                raise InvalidParameter("STOPSIGNAL requires exactly one argument")
            cfg["StopSignal"] = rest.strip()
        elif instr == "ONBUILD":
            cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [rest.strip()]
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


