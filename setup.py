"""Builds the one compiled piece of kobako: the static exec stub (see runtime/stub.c)."""

import os
import platform
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

STUB_SOURCE = os.path.join("src", "kobako", "runtime", "stub.c")


def compile_stub(output: str) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise SystemExit("kobako: a C compiler (Debian package gcc) is needed to build kobako-stub")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    flags = ["-static", "-Os", "-s", "-Wall"]
    if platform.machine() in ("x86_64", "aarch64"):
        # stub.c carries its own _start and syscalls there: no libc, a few hundred bytes
        flags += ["-nostdlib", "-ffreestanding", "-fno-stack-protector", "-fno-builtin",
                  "-Wl,--build-id=none"]
    subprocess.check_call([compiler, *flags, "-o", output, STUB_SOURCE])


class BuildPyWithStub(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            compile_stub(os.path.join("src", "kobako", "runtime", "kobako-stub"))
        else:
            compile_stub(os.path.join(self.build_lib, "kobako", "runtime", "kobako-stub"))


setup(cmdclass={"build_py": BuildPyWithStub})
