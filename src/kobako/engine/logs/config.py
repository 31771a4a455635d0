"""`HostConfig.LogConfig`: which log driver a container uses and its options.

Docker's rules (moby `daemon/logger/jsonfilelog/jsonfilelog.go`, `daemon/create.go`):
an empty Type takes the daemon's default driver, and when the driver is the daemon's
default its options fill in the keys the container left out. Unlike Docker, json-file
is bounded by default (moby #27957): `max-size` 20m and `max-file` 3 sit underneath
whatever the daemon and the container set. They are not written into the container's
LogConfig (inspect shows what was asked, as dockerd's does); each reader of the
configuration applies them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

JSON_FILE = "json-file"
NONE = "none"
SUPPORTED_DRIVERS = (JSON_FILE, NONE)
DEFAULT_DRIVER = JSON_FILE
DEFAULT_JSON_FILE_OPTS = {"max-size": "20m", "max-file": "3"}

# Options every driver accepts (moby `daemon/logger/log_cache_opts` and `loggerutils`).
_GENERIC_OPTS = {"mode", "max-buffer-size"}
_JSON_FILE_OPTS = {"max-file", "max-size", "compress", "labels", "labels-regex",
                   "env", "env-regex", "tag"}

# go-units FromHumanSize: decimal multipliers, an optional "i" and "b" are ignored.
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
# compiled at import (before the monitor forks), not in the monitor: compiling allocates
# enough to copy ~0.5 MiB of the pages it shares
_INT_RE = re.compile(r"[+-]?\d+")
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_size(text: str) -> int:
    """A human size as go-units' FromHumanSize reads it: "10m" is 10,000,000 bytes."""
    m = _SIZE_RE.match(text)
    if m is None:
        raise ValueError(f"invalid size: '{text}'")
    return int(float(m.group(1)) * _DECIMAL[(m.group(2) or "").lower()])


def _go_atoi(text: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise ValueError(f'strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def _go_parse_bool(text: str) -> bool:
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


@dataclass
class LogConfig:
    """A validated log configuration. `max_size` None means unbounded (never by default)."""

    type: str = DEFAULT_DRIVER
    config: dict[str, str] = field(default_factory=dict)
    max_size: int | None = None
    max_file: int = 1
    compress: bool = False

    @classmethod
    def from_host_config(cls, log_config: dict[str, Any] | None,
                         defaults: dict[str, Any] | None = None) -> LogConfig:
        """Merge a container's LogConfig with the daemon's default and validate it.

        `defaults` is the daemon's setting in the same shape, e.g.
        ``{"Type": "json-file", "Config": {"max-size": "50m"}}`` (dockerd's `log-driver`
        and `log-opts`). Invalid values raise ValueError with Docker's wording.
        """
        log_config = log_config or {}
        defaults = defaults or {}
        default_type = defaults.get("Type") or DEFAULT_DRIVER
        driver = log_config.get("Type") or default_type
        if not isinstance(driver, str):
            raise ValueError("LogConfig.Type must be a string")
        opts = _string_map(log_config.get("Config"), "LogConfig.Config")
        if driver == default_type:
            for key, value in _string_map(defaults.get("Config"), "log-opts").items():
                opts.setdefault(key, value)
        if driver not in SUPPORTED_DRIVERS:
            raise ValueError(f'error looking up logging plugin {driver}: plugin "{driver}" '
                             "not found")
        cfg = cls(type=driver, config=opts)
        if driver == JSON_FILE:
            cfg._validate_json_file()
        return cfg

    def _validate_json_file(self) -> None:
        for key in self.config:
            if key not in _JSON_FILE_OPTS and key not in _GENERIC_OPTS:
                raise ValueError(f"unknown log opt '{key}' for json-file log driver")
        opts = {**DEFAULT_JSON_FILE_OPTS, **self.config}
        self.max_size = parse_size(opts["max-size"])
        if self.max_size <= 0:
            raise ValueError("max-size must be a positive number")
        self.max_file = _go_atoi(opts["max-file"])
        if self.max_file < 1:
            raise ValueError("max-file cannot be less than 1")
        if "compress" in self.config:
            self.compress = _go_parse_bool(self.config["compress"])
            if self.compress and (self.max_file == 1 or self.max_size is None):
                raise ValueError("compress cannot be true when max-file is less than 2 "
                                 "or max-size is not set")
        mode = self.config.get("mode")
        if mode not in (None, "", "blocking", "non-blocking"):
            raise ValueError(f"logger: logging mode not supported: {mode}")

    def to_json(self) -> dict[str, Any]:
        """The value of `HostConfig.LogConfig` in inspect."""
        return {"Type": self.type, "Config": dict(self.config)}

    def extra_attributes(self, *, labels: dict[str, str] | None = None,
                         env: list[str] | None = None,
                         tag_info: dict[str, str] | None = None) -> dict[str, str]:
        """The `attrs` each record carries: the labels/env named by the options, and `tag`.

        As Docker's `logger.Info.ExtraAttributes`: `labels`/`env` are comma-separated
        names, `labels-regex`/`env-regex` match names. `tag_info` fills the tag template
        (keys ID, FullID, Name, ImageID, ImageFullID, ImageName, DaemonName).
        """
        attrs: dict[str, str] = {}
        labels = labels or {}
        env_map = dict(e.split("=", 1) for e in (env or []) if "=" in e)
        for source, names_key, regex_key in ((labels, "labels", "labels-regex"),
                                            (env_map, "env", "env-regex")):
            for name in filter(None, self.config.get(names_key, "").split(",")):
                if name in source:
                    attrs[name] = source[name]
            if self.config.get(regex_key):
                pattern = re.compile(self.config[regex_key])
                attrs.update({k: v for k, v in source.items() if pattern.search(k)})
        tag = self.config.get("tag")
        if tag:
            attrs["tag"] = render_tag(tag, tag_info or {})
        return attrs


def render_tag(template: str, info: dict[str, str]) -> str:
    """Docker's log tag templates in their common form: `{{.Name}}`, `{{.ID}}`, ..."""
    def field_value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in info:
            raise ValueError(f"template: log-tag: can't evaluate field {name}")
        return info[name]
    return re.sub(r"\{\{\s*\.(\w+)\s*\}\}", field_value, template)


def _string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{what} must map strings to strings")
    return dict(value)
