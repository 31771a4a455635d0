"""Container lifecycle: create, start, kill, delete, pause, resume, update, exec.

This is the runtime as a library; `kobako.runtime.cli` is its runc-compatible
command line and the engine calls these functions directly.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import time

from kobako.linux.files import write_atomic

from . import hooks
from .errors import BadState, ConfigError, ContainerExists, ContainerNotRunning, RuntimeFailure
from .init import ChildFailed, InitContext, recv, run_child, send, stage1
from .namespaces import NAMESPACES, NamespacePlan, write_id_maps
from .state import (
    CREATED,
    CREATING,
    PAUSED,
    RUNNING,
    STOPPED,
    ContainerState,
    StateDir,
    oci_state,
    process_start_time,
    status_of,
    validate_id,
)


def load_config(bundle: str) -> dict:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config.json not found in bundle {bundle}") from None
    except ValueError as err:
        raise ConfigError(f"invalid config.json: {err}") from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    if not isinstance(config, dict):
        raise ConfigError("invalid config.json: the top level must be an object")
    from .spec import SpecError, validate

    try:
        validate(config)
    except SpecError as err:
        raise ConfigError(str(err)) from None
    return config


class Runtime:
    """Containers under one state root (runc's --root)."""

    def __init__(self, root: str, systemd_cgroup: bool = False, log=None,
                 reap_children=None):
        self.root = root
        self.systemd_cgroup = systemd_cgroup
        self.seccomp_cache = os.path.join(root, ".seccomp")  # compiled filters
        self.log = log
        # reaps our exited children while delete waits for a container's processes to
        # go; a caller with children of its own to wait for (the engine's monitor)
        # passes its reaper, which hands their statuses on rather than losing them
        self.reap_children = reap_children or (lambda: _reap(-1, block=False))

    def dir(self, container_id: str) -> StateDir:
        validate_id(container_id)
        return StateDir(self.root, container_id)

    def load(self, container_id: str) -> tuple[ContainerState, StateDir]:
        state_dir = self.dir(container_id)
        return state_dir.load(), state_dir

    def status(self, container_id: str) -> tuple[ContainerState, str]:
        state, state_dir = self.load(container_id)
        return state, status_of(state, state_dir)

    def state(self, container_id: str) -> dict:
        state, status = self.status(container_id)
        return oci_state(state, status)

    # -- create ------------------------------------------------------------------------

    def create(self, container_id: str, bundle: str, *, pid_file: str | None = None,
               console_socket: str | None = None, console: socket.socket | None = None,
               no_pivot: bool = False, no_new_keyring: bool = False,
               preserve_fds: int = 0, stdio: tuple[int, int, int] | None = None,
               config: dict | None = None) -> ContainerState:
        """`config`: the bundle's config.json when the caller has loaded it already."""
        bundle = os.path.abspath(bundle)
        state_dir = self.dir(container_id)
        if config is None:
            config = load_config(bundle)
        linux = config.get("linux") or {}
        root_path = (config.get("root") or {}).get("path") or "rootfs"
        rootfs = os.path.realpath(os.path.join(bundle, root_path))
        if not os.path.isdir(rootfs):
            raise ConfigError(f"rootfs ({rootfs}) does not exist")
        plan = NamespacePlan(linux)
        if linux.get("seccomp"):
            from kobako.linux import seccomp

            seccomp.validate(linux["seccomp"])
        terminal = bool((config.get("process") or {}).get("terminal"))
        if terminal and console is None and not console_socket:
            raise ConfigError(
                "cannot allocate tty if runtime will detach without setting console socket"
            )
        if console_socket and not terminal:
            raise ConfigError("--console-socket given but process.terminal is false")

        os.makedirs(self.root, 0o700, exist_ok=True)
        try:
            os.mkdir(state_dir.path, 0o711)
        except FileExistsError:
            raise ContainerExists(container_id) from None
        state = ContainerState(id=container_id, bundle=bundle, rootfs=rootfs, config=config)
        mgr = None
        try:
            from kobako.linux import cgroups

            mgr = cgroups.open_manager(linux.get("cgroupsPath"), container_id,
                                       self.systemd_cgroup)
            state.cgroup_paths = mgr.paths
            # saved as "creating" first: if we are killed from here on (containerd does that
            # on a timeout), `delete --force` still finds what to remove
            state_dir.save(state)
            mgr.create()
            mgr.apply(_with_default_device_rules(linux))
            os.mkfifo(state_dir.fifo, 0o622)
            # the init opens it for writing as the container's root (runc chowns it too)
            os.chmod(state_dir.fifo, 0o622)
            os.chown(state_dir.fifo, *_host_root_ids(linux, plan))
            if terminal and console is None:
                from .console import connect_console_socket

                console = connect_console_socket(console_socket)
            self._spawn_init(state, state_dir, plan, mgr, console, no_pivot, no_new_keyring,
                             preserve_fds, stdio)
            if pid_file:
                write_atomic(os.path.abspath(pid_file), str(state.pid))
        except BaseException:
            self._destroy(state, state_dir, mgr)
            raise
        finally:
            if console is not None:
                console.close()
        return state

    def _spawn_init(self, state: ContainerState, state_dir: StateDir, plan: NamespacePlan,
                    mgr, console, no_pivot: bool, no_new_keyring: bool,
                    preserve_fds: int, stdio: tuple[int, int, int] | None) -> None:
        from .process import preload, sealed_stub

        config = state.config
        seccomp_filter = preload(config.get("process") or {},
                                 (config.get("linux") or {}).get("seccomp"), self.seccomp_cache)
        if hooks.has_hooks(config, "startContainer"):
            import subprocess  # noqa: F401 - the init runs these hooks after pivot_root
        stub_fd = sealed_stub()
        fifo_fd = os.open(state_dir.fifo, os.O_PATH | os.O_CLOEXEC)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ctx = InitContext(
            config=config, rootfs=state.rootfs, bundle=state.bundle, plan=plan, sock=child,
            fifo_fd=fifo_fd, stub_fd=stub_fd, cgroup_paths=mgr.paths, console=console,
            no_pivot=no_pivot, no_new_keyring=no_new_keyring, preserve_fds=preserve_fds,
            container_id=state.id, stdio=stdio, seccomp_filter=seccomp_filter,
        )
        try:
            pid = os.fork()
            if pid == 0:
                parent.close()
                run_child(stage1, child, ctx)
            child.close()
            try:
                mgr.add(pid)
                send(parent, "go")
                msg = recv(parent)
                if msg["type"] == "userns":
                    write_id_maps(pid, config.get("linux") or {})
                    send(parent, "mapped")
                    msg = recv(parent)
                if msg["type"] != "child":
                    raise ChildFailed(f"sync: unexpected message {msg['type']!r}")
                state.pid = msg["pid"]
            except BaseException:
                parent.close()  # stage 1 may wait for "go": the hang-up ends it, and so the reap
                raise
            finally:
                _reap(pid)
            state.pid_start = process_start_time(state.pid) or 0
            state.namespaces = {
                kind: f"/proc/{state.pid}/ns/{NAMESPACES[kind][1]}"
                for kind in plan.new + list(plan.join)
            }
            send(parent, "state", state=oci_state(state, CREATING))
            while True:
                msg = recv(parent)
                if msg["type"] == "hooks":
                    doc = oci_state(state, CREATING)
                    hooks.run_hooks(config, "prestart", doc)
                    hooks.run_hooks(config, "createRuntime", doc)
                    send(parent, "hooks-done")
                elif msg["type"] == "ready":
                    break
                else:
                    raise ChildFailed(f"sync: unexpected message {msg['type']!r}")
            state_dir.save(state)
        finally:
            parent.close()
            os.close(fifo_fd)
            os.close(stub_fd)

    # -- start -------------------------------------------------------------------------

    def start(self, container_id: str) -> None:
        state, state_dir = self.load(container_id)
        status = status_of(state, state_dir)
        if status == STOPPED:
            raise BadState("cannot start a container that has stopped")
        if status != CREATED:
            raise BadState(f"cannot start an already {status} container")
        fd = os.open(state_dir.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not _await_fifo(fd, state):
                raise BadState("cannot start a container that has stopped")
        finally:
            os.close(fd)
        os.unlink(state_dir.fifo)
        try:
            hooks.run_hooks(state.config, "poststart", oci_state(state, RUNNING))
        except RuntimeFailure as err:
            if self.log:
                self.log.warning(str(err))

    # -- signals -----------------------------------------------------------------------

    def kill(self, container_id: str, sig: int, all_processes: bool = False) -> None:
        state, status = self.status(container_id)
        if status == STOPPED:
            raise ContainerNotRunning()
        if all_processes and state.cgroup_paths:
            from kobako.linux import cgroups

            mgr = cgroups.manager_for_paths(state.cgroup_paths)
            mgr.kill_all(sig)
            if status == PAUSED and sig == signal.SIGKILL:
                mgr.thaw()
            return
        if state.pid <= 0:  # still creating: kill(0) would signal our own process group
            raise ContainerNotRunning()
        try:
            os.kill(state.pid, sig)
        except ProcessLookupError:
            raise ContainerNotRunning() from None

    def pause(self, container_id: str) -> None:
        state, status = self.status(container_id)
        if status not in (RUNNING, CREATED):
            raise BadState(f"container not running or created: {status}")
        self._cgroup(state).freeze()

    def resume(self, container_id: str) -> None:
        state, status = self.status(container_id)
        if status != PAUSED:
            raise BadState("container not paused")
        self._cgroup(state).thaw()

    def _cgroup(self, state: ContainerState):
        from kobako.linux import cgroups

        if not state.cgroup_paths:
            raise BadState("container has no cgroup")
        return cgroups.manager_for_paths(state.cgroup_paths)

    # -- delete ------------------------------------------------------------------------

    def delete(self, container_id: str, force: bool = False) -> None:
        state, state_dir = self.load(container_id)
        status = status_of(state, state_dir)
        if status in (RUNNING, PAUSED) and not force:
            raise BadState(
                f"cannot delete container {container_id} that is not stopped: {status}"
            )
        mgr = None
        if state.cgroup_paths:
            from kobako.linux import cgroups

            mgr = cgroups.manager_for_paths(state.cgroup_paths)
        # without a pid namespace of its own, the init's death leaves the rest running
        # (runc kills them too): whatever is still in the cgroup goes
        if status != STOPPED or (mgr is not None and mgr.procs()):
            self._kill_everything(state, mgr)
        try:
            hooks.run_hooks(state.config, "poststop", oci_state(state, STOPPED))
        except RuntimeFailure as err:
            if self.log:
                self.log.warning(str(err))
        self._destroy(state, state_dir, mgr)

    def _kill_everything(self, state: ContainerState, mgr) -> None:
        if mgr is not None:
            mgr.kill_all(signal.SIGKILL)
            if mgr.frozen():
                mgr.thaw()
        if state.pid and process_start_time(state.pid) == state.pid_start:
            try:
                os.kill(state.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = state.pid and process_start_time(state.pid) == state.pid_start
            if not alive and (mgr is None or not mgr.procs()):
                return
            self.reap_children()
            time.sleep(0.005)
        raise RuntimeFailure(f"processes of container {state.id} did not die after SIGKILL")

    def _destroy(self, state: ContainerState, state_dir: StateDir, mgr) -> None:
        """Undo create: processes, cgroups, state directory. Leaves nothing behind."""
        if state.pid and process_start_time(state.pid) == state.pid_start:
            self._kill_everything(state, mgr)
        if mgr is not None:
            from kobako.linux.cgroups.errors import CgroupError

            try:
                mgr.destroy()
            except CgroupError as err:  # the state stays, so that delete can be retried
                raise RuntimeFailure(f"cannot remove the cgroups of {state.id}: {err}") from err
        for name in os.listdir(state_dir.path) if os.path.isdir(state_dir.path) else []:
            os.unlink(os.path.join(state_dir.path, name))
        try:
            os.rmdir(state_dir.path)
        except FileNotFoundError:
            pass

    # -- update, stats -----------------------------------------------------------------

    def update(self, container_id: str, resources: dict) -> None:
        state, state_dir = self.load(container_id)
        self._cgroup(state).apply(resources)
        linux = state.config.setdefault("linux", {})
        merged = linux.setdefault("resources", {})
        for key, value in resources.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
        state_dir.save(state)

    def stats(self, container_id: str) -> dict:
        state, status = self.status(container_id)
        if status == STOPPED:
            raise ContainerNotRunning()
        return self._cgroup(state).stats()

    def pids(self, container_id: str) -> list[int]:
        state, _ = self.load(container_id)
        if not state.cgroup_paths:
            return []
        return self._cgroup(state).procs()

    def list(self) -> list[dict]:
        from .state import list_ids

        docs = []
        for container_id in list_ids(self.root):
            try:
                docs.append(self.state(container_id))
            except RuntimeFailure:
                continue  # removed while we listed
        return docs


# Device rules runc always appends after the config's own (specconv.AllowedDevices):
# mknod of anything, and use of the standard devices the rootfs gets.
_DEFAULT_DEVICE_RULES = [
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for major, minor in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 2), (10, 200))),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},  # /dev/pts/*
]


