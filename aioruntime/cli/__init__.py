"""The runc-compatible command line: ``main.main``, installed as ``bin/aioruntime``."""
