""".dockerignore matching, as moby's ignorefile.ReadAll + patternmatcher.

Patterns are read one a line: a line starting with "#" is a comment (only at column
0, before trimming, as moby), blank lines are skipped, each pattern is trimmed,
Clean'ed and loses a leading "/"; a leading "!" re-includes. Later patterns win.
`*` and `?` stay within one path element, `**` spans any number of them, `[...]`
is a character class. A path is excluded when it, or one of its parent
directories, matches (moby's MatchesOrParentMatches).

"Dockerfile" and ".dockerignore" are not special here: the client and the builder decide
(the client leaves excluded files out of the context; the builder drops those two when
they are excluded, once it has read the Dockerfile, as dockerd).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

__all__ = ["DockerIgnore", "DockerIgnoreError"]


class DockerIgnoreError(ValueError):
    """A .dockerignore pattern that cannot be used; carries the pattern and why."""

    def __init__(self, pattern: str, reason: str):
        self.pattern = pattern
        self.reason = reason
        super().__init__(f"invalid .dockerignore pattern {pattern!r}: {reason}")


def _go_clean(path: str) -> str:
    """Go's filepath.Clean on "/"-separated paths (normpath keeps a leading "//")."""
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _read_patterns(text: str) -> list[str]:
    """moby's ignorefile.ReadAll."""
    patterns: list[str] = []
    lines = text.split("\n")
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    for line in lines:
        line = line.rstrip("\r")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if pattern == "":
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


_REGEX_SPECIALS = frozenset(".+()|{}$")


@dataclass
class _Pattern:
    text: str  # the cleaned pattern, without "!"
    exclusion: bool
    kind: str  # "exact", "prefix", "suffix" or "regex", as moby's matchType
    regex: re.Pattern[str] | None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]  # "**/foo" matches "foo"
        assert self.regex is not None
        return self.regex.match(path) is not None


def _check_syntax(pattern: str) -> None:
    """The errors Go's filepath.Match reports: a trailing escape, an open class."""
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 == n:
                raise DockerIgnoreError(pattern, "syntax error in pattern")
            i += 2
            continue
        if ch == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                raise DockerIgnoreError(pattern, "syntax error in pattern")
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            if j >= n:
                raise DockerIgnoreError(pattern, "syntax error in pattern")
            i = j + 1
            continue
        i += 1


def _compile(text: str, exclusion: bool) -> _Pattern:
    """moby's Pattern.compile: a fast path for plain/`x/**`/`**/x` patterns, else a regex."""
    _check_syntax(text)
    regex = "^"
    kind = "exact"
    i = 0
    n = len(text)
    while i < n:
        at = i
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1  # "**/" is "**"
                if i == n:
                    # Trailing "**" matches everything below, as .gitignore.
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regex += ".*"
                        kind = "regex"
                else:
                    regex += "(.*/)?"
                    kind = "regex"
                if at == 0:
                    kind = "suffix"
            else:
                regex += "[^/]*"
                kind = "regex"
        elif ch == "?":
            regex += "[^/]"
            kind = "regex"
        elif ch in _REGEX_SPECIALS:
            regex += "\\" + ch
        elif ch == "\\":
            if i < n:
                regex += re.escape(text[i])
                i += 1
                kind = "regex"
            else:
                regex += "\\\\"
        elif ch == "[":
            regex += "["
            kind = "regex"
            # filepath.Match negates a class with "!"; the regex spelling is "^".
            if i < n and text[i] == "!":
                regex += "^"
                i += 1
        elif ch == "]":
            regex += "]"
            kind = "regex"
        else:
            regex += ch
    if kind != "regex":
        return _Pattern(text, exclusion, kind, None)
    try:
        compiled = re.compile(regex + r"\Z", re.DOTALL)
    except re.error as e:
        raise DockerIgnoreError(text, f"syntax error in pattern ({e})") from None
    return _Pattern(text, exclusion, kind, compiled)


class DockerIgnore:
    """The patterns of one .dockerignore file."""

    def __init__(self, text: str):
        self.patterns: list[str] = _read_patterns(text)
        self._compiled: list[_Pattern] = []
        for raw in self.patterns:
            p = raw.strip()
            if p == "":
                continue
            p = _go_clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise DockerIgnoreError(raw, 'illegal exclusion pattern: "!"')
                p = p[1:]
            self._compiled.append(_compile(p, exclusion))

    @property
    def has_exceptions(self) -> bool:
        """Whether any "!" pattern exists: an excluded directory may then still hold
        re-included files, so a walk cannot skip it wholesale."""
        return any(p.exclusion for p in self._compiled)

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative to the context root, "/"-separated, file or
        directory) is left out of the build context."""
        path = _go_clean(path).lstrip("/")
        if path in ("", "."):
            return False  # the context root itself is never excluded
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for pattern in self._compiled:
            # An inclusion cannot change a match already made, nor an exclusion
            # a path not matched yet.
            if pattern.exclusion != matched:
                continue
            match = pattern.match(path)
            if not match:
                for i in range(len(parents)):
                    if pattern.match("/".join(parents[: i + 1])):
                        match = True
                        break
            if match:
                matched = not pattern.exclusion
        return matched
