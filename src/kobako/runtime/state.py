"""A container's saved state under --root, and its lifecycle status.

Layout: <root>/<id>/state.json (written atomically) and <root>/<id>/exec.fifo,
which exists from `create` until `start` (as runc's does). The status is derived
each time from the kernel, never trusted from the file:

    init pid gone (or reused, or a zombie)   -> stopped
    exec.fifo still there                     -> created
    cgroup frozen                             -> paused
    otherwise                                 -> running
"""

from __future__ import annotations

import json
import os

from kobako.timestamps import now_rfc3339

from .errors import ConfigError, ContainerNotExist

DEFAULT_ROOT = "/run/kobako-runtime"
OCI_VERSION = "1.2.0"
STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"

_ID_PUNCTUATION = set("_+-.")

CREATING, CREATED, RUNNING, PAUSED, STOPPED = "creating", "created", "running", "paused", "stopped"


def validate_id(container_id: str) -> None:
    if not container_id:
        raise ConfigError("container id cannot be empty")
    if container_id in (".", "..") or not all(
        (c.isascii() and c.isalnum()) or c in _ID_PUNCTUATION for c in container_id
    ):
        raise ConfigError(f"invalid container id format: {container_id}")


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class ContainerState:
    """What `create` records about a container, saved as state.json."""

    FIELDS = ("id", "bundle", "rootfs", "config", "pid", "pid_start", "created",
              "cgroup_paths", "owner", "namespaces")

    def __init__(self, id: str, bundle: str, rootfs: str, config: dict, pid: int = 0,
                 pid_start: int = 0, created: str | None = None,
                 cgroup_paths: dict | None = None, owner: str = "",
                 namespaces: dict | None = None):
        self.id = id
        self.bundle = bundle
        self.rootfs = rootfs
        self.config = config
        self.pid = pid
        self.pid_start = pid_start
        self.created = created or now_rfc3339()
        self.cgroup_paths = cgroup_paths or {}
        self.owner = owner
        # namespace type -> /proc/<init pid>/ns/<entry>, for exec to join
        self.namespaces = namespaces or {}

    @property
    def annotations(self) -> dict:
        return self.config.get("annotations") or {}

    def to_json(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}


class StateDir:
    """One container's directory under the runtime root."""

    def __init__(self, root: str, container_id: str):
        self.root = root
        self.id = container_id
        self.path = os.path.join(root, container_id)

    @property
    def fifo(self) -> str:
        return os.path.join(self.path, EXEC_FIFO)

    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.path, STATE_FILE))

    def load(self) -> ContainerState:
        try:
            with open(os.path.join(self.path, STATE_FILE)) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ContainerNotExist(self.id) from None
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read state of container {self.id}: {err}") from err
        return ContainerState(**data)

    def save(self, state: ContainerState) -> None:
        from kobako.linux.files import write_atomic

        write_atomic(os.path.join(self.path, STATE_FILE), json.dumps(state.to_json()), 0o600)


def status_of(state: ContainerState, state_dir: StateDir, frozen: bool | None = None) -> str:
    if not state.pid:
        return CREATING
    if process_start_time(state.pid) != state.pid_start:
        return STOPPED
    if os.path.exists(state_dir.fifo):
        return CREATED
    if frozen is None:
        frozen = is_frozen(state)
    return PAUSED if frozen else RUNNING


def is_frozen(state: ContainerState) -> bool:
    if not state.cgroup_paths:
        return False
    from kobako.linux import cgroups

    return cgroups.manager_for_paths(state.cgroup_paths).frozen()


def oci_state(state: ContainerState, status: str) -> dict:
    """The state document of the OCI spec, as `runc state` prints it."""
    doc = {
        "ociVersion": OCI_VERSION,
        "id": state.id,
        # creating: the hooks (prestart, createRuntime...) need the pid to find the namespaces
        "pid": state.pid if status != STOPPED else 0,
        "status": status,
        "bundle": state.bundle,
        "rootfs": state.rootfs,
        "created": state.created,
    }
    if state.annotations:  # runc's order: annotations (omitted when empty), then owner
        doc["annotations"] = state.annotations
    doc["owner"] = state.owner
    return doc


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(root, n, STATE_FILE)))
