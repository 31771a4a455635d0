"""The container service: Docker's container lifecycle on kobako's runtime.

    create  -> a record, a writable rootfs prepared by the image library
    start   -> rootfs mounted, OCI bundle written, the monitor process runs the
               container (see monitor.py); the daemon watches it over its socket
    exit    -> the monitor reports it (or leaves exit.json if the daemon was away)

The daemon never enters a container and never waits on its processes itself, so
it can be restarted while containers run: on start-up it finds each monitor again.
Allowed transitions live in `Lifecycle` below, so "409 is not running" comes from
one place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import signal as signal_module
import time
from collections.abc import Callable, Mapping

from kobako.engine import monitor_link
from kobako.engine.container_docs import (
    ZERO_TIME,
    host_config_defaults,
    human_status,
    network_settings,
    parse_time,
    summary_ports,
)
from kobako.engine.container_storage import StorageOperations
from kobako.engine.container_store import ContainerStore
from kobako.engine.errors import (
    Conflict,
    EngineError,
    InvalidParameter,
    NotFound,
    NotModified,
)
from kobako.engine.filters import check_filters, labels_match, port_keys
from kobako.engine.monitor import EXIT_FILE, MONITOR_FILE
from kobako.engine.monitor_process import MonitorError
from kobako.engine.restart import RestartPolicy, next_delay
from kobako.image.errors import ImageError
from kobako.linux.cgroups import warmup as cgroup_warmup
from kobako.timestamps import now_rfc3339

log = logging.getLogger("kobakod.containers")

_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
KILL_WAIT = 10.0  # seconds a SIGKILL kill waits for the exit, as dockerd
# The runtimes a container may name: ours, also under the name of dockerd's default
# (clients and compose files that say runtime: runc mean "the default one").
RUNTIMES = ("kobako-runtime", "runc")


class Container:
    """A container's record (Docker's inspect document) and its live state in the daemon."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.lock = asyncio.Lock()
        self.exited = asyncio.Event()  # set while not running
        self.removed = asyncio.Event()
        self.started = asyncio.Event()
        self.watch_task: asyncio.Task | None = None
        self.attach_pending = False
        self.health = None  # a HealthMonitor while running with a healthcheck
        self.restart_task: asyncio.Task | None = None
        self.restart_delay = 0.0
        self.restart_waiting = False  # its restart task is in its back-off, not starting yet
        self.spec: dict | None = None  # the OCI spec of its current run, once written here
        if not self.running:
            self.exited.set()

    @property
    def id(self) -> str:
        return self.doc["Id"]

    @property
    def name(self) -> str:
        return self.doc["Name"].lstrip("/")

    @property
    def state(self) -> dict:
        return self.doc["State"]

    @property
    def running(self) -> bool:
        """A process of it runs. (Docker's State.Running is also true while a restart
        policy's restart is pending; Restarting tells that apart.)"""
        return bool(self.state.get("Running")) and not self.state.get("Restarting")

    @property
    def private(self) -> dict:
        return self.doc.setdefault("Kobako", {})


class Lifecycle:
    """Docker's allowed transitions, with its error wording."""

    @staticmethod
    def check_running(c: Container) -> None:
        if not c.running:
            raise Conflict(f"Container {c.id} is not running")

    @staticmethod
    def check_not_paused(c: Container) -> None:
        if c.state.get("Paused"):
            raise Conflict(f"Container {c.id} is paused, unpause the container before stopping or killing")

    @staticmethod
    def check_startable(c: Container) -> None:
        if c.state.get("Paused"):
            raise Conflict("cannot start a paused container, try unpause instead")
        if c.running:
            raise NotModified("container already started")

    @staticmethod
    def check_removable(c: Container, force: bool) -> None:
        if c.state.get("Restarting") and not force:
            raise Conflict(
                f"You cannot remove a restarting container {c.id}. Stop the container "
                "before attempting removal or force remove")
        if c.running and not force:
            raise Conflict(
                f"You cannot remove a running container {c.id}. Stop the container before "
                "attempting removal or force remove"
            )


