"""``asgikit schema``: the JSON Schema of config files, or its Markdown reference."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from asgikit.cli.shared import UsageError, toml
from asgikit.config import json_schema
from asgikit.registry import ENTRY_POINT_GROUP, Registry

__all__ = ["BEGIN", "END", "add_parser", "schema_markdown"]

BEGIN: Final = "<!-- generated reference: begin -->"
END: Final = "<!-- generated reference: end -->"


def add_parser(commands: Any) -> None:
    """Add ``schema`` to the subcommands (an ``add_subparsers`` action)."""
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
            default = f"`{toml(node['default'])}`"
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
