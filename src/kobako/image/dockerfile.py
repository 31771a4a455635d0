"""The Dockerfile front end of the classic builder: parse and variable expansion.

Follows moby/buildkit's `frontend/dockerfile/parser` (line joining, directives,
per-instruction argument shapes), `instructions` (validation, flags, error wording)
and `shell` (the lexer behind ProcessWord/ProcessWords). Pure functions: no I/O.

What stays raw on purpose, as in moby: ENV, LABEL and ARG keep their quotes and
escapes in `args` (`ENV a="x y"` gives `["a", '"x y"']`). The executor applies
`expand()` to each key and value (these instructions are in `EXPANDS`), which removes
the quotes and processes the escapes; unquoting earlier would make `ENV a='$b'`
expand `$b`, which Docker does not.
"""

from __future__ import annotations

import fnmatch
import json as _json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DockerfileError",
    "ExpandError",
    "Instruction",
    "parse",
    "parse_triggers",
    "expand",
    "expand_words",
    "parse_duration",
    "EXPANDS",
    "SPLITS_WORDS",
    "KEYWORDS",
]


class DockerfileError(ValueError):
    """A Dockerfile that cannot be parsed.

    str() is moby's wording prefixed with the line when one is known:
    "dockerfile parse error on line 3: unknown instruction: FORM".
    """

    def __init__(self, reason: str, line: int | None = None):
        self.reason = reason
        self.line = line
        if line is None:
            super().__init__(reason)
        else:
            super().__init__(f"dockerfile parse error on line {line}: {reason}")


class ExpandError(DockerfileError):
    """A word whose variable substitution failed (bad `${...}`, `${v:?msg}`, open quote)."""

    def __init__(self, word: str, reason: str):
        self.word = word
        super().__init__(f"failed to process {_go_quote(word)}: {reason}")


@dataclass
class Instruction:
    keyword: str  # upper-case: "FROM", "RUN", "COPY", ...
    args: list[str]
    json: bool  # exec (JSON array) form
    flags: dict[str, str]  # leading --name=value flags, names without the dashes
    original: str  # as written, continuation lines joined (what "Step N/M : " prints)
    line: int  # 1-based line where it starts
    escape: str = field(default="\\")  # the file's escape token, for expand()


KEYWORDS = frozenset(
    {
        "FROM", "RUN", "CMD", "ENTRYPOINT", "ENV", "ARG", "LABEL", "EXPOSE", "WORKDIR",
        "USER", "VOLUME", "COPY", "ADD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "ONBUILD",
        "MAINTAINER",
    }
)

# moby's classic builder `replaceEnvAllowed`: these instructions get their args
# expanded with the build's environment (ENV values plus ARGs in scope). FROM is
# expanded separately, with the global ARGs declared before the first FROM only.
# RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK/ONBUILD/MAINTAINER are never expanded.
EXPANDS = frozenset(
    {"ADD", "COPY", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR", "ARG"}
)
# moby's `allowWordExpansion`: args re-split into words after expansion
# (ENV p="80 443" then EXPOSE $p exposes two ports). Others use expand() per arg.
SPLITS_WORDS = frozenset({"EXPOSE"})

# Flags each instruction accepts: name -> is boolean. Anything else is "unknown flag".
# RUN's flags are kept as given: the classic builder refuses them ("requires BuildKit"),
# which is the executor's call.
_FLAGS: dict[str, dict[str, bool]] = {
    "FROM": {"platform": False},
    "COPY": {"from": False, "chown": False, "chmod": False, "link": True},
    "ADD": {"chown": False, "chmod": False, "link": True, "checksum": False,
            "keep-git-dir": True},
    "RUN": {"network": False, "mount": False, "security": False},
    "HEALTHCHECK": {"interval": False, "timeout": False, "start-period": False,
                    "start-interval": False, "retries": False},
}

_DIRECTIVE = re.compile(r"^#[ \t\n\f\r]*([a-zA-Z][a-zA-Z0-9]*)[ \t\n\f\r]*=[ \t\n\f\r]*(.+?)"
                        r"[ \t\n\f\r]*\Z")
_KNOWN_DIRECTIVES = frozenset({"escape", "syntax", "check"})
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*\Z")
_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)


