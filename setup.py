"""setuptools needs this file for what pyproject.toml cannot say: the cffi extensions (the
init, _clone.c, and the libseccomp bindings) and the compiled front end of the command."""

import os
import sys

from distutils.ccompiler import new_compiler
from distutils.command.build_scripts import build_scripts
from distutils.sysconfig import customize_compiler

from setuptools import setup

FRONT = "aioruntime/cli/front.c"


class BuildFront(build_scripts):
    """The ``aioruntime`` command is compiled, not copied: a C front end that runs the
    frequent commands itself and execs this interpreter for the rest."""

    def run(self) -> None:
        compiler = new_compiler()
        customize_compiler(compiler)
        os.makedirs(self.build_dir, exist_ok=True)
        objects = compiler.compile(  # the object outside build_dir, whose files all get installed
            [FRONT], output_dir=self.get_finalized_command("build").build_temp,
            macros=[("AIORUNTIME_PYTHON", '"%s"' % sys.executable)], extra_preargs=["-O2", "-Wall"],
        )
        target = os.path.join(self.build_dir, "aioruntime")
        compiler.link_executable(objects, "aioruntime", output_dir=self.build_dir)
        os.chmod(target, 0o755)
        self.outfiles = [target]


setup(
    cffi_modules=["aioruntime/_build.py:ffibuilder", "aioruntime/_seccomp_build.py:ffibuilder"],
    scripts=[FRONT],
    cmdclass={"build_scripts": BuildFront},
)
