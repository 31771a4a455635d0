"""The Go-template subset used by --format."""

from __future__ import annotations

import pytest

from kobako.cli.gotemplate import TemplateError, go_str, render

DOC = {
    "Id": "abc", "Name": "/web",
    "State": {"Pid": 4242, "Running": True, "ExitCode": 0, "Error": ""},
    "Config": {"Env": ["A=1", "B=2"], "Labels": {"b": "2", "a": "1"}, "Cmd": None,
               "Tty": False},
    "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"},
                                     "net2": {"IPAddress": "10.1.0.2"}}},
    "Size": 1234567.0, "Ratio": 0.5,
}


@pytest.mark.parametrize("tmpl,expected", [
    ("{{.State.Pid}}", "4242"),
    ("{{.Name}}", "/web"),
    ("{{.State.Running}}", "true"),
    ("{{json .Config.Env}}", '["A=1","B=2"]'),
    ("{{json .Config}}", '{"Env":["A=1","B=2"],"Labels":{"b":"2","a":"1"},"Cmd":null,'
                         '"Tty":false}'),
    ("{{.Config.Labels}}", "map[a:1 b:2]"),
    ("{{.Config.Env}}", "[A=1 B=2]"),
    ("{{.Config.Cmd}}", "<nil>"),
    ("{{.Nope}}", "<no value>"),
    ("{{.Size}}", "1234567"),
    ("{{.Ratio}}", "0.5"),
    ('{{index .Config.Labels "a"}}', "1"),
    ("{{index .Config.Env 1}}", "B=2"),
    ("{{range .Config.Env}}[{{.}}]{{end}}", "[A=1][B=2]"),
    ("{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}};{{end}}",
     "bridge=172.17.0.2;net2=10.1.0.2;"),
    ("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "172.17.0.2 10.1.0.2 "),
    ("{{range .Config.Cmd}}x{{else}}empty{{end}}", "empty"),
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if .State.Error}}err{{else if .State.Running}}running{{else}}no{{end}}", "running"),
    ("{{with .State}}{{.Pid}}{{end}}", "4242"),
    ("{{.Name | json}}", '"/web"'),
    ('{{join .Config.Env ","}}', "A=1,B=2"),
    ("{{len .Config.Env}}", "2"),
    ("{{upper .Id}}", "ABC"),
    ('{{printf "%s:%d" .Name .State.Pid}}', "/web:4242"),
    ('{{(index .NetworkSettings.Networks "net2").IPAddress}}', "10.1.0.2"),
    ('{{if eq .State.ExitCode 0}}ok{{end}}', "ok"),
    ("{{$n := .Name}}{{$n}}{{$.Id}}", "/webabc"),
    ("a {{- .Id -}} b", "aabcb"),
    ("{{/* a comment */}}x", "x"),
    ("plain text", "plain text"),
])
def test_render(tmpl, expected):
    assert render(tmpl, DOC) == expected


@pytest.mark.parametrize("bad", ["{{.Id", "{{range .X}}", "{{end}}", "{{nofunc .X}}",
                                 "{{.Id .Name}}", "{{$undefined}}"])
def test_errors(bad):
    with pytest.raises(TemplateError):
        render(bad, DOC)


def test_field_of_a_scalar_is_an_error():
    with pytest.raises(TemplateError, match="can't evaluate field"):
        render("{{.Name.X}}", DOC)


def test_go_str():
    assert go_str({"z": [1, True], "a": None}) == "map[a:<nil> z:[1 true]]"
