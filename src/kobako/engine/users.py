"""The container's user: Docker's `User` and `GroupAdd` resolved against the image's files.

Semantics are runc's `libcontainer/user.GetExecUser` and `GetAdditionalGroups`, as
dockerd uses them (daemon/oci_linux.go getUser):

- `User` is "user[:group]"; each part a name or a number. An empty user is uid 0.
- a name must be in /etc/passwd ("unable to find user foo: no matching entries in
  passwd file"); a number need not be (its gid is then 0, or the group part).
- without an explicit group, the supplementary groups are those /etc/group lists the
  user in; with one, there are none.
- `GroupAdd` entries are group names or numbers; names must exist in /etc/group.
- the additional gids Docker puts in the spec are [gid] + supplementary + GroupAdd.

/etc/passwd and /etc/group belong to the image and are untrusted: they are opened
with openat2(RESOLVE_IN_ROOT) below the rootfs, so a symlink such as
/etc/passwd -> /etc/shadow resolves inside the rootfs, never on the host; only a
regular file of sane size is read, so a FIFO or device cannot stall or flood us.
"""

from __future__ import annotations

import errno
import os
import re
import stat

from kobako.engine.errors import InvalidParameter
from kobako.linux import syscalls

MAX_ID = 2147483647  # runc's maxID: ids are int32 in the kernel ABI
MAX_FILE_SIZE = 16 << 20  # larger passwd/group files are refused, not read

_NUMBER = re.compile(r"^[+-]?[0-9]+$")  # what Go's strconv.Atoi accepts


class UserError(InvalidParameter):
    """A user or group that cannot be resolved in the image."""


def _atoi(text: str) -> int | None:
    return int(text) if _NUMBER.match(text) else None


def _check_range(value: int) -> int:
    if not 0 <= value <= MAX_ID:
        raise UserError(f"uids and gids must be in range 0-{MAX_ID}")
    return value


def read_root_file(rootfs: str, path: str) -> str | None:
    """The text of `path` resolved inside `rootfs`, or None if it does not exist."""
    sys = syscalls.real()
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = sys.openat2(root_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, 0,
                             syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise UserError(f"open {path} in the container's root: {os.strerror(err.errno)}"
                            ) from None
    finally:
        os.close(root_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path} in the container's root is not a regular file")
        if info.st_size > MAX_FILE_SIZE:
            raise UserError(f"{path} in the container's root is too large "
                            f"({info.st_size} bytes)")
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            data = handle.read(MAX_FILE_SIZE + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    return data.decode("utf-8", errors="replace")


def _fields(text: str | None) -> list[list[str]]:
    if text is None:
        return []
    return [line.split(":") for line in (raw.strip() for raw in text.splitlines()) if line]


def _field(parts: list[str], index: int) -> str:
    return parts[index] if index < len(parts) else ""


def _int_field(parts: list[str], index: int) -> int:
    # runc ignores a malformed number and keeps 0
    return _atoi(_field(parts, index)) or 0


class _Passwd:
    def __init__(self, parts: list[str]):
        self.name = _field(parts, 0)
        self.uid = _int_field(parts, 2)
        self.gid = _int_field(parts, 3)


class _Group:
    def __init__(self, parts: list[str]):
        self.name = _field(parts, 0)
        self.gid = _int_field(parts, 2)
        members = _field(parts, 3)
        self.members = members.split(",") if members else []


def parse_passwd(text: str | None) -> list[_Passwd]:
    return [_Passwd(parts) for parts in _fields(text)]


def parse_group(text: str | None) -> list[_Group]:
    return [_Group(parts) for parts in _fields(text)]


def exec_user(user: str, passwd: str | None, group: str | None) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids) for `user`, given the texts of passwd and group
    (None: the file does not exist)."""
    user_arg, _, group_arg = user.partition(":")
    uid_arg, gid_arg = _atoi(user_arg), _atoi(group_arg)
    uid, gid, sgids = 0, 0, []

    def user_matches(entry: _Passwd) -> bool:
        if user_arg == "":
            return entry.uid == 0
        if uid_arg is not None:
            return entry.uid == uid_arg
        return entry.name == user_arg

    users = [entry for entry in parse_passwd(passwd) if user_matches(entry)]
    matched_name = ""
    if users:
        matched_name = users[0].name  # the first match wins
        uid, gid = users[0].uid, users[0].gid
    elif user_arg:
        if uid_arg is None:
            raise UserError(f"unable to find user {user_arg}: no matching entries in passwd file")
        uid = _check_range(uid_arg)

    if group_arg or matched_name:
        def group_matches(entry: _Group) -> bool:
            if not group_arg:
                return matched_name in entry.members
            if gid_arg is not None:
                return entry.gid == gid_arg
            return entry.name == group_arg

        groups = [entry for entry in parse_group(group) if group_matches(entry)]
        if group_arg:
            if groups:
                gid = groups[0].gid
            elif gid_arg is None:
                raise UserError(
                    f"unable to find group {group_arg}: no matching entries in group file")
            else:
                gid = _check_range(gid_arg)
        else:
            sgids = [entry.gid for entry in groups]
    return uid, gid, sgids


def additional_groups(group_add: list[str], group: str | None) -> list[int]:
    """The gids of `GroupAdd` entries (names or numbers), in order, without repeats."""
    groups = parse_group(group)
    gids: list[int] = []
    for wanted in group_add:
        found = next((g.gid for g in groups if g.name == wanted or str(g.gid) == wanted), None)
        if found is None:
            number = _atoi(wanted)
            if number is None:
                raise UserError(
                    f"Unable to find group {wanted}: no matching entries in group file")
            found = _check_range(number)
        if found not in gids:
            gids.append(found)
    return gids


def resolve_user(rootfs: str, user: str, group_add: list[str] | None = None
                 ) -> tuple[int, int, list[int]]:
    """(uid, gid, additional gids) as dockerd puts them in the OCI spec.

    The additional gids start with the primary gid, then the supplementary groups
    from /etc/group, then `group_add` (the order of Docker's getUser).
    """
    user = user or ""
    group_add = list(group_add or [])
    # Even the default user (uid 0) is looked up: its supplementary groups count.
    passwd_text = read_root_file(rootfs, "/etc/passwd")
    group_text = read_root_file(rootfs, "/etc/group")
    uid, gid, sgids = exec_user(user, passwd_text, group_text)
    extra = additional_groups(group_add, group_text) if group_add else []
    return uid, gid, [gid, *sgids, *extra]
