"""kobakod's settings: command-line flags merged with a daemon.json file.

As dockerd does, a setting given both as a flag and in the file is an error
("the following directives are specified both as a flag and in the configuration
file"), and an unknown key in the file is an error too, so typos do not pass silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_HOST = "unix:///run/kobako.sock"
DEFAULT_DATA_ROOT = "/var/lib/kobako"
DEFAULT_EXEC_ROOT = "/run/kobako"
DEFAULT_CONFIG_FILE = "/etc/kobako/daemon.json"
DEFAULT_GROUP = "kobako"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


class ConfigError(Exception):
    """Invalid daemon configuration (bad flag value, bad file, conflicting settings)."""


@dataclass
class TLSConfig:
    verify: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass
class DaemonConfig:
    hosts: list[str] = field(default_factory=list)
    data_root: str = DEFAULT_DATA_ROOT
    exec_root: str = DEFAULT_EXEC_ROOT
    pidfile: str | None = None
    log_level: str = "info"
    group: str = DEFAULT_GROUP
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    bip: str | None = None
    default_address_pools: list[dict[str, Any]] = field(default_factory=list)
    log_driver: str = "json-file"
    log_opts: dict[str, str] = field(default_factory=dict)
    live_restore: bool = True
    debug: bool = False
    labels: list[str] = field(default_factory=list)
    tls: TLSConfig = field(default_factory=TLSConfig)
    config_file: str | None = None

    def effective_hosts(self) -> list[str]:
        return list(self.hosts) or [DEFAULT_HOST]

    def effective_pidfile(self) -> str:
        if self.pidfile:
            return self.pidfile
        if self.exec_root == DEFAULT_EXEC_ROOT:
            return "/run/kobako.pid"
        return os.path.join(self.exec_root, "kobakod.pid")


# daemon.json key -> (DaemonConfig attribute, expected JSON type)
_FILE_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "hosts": ("hosts", list),
    "data-root": ("data_root", str),
    "exec-root": ("exec_root", str),
    "pidfile": ("pidfile", str),
    "log-level": ("log_level", str),
    "group": ("group", str),
    "insecure-registries": ("insecure_registries", list),
    "registry-mirrors": ("registry_mirrors", list),
    "bip": ("bip", str),
    "default-address-pools": ("default_address_pools", list),
    "log-driver": ("log_driver", str),
    "log-opts": ("log_opts", dict),
    "live-restore": ("live_restore", bool),
    "debug": ("debug", bool),
    "labels": ("labels", list),
    "tlsverify": ("tls.verify", bool),
    "tlscacert": ("tls.cacert", str),
    "tlscert": ("tls.cert", str),
    "tlskey": ("tls.key", str),
    "tls": ("tls.verify", bool),
}


def parse_address_pool(spec: str) -> dict[str, Any]:
    """Parse dockerd's `--default-address-pool base=10.10.0.0/16,size=24`."""
    pool: dict[str, Any] = {}
    for part in spec.split(","):
        if "=" not in part:
            raise ConfigError(f"invalid default address pool {spec!r}: expected key=value")
        k, v = part.split("=", 1)
        k = k.strip().lower()
        if k == "base":
            pool["base"] = v.strip()
        elif k == "size":
            try:
                pool["size"] = int(v)
            except ValueError as exc:
                raise ConfigError(f"invalid default address pool size {v!r}") from exc
        else:
            raise ConfigError(f"invalid default address pool key {k!r}")
    if "base" not in pool or "size" not in pool:
        raise ConfigError(f"invalid default address pool {spec!r}: needs base= and size=")
    return pool


def load_config_file(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid configuration file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration file {path}: top level must be an object")
    unknown = sorted(k for k in data if k not in _FILE_KEYS)
    if unknown:
        raise ConfigError(
            f"the following directives don't match any configuration option: {', '.join(unknown)}"
        )
    for key, value in data.items():
        want = _FILE_KEYS[key][1]
        if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            raise ConfigError(f"invalid configuration file {path}: {key!r} has the wrong type")
    return data


def build_config(flags: dict[str, Any], file_path: str | None) -> DaemonConfig:
    """Merge the flags that were given (not None/empty) with the file's settings."""
    cfg = DaemonConfig(config_file=file_path)
    file_data = load_config_file(file_path) if file_path else {}
    conflicts = []
    for key, value in file_data.items():
        attr = _FILE_KEYS[key][0]
        flag_value = flags.get(attr)
        if flag_value not in (None, [], False, {}):
            conflicts.append(f"{key}: (from flag: {flag_value}, from file: {value})")
        _set(cfg, attr, value)
    if conflicts:
        raise ConfigError(
            "unable to configure the daemon with file "
            f"{file_path}: the following directives are specified both as a flag and in the "
            f"configuration file: {', '.join(conflicts)}"
        )
    for attr, value in flags.items():
        if value not in (None, [], False, {}):
            _set(cfg, attr, value)
    validate(cfg)
    return cfg


def _set(cfg: DaemonConfig, attr: str, value: Any) -> None:
    if attr.startswith("tls."):
        setattr(cfg.tls, attr[4:], value)
    else:
        setattr(cfg, attr, value)


def validate(cfg: DaemonConfig) -> None:
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"unable to parse logging level: {cfg.log_level} (one of {', '.join(LOG_LEVELS)})"
        )
    for pool in cfg.default_address_pools:
        if not isinstance(pool, dict) or "base" not in pool or "size" not in pool:
            raise ConfigError(f"invalid default address pool {pool!r}: needs base and size")
    for host in cfg.effective_hosts():
        scheme = host.split("://", 1)[0] if "://" in host else ""
        if scheme not in ("unix", "tcp", "fd"):
            raise ConfigError(f"invalid host {host!r}: only unix://, tcp:// and fd:// are supported")
    for path_attr in ("data_root", "exec_root"):
        if not os.path.isabs(getattr(cfg, path_attr)):
            raise ConfigError(f"{path_attr.replace('_', '-')} must be an absolute path")
