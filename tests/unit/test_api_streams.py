"""Stream framing and detach keys."""

from __future__ import annotations

import pytest

from kobako.api.streams import DetachScanner, frame, parse_detach_keys, parse_frames
from kobako.engine.errors import InvalidParameter


def test_frame_header_layout():
    assert frame(1, b"hi") == b"\x01\x00\x00\x00\x00\x00\x00\x02hi"
    assert frame(2, b"x" * 300)[:8] == b"\x02\x00\x00\x00\x00\x00\x01\x2c"


def test_parse_frames_keeps_partial_remainder():
    data = frame(1, b"abc") + frame(2, b"de") + frame(1, b"fgh")[:5]
    frames, rest = parse_frames(data)
    assert frames == [(1, b"abc"), (2, b"de")]
    assert rest == frame(1, b"fgh")[:5]
    more, rest = parse_frames(rest + frame(1, b"fgh")[5:])
    assert more == [(1, b"fgh")] and rest == b""


@pytest.mark.parametrize("spec,expected", [
    (None, b"\x10\x11"), ("", b"\x10\x11"), ("ctrl-p,ctrl-q", b"\x10\x11"),
    ("ctrl-a", b"\x01"), ("a,b", b"ab"), ("ctrl-@,ctrl-[", b"\x00\x1b"), ("ctrl-Z", b"\x1a"),
])
def test_parse_detach_keys(spec, expected):
    assert parse_detach_keys(spec) == expected


@pytest.mark.parametrize("bad", ["ctrl-1", "ctrl-", "abc", "ctrl-pp"])
def test_parse_detach_keys_rejects(bad):
    with pytest.raises(InvalidParameter):
        parse_detach_keys(bad)


def test_detach_scanner_full_sequence_across_chunks():
    s = DetachScanner(b"\x10\x11")
    assert s.feed(b"ls\x10") == (b"ls", False)  # ctrl-p held back
    assert s.feed(b"\x11rest") == (b"", True)


def test_detach_scanner_releases_a_false_start():
    s = DetachScanner(b"\x10\x11")
    assert s.feed(b"\x10x") == (b"\x10x", False)
    assert s.feed(b"\x10\x10\x11") == (b"\x10", True)


def test_detach_scanner_without_keys_passes_everything():
    s = DetachScanner(b"")
    assert s.feed(b"\x10\x11") == (b"\x10\x11", False)
