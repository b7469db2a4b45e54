"""runc's command-line grammar, parsed by hand: argparse costs more to import and set up
than a whole ``aioruntime state`` should take.

    aioruntime [global flags] COMMAND [flags] ARGS...

Flags are spelled as runc (Go) accepts them: ``--name value``, ``--name=value``,
``-name value``, one-letter aliases (``-b``), booleans with an optional ``=true|false``,
repeatable ones (``-e A=1 -e B=2``); ``--`` ends the flags. A command whose last argument
is ``NAME...`` (``exec ID COMMAND...``) takes its flags before the first argument only, and
everything from there on verbatim, as runc does (``SkipArgReorder``).
"""


from collections.abc import Sequence
from typing import NamedTuple


class UsageError(Exception):
    """Bad command line: printed with a hint to use --help; exit status 1 as runc."""


Value = str | bool | tuple[str, ...] | None


class Flag(NamedTuple):
    names: tuple[str, ...]  # without dashes; the first is the long name
    value: str | None  # metavar when the flag takes a value, None for a boolean
    help: str
    default: Value = None  # a boolean defaulting to None tells "not given" from "=false"
    many: bool = False  # repeatable: the values given, in order (default ())

    @property
    def dest(self) -> str:
        return self.names[0].replace("-", "_")


class Command(NamedTuple):
    help: str
    flags: tuple[Flag, ...]
    args: tuple[str, ...]  # positional names; "?" marks an optional one, a last "..." the rest


class Parsed(NamedTuple):
    command: str
    globals: dict[str, Value]
    flags: dict[str, Value]
    args: dict[str, str | None]
    rest: tuple[str, ...] = ()  # the words a "NAME..." argument took


def _flag_table(flags: Sequence[Flag]) -> dict[str, Flag]:
    return {name: f for f in flags for name in f.names}


def _take_flags(
    argv: list[str], flags: Sequence[Flag], *, stop_at_positional: bool
) -> tuple[dict[str, Value], list[str]]:
    """Consume flags from ``argv``; return their values and the positional arguments."""
    table = _flag_table(flags)
    values: dict[str, Value] = {f.dest: () if f.many else f.default for f in flags}
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
            continue
        if eq:
            value = inline
        elif argv:
            value = argv.pop(0)
        else:
            raise UsageError(f"flag needs an argument: {arg}")
        old = values[flag.dest]
        values[flag.dest] = (*old, value) if flag.many and isinstance(old, tuple) else value
    return values, positional


def _shape(args: Sequence[str]) -> str:
    return " ".join(f"[{a[:-1].upper()}]" if a.endswith("?") else a.upper() for a in args)


def strings(value: Value) -> tuple[str, ...]:
    """A repeatable flag's values."""
    assert isinstance(value, tuple)
    return value


def parse(argv: Sequence[str], global_flags: Sequence[Flag], commands: dict[str, Command]) -> Parsed:
    rest = list(argv)
    globals_, positional = _take_flags(rest, global_flags, stop_at_positional=True)
    if not positional:
        raise UsageError("no command given")
    name, *rest = positional
    command = commands.get(name)
    if command is None:
        raise UsageError(f"no such command: {name}")
    many = bool(command.args) and command.args[-1].endswith("...")
    named = command.args[:-1] if many else command.args
    flags, words = _take_flags(rest, command.flags, stop_at_positional=many)
    required = [a for a in named if not a.endswith("?")]
    if len(words) < len(required) or (len(words) > len(named) and not many):
        raise UsageError(f"{name}: expected {_shape(command.args) or 'no arguments'}, got {len(words)}")
    args = {a.rstrip("?"): (words[i] if i < len(words) else None) for i, a in enumerate(named)}
    return Parsed(name, globals_, flags, args, tuple(words[len(named):]) if many else ())


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
