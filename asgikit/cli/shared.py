"""What the ``asgikit`` subcommands share: the config file they name, the usage error,
and values shown as TOML and addresses as URLs."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asgikit.config import CONFIG_ENV, DEFAULT_CONFIG, Config, load_config

__all__ = ["CONFIG_HELP", "UsageError", "config_path", "load", "toml", "url"]

CONFIG_HELP = f"the config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})"
"""The help of the CONFIG argument of ``serve`` and ``check``."""


class UsageError(Exception):
    """A mistake on the command line, reported in one line."""


def config_path(given: str | None) -> str:
    """The path of the config file named on the command line, else ``$ASGIKIT_CONFIG``,
    else the default one."""
    return given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def load(given: str | None) -> Config:
    """The config file named on the command line, else ``$ASGIKIT_CONFIG``, else the
    default one.

    Raises:
        UsageError: None was named and there is no default one here.
        ConfigError: The file does not load.
    """
    path = config_path(given)
    if given is None and not Path(path).exists():
        raise UsageError(
            f"no config file {path!r} here: name one (asgikit serve path/to/asgikit.toml) "
            f"or set {CONFIG_ENV}"
        )
    return load_config(path)


def toml(value: Any) -> str:
    """``value`` as TOML writes it (``none`` for a null, which TOML cannot write)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(str(key))} = {toml(item)}" for key, item in value.items())
        return "{ " + items + " }" if items else "{}"
    return str(value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def url(host: str, port: int) -> str:
    """Where a browser on this machine reaches a server listening on ``host:port``."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" if port else f"http://{shown}:<a free port>/"
