"""``asgikit check``: validate a config file and show the resolved pipeline."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from typing import Any, Final, TextIO

from asgikit.cli.shared import CONFIG_HELP, load, toml, url
from asgikit.config import (
    Config,
    MiddlewareEntry,
    import_app,
    logging_options,
    telemetry_options,
)
from asgikit.options import mask_passwords
from asgikit.signature import UNREPRESENTABLE, Options, config_value

__all__ = ["add_parser"]

# Option names whose string values are not shown by `check`.
_SECRET_NAME: Final = re.compile(r"secret|password|passwd|token|api_?key|credential|private", re.I)


def add_parser(commands: Any) -> None:
    """Add ``check`` to the subcommands (an ``add_subparsers`` action)."""
    check = commands.add_parser(
        "check",
        help="validate a config file and show the resolved pipeline",
        description="Validate the config file, import its app, and print the pipeline "
        "outermost first with every option's effective value (values from the "
        "environment and secrets masked). Exit status 1 on errors.",
    )
    check.add_argument("config", nargs="?", metavar="CONFIG", help=CONFIG_HELP)
    check.add_argument(
        "--strict", action="store_true", help="treat warnings as errors (exit status 1)"
    )
    check.set_defaults(run=_check)


def _check(args: argparse.Namespace) -> int:
    config = load(args.config)
    import_app(config, call_factory=False)
    out = sys.stdout
    _report(config, out)
    if config.warnings:
        for issue in config.warnings:
            print(issue, file=out)
        if args.strict:
            print("asgikit: warnings are errors with --strict", file=sys.stderr)
            return 1
    return 0


def _report(config: Config, out: TextIO) -> None:
    server = config.server
    factory = "  (factory)" if config.factory else ""
    print(f"{config.path}: ok", file=out)
    print(f"  app     {config.app}{factory}", file=out)
    workers = f"{server.workers} worker{'s' if server.workers != 1 else ''}"
    reload = "reload on" if server.reload else "reload off"
    print(
        f"  serve   {url(server.host, server.port)}  ({workers}, {reload}, "
        f"log level {server.log_level})",
        file=out,
    )
    spec = logging_options()
    if spec is None:
        print("  logs    structlog's defaults (no asgikit.logging in this version)", file=out)
    else:
        print("  logs    asgikit.logging.configure", file=out)
        _options(spec, config.logging, frozenset(), out)
    if config.telemetry is None:
        print("  traces  not set up here (no [telemetry] table)", file=out)
    else:
        print("  traces  asgikit.telemetry.configure", file=out)
        _options(telemetry_options(), config.telemetry, frozenset(), out)
    count = len(config.middleware)
    print(f"pipeline, outermost first ({count} middleware):", file=out)
    for number, entry in enumerate(config.middleware, 1):
        _entry(number, entry, out)
    print(f"  -> {config.app}", file=out)
    summary = f"{len(config.warnings)} warning{'s' if len(config.warnings) != 1 else ''}"
    print(summary, file=out)


def _entry(number: int, entry: MiddlewareEntry, out: TextIO) -> None:
    resolved = entry.resolved
    where = f", line {entry.line}" if entry.line is not None else ""
    print(f"  {number}. {resolved.name}  {resolved.target}  ({resolved.origin}{where})", file=out)
    _options(entry.spec, entry.written, entry.from_env, out)


def _options(
    spec: Options, written: Mapping[str, Any], from_env: frozenset[str], out: TextIO
) -> None:
    for name, option in spec.options.items():
        if name in written:
            print(_shown(name, written[name], name in from_env), file=out)
        else:  # a required option is always written
            default = config_value(option.default)
            shown = "(set in code)" if default is UNREPRESENTABLE else toml(default)
            print(f"       {name} = {shown}  # default", file=out)
    for name in spec.code_only:  # live objects: a file cannot set them
        print(f"       {name} = (set in code)  # default", file=out)
    for name in written.keys() - spec.options.keys():  # a factory taking **kwargs
        print(_shown(name, written[name], name in from_env), file=out)


def _shown(name: str, value: Any, from_env: bool) -> str:
    """One option as ``check`` prints it: no value from the environment, no secret."""
    note = ""
    if from_env:
        note = "  # from the environment"  # ``value`` shows the ${NAME} references
    elif _SECRET_NAME.search(name) and isinstance(value, str):
        value, note = "***", "  # secret"
    return f"       {name} = {mask_passwords(toml(value))}{note}"
