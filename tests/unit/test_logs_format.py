"""json-file records and LogConfig, checked against what Docker writes and says."""

from __future__ import annotations

import json

import pytest

from kobako.engine.logs import LogConfig, parse_size
from kobako.engine.logs.record import (
    CorruptRecord,
    decode_record,
    encode_record,
    format_time,
    format_time_fixed,
    json_string,
    parse_time,
)

T0 = 1714557600 * 10**9  # 2024-05-01T10:00:00Z


# -- records ----------------------------------------------------------------------------

def test_record_is_byte_for_byte_dockers():
    rec = encode_record(b"hello\n", "stdout", T0 + 1)
    assert rec == b'{"log":"hello\\n","stream":"stdout","time":"2024-05-01T10:00:00.000000001Z"}\n'


@pytest.mark.parametrize("ns, text", [
    (T0, "2024-05-01T10:00:00Z"),                    # no fraction at all
    (T0 + 120_000_000, "2024-05-01T10:00:00.12Z"),   # trailing zeros trimmed
    (T0 + 123_456_789, "2024-05-01T10:00:00.123456789Z"),
    (T0 + 1000, "2024-05-01T10:00:00.000001Z"),
])
def test_time_is_gos_rfc3339nano(ns, text):
    assert format_time(ns) == text
    assert parse_time(text) == ns


def test_fixed_time_for_timestamps_option_always_has_nine_digits():
    assert format_time_fixed(T0 + 120_000_000) == "2024-05-01T10:00:00.120000000Z"


def test_parse_time_with_offset():
    assert parse_time("2024-05-01T12:00:00.5+02:00") == T0 + 500_000_000


# Expected outputs from moby's jsonlogbytes_test.go (TestJSONLogsMarshalJSONBuf).
@pytest.mark.parametrize("raw, encoded", [
    (b'"A log line with \\"', rb'"\"A log line with \\\""'),
    (b"A log line with \r", rb'"A log line with \r"'),
    (b"A log line with & < >", rb'"A log line with \u0026 \u003c \u003e"'),
    ("utf8 : 🚀 ψ ω β".encode(), '"utf8 : 🚀 ψ ω β"'.encode()),
    ("\u2028 \u2029".encode(), rb'"\u2028 \u2029"'),
    (b"\xaf", rb'"\ufffd"'),
    (b"\x7f", b'"\x7f"'),
    (b"tab\there\x1b[0m", rb'"tab\u0009here\u001b[0m"'),
])
def test_string_escaping_matches_moby(raw, encoded):
    assert json_string(raw) == encoded


def test_each_invalid_byte_becomes_one_replacement_as_in_go():
    # Go's utf8.DecodeRune takes one byte at a time where Python would group a
    # truncated sequence (\xe2\x82) into one replacement; surrogates are 3 bytes → 3.
    assert json_string(b"a\xe2\x82b") == rb'"a\ufffd\ufffdb"'
    assert json_string(b"\xed\xa0\x80") == rb'"\ufffd\ufffd\ufffd"'
    # A real U+FFFD in the input is valid UTF-8 and is written raw, not escaped.
    assert json_string("\ufffd".encode()) == '"\ufffd"'.encode()
    # The result is valid JSON that decodes to the replaced text.
    assert json.loads(json_string(b"x\xff\xfey")) == "x\ufffd\ufffdy"


def test_attrs_sit_between_stream_and_time():
    from kobako.engine.logs.record import attrs_json
    rec = encode_record(b"hi\n", "stderr", T0, attrs_json({"b": "2", "a": "<1>"}))
    assert rec == (b'{"log":"hi\\n","stream":"stderr","attrs":{"a":"\\u003c1\\u003e","b":"2"},'
                   b'"time":"2024-05-01T10:00:00Z"}\n')
    assert decode_record(rec).attrs == {"a": "<1>", "b": "2"}


