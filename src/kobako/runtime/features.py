"""`kobako-runtime features`: the runtime-spec features.Features document.

containerd reads it (validateRuntimeFeatures) to learn what the runtime can
do; the shape and most values follow `runc features`. The lists say what
kobako's runtime supports, not what the kernel could do: seccomp without
SCMP_ACT_NOTIFY, no AppArmor/SELinux/Intel RDT, no idmapped mounts, no systemd
cgroup driver.
"""

from __future__ import annotations

from typing import Any

import kobako
from kobako.linux import capabilities, seccomp
from kobako.runtime import spec

OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.2.0"

# The mount(8)-style options the runtime's mount code understands (runc's list).
MOUNT_OPTIONS = (
    "acl", "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
    "iversion", "lazytime", "loud", "mand", "noacl", "noatime", "nodev", "nodiratime",
    "noexec", "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid",
    "nosymfollow", "private", "ratime", "rbind", "rdev", "rdiratime", "relatime", "remount",
    "rexec", "rnoatime", "rnodev", "rnodiratime", "rnoexec", "rnorelatime", "rnostrictatime",
    "rnosuid", "rnosymfollow", "ro", "rprivate", "rrelatime", "rro", "rrw", "rshared",
    "rslave", "rstrictatime", "rsuid", "rsymfollow", "runbindable", "rw", "shared", "silent",
    "slave", "strictatime", "suid", "symfollow", "sync", "tmpcopyup", "unbindable",
)


def _seccomp_features() -> dict[str, Any]:
    if not seccomp.available():
        return {"enabled": False}
    return {
        "enabled": True,
        "actions": sorted(seccomp.ACTIONS),
        "operators": sorted(seccomp.OPERATORS),
        "archs": sorted(seccomp.ARCHES),
        "knownFlags": list(seccomp.FLAGS),
        "supportedFlags": seccomp.supported_flags(),
    }


def features() -> dict[str, Any]:
    """The features.Features JSON object `kobako-runtime features` prints."""
    annotations = {"io.github.kobako.version": kobako.__version__}
    libseccomp = seccomp.libseccomp_version()
    if libseccomp:
        annotations["io.github.seccomp.libseccomp.version"] = libseccomp
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(spec.HOOK_NAMES),
        "mountOptions": list(MOUNT_OPTIONS),
        "linux": {
            "namespaces": sorted(spec.NAMESPACE_TYPES),
            "capabilities": sorted(capabilities.ALL_CAPS, key=capabilities.ALL_CAPS.__getitem__),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": _seccomp_features(),
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": annotations,
    }
