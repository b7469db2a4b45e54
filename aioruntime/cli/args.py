"""runc's command-line grammar, parsed by hand: argparse costs more to import and set up
than a whole ``aioruntime state`` should take.

    aioruntime [global flags] COMMAND [flags] ARGS...

Flags are spelled as runc (Go) accepts them: ``--name value``, ``--name=value``,
``-name value``, one-letter aliases (``-b``), booleans with an optional ``=true|false``;
``--`` ends the flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class UsageError(Exception):
    """Bad command line: printed with a hint to use --help; exit status 1 as runc."""


class Flag(NamedTuple):
    names: tuple[str, ...]  # without dashes; the first is the long name
    value: str | None  # metavar when the flag takes a value, None for a boolean
    help: str
    default: str | bool | None = None

    @property
    def dest(self) -> str:
        return self.names[0].replace("-", "_")


class Command(NamedTuple):
    help: str
    flags: tuple[Flag, ...]
    args: tuple[str, ...]  # positional names; a trailing "?" marks an optional one


class Parsed(NamedTuple):
    command: str
    globals: dict[str, str | bool | None]
    flags: dict[str, str | bool | None]
    args: dict[str, str | None]


def _flag_table(flags: Sequence[Flag]) -> dict[str, Flag]:
    return {name: f for f in flags for name in f.names}


def _take_flags(
    argv: list[str], flags: Sequence[Flag], *, stop_at_positional: bool
) -> tuple[dict[str, str | bool | None], list[str]]:
    """Consume flags from ``argv``; return their values and the positional arguments."""
    table = _flag_table(flags)
    values: dict[str, str | bool | None] = {f.dest: f.default for f in flags}
    positional: list[str] = []
    while argv:
        arg = argv.pop(0)
        if arg == "--":
            positional += argv
            argv.clear()
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            if stop_at_positional:
                positional += argv
                argv.clear()
            continue
        name, eq, inline = arg.lstrip("-").partition("=")
        flag = table.get(name)
        if flag is None:
            raise UsageError(f"flag provided but not defined: {arg.partition('=')[0]}")
        if flag.value is None:
            if eq and inline not in ("true", "false", "1", "0"):
                raise UsageError(f"invalid boolean value {inline!r} for {arg}")
            values[flag.dest] = not eq or inline in ("true", "1")
        elif eq:
            values[flag.dest] = inline
        elif argv:
            values[flag.dest] = argv.pop(0)
        else:
            raise UsageError(f"flag needs an argument: {arg}")
    return values, positional


def _shape(args: Sequence[str]) -> str:
    return " ".join(f"[{a[:-1].upper()}]" if a.endswith("?") else a.upper() for a in args)


def parse(argv: Sequence[str], global_flags: Sequence[Flag], commands: dict[str, Command]) -> Parsed:
    rest = list(argv)
    globals_, positional = _take_flags(rest, global_flags, stop_at_positional=True)
    if not positional:
        raise UsageError("no command given")
    name, *rest = positional
    command = commands.get(name)
    if command is None:
        raise UsageError(f"no such command: {name}")
    flags, words = _take_flags(rest, command.flags, stop_at_positional=False)
    required = [a for a in command.args if not a.endswith("?")]
    if len(words) < len(required) or len(words) > len(command.args):
        raise UsageError(f"{name}: expected {_shape(command.args) or 'no arguments'}, got {len(words)}")
    args = {a.rstrip("?"): (words[i] if i < len(words) else None) for i, a in enumerate(command.args)}
    return Parsed(name, globals_, flags, args)


def usage(prog: str, global_flags: Sequence[Flag], commands: dict[str, Command], command: str | None = None) -> str:
    """The --help text, of the program or of one command."""

    def rows(flags: Sequence[Flag]) -> list[str]:
        out = []
        for f in flags:
            spelled = ", ".join(("-" if len(n) == 1 else "--") + n for n in f.names)
            if f.value:
                spelled += f" {f.value}"
            out.append(f"   {spelled:28s} {f.help}")
        return out

    if command is not None:
        c = commands[command]
        lines = [f"usage: {prog} {command} [flags] {_shape(c.args)}", "", c.help, "", "flags:"]
        return "\n".join(lines + rows(c.flags + (Flag(("help", "h"), None, "show this help"),))) + "\n"
    lines = [f"usage: {prog} [global flags] COMMAND [flags] ARGS...", "", "commands:"]
    lines += [f"   {name:12s} {c.help}" for name, c in commands.items()]
    lines += ["", "global flags:"] + rows(global_flags)
    return "\n".join(lines) + "\n"
