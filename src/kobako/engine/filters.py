"""What the list and prune endpoints share of Docker's `filters`: which keys an endpoint
takes, label matching, and the port specs of `publish`/`expose`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kobako.engine.errors import InvalidParameter


def check_filters(filters: Mapping[str, list[str]], allowed: Iterable[str]) -> None:
    """dockerd's Validate: an unknown key is a 400."""
    for key in filters:
        if key not in allowed:
            raise InvalidParameter(f"invalid filter '{key}'")


def label_matches(labels: Mapping[str, str], spec: str) -> bool:
    """label=KEY or label=KEY=VALUE."""
    key, sep, value = spec.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value


def labels_match(labels: Mapping[str, str], filters: Mapping[str, list[str]]) -> bool:
    """Every `label` filter matches and no `label!` one does (prune's two keys)."""
    return (all(label_matches(labels, spec) for spec in filters.get("label", []))
            and not any(label_matches(labels, spec) for spec in filters.get("label!", [])))


def port_keys(key: str, specs: Iterable[str]) -> set[str]:
    """publish=/expose= values ("80", "8000-8002/udp") as port keys ("80/tcp", ...)."""
    keys = set()
    for spec in specs:
        if ":" in spec:
            raise InvalidParameter(f"filter for '{key}' should not contain ':': {spec}")
        ports, _, proto = spec.partition("/")
        first, dash, last = ports.partition("-")
        if not first.isdigit() or dash and not last.isdigit() or \
                int(last if dash else first) < int(first):
            raise InvalidParameter(f"error while looking up for {key} {spec}: invalid port "
                                   "range")
        keys.update(f"{port}/{proto or 'tcp'}"
                    for port in range(int(first), int(last if dash else first) + 1))
    return keys
