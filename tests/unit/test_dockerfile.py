"""The Dockerfile front end: parse() as moby's parser/instructions, expand() as its lexer."""

from __future__ import annotations

import json

import pytest

from kobako.image.dockerfile import (
    EXPANDS,
    DockerfileError,
    ExpandError,
    Instruction,
    expand,
    expand_words,
    parse,
    parse_duration,
    parse_triggers,
)


def one(text: str) -> Instruction:
    """The last instruction of a Dockerfile that starts FROM scratch."""
    return parse("FROM scratch\n" + text)[-1]


def error(text: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    return info.value


# --- lines, comments, continuations, directives ----------------------------------


def test_simple_file_keywords_lines_and_original() -> None:
    got = parse("from busybox\n\nrun echo hi\n  Cmd [\"sh\"]\n")
    assert [(i.keyword, i.line) for i in got] == [("FROM", 1), ("RUN", 3), ("CMD", 4)]
    assert got[0].original == "from busybox"
    assert got[2].original == 'Cmd ["sh"]'  # leading blanks of a line are dropped


def test_continuation_lines_join_without_separator_as_moby() -> None:
    got = one("RUN apt-get update \\\n    && apt-get install -y \\\n      curl\nUSER x\n")
    assert got.keyword == "USER"
    run = parse("FROM a\nRUN apt-get update \\\n    && apt-get install -y \\\n      curl\n")[1]
    assert run.args == ["apt-get update     && apt-get install -y       curl"]
    assert run.original == "RUN " + run.args[0]
    assert run.line == 2


def test_continuation_with_trailing_blanks_after_escape() -> None:
    run = parse("FROM a\nRUN echo a \\  \t\n b\n")[1]
    assert run.args == ["echo a  b"]


def test_escaped_escape_at_end_does_not_continue() -> None:
    got = parse("FROM a\nRUN echo foo\\\\\nUSER x\n")
    assert got[1].args == ["echo foo\\\\"]
    assert got[2].keyword == "USER"


def test_comments_and_empty_lines_inside_continuation_are_dropped() -> None:
    text = (
        "FROM a\nRUN set -e \\\n    # explain the next step\n\n"
        "    && echo one \\\n#x\n    && echo two\nEXPOSE 80\n"
    )
    got = parse(text)
    assert got[1].args == ["set -e     && echo one     && echo two"]
    assert got[2].keyword == "EXPOSE" and got[2].line == 8


def test_comment_lines_and_leading_blank_comments_are_skipped() -> None:
    got = parse("# header\n   # indented comment\nFROM a\nRUN echo hi # not a comment\n")
    assert [i.keyword for i in got] == ["FROM", "RUN"]
    assert got[1].args == ["echo hi # not a comment"]
    # "#" after an instruction is not a comment: FROM then sees 3 words and fails.
    assert error("FROM a # trailing\n").reason == "FROM requires either one or three arguments"


def test_line_only_an_escape_continues() -> None:
    got = parse("FROM a\nRUN \\\n\\\n echo hi\n")
    assert got[1].args == ["echo hi"]


def test_escape_directive_backtick_windows_style() -> None:
    text = (
        "# escape=`\n"
        "FROM mcr.microsoft.com/windows/servercore\n"
        "COPY testfile.txt c:\\\n"
        "RUN dir c:\\ `\n"
        "    && echo done\n"
    )
    got = parse(text)
    assert got[1].args == ["testfile.txt", "c:\\"]  # "\" is an ordinary char now
    assert got[2].args == ["dir c:\\     && echo done"]
    assert all(i.escape == "`" for i in got)


def test_default_escape_is_backslash_and_syntax_directive_accepted() -> None:
    got = parse("# syntax=docker/dockerfile:1\n#escape = \\\nFROM a\n")
    assert got[0].escape == "\\"


def test_directives_end_at_first_non_directive_line() -> None:
    # After an empty line, "# escape=`" is a plain comment: "\" still continues.
    got = parse("\n# escape=`\nFROM a\nRUN echo \\\n hi\n")
    assert got[1].args == ["echo  hi"]
    assert got[0].escape == "\\"
    # Same after an ordinary comment.
    assert parse("# hello\n# escape=`\nFROM a\n")[0].escape == "\\"


def test_directive_errors() -> None:
    e = error("# escape=x\nFROM a\n")
    assert e.line == 1 and "invalid escape token 'x' does not match ` or \\" in str(e)
    e = error("# escape=`\n# escape=\\\nFROM a\n")
    assert e.line == 2 and e.reason == "only one escape parser directive can be used"


def test_crlf_and_bom() -> None:
    got = parse("\ufeffFROM a\r\nRUN echo \\\r\n  hi\r\n")
    assert got[0].args == ["a"]
    assert got[1].args == ["echo   hi"]


def test_no_trailing_newline() -> None:
    assert parse("FROM a\nCMD x")[1].args == ["x"]


def test_empty_file_and_only_comments() -> None:
    for text in ("", "\n\n", "# just a comment\n", "   \n# c\n"):
        e = error(text)
        assert e.reason == "file with no instructions"
        assert str(e) == "file with no instructions"


def test_unknown_instruction_with_line() -> None:
    e = error("FROM a\n\nFORM b\n")
    assert str(e) == "dockerfile parse error on line 3: unknown instruction: FORM"
    assert e.line == 3 and e.reason == "unknown instruction: FORM"
    assert isinstance(e, ValueError)


def test_error_line_is_where_a_continued_instruction_starts() -> None:
    e = error("FROM a\nCOPY \\\n  onlyone\n")
    assert e.line == 2


def test_first_instruction_must_be_from_or_arg() -> None:
    e = error("RUN echo hi\nFROM a\n")
    assert e.line == 1 and e.reason == "no build stage in current context"
    e = error("ARG V=1\nENV a=b\nFROM a\n")
    assert e.line == 2
    got = parse("ARG V=1\nARG W\nFROM base:$V\n")
    assert [i.keyword for i in got] == ["ARG", "ARG", "FROM"]


# --- RUN / CMD / ENTRYPOINT / SHELL -----------------------------------------------


@pytest.mark.parametrize("kw", ["RUN", "CMD", "ENTRYPOINT"])
def test_exec_form(kw: str) -> None:
    got = one(f'{kw} ["/bin/sh", "-c", "echo \\"hi\\""]')
    assert (got.keyword, got.args, got.json) == (kw, ["/bin/sh", "-c", 'echo "hi"'], True)


@pytest.mark.parametrize("kw", ["RUN", "CMD", "ENTRYPOINT"])
def test_shell_form_keeps_the_rest_of_the_line(kw: str) -> None:
    got = one(f"{kw}   echo  'a  b' \"$HOME\"  ")
    assert got.args == ["echo  'a  b' \"$HOME\""]
    assert got.json is False


def test_invalid_json_falls_back_to_shell_form() -> None:
    assert one("CMD ['single', 'quotes']").args == ["['single', 'quotes']"]
    assert one("CMD [\"unterminated\"").args == ['["unterminated"']
    assert one("RUN [ -f /x ] && echo yes").json is False
    assert one("CMD [NaN]").json is False


def test_json_followed_by_text_is_still_json_as_go_decoder() -> None:
    got = one('CMD ["a"] trailing')
    assert (got.args, got.json) == (["a"], True)


def test_json_with_non_strings_is_an_error() -> None:
    e = error('FROM a\nCMD ["sleep", 10]\n')
    assert e.line == 2
    assert e.reason == "when using JSON array syntax, arrays must be comprised of strings only"


def test_empty_json_and_empty_shell_form() -> None:
    assert (one("ENTRYPOINT []").args, one("ENTRYPOINT []").json) == ([], True)
    assert (one("CMD").args, one("CMD").json) == ([], False)


def test_shell_requires_json() -> None:
    got = one('SHELL ["powershell", "-command"]')
    assert (got.args, got.json) == (["powershell", "-command"], True)
    assert error("FROM a\nSHELL /bin/bash -c\n").reason == (
        "SHELL requires the arguments to be in JSON form"
    )
    assert error("FROM a\nSHELL []\n").reason == "SHELL requires at least one argument"


def test_run_flags_kept_as_given() -> None:
    got = one("RUN --network=none --mount=type=cache,target=/x echo hi")
    assert got.flags == {"network": "none", "mount": "type=cache,target=/x"}
    assert got.args == ["echo hi"]


def test_double_dash_ends_flags() -> None:
    got = one("RUN -- --version")
    assert got.args == ["--version"] and got.flags == {}


def test_heredocs_are_refused() -> None:
    e = error("FROM a\nRUN <<EOF\necho hi\nEOF\n")
    assert e.line == 2 and "heredoc" in e.reason
    assert "heredoc" in error("FROM a\nCOPY <<-EOT /x\nEOT\n").reason
    # Not a heredoc: a redirection with a space, a quoted "<<", a JSON arg.
    assert one("RUN cat << EOF").args == ["cat << EOF"]
    assert one('RUN echo "<<EOF"').args == ['echo "<<EOF"']
    assert one('RUN ["cat", "<<EOF"]').json is True


# --- COPY / ADD / VOLUME ------------------------------------------------------------


def test_copy_words_and_flags() -> None:
    got = one("COPY --from=build --chown=1:1 --chmod=755 /src/a  b\t/dst/")
    assert got.args == ["/src/a", "b", "/dst/"]
    assert got.flags == {"from": "build", "chown": "1:1", "chmod": "755"}
    assert got.json is False


def test_copy_quotes_not_interpreted_in_shell_form() -> None:
    assert one('COPY "a b" c').args == ['"a', 'b"', "c"]


def test_copy_json_form_allows_spaces() -> None:
    got = one('COPY ["my file", "/dst dir/"]')
    assert (got.args, got.json) == (["my file", "/dst dir/"], True)


def test_flag_values_can_be_quoted() -> None:
    assert one('COPY --chown="1 2" a b').flags == {"chown": "1 2"}


def test_add_flags_and_bool_flag() -> None:
    got = one("ADD --link --chown=app a.tar.gz /opt/")
    assert got.flags == {"link": "true", "chown": "app"}
    assert one("ADD --link=false a /b").flags == {"link": "false"}


def test_copy_add_need_two_args() -> None:
    e = error("FROM a\nCOPY onlyone\n")
    assert e.reason.startswith("COPY requires at least two arguments")
    assert error("FROM a\nADD\n").reason.startswith("ADD requires at least two arguments")
    assert error('FROM a\nCOPY ["x"]\n').reason.startswith("COPY requires at least two")


def test_flag_errors() -> None:
    assert error("FROM a\nCOPY --frm=x a b\n").reason == "unknown flag: frm"
    assert error("FROM a\nCOPY --from a b\n").reason == "missing a value on flag: from"
    assert error("FROM a\nCOPY --from=x --from=y a b\n").reason == (
        "duplicate flag specified: from"
    )
    assert error("FROM a\nADD --link=maybe a b\n").reason == (
        "expecting boolean value for flag link, not: maybe"
    )
    assert error("FROM a\nUSER --x=1 root\n").reason == "unknown flag: x"
    assert error("FROM a\nENV --a=1 b=2\n").reason == "unknown flag: a"


def test_volume_forms() -> None:
    assert one("VOLUME /data /logs").args == ["/data", "/logs"]
    got = one('VOLUME ["/data", "/var/log"]')
    assert (got.args, got.json) == (["/data", "/var/log"], True)
    assert error("FROM a\nVOLUME\n").reason == "VOLUME requires at least one argument"
    assert error('FROM a\nVOLUME ["/a", " "]\n').reason == (
        "VOLUME specified can not be an empty string"
    )


# --- ENV / LABEL / ARG ---------------------------------------------------------------


def test_env_pairs_keep_quotes_for_expand() -> None:
    got = one('ENV a=1 b="x y" c=\'$d\' e=f\\ g')
    assert got.args == ["a", "1", "b", '"x y"', "c", "'$d'", "e", "f\\ g"]
    # The executor expands each key and value; that is where quotes go away.
    values = [expand(v, {"d": "D"}) for v in got.args[1::2]]
    assert values == ["1", "x y", "$d", "f g"]


def test_env_legacy_form() -> None:
    got = one("ENV PATH_EXTRA  /usr/local/bin  and more")
    assert got.args == ["PATH_EXTRA", "/usr/local/bin  and more"]


def test_env_value_may_be_empty_and_contain_equals() -> None:
    assert one('ENV a= b="" c=x=y').args == ["a", "", "b", '""', "c", "x=y"]


def test_env_multiline() -> None:
    got = parse('FROM a\nENV A=1 \\\n    B="two words" \\\n    C=3\n')[1]
    assert got.args == ["A", "1", "B", '"two words"', "C", "3"]


def test_env_quoted_blank_inside_word() -> None:
    assert one('ENV msg="hello world" x=1').args == ["msg", '"hello world"', "x", "1"]


def test_env_errors() -> None:
    assert error("FROM a\nENV\n").reason == "ENV requires at least one argument"
    assert error("FROM a\nENV onlyname\n").reason == "ENV must have two arguments"
    assert error("FROM a\nENV =x\n").reason == "ENV names can not be blank"
    assert error("FROM a\nENV a=1 b\n").reason == (
        "Syntax error - can't find = in \"b\". Must be of the form: name=value"
    )


def test_label_forms() -> None:
    got = one('LABEL "com.example.vendor"="ACME Inc" version=1.0 description="a \\"b\\""')
    assert got.args == ['"com.example.vendor"', '"ACME Inc"', "version", "1.0",
                        "description", '"a \\"b\\""']
    assert [expand(a, {}) for a in got.args] == [
        "com.example.vendor", "ACME Inc", "version", "1.0", "description", 'a "b"'
    ]
    assert one("LABEL maintainer someone else").args == ["maintainer", "someone else"]
    assert error("FROM a\nLABEL\n").reason == "LABEL requires at least one argument"


def test_arg_forms() -> None:
    assert one("ARG VERSION").args == ["VERSION"]
    assert one("ARG VERSION=1.2 OTHER").args == ["VERSION=1.2", "OTHER"]
    assert one('ARG MSG="a b"').args == ['MSG="a b"']
    assert error("FROM a\nARG\n").reason == "ARG requires at least one argument"
    assert error("FROM a\nARG =x\n").reason == "ARG names can not be blank"


# --- FROM and the single-argument instructions -----------------------------------------


def test_from_forms() -> None:
    assert parse("FROM busybox:1.36")[0].args == ["busybox:1.36"]
    got = parse("FROM --platform=linux/amd64 golang:1.22 as Build\n")[0]
    assert got.args == ["golang:1.22", "as", "Build"]
    assert got.flags == {"platform": "linux/amd64"}


def test_multistage() -> None:
    text = (
        "FROM golang AS build\n"
        "RUN go build -o /app .\n"
        "FROM scratch\n"
        "COPY --from=build /app /app\n"
        'ENTRYPOINT ["/app"]\n'
    )
    got = parse(text)
    assert [i.keyword for i in got] == ["FROM", "RUN", "FROM", "COPY", "ENTRYPOINT"]
    assert got[3].flags == {"from": "build"}


def test_from_errors() -> None:
    assert error("FROM\n").reason == "FROM requires either one or three arguments"
    assert error("FROM a b\n").reason == "FROM requires either one or three arguments"
    assert error("FROM a IS b\n").reason == "FROM requires either one or three arguments"
    e = error("FROM a AS 2nd\n")
    assert e.reason == (
        "invalid name for build stage: \"2nd\", name can't start with a number or "
        "contain symbols"
    )
    assert "invalid name" in error("FROM a AS b$c\n").reason


def test_single_argument_instructions_take_the_rest_of_the_line() -> None:
    assert one("WORKDIR /path with space").args == ["/path with space"]
    assert one("USER app:app").args == ["app:app"]
    assert one("STOPSIGNAL SIGKILL").args == ["SIGKILL"]
    assert one("MAINTAINER Jane Doe <jane@example.com>").args == [
        "Jane Doe <jane@example.com>"
    ]
    for kw in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
        assert error(f"FROM a\n{kw}\n").reason == f"{kw} requires exactly one argument"


def test_expose() -> None:
    assert one("EXPOSE 80 443/tcp  53/udp").args == ["80", "443/tcp", "53/udp"]
    assert error("FROM a\nEXPOSE\n").reason == "EXPOSE requires at least one argument"


# --- HEALTHCHECK ------------------------------------------------------------------------


def test_healthcheck_none() -> None:
    got = one("HEALTHCHECK none")
    assert (got.args, got.json) == (["NONE"], False)
    assert error("FROM a\nHEALTHCHECK NONE x\n").reason == "HEALTHCHECK NONE takes no arguments"


def test_healthcheck_shell_form_with_flags() -> None:
    got = one(
        "HEALTHCHECK --interval=30s --timeout=3s --start-period=1m --start-interval=2s "
        "--retries=5 CMD curl -f http://localhost/ || exit 1"
    )
    assert got.args == ["CMD", "curl -f http://localhost/ || exit 1"]
    assert got.json is False
    assert got.flags == {"interval": "30s", "timeout": "3s", "start-period": "1m",
                         "start-interval": "2s", "retries": "5"}


def test_healthcheck_exec_form() -> None:
    got = one('HEALTHCHECK cmd ["/bin/check", "--fast"]')
    assert (got.args, got.json) == (["CMD", "/bin/check", "--fast"], True)


def test_healthcheck_errors() -> None:
    assert error("FROM a\nHEALTHCHECK\n").reason == "HEALTHCHECK requires at least one argument"
    assert error("FROM a\nHEALTHCHECK CMD\n").reason == "Missing command after HEALTHCHECK CMD"
    assert error("FROM a\nHEALTHCHECK RUN x\n").reason == (
        'Unknown type "RUN" in HEALTHCHECK (try CMD)'
    )
    assert error("FROM a\nHEALTHCHECK --interval=10us CMD x\n").reason == (
        'Interval "interval" cannot be less than 1ms'
    )
    assert error("FROM a\nHEALTHCHECK --timeout=soon CMD x\n").reason == (
        'time: invalid duration "soon"'
    )
    assert error("FROM a\nHEALTHCHECK --retries=0 CMD x\n").reason == (
        "--retries must be at least 1 (not 0)"
    )
    assert "invalid syntax" in error("FROM a\nHEALTHCHECK --retries=x CMD x\n").reason
    assert error("FROM a\nHEALTHCHECK --every=1s CMD x\n").reason == "unknown flag: every"


@pytest.mark.parametrize(
    ("text", "ns"),
    [("0", 0), ("30s", 30 * 10**9), ("1m30s", 90 * 10**9), ("1.5h", 5400 * 10**9),
     ("500ms", 5 * 10**8), ("10us", 10_000), ("2µs", 2000), ("-1s", -(10**9)),
     (".5s", 5 * 10**8), ("1h2m3s4ms", 3723004000000)],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [("", 'time: invalid duration ""'), ("5", 'time: missing unit in duration "5"'),
     ("5x", 'time: unknown unit "x" in duration "5x"'), ("s", 'time: invalid duration "s"'),
     ("1s2", 'time: missing unit in duration "1s2"')],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message + "$"):
        parse_duration(text)


# --- ONBUILD ---------------------------------------------------------------------------


def test_onbuild_keeps_the_trigger_text() -> None:
    got = one("onbuild  COPY --chown=1 . /app")
    assert (got.keyword, got.args, got.json, got.flags) == (
        "ONBUILD", ["COPY --chown=1 . /app"], False, {}
    )


def test_onbuild_trigger_must_be_valid() -> None:
    assert error("FROM a\nONBUILD ONBUILD RUN x\n").reason == (
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    )
    assert error("FROM a\nONBUILD from b\n").reason == "FROM isn't allowed as an ONBUILD trigger"
    assert error("FROM a\nONBUILD MAINTAINER me\n").reason == (
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    )
    e = error("FROM a\n\nONBUILD RUNN x\n")
    assert (e.line, e.reason) == (3, "unknown instruction: RUNN")
    assert error("FROM a\nONBUILD COPY x\n").reason.startswith("COPY requires at least two")
    assert error("FROM a\nONBUILD\n").reason == "ONBUILD requires at least one argument"


def test_parse_triggers() -> None:
    got = parse_triggers(["RUN echo hi", 'CMD ["x"]', "ENV A=1"])
    assert [(i.keyword, i.args, i.line) for i in got] == [
        ("RUN", ["echo hi"], 1), ("CMD", ["x"], 2), ("ENV", ["A", "1"], 3)
    ]
    with pytest.raises(DockerfileError, match="ONBUILD ONBUILD"):
        parse_triggers(["RUN a", "ONBUILD RUN b"])
    with pytest.raises(DockerfileError, match="FROM isn't allowed"):
        parse_triggers(["FROM x"])


# --- a realistic file ----------------------------------------------------------------


def test_realistic_dockerfile() -> None:
    text = """# syntax=docker/dockerfile:1
ARG PY=3.11

FROM python:${PY}-slim AS base
LABEL org.opencontainers.image.title="demo app" \\
      org.opencontainers.image.version=1.0
ENV PYTHONDONTWRITEBYTECODE=1 \\
    PIP_NO_CACHE_DIR=off
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt \\
 # pinned versions
 && rm -rf /root/.cache
COPY . .
USER 1000
EXPOSE 8000
HEALTHCHECK --interval=10s CMD ["python", "-c", "import sys; sys.exit(0)"]
STOPSIGNAL SIGTERM
VOLUME ["/data"]
ENTRYPOINT ["python", "-m", "app"]
CMD ["--port", "8000"]
"""
    got = parse(text)
    assert [(i.keyword, i.line) for i in got] == [
        ("ARG", 2), ("FROM", 4), ("LABEL", 5), ("ENV", 7), ("WORKDIR", 9), ("COPY", 10),
        ("RUN", 11), ("COPY", 14), ("USER", 15), ("EXPOSE", 16), ("HEALTHCHECK", 17),
        ("STOPSIGNAL", 18), ("VOLUME", 19), ("ENTRYPOINT", 20), ("CMD", 21),
    ]
    assert got[2].args == ["org.opencontainers.image.title", '"demo app"',
                           "org.opencontainers.image.version", "1.0"]
    assert got[3].args == ["PYTHONDONTWRITEBYTECODE", "1", "PIP_NO_CACHE_DIR", "off"]
    assert got[6].args == ["pip install -r requirements.txt  && rm -rf /root/.cache"]


# --- expand ----------------------------------------------------------------------------

ENV = {"a": "A", "empty": "", "sp": "x  y", "path": "/usr/local/bin/tool.tar.gz"}


@pytest.mark.parametrize(
    ("word", "want"),
    [
        ("$a", "A"),
        ("${a}", "A"),
        ("pre${a}post", "preApost"),
        ("$a$a", "AA"),
        ("$nope", ""),
        ("${nope}", ""),
        ("$", "$"),
        ("a$", "a$"),
        ("$/x", "$/x"),
        ("${a:-d}", "A"),
        ("${nope:-d}", "d"),
        ("${empty:-d}", "d"),
        ("${empty-d}", ""),
        ("${nope-d}", "d"),
        ("${a:+alt}", "alt"),
        ("${empty:+alt}", ""),
        ("${empty+alt}", "alt"),
        ("${nope+alt}", ""),
        ("${nope:-${a}}", "A"),
        ("${nope:-'lit $a'}", "lit $a"),
        ("${a:?boom}", "A"),
        ("${path#*/}", "usr/local/bin/tool.tar.gz"),
        ("${path##*/}", "tool.tar.gz"),
        ("${path%.*}", "/usr/local/bin/tool.tar"),
        ("${path%%.*}", "/usr/local/bin/tool"),
        ("'$a'", "$a"),
        ('"$a"', "A"),
        ('"${a} and \'$a\'"', "A and 'A'"),
        ("\\$a", "$a"),
        ("\\${a}", "${a}"),
        ('"\\$a"', "$a"),
        ('"a\\"b"', 'a"b'),
        ('"a\\nb"', "a\\nb"),  # only ", $ and the escape are escapable in "..."
        ("'a\\'", "a\\"),  # nothing is escapable in '...'
        ("a\\ b", "a b"),
        ("a\\", "a"),
        ("$sp", "x  y"),  # ProcessWord keeps blanks
        ("hello world", "hello world"),
        ("$1", ""),
        ("$$", ""),
        ("_${a}_", "_A_"),
    ],
)
def test_expand(word: str, want: str) -> None:
    assert expand(word, ENV) == want


def test_expand_backtick_escape() -> None:
    assert expand("`$a", ENV, escape="`") == "$a"
    assert expand("c:\\$a", ENV, escape="`") == "c:\\A"
    assert expand('"a`"b"', ENV, escape="`") == 'a"b'


@pytest.mark.parametrize(
    ("word", "reason"),
    [
        ("${a", "syntax error: missing '}'"),
        ("${", "syntax error: missing '}'"),
        ("${}", "syntax error: bad substitution"),
        ("${:-x}", "syntax error: bad substitution"),
        ("${a:=x}", "unsupported modifier (:=) in substitution"),
        ("${a:-x", "syntax error: missing '}'"),
        ("'open", "unexpected end of statement while looking for matching single-quote"),
        ('"open', "unexpected end of statement while looking for matching double-quote"),
        ("${nope:?must be set}", "nope: must be set"),
        ("${nope?}", "nope: is not allowed to be unset"),
        ("${empty:?}", "empty: is not allowed to be empty"),
    ],
)
def test_expand_errors(word: str, reason: str) -> None:
    with pytest.raises(ExpandError) as info:
        expand(word, ENV)
    quoted = json.dumps(word)  # Go's %q
    assert str(info.value) == f"failed to process {quoted}: {reason}"
    assert isinstance(info.value, DockerfileError)


def test_empty_set_question_without_colon_is_fine() -> None:
    assert expand("${empty?x}", ENV) == ""


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("80 443", ["80", "443"]),
        ("  80\t443  ", ["80", "443"]),
        ("$ports", ["80/tcp", "53/udp"]),
        ('"$ports"', ["80/tcp 53/udp"]),
        ("'a b' c", ["a b", "c"]),
        ("a\\ b c", ["a b", "c"]),
        ("x$ports", ["x80/tcp", "53/udp"]),
        ('""', []),
        ("", []),
        ("$nope", []),
    ],
)
def test_expand_words(text: str, words: list[str]) -> None:
    assert expand_words(text, {"ports": "80/tcp 53/udp"}) == words


def test_expands_constant_matches_moby_replace_env_allowed() -> None:
    assert EXPANDS == {"ADD", "COPY", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER",
                       "VOLUME", "WORKDIR", "ARG"}
    assert "RUN" not in EXPANDS and "CMD" not in EXPANDS
