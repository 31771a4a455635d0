"""docker's table layout, sizes and durations."""

from __future__ import annotations

import io

import pytest

from kobako.cli.output import (
    human_duration,
    human_size,
    parse_time,
    render_rows,
    since,
    table,
)


def test_table_matches_docker_tabwriter():
    out = io.StringIO()
    table([["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
           ["busybox", "latest", "7c57b9fc1178", "2 days ago", "1.98MB"],
           ["127.0.0.1:5000/a/very/long/name", "v1", "1234567890ab", "3 weeks ago", "10kB"]],
          out)
    assert out.getvalue().splitlines() == [
        "REPOSITORY                        TAG       IMAGE ID       CREATED       SIZE",
        "busybox                           latest    7c57b9fc1178   2 days ago    1.98MB",
        "127.0.0.1:5000/a/very/long/name   v1        1234567890ab   3 weeks ago   10kB",
    ]


@pytest.mark.parametrize("n,text", [(0, "0B"), (100, "100B"), (1240, "1.24kB"),
                                    (4261130, "4.26MB"), (1e9, "1GB"),
                                    (999999, "1e+03kB")])  # Go's %.3g prints that too
def test_human_size(n, text):
    assert human_size(n) == text


@pytest.mark.parametrize("secs,text", [
    (0.5, "Less than a second"), (1, "1 second"), (30, "30 seconds"), (60, "About a minute"),
    (600, "10 minutes"), (3600, "About an hour"), (5 * 3600, "5 hours"),
    (3 * 86400, "3 days"), (20 * 86400, "2 weeks"), (90 * 86400, "3 months"),
    (3 * 365 * 86400, "3 years")])
def test_human_duration(secs, text):
    assert human_duration(secs) == text


def test_since_and_parse_time():
    assert since(None) == "N/A"
    assert since(100.0, now=160.0) == "About a minute ago"
    assert parse_time("1970-01-01T00:01:40.123456789Z") == pytest.approx(100.123456)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time(5) == 5.0
    assert parse_time("garbage") is None


def test_render_rows_table_template_and_json():
    rows = [{"A": "x", "B": "yy"}]
    out = io.StringIO()
    render_rows(None, "table {{.A}}\t{{.B}}", rows, {"A": "COL A", "B": "COL B"}, out)
    assert out.getvalue() == "COL A     COL B\nx         yy\n"
    out = io.StringIO()
    render_rows("table {{.B}}", "table {{.A}}", rows, {"A": "A", "B": "BEE"}, out)
    assert out.getvalue() == "BEE\nyy\n"
    out = io.StringIO()
    render_rows("{{.A}}-{{.B}}", "table {{.A}}", rows, {}, out)
    assert out.getvalue() == "x-yy\n"
    out = io.StringIO()
    render_rows("json", "table {{.A}}", rows, {}, out)
    assert out.getvalue() == '{"A":"x","B":"yy"}\n'
