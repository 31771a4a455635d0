"""Docker's output conventions: tabwriter tables, human sizes and durations, --format."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

from kobako import units

# docker's formatter: tabwriter.NewWriter(out, minwidth=10, tabwidth=1, padding=3, ' ', 0)
_MINWIDTH, _PADDING = 10, 3


def table(rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    """Print rows (the first is the header) laid out as Go's tabwriter lays docker's out."""
    out = out or sys.stdout
    if not rows:
        return
    ncols = max(len(r) for r in rows)
    widths = [0] * ncols
    for r in rows:
        for i, cell in enumerate(r[:-1]):  # the last cell of a line is not in a column
            widths[i] = max(widths[i], max(len(cell) + _PADDING, _MINWIDTH))
    for r in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(r[:-1])] + [r[-1]]
        out.write("".join(cells).rstrip() + "\n")


def human_size(size: float) -> str:
    """What docker's tables print: 3 significant digits."""
    return units.human_size(size, 3)


human_duration = units.human_duration


def print_prune_report(result: Mapping[str, Any] | None, deleted_key: str, title: str,
                       lines: Any = None) -> None:
    """What docker's prune commands print: the deleted items, then the space reclaimed.
    `lines(item)` gives an item's lines (default: the item itself)."""
    import click

    deleted = (result or {}).get(deleted_key) or []
    if deleted:
        click.echo(f"Deleted {title}:")
        for item in deleted:
            for line in (lines(item) if lines else [item]):
                click.echo(line)
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size((result or {}).get('SpaceReclaimed', 0))}")


def since(timestamp: float | None, now: float | None = None) -> str:
    if not timestamp:
        return "N/A"
    now = time.time() if now is None else now
    return human_duration(max(0.0, now - timestamp)) + " ago"


def parse_time(value: Any) -> float | None:
    """Unix seconds or an RFC 3339 string (with nanoseconds) to unix seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    if text.startswith("0001-01-01"):
        return None
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if "." in text:  # Python accepts at most microseconds
        head, rest = text.split(".", 1)
        frac = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(frac):]
        text = f"{head}.{frac[:6]}{tz}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def short_id(ident: str) -> str:
    return ident.split(":", 1)[-1][:12]


def render_rows(fmt: str | None, default_table: str, items: Iterable[Mapping[str, Any]],
                headers: Mapping[str, str], out: TextIO | None = None) -> None:
    """docker's --format: `table ...` templates, plain per-line templates, or `json`."""
    out = out or sys.stdout
    items = list(items)
    if fmt is None:
        # the default layout needs no template engine (keeps `kobako ps` start-up lean)
        fields = re.findall(r"\{\{\.(\w+)\}\}", default_table)
        table([[headers.get(f, f) for f in fields]]
              + [[str(item.get(f, "")) for f in fields] for item in items], out)
        return
    from kobako.cli.gotemplate import Template

    if fmt == "json":
        for item in items:
            out.write(json.dumps(dict(item), separators=(",", ":")) + "\n")
        return
    if fmt.startswith("table"):
        body = fmt[len("table"):].strip() or default_table[len("table"):].strip()
        body = body.replace("\\t", "\t")
        head_tmpl = Template(body)
        header_line = head_tmpl.render({k: v for k, v in headers.items()})
        rows = [header_line.split("\t")]
        tmpl = Template(body)
        for item in items:
            rows.append(tmpl.render(item).split("\t"))
        table(rows, out)
        return
    tmpl = Template(fmt.replace("\\t", "\t").replace("\\n", "\n"))
    for item in items:
        out.write(tmpl.render(item) + "\n")
