"""The ``asgikit`` command: ``serve``, ``check`` and ``schema`` a config file.

Mistakes in a config file or on the command line end in one line each (file, line,
column, what is wrong) and a non-zero exit status, never a traceback. An error raised by
the app's own code is not a config mistake: its traceback is shown as usual.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from asgikit.cli import check, schema, serve
from asgikit.cli.schema import BEGIN as BEGIN
from asgikit.cli.schema import END as END
from asgikit.cli.schema import schema_markdown
from asgikit.cli.shared import UsageError
from asgikit.config import ConfigError

__all__ = ["main", "schema_markdown"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 errors, 2 usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except BrokenPipeError:  # `asgikit check | head`: the reader has seen enough
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the exit flush stays quiet
        return 1
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        count = len(exc.issues)
        print(f"asgikit: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"asgikit: error: {exc}", file=sys.stderr)
        return 2
    return status


def _parser() -> argparse.ArgumentParser:
    from asgikit import __version__

    parser = argparse.ArgumentParser(
        prog="asgikit",
        description="Serve an ASGI app behind the middleware a config file lists; "
        "check the file; print its JSON Schema.",
    )
    parser.add_argument("--version", action="version", version=f"asgikit {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    serve.add_parser(commands)
    check.add_parser(commands)
    schema.add_parser(commands)
    return parser