class ContainerService(StorageOperations):
    def __init__(self, *, data_root: str, exec_root: str, events, images, conn, monitor,
                 log_defaults: dict | None = None):
        self.data_root = data_root
        self.exec_root = exec_root
        self.events = events
        self.images = images
        self.monitor = monitor
        self.store = ContainerStore(conn)
        self._creating: set[str] = set()  # ids between their directory and their record
        self.log_defaults = log_defaults or {}
        self.runtime_root = os.path.join(exec_root, "runtime")
        self.sockets = os.path.join(exec_root, "m")
        os.makedirs(self.runtime_root, mode=0o700, exist_ok=True)
        os.makedirs(self.sockets, mode=0o700, exist_ok=True)
        self.containers: dict[str, Container] = {c["Id"]: Container(c) for c in self.store.all()}
        # Set by the daemon when those subsystems exist; see the hook calls below.
        # networks: on_create(doc, networking), on_start(doc) -> netns path | None,
        #           on_stop(doc), on_remove(doc)
        # volumes:  on_create(doc, image_config), oci_mounts(doc) -> [OCI mount],
        #           on_remove(doc, remove_anonymous)
        self.networks = None
        self.volumes = None
        from kobako.engine.exec import ExecService

        self.execs = ExecService(self)

    # -- daemon lifecycle --------------------------------------------------------------

    async def startup(self) -> None:
        """Find every running container's monitor again (live restore), repair what a
        daemon killed in the middle of an operation left, apply restart policies."""
        self.monitor.attach(asyncio.get_running_loop())
        repaired = asyncio.Event()
        if self.networks is not None:
            await self.networks.startup(repaired)  # the rest of it goes on meanwhile
        await asyncio.to_thread(self._sweep_unrecorded, set(self.containers))
        for c in list(self.containers.values()):
            if c.state["Status"] == "removing":
                c.private["resume_removal"] = True
                await self.remove(c.id, force=True, volumes=True, link=False)
            elif c.running:
                await self._restore(c)
            else:
                await self._repair_stopped(c)
        if self.networks is not None:
            self.networks.release_stopped()  # the rest of the sweep comes with `repaired`
        repaired.set()
        for c in list(self.containers.values()):
            policy = RestartPolicy(c.doc["HostConfig"].get("RestartPolicy"))
            if c.restart_task is not None and not c.restart_task.done():
                continue  # it exited while we were away; its policy restarts it
            if not c.running and c.state["Status"] != "created" and policy.start_with_daemon(
                    c.state.get("ExitCode", 0), c.doc.get("RestartCount", 0),
                    bool(c.private.get("manually_stopped"))):
                try:
                    await self.start(c.id)
                except EngineError as err:
                    log.warning("restarting %s at daemon start failed: %s", c.id, err)

    async def _restore(self, c: Container) -> None:
        if os.path.exists(self._socket(c)):
            self._watch(c)
            return
        # no monitor: its exit.json, or whatever it left running is stopped
        await self._on_exit(c, self._read_exit_file(c) or await self._lost_monitor(c))

    async def _repair_stopped(self, c: Container) -> None:
        """A container recorded as not running, after a daemon that may have died while
        starting it: adopt what its monitor got running, or undo what the start did."""
        monitor = await self._await_monitor(c)
        if monitor is not None and monitor.get("started_at") != c.state.get("StartedAt"):
            log.info("container %s was started by the previous daemon; adopting it", c.id)
            c.state.update({
                "Status": "running", "Running": True, "Paused": False, "Restarting": False,
                "Pid": monitor["pid"], "ExitCode": 0, "Error": "",
                "StartedAt": monitor["started_at"],
            })
            c.exited.clear()
            c.started.set()
            c.private.pop("manually_stopped", None)
            c.private["started_monotonic"] = time.monotonic()
            self.store.update(c.doc)
            await self._restore(c)
            return
        from kobako.runtime.errors import RuntimeFailure

        runtime = self._runtime()
        if os.path.isdir(os.path.join(self.runtime_root, c.id)):
            try:  # a monitor that died half-way through creating it
                await asyncio.to_thread(runtime.delete, c.id, True)
            except RuntimeFailure as err:
                log.warning("cannot clean up the runtime state of %s: %s", c.id, err)
        await asyncio.to_thread(self._unmount, c)  # mounted by a start that never ran
        if c.state.get("Restarting"):
            # its policy's restart was pending when the daemon died: pend it again
            c.state.update({"Restarting": False, "Running": False, "Status": "exited"})
            self.store.update(c.doc)
            self._schedule_restart(c)

    async def _await_monitor(self, c: Container, timeout: float = 10.0) -> dict | None:
        """monitor.json of the container's last start; while its monitor is still creating
        the container (socket there, no monitor.json yet), wait for it to finish."""
        path = os.path.join(self._dir(c), MONITOR_FILE)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path) as f:
                    return json.load(f)
            except (OSError, ValueError):
                pass
            if not os.path.exists(self._socket(c)) or time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)

    def _sweep_unrecorded(self, known: set[str]) -> None:
        """Remove what a create killed before its record was written left: the
        container's directory and its rootfs."""
        import shutil

        root = os.path.join(self.data_root, "containers")
        on_disk = set(os.listdir(root)) if os.path.isdir(root) else set()
        snapshots = getattr(getattr(self.images, "snapshots", None), "container_ids", None)
        if snapshots is not None:
            on_disk |= set(snapshots())
        for cid in on_disk - known - self._creating:
            log.warning("removing the leftovers of container %s, which has no record", cid)
            try:
                self.images.release(cid)
            except Exception as err:  # noqa: BLE001 - reported; the next start tries again
                log.warning("cannot remove the rootfs of %s: %s", cid, err)
            shutil.rmtree(self._dir(cid), ignore_errors=True)

    async def shutdown(self) -> None:
        for c in self.containers.values():
            if c.watch_task is not None:
                c.watch_task.cancel()
        if self.networks is not None:
            await self.networks.shutdown()
        self.monitor.stop()

    # -- lookups -----------------------------------------------------------------------

    def get(self, ref: str) -> Container:
        if not ref:
            raise NotFound("No such container: ")
        if ref in self.containers:
            return self.containers[ref]
        name = ref.lstrip("/")
        for c in self.containers.values():
            if c.name == name:
                return c
        matches = [c for c in self.containers.values() if c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameter(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def _dir(self, c: Container | str) -> str:
        cid = c if isinstance(c, str) else c.id
        return os.path.join(self.data_root, "containers", cid)

    def _socket(self, c: Container) -> str:
        return os.path.join(self.sockets, c.id[:16] + ".sock")

    def _log_path(self, c: Container) -> str:
        return os.path.join(self._dir(c), f"{c.id}-json.log")

    # -- create ------------------------------------------------------------------------

    async def create(self, config: dict, host_config: dict, networking: dict,
                     name: str | None, platform: str | None) -> dict:
        from kobako.engine import oci_spec

        config = dict(config or {})
        host_config = dict(host_config or {})
        image_ref = config.get("Image") or ""
        if not image_ref:
            raise InvalidParameter("config.Image must be set")
        if name is not None and name != "":
            if not _NAME.match(name):
                raise InvalidParameter(
                    f'Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
            name = name.lstrip("/")
            for other in self.containers.values():
                if other.name == name:
                    raise Conflict(
                        f'Conflict. The container name "/{name}" is already in use by container '
                        f'"{other.id}". You have to remove (or rename) that container to be able '
                        "to reuse that name.")
        else:
            name = self._random_name()
        image_id, image_config = await asyncio.to_thread(self._image, image_ref, platform)
        try:
            command = oci_spec.resolve_command(config, image_config)
        except ValueError as err:
            raise InvalidParameter(str(err)) from None
        self._check_host_config(host_config)
        if host_config.get("Links"):
            host_config["Links"] = self._stored_links(host_config, name)
        warnings = oci_spec.verify_host_config(host_config, config)
        host_config = oci_spec.adapt_host_config(host_config)
        from kobako.engine.logs import LogConfig

        try:
            host_config["LogConfig"] = LogConfig.from_host_config(
                host_config.get("LogConfig"), self.log_defaults).to_json()
        except ValueError as err:
            raise InvalidParameter(str(err)) from None
        cid = secrets.token_hex(32)
        self._creating.add(cid)
        try:
            return await self._create(cid, name, config, image_id, image_config, command,
                                      host_config, networking, warnings)
        finally:
            self._creating.discard(cid)

    async def _create(self, cid: str, name: str, config: dict, image_id: str,
                      image_config: dict, command: list[str], host_config: dict,
                      networking: dict, warnings: list[str]) -> dict:
        os.makedirs(self._dir(cid), mode=0o710)
        try:
            spec = await asyncio.to_thread(self.images.prepare, cid, image_id)
        except Exception:
            os.rmdir(self._dir(cid))
            raise
        import dataclasses

        created_ts = time.time()
        merged_config = self._merge_config(config, image_config)
        if not merged_config.get("Hostname"):  # as dockerd, from the create on
            host_network = host_config.get("NetworkMode") == "host"
            merged_config["Hostname"] = (_read("/etc/hostname").strip() if host_network
                                         else cid[:12])
        doc = {
            "Id": cid,
            "Created": now_rfc3339(created_ts),
            "Path": command[0],
            "Args": command[1:],
            "State": {
                "Status": "created", "Running": False, "Paused": False, "Restarting": False,
                "OOMKilled": False, "Dead": False, "Pid": 0, "ExitCode": 0, "Error": "",
                "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME,
            },
            "Image": image_id,
            "ResolvConfPath": os.path.join(self._dir(cid), "resolv.conf"),
            "HostnamePath": os.path.join(self._dir(cid), "hostname"),
            "HostsPath": os.path.join(self._dir(cid), "hosts"),
            "LogPath": os.path.join(self._dir(cid), f"{cid}-json.log"),
            "Name": "/" + name,
            "RestartCount": 0,
            "Driver": getattr(self.images, "driver", "overlay2"),
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": None,
            "HostConfig": host_config_defaults(host_config),
            "GraphDriver": {"Name": getattr(self.images, "driver", "overlay2"),
                            "Data": _graph_driver_data(spec)},
            "Mounts": [],
            "Config": merged_config,
            "NetworkSettings": network_settings(host_config),
            "Kobako": {"rootfs": dataclasses.asdict(spec)},
        }
        try:
            if self.volumes is not None:
                await self.volumes.on_create(doc, image_config)
            if self.networks is not None:
                await self.networks.on_create(doc, networking or {})
        except BaseException:
            if self.volumes is not None:
                await self.volumes.on_remove(doc, True)  # the anonymous ones made for it
            await asyncio.to_thread(self.images.release, cid)
            import shutil

            shutil.rmtree(self._dir(cid), ignore_errors=True)
            raise
        self.store.insert(doc, created_ts)
        c = Container(doc)
        self.containers[cid] = c
        self._event(c, "create")
        return {"Id": cid, "Warnings": warnings}

    def _image(self, ref: str, platform: str | None = None) -> tuple[str, dict]:
        """The image to create from, which must be of the platform asked for, if any (a
        404 otherwise: the docker CLI then pulls that platform, as from dockerd)."""
        from kobako.image import media
        from kobako.image.errors import NotFound as ImageNotFound

        try:
            image_id = self.images.resolve(ref)
        except ImageNotFound as err:
            raise NotFound(str(err)) from None  # "No such image: busybox:latest", as dockerd
        config = self.images.config(image_id)
        if platform:
            try:
                wanted = media.parse_platform(platform)
            except ImageError as err:
                raise InvalidParameter(str(err)) from None
            actual = media.Platform(config.get("os") or "linux",
                                    config.get("architecture") or "", config.get("variant") or "")
            if not wanted.matches(actual):
                raise NotFound(f"image with reference {ref} was found but does not match the "
                               f"specified platform: wanted {wanted}, actual: {actual}")
        return image_id, (config.get("config") or {})

    def _merge_config(self, config: dict, image_config: dict) -> dict:
        """Config as inspect shows it: Docker's empty fields, then the image's merged in."""
        from kobako.engine import oci_spec

        merged = {
            "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
            "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
            "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
            "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": {},
        }
        merged.update({k: v for k, v in oci_spec.merge_config(config, image_config).items()
                       if v is not None})
        for key in ("Env", "Volumes"):
            merged[key] = merged[key] or None  # null when empty, as dockerd shows them
        return merged

    def _check_host_config(self, host_config: dict) -> None:
        problem = RestartPolicy.problem(host_config.get("RestartPolicy"))
        if problem:
            raise InvalidParameter(problem)
        policy = (host_config.get("RestartPolicy") or {}).get("Name") or "no"
        if host_config.get("AutoRemove") and policy not in ("no", ""):
            raise InvalidParameter(
                "can't create 'AutoRemove' container with restart policy")
        runtime = host_config.get("Runtime") or ""
        if runtime not in ("", *RUNTIMES):
            raise InvalidParameter(f"Unknown runtime specified {runtime}")

    def _stored_links(self, host_config: dict, own_name: str) -> list[str]:
        """--link name[:alias], checked and kept as dockerd keeps them."""
        from kobako.engine import links

        mode = str(host_config.get("NetworkMode") or "")
        if mode == "host" or mode.startswith("container:"):
            raise InvalidParameter(f"conflicting options: {mode.split(':')[0]} type "
                                   "networking can't be used with links. This would result "
                                   "in undefined behavior")
        out = []
        for entry in host_config["Links"]:
            try:
                name, alias = links.parse(str(entry))
            except ValueError as err:
                raise InvalidParameter(str(err)) from None
            out.append(links.stored(self._linked(name).name, own_name, alias))
        return out

    def _linked(self, name: str) -> Container:
        try:
            return self.get(name)
        except NotFound:
            raise NotFound(f"could not get container for {name}") from None

    def _remove_link(self, ref: str) -> None:
        """`docker rm --link /parent/alias`: the parent forgets that link (what its
        running process was given stays until it starts again, as with dockerd)."""
        from kobako.engine import links

        name = "/" + ref.strip("/")
        parent_name, _, alias = name.rpartition("/")
        if not parent_name:
            raise Conflict("Conflict, cannot remove the default link name of the container")
        try:
            parent = self.get(parent_name.lstrip("/"))
        except NotFound:
            raise NotFound(f"Cannot get parent {parent_name} for link name {name}") from None
        current = parent.doc["HostConfig"].get("Links") or []
        kept = [entry for entry in current if links.parse(entry)[1] != alias]
        if len(kept) == len(current):
            raise NotFound(f"No such container: {name}")
        parent.doc["HostConfig"]["Links"] = kept or None
        self.store.update(parent.doc)

    def _links(self, c: Container) -> tuple[str, list[str]]:
        """The /etc/hosts lines and environment of the container's links (on the default
        bridge; on user networks the embedded DNS answers the aliases)."""
        from kobako.engine import links

        hosts, env = "", []
        mode = c.doc["HostConfig"].get("NetworkMode") or "default"
        for entry in c.doc["HostConfig"].get("Links") or []:
            name, alias = links.parse(entry)
            linked = self._linked(name)
            if not linked.running:
                raise Conflict(f"Cannot link to a non running container: /{linked.name} AS "
                               f"/{c.name}/{alias}")
            if mode not in ("default", "bridge"):
                continue
            bridge = (linked.doc["NetworkSettings"].get("Networks") or {}).get("bridge") or {}
            ip = bridge.get("IPAddress") or ""
            if ip:
                hosts += links.hosts_line(ip, alias, linked.id, linked.name)
                env += links.environment(alias, c.name, ip, linked.doc)
        return hosts, env

    def _random_name(self) -> str:
        from kobako.engine.names import random_name

        taken = {c.name for c in self.containers.values()}
        for attempt in range(100):
            name = random_name(attempt > 5)
            if name not in taken:
                return name
        raise EngineError("could not generate a container name")

    # -- start -------------------------------------------------------------------------

    async def start(self, ref: str, detach_keys: str | None = None) -> None:
        c = self.get(ref)
        async with c.lock:
            Lifecycle.check_startable(c)
            try:
                await self._start(c)
            except Exception:
                c.attach_pending = False
                if c.doc["HostConfig"].get("AutoRemove"):
                    # as Docker: a --rm container that cannot start is removed (the CLI
                    # waits for condition=removed)
                    asyncio.get_running_loop().create_task(
                        self.remove(c.id, force=True, volumes=True, link=False))
                raise

    async def _start(self, c: Container) -> None:
        try:
            log_attrs = self._log_attrs(c.doc)
        except ValueError as err:  # a log tag template naming an unknown field
            raise InvalidParameter(f"failed to initialize logging driver: {err}") from None
        linked = self._links(c)  # before the network: a linked container must run
        netns = await self.networks.on_start(c.doc) if self.networks is not None else None
        try:
            bundle = await asyncio.to_thread(self._write_bundle, c, netns, linked)
        except BaseException as err:
            if self.networks is not None:
                await self.networks.on_stop(c.doc)
            if isinstance(err, ValueError) and not isinstance(err, EngineError):
                raise InvalidParameter(str(err)) from None
            raise
        config = c.doc["Config"]
        params = {
            "id": c.id, "bundle": bundle, "runtime_root": self.runtime_root,
            "socket": self._socket(c), "container_dir": self._dir(c),
            "log_path": self._log_path(c),
            "log_config": c.doc["HostConfig"].get("LogConfig"),
            "log_attrs": log_attrs,
            "tty": bool(config.get("Tty")), "open_stdin": bool(config.get("OpenStdin")),
            "stdin_once": bool(config.get("StdinOnce")), "hold_output": c.attach_pending,
        }
        for stale in (EXIT_FILE, MONITOR_FILE):
            try:
                os.unlink(os.path.join(self._dir(c), stale))
            except FileNotFoundError:
                pass
        cgroup_warmup.start()  # the init's cgroup migration comes a few ms from now
        try:
            reply = await self.monitor.request("container", params)
        except MonitorError as err:
            reply = {"ok": False, "error": str(err)}
        if not reply.get("ok"):
            await asyncio.to_thread(self._unmount, c)
            if self.networks is not None:
                await self.networks.on_stop(c.doc)
            message = reply.get("error", "unknown error")
            c.state.update({"Error": message, "ExitCode": 127 if "not found" in message
                            or "no such file" in message else 128})
            self.store.update(c.doc)
            full = f"failed to create task for container: OCI runtime create failed: {message}"
            if "not found" in message or "no such file" in message or "permission denied" in message:
                raise InvalidParameter(full)
            raise EngineError(full)
        c.state.update({
            "Status": "running", "Running": True, "Paused": False, "Restarting": False,
            "OOMKilled": False, "Dead": False, "Pid": reply["pid"], "ExitCode": 0, "Error": "",
            "StartedAt": reply["started_at"],
        })
        c.exited.clear()
        c.started.set()
        c.attach_pending = False
        c.private.pop("manually_stopped", None)
        c.private["started_monotonic"] = time.monotonic()
        self._start_health(c)
        self.store.update(c.doc)
        self._event(c, "start")
        self._watch(c)

    @staticmethod
    def _log_attrs(doc: dict) -> dict[str, str]:
        """The `attrs` of each log record (the labels, env and tag the log options name;
        `logs --details` shows them), as Docker's json-file driver computes them."""
        from kobako.engine.logs import LogConfig

        config = doc["Config"]
        image = doc.get("Image", "").removeprefix("sha256:")
        return LogConfig.from_host_config(doc["HostConfig"].get("LogConfig")).extra_attributes(
            labels=config.get("Labels") or {}, env=config.get("Env") or [],
            tag_info={"ID": doc["Id"][:12], "FullID": doc["Id"],
                      "Name": doc["Name"].lstrip("/"), "ImageID": image[:12],
                      "ImageFullID": image, "ImageName": config.get("Image", ""),
                      "DaemonName": "docker"})

    def _start_health(self, c: Container) -> None:
        from kobako.engine.health import HealthMonitor, probe_command

        healthcheck = c.doc["Config"].get("Healthcheck")
        if probe_command(healthcheck) is not None:
            c.health = HealthMonitor(self, c, healthcheck)
            c.health.start()

    def _write_bundle(self, c: Container, netns: str | None = None,
                      linked: tuple[str, list[str]] = ("", [])) -> str:
        """config.json for a start; `linked`: the links' /etc/hosts lines and env."""
        from kobako.engine import oci_spec
        from kobako.image.snapshots import MountSpec, mount

        spec = MountSpec(**c.private["rootfs"])
        rootfs = mount(spec)
        try:
            host_config = c.doc["HostConfig"]
            links_hosts, links_env = linked
            extra_mounts = self._etc_files(c, host_config, links_hosts)
            if self.volumes is not None:
                extra_mounts += self.volumes.oci_mounts(c.doc)
            namespaces = self._namespaces(host_config)
            if netns is not None:
                namespaces["network"] = netns
            bundle = os.path.join(self._dir(c), "bundle")
            os.makedirs(bundle, exist_ok=True)
            config = c.doc["Config"]
            if links_env:  # the container's own variables win over the links' (as dockerd)
                config = {**config, "Env": links_env + list(config.get("Env") or [])}
            doc = oci_spec.build_spec(
                container_id=c.id, config=config, host_config=host_config,
                image_config={}, rootfs=rootfs, bundle=bundle, namespaces=namespaces,
                extra_mounts=extra_mounts, init_path=_init_path(host_config),
            )
            oci_spec.write_config(bundle, doc)
            c.spec = doc
            return bundle
        except BaseException:
            self._unmount(c)
            raise

    def _etc_files(self, c: Container, host_config: dict, links_hosts: str = "") -> list[dict]:
        """/etc/hostname, /etc/hosts and /etc/resolv.conf, generated and bind-mounted;
        with --network container:X, X's (and X's host name), as dockerd shares them."""
        mode = str(host_config.get("NetworkMode") or "")
        if mode.startswith("container:"):
            other = self.get(mode.split(":", 1)[1])
            for key in ("Hostname", "Domainname"):
                c.doc["Config"][key] = other.doc["Config"].get(key) or ""
            for name, key in _ETC_FILES.items():
                c.doc[key] = os.path.join(self._dir(other), name)
            return [_etc_mount(name, c.doc[key]) for name, key in _ETC_FILES.items()]
        hostname = c.doc["Config"].get("Hostname") or c.id[:12]
        c.doc["Config"]["Hostname"] = hostname
        host_network = host_config.get("NetworkMode") == "host"
        nets = self.networks
        own = "".join(f"{ip}\t{hostname}\n"
                      for ip in (nets.container_addresses(c.doc) if nets else []))
        files = {
            "hostname": (hostname + "\n") if not host_network else _read("/etc/hostname"),
            "hosts": _read("/etc/hosts") if host_network else (
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
                "ff02::2\tip6-allrouters\n"
                + "".join(f"{ip}\t{name}\n" for name, ip in self._extra_hosts(host_config))
                + links_hosts + own
            ),
            "resolv.conf": _resolv_conf(
                host_config, host_network,
                embedded_dns=bool(nets and nets.uses_embedded_dns(c.doc)),
                host_text=nets.host_resolv_conf() if nets else None),
        }
        mounts = []
        for name, content in files.items():
            path = c.doc[_ETC_FILES[name]] = os.path.join(self._dir(c), name)
            with open(path, "w") as f:
                f.write(content)
            mounts.append(_etc_mount(name, path))
        return mounts

    def _extra_hosts(self, host_config: dict) -> list[tuple[str, str]]:
        """--add-host name:ip pairs; "host-gateway" is the default bridge's gateway (the
        host, as the containers reach it), as dockerd's default host-gateway-ip."""
        out = []
        for entry in host_config.get("ExtraHosts") or []:
            name, sep, ip = str(entry).partition(":")
            if not sep:
                continue
            if ip == "host-gateway":
                if self.networks is None:
                    raise InvalidParameter("unable to derive the IP value for host-gateway")
                ip = str(self.networks.get("bridge").gateway)
            out.append((name, ip))
        return out

    def _namespaces(self, host_config: dict) -> dict[str, str | None]:
        """Namespace type -> None (new) or a path to join; absent: the host's."""
        from kobako.engine import oci_spec

        # container:<id> modes are joined below; default_namespaces leaves them to us
        private = {key: ("" if str(host_config.get(key) or "").startswith("container:")
                         else host_config.get(key))
                   for key in ("PidMode", "IpcMode", "UTSMode", "NetworkMode")}
        namespaces = oci_spec.default_namespaces({**host_config, **private})
        for kind, key, entry in (("pid", "PidMode", "pid"), ("ipc", "IpcMode", "ipc"),
                                 ("uts", "UTSMode", "uts"), ("network", "NetworkMode", "net")):
            mode = host_config.get(key) or ""
            if mode.startswith("container:"):
                other = self.get(mode.split(":", 1)[1])
                if not other.running:
                    raise Conflict(f"cannot join {kind} namespace of a non running container: "
                                   f"container {other.id} is not running")
                namespaces[kind] = f"/proc/{other.state['Pid']}/ns/{entry}"
        return namespaces

    def _unmount(self, c: Container) -> None:
        from kobako.image.snapshots import MountSpec, unmount

        unmount(MountSpec(**c.private["rootfs"]).target)

    # -- watching the monitor ----------------------------------------------------------

    def _watch(self, c: Container) -> None:
        async def watch() -> None:
            path = self._socket(c)
            try:
                exit_doc = await self._watch_monitor(c, path)
            except monitor_link.MonitorGone:
                exit_doc = None
            except (OSError, ValueError) as err:
                # never end without a verdict: the container would stay "running"
                log.warning("watching container %s failed: %s", c.id[:12], err)
                exit_doc = None
            if exit_doc is None:
                exit_doc = self._read_exit_file(c) or await self._lost_monitor(c)
            if exit_doc is not None:
                await self._on_exit(c, exit_doc)

        c.watch_task = asyncio.get_running_loop().create_task(watch())

    async def _watch_monitor(self, c: Container, path: str) -> dict | None:
        """The exit notice from the monitor (None: it went away without one); on the way,
        failures to write the log, which the daemon logs as Docker's does ("Error writing
        log message", once per burst of failures: the monitor reports a burst once)."""
        reader, writer = await monitor_link.connect(path, {"op": "watch", "log_errors": True})
        try:
            while True:
                item = await monitor_link.read_frame(reader)
                if item is None:
                    return None
                stream, data = item
                if stream != monitor_link.CONTROL:
                    continue
                notice = json.loads(data)
                if "log_error" in notice:
                    driver = (c.doc["HostConfig"].get("LogConfig") or {}).get("Type")
                    log.error("Error writing log message: container=%s driver=%s error=%s",
                              c.id, driver, notice["log_error"])
                    continue
                return notice.get("exit")
        finally:
            writer.close()

    async def _lost_monitor(self, c: Container) -> dict | None:
        """The monitor went away without an exit notice: see what is really there."""
        await asyncio.sleep(0.1)
        exit_doc = self._read_exit_file(c)
        if exit_doc:
            return exit_doc
        from kobako.runtime.container import Runtime
        from kobako.runtime.errors import RuntimeFailure

        runtime = Runtime(self.runtime_root)
        try:
            state = runtime.state(c.id)
        except RuntimeFailure:
            state = {"status": "stopped"}
        if state["status"] in ("running", "paused", "created"):
            log.warning("container %s runs on without its monitor (killed?); stopping it", c.id)
            await asyncio.to_thread(runtime.delete, c.id, True)
        else:
            try:
                await asyncio.to_thread(runtime.delete, c.id, True)
            except RuntimeFailure:
                pass
        return {"exit_code": 137, "finished_at": now_rfc3339(), "oom_killed": False,
                "error": "the container's monitor died"}

    def _read_exit_file(self, c: Container) -> dict | None:
        try:
            with open(os.path.join(self._dir(c), EXIT_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    async def _on_exit(self, c: Container, exit_doc: dict) -> None:
        await asyncio.to_thread(self._unmount, c)
        if self.networks is not None:
            await self.networks.on_stop(c.doc)
        if self.volumes is not None:
            await asyncio.to_thread(self.volumes.on_stop, c.doc)
        c.state.update({
            "Status": "exited", "Running": False, "Paused": False, "Restarting": False,
            "Pid": 0, "ExitCode": exit_doc.get("exit_code", 255),
            "FinishedAt": exit_doc.get("finished_at") or now_rfc3339(),
            "OOMKilled": bool(exit_doc.get("oom_killed")),
            "Error": exit_doc.get("error", ""),
        })
        self.store.update(c.doc)
        if c.state["OOMKilled"]:
            self._event(c, "oom")
        if c.health is not None:
            c.health.stop()
            c.health = None
        self._event(c, "die", {"exitCode": str(c.state["ExitCode"])})
        c.started.clear()
        c.exited.set()
        if self._schedule_restart(c):
            return
        if c.doc["HostConfig"].get("AutoRemove"):
            try:
                await self.remove(c.id, force=True, volumes=True, link=False)
            except NotFound:
                pass

    def _schedule_restart(self, c: Container) -> bool:
        policy = RestartPolicy(c.doc["HostConfig"].get("RestartPolicy"))
        if c.id not in self.containers or not policy.should_restart(
                c.state["ExitCode"], c.doc.get("RestartCount", 0),
                bool(c.private.get("manually_stopped"))):
            return False
        ran_for = time.monotonic() - c.private.get("started_monotonic", time.monotonic())
        c.restart_delay = next_delay(c.restart_delay, ran_for)
        c.state.update({"Restarting": True, "Running": True, "Status": "restarting"})
        self.store.update(c.doc)

        async def restart_later() -> None:
            c.restart_waiting = True
            try:
                await asyncio.sleep(c.restart_delay)
            finally:
                c.restart_waiting = False
            async with c.lock:
                if not c.state.get("Restarting"):
                    return  # started meanwhile (docker start, the daemon's start-up)
                c.state.update({"Restarting": False, "Running": False})
                if c.id not in self.containers or c.private.get("manually_stopped"):
                    c.state["Status"] = "exited"
                    self.store.update(c.doc)
                    return
                c.doc["RestartCount"] = c.doc.get("RestartCount", 0) + 1
                try:  # its event is "start" only, as dockerd's
                    await self._start(c)
                except EngineError as err:
                    log.warning("restart of %s failed: %s", c.id, err)
                    c.state["Status"] = "exited"
                    self.store.update(c.doc)
                    return

        c.restart_task = asyncio.get_running_loop().create_task(restart_later())
        return True

    async def _cancel_restart(self, c: Container) -> bool:
        """Stop a pending restart (docker stop/kill/rm of a restarting container). One
        that is starting the container already is let finish: cancelled half-way, the
        monitor would run a container the daemon no longer tracks."""
        c.private["manually_stopped"] = True
        task = c.restart_task
        if task is None or task.done():
            return False
        if not c.restart_waiting:
            await asyncio.wait([task])
            return False
        task.cancel()
        c.state.update({"Restarting": False, "Running": False, "Status": "exited"})
        self.store.update(c.doc)
        return True

    # -- signals and stopping ----------------------------------------------------------

    def _runtime(self):
        from kobako.runtime.container import Runtime

        return Runtime(self.runtime_root)

    async def _signal(self, c: Container, sig: int, all_processes: bool = False) -> None:
        from kobako.linux.cgroups import CgroupError
        from kobako.runtime.errors import RuntimeFailure

        runtime = self._runtime()
        try:
            await asyncio.to_thread(runtime.kill, c.id, sig, all_processes)
        except (RuntimeFailure, CgroupError, OSError) as err:
            # the container may have ended (and its cgroup gone) while we signalled it
            try:
                _, status = await asyncio.to_thread(runtime.status, c.id)
            except RuntimeFailure:
                return
            if status == "stopped":
                return
            raise EngineError(f"cannot kill container {c.id}: {err}") from err

    async def kill(self, ref: str, signal: str | None) -> None:
        sig = parse_signal(signal or "SIGKILL")
        try:
            c = self.get(ref)
        except NotFound as err:  # dockerd words every kill failure so
            raise NotFound(f"Cannot kill container: {ref}: {err}") from None
        if await self._cancel_restart(c):
            return
        try:
            Lifecycle.check_running(c)
        except Conflict as err:
            raise Conflict(f"Cannot kill container: {ref}: {err}") from None
        await self._signal(c, sig, all_processes=sig == signal_module.SIGKILL)
        self._event(c, "kill", {"signal": str(sig)})
        stop_signal = c.doc["Config"].get("StopSignal")
        if c.state.get("Paused") and sig != signal_module.SIGKILL and (
                not stop_signal or parse_signal(stop_signal) == sig):
            await self.unpause(c.id)  # as dockerd: the signal that stops it is acted on
        if sig == signal_module.SIGKILL:
            # as dockerd: a kill is done once the container is (clients inspect or
            # remove it right after)
            await _wait_event(c.exited, KILL_WAIT)

    async def stop(self, ref: str, timeout: int | None, signal: str | None) -> None:
        c = self.get(ref)
        if await self._cancel_restart(c) or not c.running:
            if c.running:
                await self._stop(c, timeout, signal)
                return
            raise NotModified("container already stopped")
        await self._stop(c, timeout, signal)

    async def _stop(self, c: Container, timeout: int | None, signal: str | None) -> None:
        config = c.doc["Config"]
        sig = parse_signal(signal or config.get("StopSignal") or "SIGTERM")
        if timeout is None:
            timeout = config.get("StopTimeout")
        if timeout is None:
            timeout = 10
        if c.state.get("Paused"):
            await self.unpause(c.id)
        await self._signal(c, sig)
        self._event(c, "kill", {"signal": str(sig)})
        if timeout < 0 or not await _wait_event(c.exited, timeout):
            if timeout >= 0:
                await self._signal(c, signal_module.SIGKILL, all_processes=True)
                self._event(c, "kill", {"signal": str(int(signal_module.SIGKILL))})
            if not await _wait_event(c.exited, 30):
                raise EngineError(f"container {c.id} did not stop after SIGKILL")
        self._event(c, "stop")

    async def restart(self, ref: str, timeout: int | None, signal: str | None) -> None:
        c = self.get(ref)
        await self._cancel_restart(c)  # also keeps the exit below from triggering the policy
        async with c.lock:
            if c.running:
                await self._stop(c, timeout, signal)
            await self._start(c)
        self._event(c, "restart")

    async def pause(self, ref: str) -> None:
        c = self.get(ref)
        Lifecycle.check_running(c)
        if c.state.get("Paused"):
            raise Conflict(f"Container {c.id} is already paused")
        await asyncio.to_thread(self._runtime().pause, c.id)
        c.state.update({"Paused": True, "Status": "paused"})
        self.store.update(c.doc)
        self._event(c, "pause")

    async def unpause(self, ref: str) -> None:
        c = self.get(ref)
        if not c.state.get("Paused"):
            raise Conflict(f"Container {c.id} is not paused")
        await asyncio.to_thread(self._runtime().resume, c.id)
        c.state.update({"Paused": False, "Status": "running"})
        self.store.update(c.doc)
        self._event(c, "unpause")

    # -- remove ------------------------------------------------------------------------

    async def remove(self, ref: str, force: bool, volumes: bool, link: bool) -> None:
        if link:
            self._remove_link(ref)
            return
        c = self.get(ref)
        Lifecycle.check_removable(c, force)
        await self._cancel_restart(c)
        if c.running:
            if c.state.get("Paused"):
                await asyncio.to_thread(self._runtime().kill, c.id, signal_module.SIGKILL, True)
            await self._signal(c, signal_module.SIGKILL, all_processes=True)
            if not await _wait_event(c.exited, 30):
                raise EngineError(f"container {c.id} did not stop after SIGKILL")
        if c.id not in self.containers or c.state["Status"] == "removing" and not \
                c.private.get("resume_removal"):
            return  # being removed already (AutoRemove, a concurrent rm)
        # recorded first, so a daemon killed half-way finishes the removal at its next start
        c.state.update({"Status": "removing", "Dead": True})
        c.private.pop("resume_removal", None)
        self.store.update(c.doc)
        if self.networks is not None:
            await self.networks.on_remove(c.doc)
        if self.volumes is not None:
            await self.volumes.on_remove(c.doc, volumes)
        await asyncio.to_thread(self._remove_files, c)
        self.store.delete(c.id)
        self.containers.pop(c.id, None)
        self._event(c, "destroy")
        c.removed.set()

    def _remove_files(self, c: Container) -> None:
        import shutil

        self._unmount(c)
        self.images.release(c.id)
        shutil.rmtree(self._dir(c), ignore_errors=True)

    # -- waiting -----------------------------------------------------------------------

    async def wait(self, ref: str, condition: str):
        c = self.get(ref)
        condition = condition or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidParameter(f"invalid condition: \"{condition}\"")

        async def result() -> dict:
            if condition == "removed":
                await c.removed.wait()
            elif condition == "next-exit" or c.running:
                if c.exited.is_set():
                    await c.started.wait()
                await c.exited.wait()
            # as dockerd: a removal clears the error (`run --rm` of a command that cannot
            # start reports only the start's error)
            error = None if condition == "removed" else c.state.get("Error") or None
            return {"StatusCode": c.state.get("ExitCode", 0),
                    "Error": {"Message": error} if error else None}

        return result()

    # -- inspection --------------------------------------------------------------------

    async def inspect(self, ref: str, size: bool) -> dict:
        c = self.get(ref)
        doc = {k: v for k, v in c.doc.items() if k != "Kobako"}
        doc["ExecIDs"] = self.execs.ids_of(c.id) or None
        doc = json.loads(json.dumps(doc))
        if size:
            await self._measure([(c, doc)])
        return doc

    async def list(self, all: bool, limit: int | None, size: bool,
                   filters: Mapping[str, list[str]]) -> list[dict]:
        containers = sorted(self.containers.values(), key=lambda c: c.doc["Created"],
                            reverse=True)
        filters = {key: values for key, values in (filters or {}).items() if values}
        match = self._matcher(filters)
        # as dockerd: a limit (ps -n, -l) or a status filter lists every state
        if not all and not (limit and limit > 0) and not any(
                k in filters for k in ("status", "exited")):
            containers = [c for c in containers if c.state.get("Running")]  # and restarting
        result = [c for c in containers if match(c)]
        if limit is not None and limit > 0:
            result = result[:limit]
        summaries = [(c, self._summary(c)) for c in result]
        if size:
            await self._measure(summaries)
        return [doc for _, doc in summaries]

    async def _measure(self, pairs: list[tuple[Container, dict]]) -> None:
        """Docker's SizeRw and SizeRootFs (?size=1): each writable layer walked, in a thread."""
        from kobako.engine.disk_usage import container_sizes

        def measure() -> None:
            image_sizes: dict[str, int] = {}
            for c, doc in pairs:
                image = c.doc["Image"]
                if image not in image_sizes:
                    try:
                        image_sizes[image] = int(self.images.inspect(image).get("Size") or 0)
                    except Exception:  # noqa: BLE001 - an image removed since: its layers
                        image_sizes[image] = 0  # are not counted, as dockerd does
                doc["SizeRw"], doc["SizeRootFs"] = container_sizes(c, image_sizes[image])

        await asyncio.to_thread(measure)

    def _matcher(self, filters: Mapping[str, list[str]]) -> Callable[[Container], bool]:
        """`docker ps --filter`, checked as dockerd checks it (daemon/list.go)."""
        check_filters(filters, _LIST_FILTERS)
        for key, valid in (("status", _STATES), ("health", _HEALTH),
                           ("is-task", ("true", "false"))):
            if any(value not in valid for value in filters.get(key, [])):
                raise InvalidParameter(f"invalid filter '{key}={','.join(filters[key])}'")
        for value in filters.get("exited", []):
            if not re.fullmatch(r"[+-]?\d+", value):
                raise InvalidParameter(f'strconv.Atoi: parsing "{value}": invalid syntax')
        publish = port_keys("publish", filters.get("publish", []))
        expose = port_keys("expose", filters.get("expose", []))
        before = self.get(filters["before"][0]).doc["Created"] if "before" in filters else None
        since = self.get(filters["since"][0]).doc["Created"] if "since" in filters else None
        exited = {int(value) for value in filters.get("exited", [])}

        def match(c: Container) -> bool:
            config, hc = c.doc["Config"], c.doc["HostConfig"]
            labels = config.get("Labels") or {}
            health = (c.state.get("Health") or {}).get("Status") or "none"
            mounts = c.doc.get("Mounts") or []
            networks = (c.doc.get("NetworkSettings") or {}).get("Networks") or {}
            checks = {
                "status": lambda v: c.state["Status"] == v,
                "health": lambda v: health == v,
                "id": lambda v: c.id.startswith(v),
                "name": lambda v: _regex_matches(v.lstrip("/"), c.name),
                "ancestor": lambda v: self._ancestor(c, v),
                "volume": lambda v: any(v in (m.get("Name"), m.get("Source"),
                                              m.get("Destination")) for m in mounts),
                "network": lambda v: v in networks or any(
                    (n or {}).get("NetworkID", "").startswith(v) for n in networks.values()),
                "is-task": lambda v: ("com.docker.swarm.task" in labels) == (v == "true"),
            }
            if not all(any(map(checks[key], filters[key])) for key in checks if key in filters):
                return False
            if not labels_match(labels, filters):
                return False
            if exited and (c.running or c.state["Status"] != "exited"
                           or c.state["ExitCode"] not in exited):
                return False
            if publish and not publish & set(hc.get("PortBindings") or {}):
                return False
            if expose and not expose & set(config.get("ExposedPorts") or {}):
                return False
            return ((before is None or c.doc["Created"] < before)
                    and (since is None or c.doc["Created"] > since))

        return match

    def _ancestor(self, c: Container, ref: str) -> bool:
        if c.doc["Config"].get("Image") == ref or c.doc["Image"].startswith(ref):
            return True
        try:
            return self.images.resolve(ref) == c.doc["Image"]
        except Exception:  # noqa: BLE001 - an unknown image is simply no match
            return False

    def _image_name(self, c: Container) -> str:
        """As dockerd: the name the container was made from while that still names its
        image, else the image's ID (it was deleted, or the name moved to another)."""
        name = c.doc["Config"].get("Image", "")
        if name == c.doc["Image"]:
            return name
        try:
            named = self.images.resolve(name)
        except ImageError:  # a name that resolves no more
            named = None
        return name if named == c.doc["Image"] else c.doc["Image"]

    def _summary(self, c: Container) -> dict:
        # dockerd quotes the arguments that hold a space, and only those
        command = " ".join([c.doc["Path"], *(f"'{arg}'" if " " in arg else arg
                                             for arg in c.doc["Args"])])
        return {
            "Id": c.id,
            "Names": ["/" + c.name],
            "Image": self._image_name(c),
            "ImageID": c.doc["Image"],
            "Command": command,
            "Created": int(parse_time(c.doc["Created"])),
            "Ports": summary_ports(c.doc),
            "Labels": c.doc["Config"].get("Labels") or {},
            "State": c.state["Status"],
            "Status": human_status(c.state),
            "HostConfig": {"NetworkMode": c.doc["HostConfig"].get("NetworkMode", "default")},
            "NetworkSettings": {"Networks": c.doc["NetworkSettings"].get("Networks", {})},
            "Mounts": c.doc.get("Mounts") or [],
        }

    def image_users(self, image_id: str) -> list[tuple[str, bool]]:
        """(id, running) of the containers made from the image."""
        return [(c.id, bool(c.state.get("Running"))) for c in self.containers.values()
                if c.doc["Image"] == image_id]

    async def counts(self) -> dict[str, int]:
        counts = {"running": 0, "paused": 0, "stopped": 0}
        for c in self.containers.values():
            if c.state.get("Paused"):
                counts["paused"] += 1
            elif c.state.get("Running"):  # restarting ones too, as dockerd counts them
                counts["running"] += 1
            else:
                counts["stopped"] += 1
        return counts

    async def rename(self, ref: str, new_name: str) -> None:
        c = self.get(ref)
        new_name = (new_name or "").lstrip("/")
        if not new_name:
            raise InvalidParameter("Neither old nor new names may be empty")
        if new_name == c.name:
            raise InvalidParameter("Renaming a container with the same name as its current name")
        if not _NAME.match(new_name):
            raise InvalidParameter(f"Error when allocating new name: Invalid container name "
                                   f"(/{new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        for other in self.containers.values():
            if other.name == new_name and other is not c:
                raise Conflict(f'Error when allocating new name: Conflict. The container name '
                               f'"/{new_name}" is already in use by container "{other.id}". You '
                               "have to remove (or rename) that container to be able to reuse "
                               "that name.")
        old = c.name
        c.doc["Name"] = "/" + new_name
        self.store.update(c.doc)
        self._event(c, "rename", {"oldName": "/" + old})

    async def prune(self, filters: Mapping[str, list[str]]) -> dict:
        from kobako.engine.disk_usage import directory_size
        from kobako.engine.events import parse_timestamp

        filters = filters or {}
        check_filters(filters, ("until", "label", "label!"))
        limit = parse_timestamp((filters.get("until") or [None])[0])
        deleted, reclaimed = [], 0
        for c in list(self.containers.values()):
            if c.state.get("Running"):  # restarting ones too, as dockerd
                continue
            if not labels_match(c.doc["Config"].get("Labels") or {}, filters):
                continue
            if limit is not None and parse_time(c.doc["Created"]) > limit:
                continue
            upper = (c.private.get("rootfs") or {}).get("upper")
            size = await asyncio.to_thread(directory_size, upper) if upper else 0
            try:
                await self.remove(c.id, force=False, volumes=False, link=False)
            except (Conflict, NotFound):
                continue  # started or removed meanwhile
            deleted.append(c.id)
            reclaimed += size  # the writable layer's bytes (vfs copies count as none)
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    async def top(self, ref: str, ps_args: str | None) -> dict:
        c = self.get(ref)
        Lifecycle.check_running(c)
        return await asyncio.to_thread(self._top, c, ps_args or "-ef")

    def _top(self, c: Container, ps_args: str) -> dict:
        import shlex
        import subprocess

        pids = set(self._runtime().pids(c.id))
        out = subprocess.run(["ps", *shlex.split(ps_args)], capture_output=True, text=True)
        if out.returncode != 0:
            raise InvalidParameter(f"ps: {out.stderr.strip()}")
        lines = out.stdout.splitlines()
        titles = lines[0].split()
        if "PID" not in titles:
            raise InvalidParameter("Couldn't find PID field in ps output")
        column = titles.index("PID")
        processes = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > column and fields[column].isdigit() and int(fields[column]) in pids:
                processes.append(fields)
        return {"Titles": titles, "Processes": processes}

    # -- streams -----------------------------------------------------------------------

    async def logs(self, ref: str, *, follow: bool, stdout: bool, stderr: bool,
                   since: float | None, until: float | None, timestamps: bool, tail: str,
                   details: bool = False):
        from kobako.engine.logs import read_logs

        c = self.get(ref)
        log_type = (c.doc["HostConfig"].get("LogConfig") or {}).get("Type") or "json-file"
        if log_type == "none":
            raise InvalidParameter(
                'configured logging driver does not support reading')
        try:  # as dockerd: what is no count ("all", "abc", -1) means every line
            tail_n: int | None = int(tail)
        except (TypeError, ValueError):
            tail_n = None
        if tail_n is not None and tail_n < 0:
            tail_n = None
        chunks = read_logs(self._log_path(c), follow=follow, since=since, until=until,
                           tail=tail_n, timestamps=timestamps, details=details,
                           stdout=stdout, stderr=stderr, running=lambda: c.running)
        return bool(c.doc["Config"].get("Tty")), chunks

    async def attach(self, ref: str, *, stream: bool, logs: bool, stdin: bool, stdout: bool,
                     stderr: bool, detach_keys: str | None):
        from kobako.api.services import StreamIO

        c = self.get(ref)
        tty = bool(c.doc["Config"].get("Tty"))
        if stream and not c.running:
            if c.state["Status"] not in ("created", "exited"):
                raise Conflict(f"Container {c.id} is not running")
            c.attach_pending = True
        holder: dict[str, monitor_link.Attachment] = {}

        async def connect() -> monitor_link.Attachment | None:
            if "a" not in holder:
                if not c.running and not await _first_set(c.started, c.removed):
                    return None  # removed without ever starting
                try:
                    holder["a"] = await monitor_link.attach(self._socket(c), stdin, stdout,
                                                            stderr)
                except monitor_link.MonitorGone:
                    return None  # it ended before we got there
            return holder["a"]

        async def output():
            if logs:  # what it wrote so far first, as dockerd replays its log
                log_type = (c.doc["HostConfig"].get("LogConfig") or {}).get("Type")
                if log_type != "none":
                    _, chunks = await self.logs(c.id, follow=False, stdout=stdout,
                                                stderr=stderr, since=None, until=None,
                                                timestamps=False, tail="all")
                    async for item in chunks:
                        yield item
            if not stream:
                return
            attachment = await connect()
            if attachment is not None:
                async for item in attachment.output():
                    yield item

        async def write_stdin(data: bytes) -> None:
            attachment = await connect()
            if attachment is not None:
                await attachment.write_stdin(data)

        async def close_stdin() -> None:
            attachment = await connect()
            if attachment is not None:
                await attachment.close_stdin()

        async def detach() -> None:
            if "a" in holder:
                holder["a"].close()

        return StreamIO(output=output(), write_stdin=write_stdin if stdin else None,
                        close_stdin=close_stdin if stdin else None, detach=detach, tty=tty)

    async def resize(self, ref: str, height: int, width: int) -> None:
        c = self.get(ref)
        Lifecycle.check_running(c)
        await monitor_link.resize(self._socket(c), height, width)

    async def stats(self, ref: str, stream: bool, one_shot: bool = False):
        from kobako.engine.stats import container_stats

        return container_stats(self.get(ref), self.runtime_root, stream=stream,
                               one_shot=one_shot)

    # -- exec --------------------------------------------------------------------------

    async def exec_create(self, ref: str, config: dict) -> dict:
        return await self.execs.create(self.get(ref), config, ref)

    async def exec_start(self, exec_id: str, *, detach: bool, tty: bool,
                         detach_keys: str | None):
        return await self.execs.start(exec_id, detach=detach)

    async def exec_inspect(self, exec_id: str) -> dict:
        return self.execs.inspect(exec_id)

    async def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        await self.execs.resize(exec_id, height, width)

    # -- events ------------------------------------------------------------------------

    def _event(self, c: Container, action: str, extra: dict | None = None) -> None:
        attrs = dict(c.doc["Config"].get("Labels") or {})
        attrs.update({"image": c.doc["Config"].get("Image", ""), "name": c.name})
        attrs.update(extra or {})
        self.events.publish("container", action, c.id, attrs)


# -- helpers ---------------------------------------------------------------------------

def _regex_matches(pattern: str, text: str) -> bool:
    """dockerd's filter match: a pattern that is no regular expression matches nothing."""
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


_LIST_FILTERS = ("ancestor", "before", "exited", "id", "label", "name", "status", "health",
                 "since", "volume", "network", "is-task", "publish", "expose")
_STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
_HEALTH = ("starting", "healthy", "unhealthy", "none")


def parse_signal(value: str | int) -> int:
    from kobako.linux.signals import docker_signal

    try:
        return docker_signal(value)
    except ValueError as err:
        raise InvalidParameter(str(err)) from None


async def _first_set(wanted: asyncio.Event, other: asyncio.Event) -> bool:
    """Wait until either event is set; whether `wanted` is."""
    tasks = [asyncio.ensure_future(wanted.wait()), asyncio.ensure_future(other.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return wanted.is_set()


async def _wait_event(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _resolv_conf(host_config: dict, host_network: bool, embedded_dns: bool = False,
                 host_text: str | None = None) -> str:
    text = _read("/etc/resolv.conf") if host_text is None else host_text
    if embedded_dns:
        # user-defined networks: the embedded DNS server (it forwards to --dns or the host's)
        host_search = [line.split()[1:] for line in text.splitlines()
                       if line.startswith("search")]
        search = host_config.get("DnsSearch") or (host_search[-1] if host_search else [])
        lines = ["nameserver 127.0.0.11"]
        if search:
            lines.append("search " + " ".join(search))
        options = list(host_config.get("DnsOptions") or [])
        if not any(o.startswith("ndots:") for o in options):  # the user's wins (as dockerd)
            options.append("ndots:0")
        lines.append("options " + " ".join(options))
        return "\n".join(lines) + "\n"
    if host_config.get("Dns") or host_config.get("DnsSearch") or host_config.get("DnsOptions"):
        lines = [f"nameserver {ns}" for ns in host_config.get("Dns") or []]
        if host_config.get("DnsSearch"):
            lines.append("search " + " ".join(host_config["DnsSearch"]))
        if host_config.get("DnsOptions"):
            lines.append("options " + " ".join(host_config["DnsOptions"]))
        return "\n".join(lines) + "\n"
    if host_network:
        return text
    # a loopback resolver of the host is unreachable from the container's own network
    return "".join(line + "\n" for line in text.splitlines()
                   if not re.match(r"\s*nameserver\s+(127\.|::1)", line))


def _graph_driver_data(spec) -> dict:
    """GraphDriver.Data as dockerd's overlay2 shows it: where the layers of the rootfs are
    (the init layer first among the lower ones)."""
    data = {"MergedDir": spec.target, "UpperDir": spec.upper or ""}
    if spec.type == "overlay":
        data["LowerDir"] = ":".join(spec.lower)
        data["WorkDir"] = os.path.join(os.path.dirname(spec.upper or ""), "work")
    return data


# the generated /etc files and where inspect names them
_ETC_FILES = {"hostname": "HostnamePath", "hosts": "HostsPath", "resolv.conf": "ResolvConfPath"}


def _etc_mount(name: str, source: str) -> dict:
    return {"destination": f"/etc/{name}", "type": "bind", "source": source,
            "options": ["rbind", "rprivate"]}


def _init_path(host_config: dict) -> str | None:
    if not host_config.get("Init"):
        return None
    import shutil

    path = shutil.which("tini-static") or shutil.which("docker-init") or shutil.which("tini")
    if not path:
        raise InvalidParameter("--init needs tini (Debian package tini) on the host")
    return path
