"""The runtime's errors. Each carries a one-line message fit for stderr and --log."""


class RuntimeFailure(Exception):
    """Base of every error kobako-runtime reports to its caller."""


class ConfigError(RuntimeFailure):
    """The bundle's config.json cannot be used."""


class ContainerNotExist(RuntimeFailure):
    """No container with that id (containerd's shim matches "does not exist")."""

    def __init__(self, container_id: str):
        super().__init__(f'container "{container_id}" does not exist')


class ContainerExists(RuntimeFailure):
    def __init__(self, container_id: str):
        super().__init__(f'container with id exists: {container_id}')


class BadState(RuntimeFailure):
    """The operation is not allowed in the container's current state."""


class ContainerNotRunning(BadState):
    """runc's wording, parsed by containerd's checkKillError."""

    def __init__(self) -> None:
        super().__init__("container not running")