def _with_default_device_rules(linux: dict) -> dict:
    resources = dict(linux.get("resources") or {})
    rules = list(resources.get("devices") or [])
    for device in linux.get("devices") or []:
        rules.append({"allow": True, "type": device.get("type", "c"), "access": "rwm",
                      "major": device.get("major"), "minor": device.get("minor")})
    resources["devices"] = rules + _DEFAULT_DEVICE_RULES
    return resources


def _host_root_ids(linux: dict, plan: NamespacePlan) -> tuple[int, int]:
    """The host uid and gid of the container's root (0, 0 without a new user namespace)."""
    if "user" not in plan.new:
        return 0, 0
    ids = []
    for key in ("uidMappings", "gidMappings"):
        for m in linux.get(key) or []:
            if m["containerID"] <= 0 < m["containerID"] + m["size"]:
                ids.append(m["hostID"] - m["containerID"])
                break
        else:
            raise ConfigError(f"{key} must map the container's root (id 0)")
    return ids[0], ids[1]


def _await_fifo(fd: int, state: ContainerState) -> bool:
    """Wait for the init's byte on exec.fifo; False if the init died first."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        if poller.poll(50):
            try:
                if os.read(fd, 1):
                    return True
            except BlockingIOError:
                pass
        if process_start_time(state.pid) != state.pid_start:
            return False


def _reap(pid: int, block: bool = True) -> None:
    try:
        os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError as err:
        if err.errno != errno.ECHILD:
            raise