def test_decode_roundtrip_and_corrupt_lines():
    rec = decode_record(encode_record(b"x\xffy\n", "stdout", T0 + 5))
    assert (rec.log, rec.stream, rec.ns) == ("x\ufffdy\n".encode(), "stdout", T0 + 5)
    for bad in (b'{"log":"trunc', b"", b"garbage", b'{"log":"x","time":"yesterday"}',
                b'{"log":1,"time":"2024-05-01T10:00:00Z"}', b"\xff\xfe"):
        with pytest.raises(CorruptRecord):
            decode_record(bad)


# -- LogConfig --------------------------------------------------------------------------

def test_default_is_bounded_json_file():
    cfg = LogConfig.from_host_config(None)
    assert (cfg.type, cfg.max_size, cfg.max_file) == ("json-file", 20_000_000, 3)
    # the bound is applied, not written into the container's LogConfig (as inspect shows)
    assert cfg.to_json() == {"Type": "json-file", "Config": {}}
    assert LogConfig.from_host_config({"Type": "", "Config": {}}).max_file == 3


def test_container_options_override_daemon_and_builtin_defaults():
    daemon = {"Type": "json-file", "Config": {"max-size": "50m", "labels": "app"}}
    cfg = LogConfig.from_host_config({"Config": {"max-file": "5"}}, daemon)
    assert (cfg.max_size, cfg.max_file) == (50_000_000, 5)
    assert cfg.config == {"max-file": "5", "max-size": "50m", "labels": "app"}


def test_daemon_options_only_apply_to_the_daemon_driver():
    daemon = {"Type": "none", "Config": {}}
    assert LogConfig.from_host_config(None, daemon).type == "none"
    cfg = LogConfig.from_host_config({"Type": "json-file"}, daemon)
    assert (cfg.type, cfg.max_size) == ("json-file", 20_000_000)


def test_none_driver_takes_any_options():
    cfg = LogConfig.from_host_config({"Type": "none", "Config": {"whatever": "1"}})
    assert cfg.type == "none"


@pytest.mark.parametrize("text, size", [
    ("10m", 10_000_000), ("10M", 10_000_000), ("1k", 1000), ("1.5k", 1500),
    ("10MB", 10_000_000), ("10mib", 10_000_000), ("100", 100), ("1 g", 10**9),
])
def test_sizes_are_decimal_as_go_units_reads_them(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("config, message", [
    ({"Config": {"max-size": "abc"}}, "invalid size: 'abc'"),
    ({"Config": {"max-size": "0"}}, "max-size must be a positive number"),
    ({"Config": {"max-file": "0"}}, "max-file cannot be less than 1"),
    ({"Config": {"max-file": "x"}}, 'strconv.Atoi: parsing "x": invalid syntax'),
    ({"Config": {"compress": "maybe"}}, 'strconv.ParseBool: parsing "maybe": invalid syntax'),
    ({"Config": {"compress": "true", "max-file": "1"}}, "compress cannot be true"),
    ({"Config": {"foo": "1"}}, "unknown log opt 'foo' for json-file log driver"),
    ({"Type": "syslog"}, 'error looking up logging plugin syslog: plugin "syslog" not found'),
    ({"Config": {"max-size": 5}}, "must map strings to strings"),
])
def test_invalid_values_are_refused_with_dockers_words(config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        LogConfig.from_host_config(config)


def test_extra_attributes_from_labels_env_and_tag():
    cfg = LogConfig.from_host_config({"Config": {
        "labels": "app,missing", "env": "REGION", "env-regex": "^X_",
        "tag": "{{.Name}}/{{.ID}}"}})
    attrs = cfg.extra_attributes(labels={"app": "web", "other": "no"},
                                 env=["REGION=eu", "X_A=1", "Y=2"],
                                 tag_info={"Name": "c1", "ID": "abc123"})
    assert attrs == {"app": "web", "REGION": "eu", "X_A": "1", "tag": "c1/abc123"}