def _is_space(ch: str) -> bool:
    # Go's unicode.IsSpace, which (unlike str.isspace) excludes \x1c-\x1f.
    return ch.isspace() and ch not in "\x1c\x1d\x1e\x1f"


def _lstrip(s: str) -> str:
    i = 0
    while i < len(s) and _is_space(s[i]):
        i += 1
    return s[i:]


def _strip(s: str) -> str:
    s = _lstrip(s)
    j = len(s)
    while j > 0 and _is_space(s[j - 1]):
        j -= 1
    return s[:j]


def _go_quote(s: str) -> str:
    """Go's %q for the strings that show up in messages."""
    return _json.dumps(s, ensure_ascii=False)


# --- lines -------------------------------------------------------------------------


class _Directives:
    def __init__(self) -> None:
        self.escape = "\\"
        self.done = False
        self.seen: set[str] = set()
        self.continuation = self._continuation_re("\\")

    @staticmethod
    def _continuation_re(token: str) -> re.Pattern[str]:
        # The escape token as the last non-blank char continues the line, unless it is
        # itself escaped; a line holding only the token continues too.
        t = re.escape(token)
        return re.compile(rf"([^{t}]){t}[ \t]*\Z|^{t}[ \t]*\Z")

    def check(self, line: str, lineno: int) -> None:
        if self.done:
            return
        m = _DIRECTIVE.match(line)
        if m is None or m.group(1).lower() not in _KNOWN_DIRECTIVES:
            self.done = True
            return
        key, value = m.group(1).lower(), m.group(2)
        if key in self.seen:
            raise DockerfileError(f"only one {key} parser directive can be used", lineno)
        self.seen.add(key)
        if key == "escape":
            if value not in ("`", "\\"):
                raise DockerfileError(
                    f"invalid escape token '{value}' does not match ` or \\", lineno
                )
            self.escape = value
            self.continuation = self._continuation_re(value)

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """(line without the continuation token, whether the instruction ends here)."""
        m = self.continuation.search(line)
        if m is None:
            return line, True
        return line[: m.start()] + (m.group(1) or ""), False


def _is_comment(raw: str) -> bool:
    return _lstrip(raw.rstrip("\r\n")).startswith("#")


def _logical_lines(text: str, d: _Directives) -> list[tuple[str, int]]:
    """Join continuation lines and drop comments, as moby's parser.Parse."""
    raw_lines = text.split("\n")
    if text.endswith("\n"):
        raw_lines.pop()
    if raw_lines:
        raw_lines[0] = raw_lines[0].removeprefix("\ufeff")
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(raw_lines):
        raw = raw_lines[i]
        lineno = i + 1
        i += 1
        token = _lstrip(raw.rstrip("\r\n"))
        d.check(token, lineno)
        if token.startswith("#"):
            token = ""
        line, ends = d.trim_continuation(token)
        if ends and line == "":
            continue
        while not ends and i < len(raw_lines):
            raw = raw_lines[i]
            i += 1
            cont = raw.rstrip("\r\n")
            d.check(cont, i)
            # Comment lines inside a continuation are dropped, and (with a
            # warning in Docker) so are empty ones: neither ends the instruction.
            if _is_comment(raw) or _lstrip(cont) == "":
                continue
            cont, ends = d.trim_continuation(cont)
            line += cont
        out.append((line, lineno))
    if not out:
        raise DockerfileError("file with no instructions")
    return out


# --- flags -------------------------------------------------------------------------


def _extract_flags(rest: str) -> tuple[str, list[str]]:
    """Split leading `--flag[=value]` words off; moby's extractBuilderFlags."""
    words: list[str] = []
    word = ""
    blank_ok = False
    quote = ""
    phase = "spaces"
    pos = 0
    n = len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == "spaces":
            if pos == n:
                break
            if _is_space(ch):
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or rest[pos + 1] != "-":
                return rest[pos:], words
            phase = "word"
        if pos == n:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == "word":
            if _is_space(ch):
                phase = "spaces"
                if word == "--":
                    return rest[pos:], words
                if blank_ok or word:
                    words.append(word)
                word = ""
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = "quote"
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = rest[pos]
            word += ch
            pos += 1
            continue
        # inside quotes
        if ch == quote:
            phase = "word"
            pos += 1
            continue
        if ch == "\\":
            if pos + 1 == n:
                phase = "word"
                pos += 1
                continue
            pos += 1
            ch = rest[pos]
        word += ch
        pos += 1
    return "", words


