"""Exec instances: a process started in a running container's namespaces and cgroup.

Each exec start asks the monitor process (monitor.py) to start it: the monitor calls
the runtime's spawn_exec and relays the process's IO over the exec's own socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets

from kobako.engine import monitor_link
from kobako.engine.errors import Conflict, InvalidParameter, NotFound
from kobako.engine.monitor_process import MonitorError


class ExecInstance:
    def __init__(self, exec_id: str, container, config: dict):
        self.id = exec_id
        self.container = container
        self.config = config
        self.running = False
        self.exit_code: int | None = None
        self.pid = 0
        self.socket = ""
        self.done = asyncio.Event()

    def inspect(self) -> dict:
        cmd = self.config.get("Cmd") or []
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": bool(self.config.get("Tty")),
                "entrypoint": cmd[0] if cmd else "",
                "arguments": cmd[1:],
                "privileged": bool(self.config.get("Privileged")),
                **({"user": self.config["User"]} if self.config.get("User") else {}),
            },
            "OpenStdin": bool(self.config.get("AttachStdin")),
            "OpenStderr": bool(self.config.get("AttachStderr")),
            "OpenStdout": bool(self.config.get("AttachStdout")),
            "CanRemove": False,
            "ContainerID": self.container.id,
            "DetachKeys": self.config.get("DetachKeys") or "",
            "Pid": self.pid,
        }


class ExecService:
    def __init__(self, containers):
        self.containers = containers
        self.instances: dict[str, ExecInstance] = {}

    def ids_of(self, container_id: str) -> list[str]:
        """A container's ExecIDs: those that have not ended (dockerd forgets them then)."""
        return [e.id for e in self.instances.values()
                if e.container.id == container_id and e.exit_code is None]

    def get(self, exec_id: str) -> ExecInstance:
        instance = self.instances.get(exec_id)
        if instance is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return instance

    async def create(self, container, config: dict, ref: str | None = None) -> dict:
        """An exec in `container` (`ref`: how the client named it, for dockerd's words)."""
        if not container.running:
            raise Conflict(f"Container {container.id} is not running")
        if container.state.get("Paused"):
            raise Conflict(f"Container {ref or container.id} is paused, unpause the container "
                           "before exec")
        cmd = config.get("Cmd")
        if not cmd or not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
            raise InvalidParameter("No exec command specified")
        exec_id = secrets.token_hex(32)
        self.instances[exec_id] = ExecInstance(exec_id, container, dict(config))
        self.containers._event(container, f"exec_create: {' '.join(cmd)}", {"execID": exec_id})
        return {"Id": exec_id}

    def forget(self, exec_id: str) -> None:
        """Drop a finished instance (health probes are not kept, as in Docker)."""
        self.instances.pop(exec_id, None)

    def inspect(self, exec_id: str) -> dict:
        return self.get(exec_id).inspect()

    async def start(self, exec_id: str, *, detach: bool):
        from kobako.api.services import StreamIO

        instance = self.get(exec_id)
        if instance.running or instance.exit_code is not None:
            raise Conflict(f"Exec command {exec_id} has already run")
        container = instance.container
        if not container.running:
            raise Conflict(f"Container {container.id} is not running")
        try:
            process = await asyncio.to_thread(self._process, instance)
        except Exception:
            instance.exit_code = 126  # an unknown user, say: a start failure too
            raise
        instance.socket = os.path.join(self.containers.sockets, "x" + exec_id[:16] + ".sock")
        config = instance.config
        attach_stdin = bool(config.get("AttachStdin")) and not detach
        try:
            reply = await self.containers.monitor.request("exec", {
                "id": container.id, "runtime_root": self.containers.runtime_root,
                "socket": instance.socket, "process": process, "open_stdin": attach_stdin,
                "hold_output": not detach,
            })
        except MonitorError as err:
            reply = {"ok": False, "error": str(err)}
        if not reply.get("ok"):
            message = reply.get("error", "exec failed")
            instance.exit_code = 126  # any start failure, as dockerd's exec start sets
            raise InvalidParameter(f"OCI runtime exec failed: {message}")
        instance.running = True
        instance.pid = reply["pid"]
        self.containers._event(container, f"exec_start: {' '.join(config['Cmd'])}",
                               {"execID": exec_id})
        if detach:
            asyncio.get_running_loop().create_task(self._watch(instance))
            return None
        attachment = await monitor_link.attach(
            instance.socket, attach_stdin, bool(config.get("AttachStdout", True)),
            bool(config.get("AttachStderr", True)))

        async def output():
            try:
                async for item in attachment.output():
                    yield item
            finally:
                self._finished(instance, attachment.exit)

        return StreamIO(
            output=output(),
            write_stdin=attachment.write_stdin if attach_stdin else None,
            close_stdin=attachment.close_stdin if attach_stdin else None,
            detach=self._detacher(instance, attachment),
            tty=bool(process.get("terminal")),
        )

    def _detacher(self, instance: ExecInstance, attachment: monitor_link.Attachment):
        async def detach() -> None:
            attachment.close()
            if instance.running:
                asyncio.get_running_loop().create_task(self._watch(instance))
        return detach

    async def _watch(self, instance: ExecInstance) -> None:
        try:
            exit_doc = await monitor_link.watch(instance.socket)
        except monitor_link.MonitorGone:
            exit_doc = None
        self._finished(instance, exit_doc)

    def _finished(self, instance: ExecInstance, exit_doc: dict | None) -> None:
        if exit_doc is None and instance.exit_code is None and instance.running:
            return  # detached from a process that still runs; a watcher takes over
        instance.running = False
        if exit_doc is not None:
            instance.exit_code = exit_doc.get("exit_code")
            self.containers._event(instance.container, "exec_die",
                                   {"execID": instance.id,
                                    "exitCode": str(instance.exit_code)})
        instance.done.set()

    async def resize(self, exec_id: str, height: int, width: int) -> None:
        instance = self.get(exec_id)
        if not instance.running:
            raise Conflict(f"Exec {exec_id} is not running")
        await monitor_link.resize(instance.socket, height, width)

    def _process(self, instance: ExecInstance) -> dict:
        """The OCI process for the exec, from the container's own (caps, rlimits, ...)."""
        from kobako.engine import oci_spec

        c = instance.container
        if c.spec is None:  # started by an earlier daemon: read once
            with open(os.path.join(self.containers._dir(c), "bundle", "config.json")) as f:
                c.spec = json.load(f)
        spec = c.spec
        return oci_spec.exec_process(container_spec=spec, exec_config=instance.config,
                                     container_config=c.doc["Config"],
                                     host_config=c.doc["HostConfig"],
                                     rootfs=spec["root"]["path"])
