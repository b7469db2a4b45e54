"""setuptools needs this file only to build the cffi extension from aioruntime/_clone.c."""

from setuptools import setup

setup(cffi_modules=["aioruntime/_build.py:ffibuilder"])