def _parse_flags(keyword: str, words: list[str]) -> dict[str, str]:
    known = _FLAGS.get(keyword, {})
    flags: dict[str, str] = {}
    for word in words:
        if not word.startswith("--"):
            raise ValueError(f"arg should start with -- : {word}")
        if word == "--":
            break
        name, eq, value = word[2:].partition("=")
        if name not in known:
            raise ValueError(f"unknown flag: {name}")
        if name in flags:
            raise ValueError(f"duplicate flag specified: {name}")
        if known[name]:  # boolean
            if eq and value == "":
                raise ValueError(f"missing a value on flag: {name}")
            if value.lower() in ("true", ""):
                value = "true"
            elif value.lower() == "false":
                value = "false"
            else:
                raise ValueError(f"expecting boolean value for flag {name}, not: {value}")
        elif not eq:
            raise ValueError(f"missing a value on flag: {name}")
        flags[name] = value
    return flags


# --- argument shapes (moby's line parsers) -----------------------------------------


class _NotStrings(ValueError):
    pass


def _parse_json(rest: str) -> list[str] | None:
    """The JSON array at the start of rest, None if it is not one (shell form)."""
    rest = _lstrip(rest)
    if not rest.startswith("["):
        return None

    def no_constants(name: str) -> object:
        raise ValueError(name)  # Go's decoder has no NaN/Infinity

    try:
        # raw_decode, like Go's json.Decoder, ignores whatever follows the value.
        value, _ = _json.JSONDecoder(parse_constant=no_constants).raw_decode(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise _NotStrings(
            "when using JSON array syntax, arrays must be comprised of strings only"
        )
    return value


def _split_ws(rest: str) -> list[str]:
    return [] if rest == "" else _WHITESPACE.split(rest)


def _parse_words(rest: str, escape: str) -> list[str]:
    """Words split on blanks with quotes kept (moby's parseWords); ENV/LABEL/ARG."""
    words: list[str] = []
    word = ""
    quote = ""
    blank_ok = False
    phase = "spaces"
    pos = 0
    n = len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == "spaces":
            if pos == n:
                break
            if _is_space(ch):
                pos += 1
                continue
            phase = "word"
        if pos == n:
            if blank_ok or word:
                words.append(word)
            break
        if phase == "word":
            if _is_space(ch):
                phase = "spaces"
                if blank_ok or word:
                    words.append(word)
                word = ""
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = "quote"
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue  # an escape token at the very end is dropped
                # Outside quotes the escape and the escaped char are both kept.
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
            pos += 1
            continue
        # inside quotes
        if ch == quote:
            phase = "word"
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = "word"
                pos += 1
                continue
            pos += 1
            word += ch
            ch = rest[pos]
        word += ch
        pos += 1
    return words


def _parse_name_val(rest: str, keyword: str, escape: str) -> list[str]:
    words = _parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        # Legacy `ENV name value with spaces`: one pair, the value is the raw rest.
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{keyword} must have two arguments")
        return [parts[0], parts[1]]
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise ValueError(
                f"Syntax error - can't find = in {_go_quote(word)}. "
                "Must be of the form: name=value"
            )
        key, _, value = word.partition("=")
        out += [key, value]
    return out


def _check_heredoc(keyword: str, args: list[str], escape: str) -> None:
    for word in _parse_words(" ".join(args), escape):
        m = _HEREDOC.match(word)
        if m and m.group(3):
            raise ValueError(
                f"heredocs ({word}) are not supported by kobako's classic builder "
                f"in {keyword}"
            )


# --- instructions ------------------------------------------------------------------


def _parse_go_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(f'strconv.ParseInt: parsing {_go_quote(text)}: invalid syntax')
    return int(text)


_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([a-zµμ]*)")


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds ("1m30s", "1.5h", "500ms")."""
    quoted = _go_quote(text)
    s = text
    sign = 1
    if s[:1] in ("-", "+"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0
    while s:
        m = _DURATION_PART.match(s)
        assert m is not None  # every group may be empty
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if whole == "" and not frac:
            raise ValueError(f"time: invalid duration {quoted}")
        if unit == "":
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"time: unknown unit {_go_quote(unit)} in duration {quoted}")
        scale = _DURATION_UNITS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        s = s[m.end():]
    return sign * total


def _check_interval(flags: dict[str, str], name: str) -> None:
    value = flags.get(name, "")
    if value == "":
        return
    if parse_duration(value) < 1_000_000:
        raise ValueError(f"Interval {_go_quote(name)} cannot be less than 1ms")


def _build(line: str, lineno: int, escape: str, *, trigger: bool = False) -> Instruction:
    """One logical line to an Instruction (moby's newNodeFromLine + ParseInstruction)."""
    parts = _WHITESPACE.split(_strip(line), maxsplit=1)
    keyword = parts[0].upper()
    if keyword not in KEYWORDS:
        raise DockerfileError(f"unknown instruction: {keyword}", lineno)
    rest, flag_words = _extract_flags(parts[1]) if len(parts) == 2 else ("", [])
    rest = _strip(rest)
    try:
        return _instruction(keyword, rest, flag_words, line, lineno, escape, trigger)
    except DockerfileError:
        raise
    except ValueError as e:
        raise DockerfileError(str(e), lineno) from None


_Done = Callable[..., "Instruction"]


def _instruction(keyword: str, rest: str, flag_words: list[str], original: str,
                 lineno: int, escape: str, trigger: bool) -> Instruction:
    def done(args: list[str], is_json: bool = False,
             flags: dict[str, str] | None = None) -> Instruction:
        if flags is None:
            flags = _parse_flags(keyword, flag_words)
        return Instruction(keyword, args, is_json, flags, original, lineno, escape)

    if keyword in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        cmd = _parse_json(rest) if rest else None
        if cmd is None:
            args, is_json = ([rest] if rest else []), False
        else:
            args, is_json = cmd, True
        flags = _parse_flags(keyword, flag_words)
        if keyword == "SHELL":
            if not args:
                raise ValueError("SHELL requires at least one argument")
            if not is_json:
                raise ValueError("SHELL requires the arguments to be in JSON form")
        if keyword == "RUN" and not is_json:
            _check_heredoc(keyword, args, escape)
        return done(args, is_json, flags)

    if keyword in ("COPY", "ADD", "VOLUME"):
        listed = _parse_json(rest)
        args, is_json = (listed, True) if listed is not None else (_split_ws(rest), False)
        flags = _parse_flags(keyword, flag_words)
        if keyword == "VOLUME":
            if not args:
                raise ValueError("VOLUME requires at least one argument")
            if any(_strip(a) == "" for a in args):
                raise ValueError("VOLUME specified can not be an empty string")
            args = [_strip(a) for a in args]
        else:
            if len(args) < 2:
                raise ValueError(
                    f"{keyword} requires at least two arguments, but only one was provided."
                    " Destination could not be determined"
                )
            if not is_json:
                _check_heredoc(keyword, args, escape)
        return done(args, is_json, flags)

    if keyword in ("ENV", "LABEL"):
        args = _parse_name_val(rest, keyword, escape)
        if not args:
            raise ValueError(f"{keyword} requires at least one argument")
        if any(args[i] == "" for i in range(0, len(args), 2)):
            raise ValueError(f"{keyword} names can not be blank")
        return done(args)

    if keyword == "ARG":
        args = _parse_words(rest, escape)
        if not args:
            raise ValueError("ARG requires at least one argument")
        if any(a.startswith("=") for a in args):
            raise ValueError("ARG names can not be blank")
        return done(args)

    if keyword == "FROM":
        args = _split_ws(rest)
        if len(args) == 3 and args[1].lower() == "as":
            if not _STAGE_NAME.match(args[2].lower()):
                raise ValueError(
                    f"invalid name for build stage: {_go_quote(args[2])}, "
                    "name can't start with a number or contain symbols"
                )
        elif len(args) != 1:
            raise ValueError("FROM requires either one or three arguments")
        return done(args)

    if keyword == "EXPOSE":
        args = _split_ws(rest)
        if not args:
            raise ValueError("EXPOSE requires at least one argument")
        return done(args)

    if keyword in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
        if rest == "":
            raise ValueError(f"{keyword} requires exactly one argument")
        return done([rest])

    if keyword == "HEALTHCHECK":
        return _healthcheck(rest, flag_words, done)

    assert keyword == "ONBUILD"
    if trigger:
        raise ValueError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if rest == "":
        raise ValueError("ONBUILD requires at least one argument")
    flags = _parse_flags(keyword, flag_words)
    expression = _ONBUILD_PREFIX.sub("", original, count=1)
    _check_trigger(expression, lineno, escape)
    return done([expression], False, flags)


def _healthcheck(rest: str, flag_words: list[str], done: _Done) -> Instruction:
    if rest == "":
        raise ValueError("HEALTHCHECK requires at least one argument")
    parts = re.split(r"\s+", rest, maxsplit=1)
    kind = parts[0].upper()
    cmd_text = parts[1] if len(parts) == 2 else ""
    if kind == "NONE":
        if cmd_text:
            raise ValueError("HEALTHCHECK NONE takes no arguments")
        return done(["NONE"], False, _parse_flags("HEALTHCHECK", flag_words))
    flags = _parse_flags("HEALTHCHECK", flag_words)
    if kind != "CMD":
        raise ValueError(f"Unknown type {_go_quote(kind)} in HEALTHCHECK (try CMD)")
    listed = _parse_json(cmd_text) if cmd_text else None
    if listed is not None:
        cmd, is_json = listed, True
    else:
        cmd, is_json = ([cmd_text] if cmd_text else []), False
    if not cmd:
        raise ValueError("Missing command after HEALTHCHECK CMD")
    for name in ("interval", "timeout", "start-period", "start-interval"):
        _check_interval(flags, name)
    if flags.get("retries", "") != "":
        retries = _parse_go_int(flags["retries"])
        if retries < 1:
            raise ValueError(f"--retries must be at least 1 (not {retries})")
    return done(["CMD", *cmd], is_json, flags)


def _check_trigger(expression: str, lineno: int, escape: str) -> Instruction:
    word = _WHITESPACE.split(_strip(expression), maxsplit=1)[0].upper()
    if word == "ONBUILD":
        raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", lineno)
    if word in ("MAINTAINER", "FROM"):
        raise DockerfileError(f"{word} isn't allowed as an ONBUILD trigger", lineno)
    return _build(expression, lineno, escape, trigger=True)


def parse(text: str) -> list[Instruction]:
    """Parse a Dockerfile into its instructions, validated as moby's classic builder.

    Raises DockerfileError (with .line and .reason) on the first problem.
    """
    d = _Directives()
    lines = _logical_lines(text, d)
    instructions = [_build(line, lineno, d.escape) for line, lineno in lines]
    for inst in instructions:
        if inst.keyword == "FROM":
            break
        if inst.keyword != "ARG":
            raise DockerfileError("no build stage in current context", inst.line)
    return instructions


def parse_triggers(triggers: list[str]) -> list[Instruction]:
    """Parse an image's ONBUILD triggers (config.OnBuild), each one instruction.

    No FROM is needed; ONBUILD, FROM and MAINTAINER are refused as triggers, as
    Docker does when it runs them. `line` is the 1-based index in the list.
    """
    out: list[Instruction] = []
    for i, trigger in enumerate(triggers, start=1):
        d = _Directives()
        d.done = True  # no parser directives inside a trigger
        for line, _ in _logical_lines(trigger, d):
            out.append(_check_trigger(line, i, "\\"))
    return out


# --- variable expansion (moby's shell lexer) ---------------------------------------


class _Words:
    """Word splitting of ProcessWords: expanded and plain text split on blanks,
    quoted text never does."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if _is_space(ch):
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, s: str) -> None:
        self.word += s
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


_SPECIAL_PARAMS = "@*#?-$!0"


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str):
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def process(self, stop: str = "") -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch == "'":
                s = self.single_quote()
                words.add_raw(s)
            elif ch == '"':
                s = self.double_quote()
                words.add_raw(s)
            elif ch == "$":
                s = self.dollar()
                words.add_string(s)
            else:
                self.next()
                if ch == self.escape:
                    ch = self.next()
                    if ch == "":
                        break  # an escape at the very end is dropped
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                s = ch
            result.append(s)
        if stop:
            raise ValueError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.next()
            if ch == "":
                raise ValueError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch == "":
                raise ValueError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.next()
            if ch == self.escape:
                following = self.peek()
                if following == "":
                    continue
                # Inside double quotes only ", $ and the escape itself are escapable.
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        ch = self.peek()
        if ch.isdigit():
            start = self.pos
            while self.peek().isdigit():
                self.next()
            return self.text[start:self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            return self.next()
        start = self.pos
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.next()
        return self.text[start:self.pos]

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if name == "":
                return "$"
            return self.env.get(name, "")
        self.next()
        ch = self.peek()
        if ch == "":
            raise ValueError("syntax error: missing '}'")
        if ch in "{}:":
            raise ValueError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return self.env.get(name, "")
        if ch == "":
            raise ValueError("syntax error: missing '}'")
        colon = ch == ":"
        if colon:
            ch = self.next()
            if ch == "":
                raise ValueError("syntax error: missing '}'")
        allowed = "-+?" if colon else "-+?#%"
        if ch not in allowed:
            raise ValueError(f"unsupported modifier ({':' if colon else ''}{ch}) in substitution")
        greedy = False
        if ch in "#%" and self.peek() == ch:
            self.next()
            greedy = True
        try:
            word, _ = self.process("}")
        except ValueError:
            if self.peek() == "":
                raise ValueError("syntax error: missing '}'") from None
            raise
        value = self.env.get(name)
        # With ':' an empty value counts as unset.
        unset = value is None or (colon and value == "")
        if ch == "-":
            return word if unset else (value or "")
        if ch == "+":
            return "" if unset else word
        if ch == "?":
            if unset:
                default = "is not allowed to be unset" if value is None else (
                    "is not allowed to be empty")
                raise ValueError(f"{name}: {word or default}")
            return value or ""
        return _trim(value or "", word, suffix=ch == "%", greedy=greedy)


def _trim(value: str, pattern: str, *, suffix: bool, greedy: bool) -> str:
    """${v#p} ${v##p} ${v%p} ${v%%p}: drop the shortest/longest matching prefix/suffix."""
    rx = re.compile(fnmatch.translate(pattern))
    cuts = range(len(value) + 1)
    if suffix:
        order = cuts if greedy else reversed(cuts)
        for i in order:
            if rx.match(value[i:]):
                return value[:i]
    else:
        order = reversed(cuts) if greedy else cuts
        for i in order:
            if rx.match(value[:i]):
                return value[i:]
    return value


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """moby's ProcessWord: substitute variables, remove quotes and escapes.

    `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`, `${V:?msg}`, `${V?msg}`,
    `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`; an unknown variable is "". Blanks are
    kept. Raises ExpandError.
    """
    try:
        return _Lexer(word, env, escape).process()[0]
    except ValueError as e:
        raise ExpandError(word, str(e)) from None


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """moby's ProcessWords: expand, then split into words on blanks outside quotes
    (blanks from a variable's value split too). Raises ExpandError."""
    try:
        return _Lexer(text, env, escape).process()[1]
    except ValueError as e:
        raise ExpandError(text, str(e)) from None


def parse_line(text: str) -> Instruction:
    """One instruction on its own, as `docker commit --change` and `import --change`
    give them (no FROM needed, no parser directives)."""
    d = _Directives()
    d.done = True
    lines = _logical_lines(text, d)
    if len(lines) != 1:
        raise DockerfileError(f"want one instruction, got {len(lines)}: {text!r}")
    line, lineno = lines[0]
    return _build(line, lineno, "\\")
