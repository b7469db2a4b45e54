"""The runc-compatible command line: ``main.main``, run by the compiled front end
(``front.c``, installed as the ``aioruntime`` command) for all it does not do itself."""
