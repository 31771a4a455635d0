"""Volumes: Docker's `local` driver and the container mounts that use volumes.

A volume is a directory <data-root>/volumes/<name>/_data (or, with the driver
options type/device/o, a filesystem mounted there while a container uses it),
recorded in the state DB together with the containers that reference it.

The container service calls three hooks (see containers.py):

    on_create(doc, image_config)   resolve Binds/Mounts/VolumesFrom/Config.Volumes into
                                   volumes (creating named and anonymous ones) and fill
                                   doc["Mounts"] in Docker's inspect shape
    oci_mounts(doc)                at start: the OCI bind mounts of those volumes (and of
                                   binds inherited with --volumes-from); an empty volume
                                   gets the image's content at its path copied in once
    on_remove(doc, remove_anon)    drop the container's references (`rm -v`: and its
                                   anonymous volumes)

Docker's rules kept here: anonymous volumes carry the label com.docker.volume.anonymous
and are the only ones `volume prune` removes unless all=true (Docker >= 23); a volume
in use cannot be removed (409); the copy-up preserves ownership, modes and xattrs.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kobako.engine import oci_spec
from kobako.engine.errors import Conflict, EngineError, InvalidParameter, NotFound
from kobako.engine.filters import check_filters, label_matches, labels_match
from kobako.engine.state import migrate
from kobako.linux.mountpoints import is_mountpoint

log = logging.getLogger("kobakod.volumes")

ANONYMOUS_LABEL = "com.docker.volume.anonymous"
LOCAL_DRIVER = "local"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_LOCAL_OPTS = ("type", "device", "o")
# a local-driver option that needs the others (moby volume/local mandatoryOpts)
_MANDATORY = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
_LIST_FILTERS = ("dangling", "name", "label", "driver")
_PRUNE_FILTERS = ("label", "label!", "all")
_CREATE_GRACE = 600.0  # seconds a container being created keeps its volume references

MIGRATIONS = [
    """
    CREATE TABLE volumes (
        name TEXT PRIMARY KEY,
        driver TEXT NOT NULL,
        created REAL NOT NULL,
        labels TEXT NOT NULL,
        options TEXT NOT NULL
    );
    CREATE TABLE volume_refs (
        volume TEXT NOT NULL REFERENCES volumes(name),
        container TEXT NOT NULL,
        PRIMARY KEY (volume, container)
    );
    """,
]


class VolumeError(EngineError):
    """A volume operation failed on the host (mount, copy, remove)."""


@dataclass
class Volume:
    name: str
    driver: str
    created: float
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _truthy(value: str) -> bool | None:
    value = value.strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    return None


def check_name(name: str) -> None:
    """Docker's local-driver name rule, with its wording."""
    if len(name) == 1:
        raise InvalidParameter(f"create {name}: volume name is too short, names should be at "
                               "least two alphanumeric characters")
    if not _NAME.match(name):
        raise InvalidParameter(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path")


def check_options(options: Mapping[str, str]) -> None:
    for key in options:
        if key not in _LOCAL_OPTS:
            raise InvalidParameter(f'invalid option: "{key}"')
    for key, needed in _MANDATORY.items():
        if key in options:
            for other in needed:
                if other not in options:
                    raise InvalidParameter(f'missing required option: "{other}"')


class VolumeService:
    """The `local` volume driver, volume records and container references."""

    def __init__(self, *, data_root: str, conn: sqlite3.Connection, events: Any = None,
                 containers: Any = None):
        self.root = os.path.join(data_root, "volumes")
        self.conn = conn
        self.events = events
        self.containers = containers  # ContainerService: --volumes-from looks containers up
        self.lock = threading.RLock()
        self._creating: dict[str, float] = {}
        os.makedirs(self.root, mode=0o701, exist_ok=True)
        migrate(conn, "volumes", MIGRATIONS)
        self._repair()

    # -- records -----------------------------------------------------------------------

    def _row(self, row: sqlite3.Row) -> Volume:
        return Volume(row["name"], row["driver"], row["created"], json.loads(row["labels"]),
                      json.loads(row["options"]))

    def _get(self, name: str) -> Volume | None:
        row = self.conn.execute("SELECT * FROM volumes WHERE name = ?", (name,)).fetchone()
        return self._row(row) if row else None

    def _all(self) -> list[Volume]:
        rows = self.conn.execute("SELECT * FROM volumes ORDER BY created").fetchall()
        return [self._row(r) for r in rows]

    def _refs(self, name: str) -> list[str]:
        return self._all_refs().get(name, [])

    def _all_refs(self) -> dict[str, list[str]]:
        """Volume -> the containers using it; references of containers that no longer
        exist (a create that failed after our hook) are dropped on the way."""
        refs: dict[str, list[str]] = {}
        stale = []
        for row in self.conn.execute("SELECT volume, container FROM volume_refs").fetchall():
            if self._live(row[1]):
                refs.setdefault(row[0], []).append(row[1])
            else:
                stale.append(row[1])
        for container_id in set(stale):
            log.info("dropping the volume references of unknown container %s", container_id)
            self.conn.execute("DELETE FROM volume_refs WHERE container = ?", (container_id,))
        return refs

    def _live(self, container_id: str) -> bool:
        if self.containers is None or container_id in self.containers.containers:
            return True
        # being created: the container service records it after on_create returns
        started = self._creating.get(container_id)
        return started is not None and time.monotonic() - started < _CREATE_GRACE

    def volume_dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def mountpoint(self, name: str) -> str:
        return os.path.join(self.root, name, "_data")

    def _repair(self) -> None:
        """After a crash: finish removals, recreate lost directories, drop stray ones."""
        with self.lock:
            names = {v.name for v in self._all()}
            for entry in os.listdir(self.root):
                path = os.path.join(self.root, entry)
                if entry.startswith(".trash-"):
                    self._delete_trash(path)
                elif entry not in names and os.path.isdir(path):
                    data = os.path.join(path, "_data")
                    if not os.path.isdir(data) or not os.listdir(data):
                        # a create that never reached the database (killed between its
                        # mkdirs, or before its INSERT)
                        shutil.rmtree(path)
            for name in names:
                os.makedirs(self.mountpoint(name), mode=0o755, exist_ok=True)

    def _publish(self, action: str, name: str, attrs: dict[str, str] | None = None) -> None:
        if self.events is not None:
            self.events.publish("volume", action, name, attrs or {})

    def _document(self, v: Volume) -> dict[str, Any]:
        return {
            "CreatedAt": _rfc3339(v.created),
            "Driver": v.driver,
            "Labels": dict(v.labels) or None,
            "Mountpoint": self.mountpoint(v.name),
            "Name": v.name,
            "Options": dict(v.options) or None,
            "Scope": "local",
        }

    # -- the API -----------------------------------------------------------------------

    def create_sync(self, name: str | None, driver: str | None = None,
                    options: Mapping[str, str] | None = None,
                    labels: Mapping[str, str] | None = None) -> tuple[dict[str, Any], bool]:
        """Create (or, as Docker does, return the existing) volume; (document, created)."""
        driver = driver or LOCAL_DRIVER
        if driver != LOCAL_DRIVER:
            raise NotFound(f'error looking up volume plugin {driver}: plugin "{driver}" '
                           "not found")
        options = {str(k): str(v) for k, v in (options or {}).items()}
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        if name:
            check_name(name)
        else:  # a volume without a name is anonymous (prune takes it), as dockerd's
            name = secrets.token_hex(32)
            labels.setdefault(ANONYMOUS_LABEL, "")
        check_options(options)
        with self.lock:
            existing = self._get(name)
            if existing is not None:
                if existing.driver != driver:
                    raise Conflict(f"volume name {name} already in use by driver "
                                   f"{existing.driver}")
                return self._document(existing), False
            os.makedirs(self.mountpoint(name), mode=0o755, exist_ok=True)
            v = Volume(name, driver, time.time(), labels, options)
            self.conn.execute(
                "INSERT INTO volumes (name, driver, created, labels, options) "
                "VALUES (?, ?, ?, ?, ?)",
                (v.name, v.driver, v.created, json.dumps(v.labels), json.dumps(v.options)))
        self._publish("create", name, {"driver": driver})
        return self._document(v), True

    async def create(self, name: str | None, driver: str | None = None,
                     options: Mapping[str, str] | None = None,
                     labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        doc, _ = await asyncio.to_thread(self.create_sync, name, driver, options, labels)
        return doc

    async def inspect(self, name: str) -> dict[str, Any]:
        with self.lock:
            v = self._get(name)
        if v is None:
            raise NotFound(f"get {name}: no such volume")
        return self._document(v)

    async def list(self, filters: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
        filters = filters or {}
        check_filters(filters, _LIST_FILTERS)
        with self.lock:
            volumes, refs = self._all(), self._all_refs()
        result = []
        for v in volumes:
            if not self._list_match(v, refs.get(v.name, []), filters):
                continue
            result.append(self._document(v))
        return {"Volumes": result, "Warnings": None}  # null, as dockerd

    @staticmethod
    def _list_match(v: Volume, refs: list[str], filters: Mapping[str, list[str]]) -> bool:
        for value in filters.get("dangling", []):
            wanted = _truthy(value)
            if wanted is None:
                raise InvalidParameter(f"invalid filter 'dangling={value}'")
            if wanted == bool(refs):
                return False
        names = filters.get("name", [])
        if names and not any(n in v.name for n in names):
            return False
        drivers = filters.get("driver", [])
        if drivers and v.driver not in drivers:
            return False
        return all(label_matches(v.labels, spec) for spec in filters.get("label", []))

    async def remove(self, name: str, force: bool = False) -> None:
        try:
            await asyncio.to_thread(self._remove, name)
        except NotFound:
            if not force:
                raise

    def _remove(self, name: str) -> None:
        with self.lock:
            v = self._get(name)
            if v is None:
                raise NotFound(f"get {name}: no such volume")
            refs = self._refs(name)
            if refs:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(refs)}]")
            self._unmount_quietly(self.mountpoint(name))
            trash = os.path.join(self.root, f".trash-{name}-{secrets.token_hex(4)}")
            try:
                os.rename(self.volume_dir(name), trash)
            except FileNotFoundError:
                trash = ""
            self.conn.execute("DELETE FROM volumes WHERE name = ?", (name,))
        if trash:
            self._delete_trash(trash)
        self._publish("destroy", name, {"driver": v.driver})

    def _delete_trash(self, path: str) -> None:
        """Delete a removed volume's directory, never through a mount: files under one
        are the mounted device's (a bind volume's host directory). One that cannot be
        unmounted is kept, for the next start to retry."""
        data = os.path.join(path, "_data")
        self._unmount_quietly(data)
        if is_mountpoint(data):
            log.error("a removed volume is still mounted at %s; its directory is kept", data)
            return
        shutil.rmtree(path, ignore_errors=True)

    async def prune(self, filters: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
        filters = filters or {}
        check_filters(filters, _PRUNE_FILTERS)
        everything = False
        for value in filters.get("all", []):
            flag = _truthy(value)
            if flag is None:
                raise InvalidParameter(f"invalid filter 'all={value}'")
            everything = flag
        with self.lock:
            volumes, refs = self._all(), self._all_refs()
        deleted, reclaimed = [], 0
        for v in volumes:
            if refs.get(v.name) or (not everything and not v.anonymous):
                continue
            if not labels_match(v.labels, filters):
                continue
            size = await asyncio.to_thread(_du, self.mountpoint(v.name))
            try:
                await asyncio.to_thread(self._remove, v.name)
            except (Conflict, NotFound):
                continue  # taken or removed meanwhile
            deleted.append(v.name)
            reclaimed += size
        self._publish("prune", "", {"reclaimed": str(reclaimed)})
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def usage(self) -> list[dict[str, Any]]:
        """Volumes with UsageData (system df)."""
        with self.lock:
            volumes, refs = self._all(), self._all_refs()
        out = []
        for v in volumes:
            doc = self._document(v)
            doc["UsageData"] = {"Size": _du(self.mountpoint(v.name)),
                                "RefCount": len(refs.get(v.name, []))}
            out.append(doc)
        return out

    # -- container hooks ---------------------------------------------------------------

    async def on_create(self, doc: dict, image_config: dict | None) -> None:
        await asyncio.to_thread(self.resolve_mounts, doc, image_config or {})

    def resolve_mounts(self, doc: dict, image_config: dict) -> None:
        """Fill doc["Mounts"] and create the volumes they need (Docker's registerMountPoints)."""
        hc = doc.get("HostConfig") or {}
        private = doc.setdefault("Kobako", {}).setdefault("storage", {})
        now = time.monotonic()
        self._creating = {cid: t for cid, t in self._creating.items()
                          if now - t < _CREATE_GRACE}
        self._creating[doc["Id"]] = now
        mounts: dict[str, dict] = {}
        inherited: list[str] = []  # binds that come from --volumes-from
        nocopy: list[str] = []
        wanted: list[tuple[str, dict, dict]] = []  # (name or "", labels, options)

        for entry in hc.get("VolumesFrom") or []:
            ref, _, mode = str(entry).partition(":")
            if mode not in ("", "ro", "rw"):
                raise InvalidParameter(f"invalid mode for volumes-from: {mode}")
            if self.containers is None:
                raise EngineError("--volumes-from needs the container service")
            other = self.containers.get(ref)
            other_private = (other.doc.get("Kobako") or {}).get("storage") or {}
            for m in other.doc.get("Mounts") or []:
                if m.get("Type") not in ("volume", "bind"):
                    continue
                copy = dict(m)
                if mode:
                    copy["RW"] = mode == "rw"
                    copy["Mode"] = mode
                mounts[m["Destination"]] = copy
                if m["Destination"] in (other_private.get("nocopy") or []):
                    nocopy.append(m["Destination"])
                if m["Type"] == "bind":
                    inherited.append(m["Destination"])

        own: set[str] = set()
        for raw in hc.get("Binds") or []:
            spec = oci_spec.parse_bind(raw)
            own.add(spec.destination)
            mode = raw.split(":")[2] if raw.count(":") >= 2 else ""
            if spec.kind == "bind":
                mounts[spec.destination] = {
                    "Type": "bind", "Source": spec.source, "Destination": spec.destination,
                    "Mode": mode, "RW": not spec.read_only, "Propagation": spec.propagation}
            else:
                if spec.source:
                    check_name(spec.source)
                mounts[spec.destination] = {
                    "Type": "volume", "Name": spec.source, "Source": "",
                    "Destination": spec.destination, "Driver": LOCAL_DRIVER,
                    "Mode": mode or "z", "RW": not spec.read_only, "Propagation": ""}
                if "nocopy" in mode.split(","):
                    nocopy.append(spec.destination)
            if spec.destination in inherited:
                inherited.remove(spec.destination)
        for raw_mount in hc.get("Mounts") or []:
            spec = oci_spec.parse_mount(raw_mount)
            if spec.destination in own:
                raise InvalidParameter(f"Duplicate mount point: {spec.destination}")
            own.add(spec.destination)
            if spec.destination in inherited:
                inherited.remove(spec.destination)
            if spec.kind == "bind":
                mounts[spec.destination] = {
                    "Type": "bind", "Source": spec.source, "Destination": spec.destination,
                    "Mode": "", "RW": not spec.read_only, "Propagation": spec.propagation}
            elif spec.kind == "tmpfs":
                mounts[spec.destination] = {
                    "Type": "tmpfs", "Source": "", "Destination": spec.destination,
                    "Mode": "", "RW": not spec.read_only, "Propagation": ""}
            else:
                options = raw_mount.get("VolumeOptions") or {}
                if spec.source:
                    check_name(spec.source)
                driver_cfg = options.get("DriverConfig") or {}
                if (driver_cfg.get("Name") or LOCAL_DRIVER) != LOCAL_DRIVER:
                    raise NotFound(f'error looking up volume plugin {driver_cfg["Name"]}: '
                                   f'plugin "{driver_cfg["Name"]}" not found')
                mounts[spec.destination] = {  # "z": dockerd's setBindModeIfNull for them
                    "Type": "volume", "Name": spec.source, "Source": "",
                    "Destination": spec.destination, "Driver": LOCAL_DRIVER, "Mode": "z",
                    "RW": not spec.read_only, "Propagation": ""}
                if options.get("NoCopy"):
                    nocopy.append(spec.destination)
                wanted.append((spec.destination, dict(options.get("Labels") or {}),
                               dict(driver_cfg.get("Options") or {})))
        tmpfs = {posixpath.normpath(d) for d in (hc.get("Tmpfs") or {})}
        volumes = dict(image_config.get("Volumes") or {})
        volumes.update((doc.get("Config") or {}).get("Volumes") or {})
        for destination in sorted(volumes):
            oci_spec._validate_target(destination)
            destination = posixpath.normpath(destination)
            if destination in mounts or destination in tmpfs:
                continue
            mounts[destination] = {
                "Type": "volume", "Name": "", "Source": "", "Destination": destination,
                "Driver": LOCAL_DRIVER, "Mode": "", "RW": True, "Propagation": ""}

        extra = {dest: (labels, options) for dest, labels, options in wanted}
        created: list[str] = []
        try:
            for destination, m in mounts.items():
                if m["Type"] != "volume":
                    continue
                labels, options = extra.get(destination, ({}, {}))
                if not m["Name"]:
                    labels = {**labels, ANONYMOUS_LABEL: ""}
                vdoc, new = self.create_sync(m["Name"] or None, LOCAL_DRIVER, options, labels)
                if new:
                    created.append(vdoc["Name"])
                m["Name"], m["Source"] = vdoc["Name"], vdoc["Mountpoint"]
            with self.lock:
                for m in mounts.values():
                    if m["Type"] == "volume":
                        self.conn.execute("INSERT OR IGNORE INTO volume_refs (volume, container)"
                                          " VALUES (?, ?)", (m["Name"], doc["Id"]))
        except BaseException:
            self._release(doc["Id"], created)
            raise
        doc["Mounts"] = sorted(mounts.values(), key=lambda m: m["Destination"])
        private.update({"nocopy": nocopy, "inherited": inherited})

    def _release(self, container_id: str, remove: list[str]) -> None:
        with self.lock:
            self.conn.execute("DELETE FROM volume_refs WHERE container = ?", (container_id,))
        for name in remove:
            try:
                self._remove(name)
            except (Conflict, NotFound) as err:
                log.info("volume %s kept: %s", name, err)

    async def on_remove(self, doc: dict, remove_anonymous: bool) -> None:
        await asyncio.to_thread(self.release, doc, remove_anonymous)

    def release(self, doc: dict, remove_anonymous: bool) -> None:
        self._creating.pop(doc["Id"], None)
        names = [m["Name"] for m in doc.get("Mounts") or [] if m.get("Type") == "volume"]
        with self.lock:
            self.conn.execute("DELETE FROM volume_refs WHERE container = ?", (doc["Id"],))
            volumes = {n: self._get(n) for n in names}
        remove = []
        for name, v in volumes.items():
            if v is None:
                continue
            if v.options and not self._refs(name):
                self._unmount_quietly(self.mountpoint(name))
            if remove_anonymous and v.anonymous:
                remove.append(name)
        self._release(doc["Id"], remove)

    def on_stop(self, doc: dict) -> None:
        """A container stopped: unmount option-mounted volumes no running container uses."""
        for m in doc.get("Mounts") or []:
            if m.get("Type") != "volume":
                continue
            v = self._get(m["Name"])
            if v is None or not v.options:
                continue
            if not any(self._running(cid) for cid in self._refs(v.name) if cid != doc["Id"]):
                self._unmount_quietly(self.mountpoint(v.name))

    def _running(self, container_id: str) -> bool:
        c = (self.containers.containers.get(container_id)
             if self.containers is not None else None)
        return bool(c is not None and c.running)

    def oci_mounts(self, doc: dict) -> list[dict]:
        """The OCI mounts of the container's volumes and inherited binds (at start)."""
        private = doc.setdefault("Kobako", {}).setdefault("storage", {})
        nocopy = set(private.get("nocopy") or [])
        inherited = set(private.get("inherited") or [])
        rootfs = ((doc.get("GraphDriver") or {}).get("Data") or {}).get("MergedDir") or ""
        result = []
        for m in doc.get("Mounts") or []:
            if m.get("Type") == "volume":
                v = self._get(m["Name"])
                if v is None:
                    raise NotFound(f"get {m['Name']}: no such volume")
                source = self.mountpoint(v.name)
                os.makedirs(source, mode=0o755, exist_ok=True)
                if v.options:
                    self._mount_options(v)
                if (not private.get("populated") and m["Destination"] not in nocopy
                        and rootfs):
                    copy_up(rootfs, m["Destination"], source)
                propagation = m.get("Propagation") or "rprivate"
            elif m.get("Type") == "bind" and m["Destination"] in inherited:
                source, propagation = m["Source"], m.get("Propagation") or "rprivate"
            else:
                continue  # binds and tmpfs of the container's own HostConfig: oci_spec
            options = ["rbind"] + ([] if m.get("RW", True) else ["ro"]) + [propagation]
            result.append({"destination": m["Destination"], "type": "bind", "source": source,
                           "options": options})
            if m.get("Type") == "volume":
                self._publish("mount", m["Name"], {
                    "container": doc["Id"], "destination": m["Destination"],
                    "driver": LOCAL_DRIVER, "propagation": m.get("Propagation") or "",
                    "read/write": str(bool(m.get("RW", True))).lower()})
        private["populated"] = True
        return result

    # -- local driver mounts (type/device/o) ---------------------------------------------

    def _mount_options(self, v: Volume) -> None:
        from kobako.linux import syscalls
        from kobako.runtime.mounts import MountOptions

        target = self.mountpoint(v.name)
        with self.lock:
            if is_mountpoint(target):
                return
            parsed = MountOptions((v.options.get("o") or "").split(",")
                                  if v.options.get("o") else [])
            fstype = v.options.get("type") or None
            device = v.options.get("device") or None
            try:
                syscalls.real().mount(device, target, None if parsed.is_bind else fstype,
                                      parsed.flags, parsed.data)
            except OSError as err:
                raise VolumeError(f"error while mounting volume '{target}': failed to mount "
                                  f"local volume: mount {device}:{target}, flags: "
                                  f"{hex(parsed.flags)}, data: {parsed.data or ''}: "
                                  f"{os.strerror(err.errno or 0).lower()}") from None

    def _unmount_quietly(self, target: str) -> None:
        from kobako.linux import syscalls

        while is_mountpoint(target):
            try:
                syscalls.real().umount2(target, 2)  # MNT_DETACH
            except OSError as err:
                if err.errno != errno.EINVAL:
                    log.warning("cannot unmount volume at %s: %s", target, err)
                return


# -- copy-up ------------------------------------------------------------------------------

def copy_up(rootfs: str, destination: str, volume_data: str) -> bool:
    """Copy what the container's rootfs has at `destination` into an empty volume.

    The path is resolved inside the rootfs (openat2 RESOLVE_IN_ROOT), so a symlink in
    the image cannot make the daemon copy host files. `cp -a` keeps ownership, modes,
    times, xattrs and hardlinks, and the directory's own owner and mode (as Docker's
    copyOwnership). Returns whether something was copied.
    """
    from kobako.linux import syscalls

    if os.listdir(volume_data):
        return False
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            src = syscalls.real().openat2(
                root_fd, destination.lstrip("/") or ".",
                os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ENOTDIR):
                return False
            raise VolumeError(f"cannot open {destination} in the container: {err}") from None
    finally:
        os.close(root_fd)
    try:
        proc = subprocess.run(["cp", "-a", "--", f"/proc/self/fd/{src}/.", volume_data + "/"],
                              pass_fds=(src,), capture_output=True, text=True)
    finally:
        os.close(src)
    if proc.returncode != 0:
        raise VolumeError(f"copying the image's content at {destination} into the volume: "
                          f"{proc.stderr.strip()}")
    return True


def _du(path: str) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total
