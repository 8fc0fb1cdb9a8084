"""The JSON Schema of config files, built from every middleware's typed options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Union

import msgspec

from asgikit.config import ServerConfig, _App, logging_options, telemetry_options
from asgikit.registry import (
    ENTRY_POINT_GROUP,
    IMPORT_STRING_PATTERN,
    Options,
    Registry,
    RegistryError,
    options_of,
    subscript,
)

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
    registry = registry or Registry()
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
    specs["server"] = options_of(ServerConfig, takes_app=False)
    server = msgspec.defstruct(
        "server", specs["server"].fields(), kw_only=True, forbid_unknown_fields=True
    )
    specs["asgikit"] = options_of(_App, takes_app=False)
    fields = [
        *specs["asgikit"].fields(),
        (
            "server",
            subscript(Annotated, server, msgspec.Meta(description=_doc_summary(ServerConfig))),
            msgspec.field(default_factory=dict),
        ),
    ]
    logging_spec = logging_options()
    if logging_spec is not None:
        specs["logging"] = logging_spec
        logging = msgspec.defstruct(
            "logging",
            logging_spec.fields(),
            kw_only=True,
            forbid_unknown_fields=not logging_spec.extra,
        )
        description = "Arguments of asgikit.logging.configure: " + logging_spec.summary
        fields.append(
            (
                "logging",
                subscript(Annotated, logging, msgspec.Meta(description=description)),
                msgspec.field(default_factory=dict),
            )
        )
    telemetry_spec = telemetry_options()
    specs["telemetry"] = telemetry_spec
    telemetry = msgspec.defstruct(
        "telemetry", telemetry_spec.fields(), kw_only=True, forbid_unknown_fields=True
    )
    description = (
        "Arguments of asgikit.telemetry.configure, called at start-up when the table is "
        "there: " + telemetry_spec.summary
    )
    fields.append(
        (
            "telemetry",
            subscript(Annotated, telemetry, msgspec.Meta(description=description)),
            msgspec.field(default_factory=dict),
        )
    )
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
    for name, spec in specs.items():
        definition = definitions[name]
        for option, default in spec.defaults().items():
            definition["properties"][option]["default"] = default
        if spec.summary and name.startswith("middleware."):
            definition["description"] = spec.summary
    root: dict[str, Any] = definitions.pop("asgikit")
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


def _doc_summary(obj: object) -> str:
    return (obj.__doc__ or "").split("\n\n", 1)[0].replace("\n", " ").strip()
