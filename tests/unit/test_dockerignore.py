""".dockerignore matching as moby's ignorefile + patternmatcher (MatchesOrParentMatches)."""

from __future__ import annotations

import pytest

from kobako.image.dockerignore import DockerIgnore, DockerIgnoreError


def test_read_patterns_as_moby_readall() -> None:
    text = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n"
    assert DockerIgnore(text).patterns == [
        "test1", "test2", "a/file/here", "lastfile", "!inverted/abs/path"
    ]


def test_patterns_are_cleaned() -> None:
    ig = DockerIgnore("./build/\nfoo/../bar\n  spaced  \n//x//y\r\n")
    assert ig.patterns == ["build", "bar", "spaced", "x/y"]


def test_comment_only_at_column_zero() -> None:
    # moby checks for "#" before trimming: an indented "#" line is a pattern.
    ig = DockerIgnore("# comment\n  #hash\n")
    assert ig.patterns == ["#hash"]
    assert ig.excluded("#hash")
    assert not ig.excluded("comment")


def test_empty_file_excludes_nothing() -> None:
    ig = DockerIgnore("")
    assert not ig.excluded("anything")
    assert not ig.excluded("a/b/c")


def test_plain_names_match_at_the_root_only() -> None:
    ig = DockerIgnore("node_modules\n")
    assert ig.excluded("node_modules")
    assert ig.excluded("node_modules/pkg/index.js")  # parent directory matches
    assert not ig.excluded("src/node_modules")
    assert not ig.excluded("node_modules_old")


def test_star_and_question_stay_within_one_element() -> None:
    ig = DockerIgnore("*.log\nsrc/?.tmp\n")
    assert ig.excluded("a.log")
    assert not ig.excluded("dir/a.log")
    assert ig.excluded("src/x.tmp")
    assert not ig.excluded("src/xy.tmp")
    assert not ig.excluded("src/sub/x.tmp")


def test_star_in_the_middle() -> None:
    ig = DockerIgnore("*/temp*\n")
    assert ig.excluded("somedir/temporary.txt")
    assert ig.excluded("somedir/temp")
    assert not ig.excluded("temp")
    assert not ig.excluded("a/b/temp")


def test_double_star_any_depth() -> None:
    ig = DockerIgnore("**/*.go\n")
    assert ig.excluded("main.go")
    assert ig.excluded("a/b/c/main.go")
    assert not ig.excluded("main.golang")


def test_double_star_in_the_middle() -> None:
    ig = DockerIgnore("a/**/z\n")
    assert ig.excluded("a/z")
    assert ig.excluded("a/b/z")
    assert ig.excluded("a/b/c/z/inner")
    assert not ig.excluded("b/z")


def test_double_star_suffix_pattern() -> None:
    ig = DockerIgnore("**/secret\n")
    assert ig.excluded("secret")
    assert ig.excluded("deep/down/secret")
    assert ig.excluded("deep/secret/file")
    assert not ig.excluded("notsecret")


def test_trailing_double_star() -> None:
    ig = DockerIgnore("docs/**\n")
    assert ig.excluded("docs/a")
    assert ig.excluded("docs/a/b.md")
    assert not ig.excluded("docs")  # "docs/" is not a prefix of "docs"


def test_lone_double_star_excludes_everything() -> None:
    ig = DockerIgnore("**\n")
    assert ig.excluded("a")
    assert ig.excluded("a/b/c")


def test_exceptions_and_order() -> None:
    ig = DockerIgnore("*.md\n!README.md\n")
    assert ig.excluded("CHANGES.md")
    assert not ig.excluded("README.md")
    # A later pattern wins over an earlier exception.
    ig = DockerIgnore("*.md\n!README*.md\nREADME-secret.md\n")
    assert not ig.excluded("README.md")
    assert ig.excluded("README-secret.md")


def test_exception_inside_an_excluded_directory() -> None:
    ig = DockerIgnore("build\n!build/keep.txt\n")
    assert ig.excluded("build")
    assert ig.excluded("build/other.o")
    assert not ig.excluded("build/keep.txt")
    assert ig.has_exceptions
    assert not DockerIgnore("build\n").has_exceptions


def test_everything_but() -> None:
    ig = DockerIgnore("*\n!src\n!Dockerfile\n")
    assert ig.excluded("README")
    assert not ig.excluded("src")
    assert not ig.excluded("src/main.c")  # the exception matches the parent
    assert not ig.excluded("Dockerfile")


def test_dockerfile_and_dockerignore_are_not_special() -> None:
    ig = DockerIgnore("Dockerfile\n.dockerignore\n")
    assert ig.excluded("Dockerfile")
    assert ig.excluded(".dockerignore")


def test_character_classes() -> None:
    ig = DockerIgnore("file[0-9].txt\nlog[!a].txt\n")
    assert ig.excluded("file1.txt")
    assert not ig.excluded("filex.txt")
    assert ig.excluded("logb.txt")
    assert not ig.excluded("loga.txt")


def test_regex_specials_are_literal() -> None:
    ig = DockerIgnore("a+b(c).txt\n*.{js}\n")
    assert ig.excluded("a+b(c).txt")
    assert not ig.excluded("aab(c).txt")
    assert ig.excluded("x.{js}")
    assert not ig.excluded("x.js")


def test_escaped_star_is_literal() -> None:
    ig = DockerIgnore("\\*.txt\n")
    assert ig.excluded("*.txt")
    assert not ig.excluded("a.txt")


def test_paths_are_normalised() -> None:
    ig = DockerIgnore("/tmp\n")
    assert ig.excluded("tmp")
    assert ig.excluded("./tmp/x")
    assert ig.excluded("/tmp/x")
    assert ig.excluded("a/../tmp")
    assert not ig.excluded(".")
    assert not ig.excluded("")


def test_illegal_patterns() -> None:
    with pytest.raises(DockerIgnoreError, match='illegal exclusion pattern: "!"'):
        DockerIgnore("a\n!\n")
    with pytest.raises(DockerIgnoreError, match="syntax error in pattern") as info:
        DockerIgnore("file[0-9\n")
    assert info.value.pattern == "file[0-9"
    with pytest.raises(DockerIgnoreError, match="syntax error in pattern"):
        DockerIgnore("trailing\\\n")
