"""setuptools needs this file only to build the cffi extensions: the init (_clone.c) and
the libseccomp bindings."""

from setuptools import setup

setup(cffi_modules=["aioruntime/_build.py:ffibuilder", "aioruntime/_seccomp_build.py:ffibuilder"])
