"""The ``asgikit`` command: ``serve``, ``check`` and ``schema`` a config file.

Mistakes in a config file or on the command line end in one line each (file, line,
column, what is wrong) and a non-zero exit status, never a traceback. An error raised by
the app's own code is not a config mistake: its traceback is shown as usual.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from asgikit._options import mask_passwords
from asgikit.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    MiddlewareEntry,
    configure_logging,
    configure_telemetry,
    import_app,
    json_schema,
    load_config,
    logging_options,
    ready_app,
    telemetry_options,
)
from asgikit.registry import ENTRY_POINT_GROUP, UNREPRESENTABLE, Options, Registry, config_value

__all__ = ["main", "schema_markdown"]

# Option names whose string values are not shown by `check`.
_SECRET_NAME: Final = re.compile(r"secret|password|passwd|token|api_?key|credential|private", re.I)
BEGIN: Final = "<!-- generated reference: begin -->"
END: Final = "<!-- generated reference: end -->"


class UsageError(Exception):
    """A mistake on the command line, reported in one line."""


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
    config_help = f"the config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})"

    serve = commands.add_parser(
        "serve",
        help="serve the app with uvicorn",
        description="Build the app from the config file and serve it with uvicorn. Flags "
        "override the file's [server] table. SIGTERM or CTRL+C shut down gracefully: "
        "requests in flight finish, then the app's lifespan shutdown runs.",
    )
    serve.add_argument("config", nargs="?", metavar="CONFIG", help=config_help)
    serve.add_argument("--host", help="the address to listen on")
    serve.add_argument("--port", type=int, help="the TCP port (0: any free one)")
    serve.add_argument("--workers", type=int, help="worker processes")
    serve.add_argument(
        "--reload",
        action=argparse.BooleanOptionalAction,
        help="restart when a Python file or the config changes (development)",
    )
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="the server's log level",
    )
    serve.set_defaults(run=_serve)

    check = commands.add_parser(
        "check",
        help="validate a config file and show the resolved pipeline",
        description="Validate the config file, import its app, and print the pipeline "
        "outermost first with every option's effective value (values from the "
        "environment and secrets masked). Exit status 1 on errors.",
    )
    check.add_argument("config", nargs="?", metavar="CONFIG", help=config_help)
    check.add_argument(
        "--strict", action="store_true", help="treat warnings as errors (exit status 1)"
    )
    check.set_defaults(run=_check)

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of config files",
        description="Print a JSON Schema of the config file, covering the built-in "
        f"middleware and the plug-ins installed under {ENTRY_POINT_GROUP!r}, for "
        "editors (taplo / Even Better TOML, the YAML language server) and validators.",
    )
    schema.add_argument("--builtins-only", action="store_true", help="leave out installed plug-ins")
    schema.add_argument(
        "--markdown", action="store_true", help="print the reference as Markdown tables"
    )
    schema.add_argument(
        "--update",
        metavar="FILE",
        help="with --markdown: replace the generated reference in FILE (between its "
        "'generated reference' markers)",
    )
    schema.set_defaults(run=_schema)
    return parser


def _config_path(given: str | None) -> str:
    return given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def _load(given: str | None) -> Config:
    path = _config_path(given)
    if given is None and not Path(path).exists():
        raise UsageError(
            f"no config file {path!r} here: name one (asgikit serve path/to/asgikit.toml) "
            f"or set {CONFIG_ENV}"
        )
    return load_config(path)


# --------------------------------------------------------------------------------------
# check


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config)
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
        f"  serve   {_url(server.host, server.port)}  ({workers}, {reload}, "
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
            shown = "(set in code)" if default is UNREPRESENTABLE else _toml(default)
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
    return f"       {name} = {mask_passwords(_toml(value))}{note}"


def _toml(value: Any) -> str:
    """``value`` as TOML writes it (``none`` for a null, which TOML cannot write)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(str(key))} = {_toml(item)}" for key, item in value.items())
        return "{ " + items + " }" if items else "{}"
    return str(value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" if port else f"http://{shown}:<a free port>/"


# --------------------------------------------------------------------------------------
# schema


def _schema(args: argparse.Namespace) -> int:
    registry = Registry(group=None) if args.builtins_only else Registry()
    for problem in registry.problems():
        print(f"asgikit: warning: {problem}", file=sys.stderr)
    schema = json_schema(registry)
    if args.update and not args.markdown:
        raise UsageError("--update rewrites a Markdown file: add --markdown")
    if not args.markdown:
        print(json.dumps(schema, indent=2))
        return 0
    reference = schema_markdown(schema)
    if not args.update:
        print(reference, end="")
        return 0
    path = Path(args.update)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {args.update}: {exc.strerror}") from None
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise UsageError(f"{args.update} has no {BEGIN} ... {END} markers")
    path.write_text(text[: start + len(BEGIN)] + "\n" + reference + text[end:], encoding="utf-8")
    print(f"asgikit: updated the reference in {args.update}", file=sys.stderr)
    return 0


def schema_markdown(schema: Mapping[str, Any]) -> str:
    """The config reference as Markdown, generated from ``json_schema()``'s output."""
    definitions: Mapping[str, Any] = schema["$defs"]
    out = ["", "### Top-level keys", ""]
    out += _table("Key", schema["properties"], schema.get("required", []), definitions)
    for name in ("server", "logging", "telemetry"):
        if name in definitions:
            description = _cell(schema["properties"][name]["description"])
            out += ["", f"### `[{name}]`", "", description, ""]
            definition = definitions[name]
            out += _table("Key", definition["properties"], definition["required"], definitions)
    out += ["", "### Middleware", ""]
    out.append(
        "Each `[[middleware]]` entry names its middleware with `use` and gives any of its "
        "options; the rest keep their defaults."
    )
    for key, definition in definitions.items():
        if not key.startswith("middleware.") or "use" not in definition["properties"]:
            continue
        enum = definition["properties"]["use"].get("enum")
        if not enum:
            continue
        out += ["", f"#### `{enum[0]}`", ""]
        if definition.get("description"):
            out += [_cell(definition["description"]), ""]
        options = {k: v for k, v in definition["properties"].items() if k != "use"}
        required = [name for name in definition["required"] if name != "use"]
        out += _table("Option", options, required, definitions)
    unavailable = schema.get("x-unavailable", [])
    if unavailable:
        names = ", ".join(f"`{name}`" for name in unavailable)
        out += ["", f"Not available in this version of asgikit yet: {names}."]
    return "\n".join(out) + "\n"


def _table(
    heading: str,
    properties: Mapping[str, Any],
    required: Sequence[str],
    definitions: Mapping[str, Any],
) -> list[str]:
    rows = [f"| {heading} | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, node in properties.items():
        if name in required:
            default = "required"
        elif "default" in node and not node.get("$ref"):
            default = f"`{_toml(node['default'])}`"
        else:
            default = ""
        kind = _type(node, definitions)
        rows.append(f"| `{name}` | {kind} | {default} | {_cell(node.get('description', ''))} |")
    return rows


def _cell(text: str) -> str:
    """Docstring prose (reStructuredText literals) as one Markdown table cell."""
    return text.replace("``", "`").replace("|", "\\|").replace("\n", " ")


def _type(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> str:
    if "$ref" in node:
        return "table"
    if "enum" in node:
        return " or ".join(f"`{json.dumps(value)}`" for value in node["enum"])
    if "anyOf" in node:
        # Any value may be a ${NAME} string (said once, above the reference).
        members = [m for m in node["anyOf"] if m.get("$ref") != "#/$defs/substitution"]
        kinds = [_type(member, definitions) for member in members]
        return " or ".join(dict.fromkeys(kinds))
    kind = node.get("type")
    if kind == "string":
        return "import string" if "pattern" in node and ":" in node["pattern"] else "string"
    if kind == "integer":
        bounds = []
        if "minimum" in node:
            bounds.append(f"≥ {node['minimum']}")
        if "maximum" in node:
            bounds.append(f"≤ {node['maximum']}")
        return "integer" + (f" ({', '.join(bounds)})" if bounds else "")
    if kind == "array":
        return f"array of {_type(node.get('items', {}), definitions)}"
    if kind == "object":
        values = node.get("additionalProperties")
        return f"table of {_type(values, definitions)}" if isinstance(values, dict) else "table"
    names = {"number": "number", "boolean": "boolean", "null": "none"}
    return names.get(kind, "any") if isinstance(kind, str) else "any"


# --------------------------------------------------------------------------------------
# serve


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _one_prometheus_port(config: Config) -> None:
    """Several workers cannot share one Prometheus port: each would try to listen."""
    telemetry = config.telemetry
    if telemetry is None:
        return
    metrics = telemetry.get("metrics")
    if metrics is None:
        metrics = os.environ.get("OTEL_METRICS_EXPORTER", "")
    if "prometheus" in str(metrics) or telemetry.get("prometheus_port") is not None:
        raise UsageError(
            "Prometheus metrics are served by one process on one port: with workers > 1 "
            'each worker would try to listen on it. Use metrics = "otlp" (a collector '
            "sums the workers), or serve with one worker"
        )


def _inspector_stays_local(config: Config, host: str) -> None:
    """The development inspector refuses to start on an address others can reach."""
    for entry in config.middleware:
        if entry.resolved.name != "inspector" or not entry.arguments.get("enabled", True):
            continue
        if not _loopback(host) and not entry.arguments.get("allow_non_loopback", False):
            raise UsageError(
                f"the development inspector (line {entry.line}) shows every request's "
                f"headers and tracebacks: it will not start on {host}, which other machines "
                "can reach; serve on 127.0.0.1, or set allow_non_loopback = true"
            )


def _serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    server = config.server
    host = args.host if args.host is not None else server.host
    port = args.port if args.port is not None else server.port
    workers = args.workers if args.workers is not None else server.workers
    reload = args.reload if args.reload is not None else server.reload
    log_level = args.log_level or server.log_level
    _inspector_stays_local(config, host)
    if workers > 1:
        _one_prometheus_port(config)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port (0-65535)")
    if workers < 1:
        raise UsageError(f"--workers {workers}: at least 1")
    if reload and workers > 1:
        raise UsageError("--reload restarts one process: it cannot be combined with workers > 1")
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise UsageError("serving needs uvicorn: pip install 'asgikit[server]'") from None

    app = import_app(config, call_factory=False)
    logs_configured = configure_logging(config)
    for issue in config.warnings:
        print(issue, file=sys.stderr)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        # asgikit's proxy_headers middleware decides whom to trust, not uvicorn.
        "proxy_headers": False,
        "lifespan": "auto",
    }
    if logs_configured:
        options["log_config"] = None  # asgikit.logging already routes uvicorn's loggers
    if any(entry.resolved.name == "access_log" for entry in config.middleware):
        options["access_log"] = False  # one access log line per request, not two
    print(
        f"asgikit: serving {config.app} through {len(config.middleware)} middleware: "
        f"open {_url(host, port)}  (CTRL+C to stop)",
        file=sys.stderr,
        flush=True,
    )
    for entry in config.middleware:
        if entry.resolved.name == "inspector" and entry.arguments.get("enabled", True):
            path = str(entry.arguments.get("path", "/_asgikit/")).lstrip("/")
            print(
                f"asgikit: requests as they happen: {_url(host, port)}{path}",
                file=sys.stderr,
                flush=True,
            )
    if workers > 1 or reload:
        # Each worker (or reloaded process) builds the app from the file itself.
        os.environ[CONFIG_ENV] = str(config.path.resolve())
        directories = {os.getcwd(), str(config.path.resolve().parent)}
        if config.app_dir is not None:
            directories.add(str(config.app_dir))
        uvicorn.run(
            "asgikit.config:app_from_env",
            factory=True,
            workers=workers,
            reload=reload,
            reload_dirs=sorted(directories) if reload else None,
            reload_includes=[config.path.name] if reload else None,
            **options,
        )
        return 0
    telemetry = configure_telemetry(config)
    try:
        uvicorn.run(config.pipeline._apply(ready_app(config, app)), **options)
    finally:
        if telemetry is not None:
            telemetry.shutdown()  # flush the last spans and metrics
    return 0
