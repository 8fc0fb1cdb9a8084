"""The JSON Schema of config files, built from every middleware's typed options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Union

import msgspec

from asgikit import servers
from asgikit._import_string import IMPORT_STRING_PATTERN
from asgikit.config.model import AppKeys, ServerConfig, server_table_options
from asgikit.config.observability import logging_options, telemetry_options
from asgikit.registry import ENTRY_POINT_GROUP, Registry, RegistryError
from asgikit.signature import Options, options_of, subscript

# --------------------------------------------------------------------------------------
# JSON Schema


_IMPORT_ENTRY: Final = "middleware.import-string"
_SUBSTITUTION: Final = "substitution"


def _takes_any_string(node: Mapping[str, Any]) -> bool:
    if node.get("type") == "string" and "pattern" not in node:
        return True
    return any(_takes_any_string(member) for member in node.get("anyOf", ()))


def _scalar(node: Mapping[str, Any]) -> bool:
    if "anyOf" in node:
        return all(_scalar(member) for member in node["anyOf"])
    return "enum" in node or node.get("type") in ("integer", "number", "boolean", "null", "string")


def _allow_substitutions(definition: dict[str, Any]) -> None:
    """Let each scalar option that takes no plain string take a ``${NAME}`` string too,
    as loading does (a substituted string is converted to the option's type)."""
    for name, node in definition.get("properties", {}).items():
        if name == "use" or not _scalar(node) or _takes_any_string(node):
            continue
        kept = {key: node[key] for key in ("description", "default") if key in node}
        choice = {key: value for key, value in node.items() if key not in kept}
        definition["properties"][name] = {
            **kept,
            "anyOf": [choice, {"$ref": f"#/$defs/{_SUBSTITUTION}"}],
        }


def json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """A JSON Schema of the config file, for editors and validators (draft-07: the
    draft editors' language servers support best).

    Each middleware entry is one of the available built-ins or installed plug-ins
    (told apart by ``use``), or an import string with any options.

    Args:
        registry: The names to cover; the built-ins and installed plug-ins by default.
    """
    entries, specs, unavailable = _middleware(registry or Registry())
    fields = _top_level_fields(specs)
    items: Any = subscript(Union, *entries) if entries else dict[str, Any]
    fields.append(
        (
            "middleware",
            subscript(
                Annotated,
                subscript(list, items),
                msgspec.Meta(description="The middleware, outermost first."),
            ),
            msgspec.field(default_factory=list),
        )
    )
    document = msgspec.defstruct("asgikit", fields, kw_only=True, forbid_unknown_fields=True)
    schema = msgspec.json.schema(document)
    definitions: dict[str, Any] = schema["$defs"]
    _add_defaults(definitions, specs)
    _add_server_options(definitions["server"])
    root: dict[str, Any] = definitions.pop("asgikit")
    _add_import_string_entries(root, definitions)
    definitions[_SUBSTITUTION] = {
        "type": "string",
        "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
        "description": "a value from the environment: ${NAME} or ${NAME:-default}",
    }
    for definition in [root, *definitions.values()]:
        _allow_substitutions(definition)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "asgikit config file",
        "description": (
            "An app by import string, how to serve it, and the middleware around it, "
            "outermost first."
        ),
        **{key: value for key, value in root.items() if key != "title"},
        "$defs": definitions,
        "x-unavailable": unavailable,
        "x-entry-point-group": ENTRY_POINT_GROUP,
    }


def _middleware(registry: Registry) -> tuple[list[Any], dict[str, Options], list[str]]:
    """A tagged struct per available name, their options, and the unavailable names."""
    entries: list[Any] = []
    specs: dict[str, Options] = {}
    unavailable = []
    for name in registry.names():
        try:
            spec = options_of(registry.resolve(name).factory)
        except RegistryError:
            unavailable.append(name)
            continue
        entries.append(spec.struct(name))
        specs[f"middleware.{name}"] = spec
    return entries, specs, unavailable


def _table(
    name: str, spec: Options, description: str, *, forbid_unknown_fields: bool
) -> tuple[str, Any, Any]:
    """The struct field of the table ``[name]``, which takes the options of ``spec``."""
    struct = msgspec.defstruct(
        name, spec.fields(), kw_only=True, forbid_unknown_fields=forbid_unknown_fields
    )
    annotated = subscript(Annotated, struct, msgspec.Meta(description=description))
    return (name, annotated, msgspec.field(default_factory=dict))


def _top_level_fields(specs: dict[str, Options]) -> list[tuple[str, Any, Any]]:
    """The struct fields of the top-level keys and tables (``specs`` gets their options)."""
    specs["server"] = server_table_options()
    server = _table(
        "server", specs["server"], _doc_summary(ServerConfig), forbid_unknown_fields=False
    )
    specs["asgikit"] = options_of(AppKeys, takes_app=False)
    fields = [*specs["asgikit"].fields(), server]
    logging_spec = logging_options()
    if logging_spec is not None:
        specs["logging"] = logging_spec
        description = "Arguments of asgikit.logging.configure: " + logging_spec.summary
        fields.append(
            _table(
                "logging",
                logging_spec,
                description,
                forbid_unknown_fields=not logging_spec.extra,
            )
        )
    telemetry_spec = specs["telemetry"] = telemetry_options()
    description = (
        "Arguments of asgikit.telemetry.configure, called at start-up when the table is "
        "there: " + telemetry_spec.summary
    )
    fields.append(_table("telemetry", telemetry_spec, description, forbid_unknown_fields=True))
    return fields


def _add_defaults(definitions: dict[str, Any], specs: Mapping[str, Options]) -> None:
    """Each option's default, and each middleware's summary, into its definition."""
    for name, spec in specs.items():
        definition = definitions[name]
        for option, default in spec.defaults().items():
            definition["properties"][option]["default"] = default
        if spec.summary and name.startswith("middleware."):
            definition["description"] = spec.summary


def _add_server_options(server: dict[str, Any]) -> None:
    """Let ``[server]`` hold the installed servers' own options too, and nothing else.

    Which server the table chooses is not known here: the union of their names is
    allowed (loading checks each key against the chosen server's).
    """
    names = set(server["properties"])
    for name in servers.SERVERS:
        try:
            names |= servers.own_options(name)
        except servers.ServerError:
            continue  # not installed
    server["propertyNames"] = {"enum": sorted(names)}
    server.pop("additionalProperties", None)


def _add_import_string_entries(root: dict[str, Any], definitions: dict[str, Any]) -> None:
    """Let a middleware entry name any import string, with any options."""
    choices = root["properties"]["middleware"]["items"]
    alternatives = choices.get("anyOf", [choices])
    definitions[_IMPORT_ENTRY] = {
        "title": "a middleware by import string",
        "type": "object",
        "properties": {
            "use": {
                "type": "string",
                "pattern": IMPORT_STRING_PATTERN,
                "description": "the middleware's import string, 'package.module:Class'",
            }
        },
        "required": ["use"],
    }
    root["properties"]["middleware"]["items"] = {
        "anyOf": [*alternatives, {"$ref": f"#/$defs/{_IMPORT_ENTRY}"}]
    }


def _doc_summary(obj: object) -> str:
    return (obj.__doc__ or "").split("\n\n", 1)[0].replace("\n", " ").strip()
