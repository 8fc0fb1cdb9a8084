"""The top-level package: cheap to import, the config API loaded on first use."""

import subprocess
import sys

import pytest

import asgikit


def test_config_api_is_exported_lazily() -> None:
    from asgikit.config import build, load_config

    assert asgikit.load_config is load_config
    assert asgikit.build is build
    assert "load_config" in asgikit.__all__


def test_unknown_attributes_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = asgikit.nope  # type: ignore[attr-defined]


def test_importing_asgikit_does_not_load_the_config_machinery() -> None:
    code = "import sys, asgikit; print('asgikit.config' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_inspector_is_exported_lazily() -> None:
    import asgikit.middleware
    from asgikit.middleware.inspector import DevInspectorMiddleware

    assert asgikit.middleware.DevInspectorMiddleware is DevInspectorMiddleware
    with pytest.raises(AttributeError, match="has no attribute 'NotAMiddleware'"):
        asgikit.middleware.NotAMiddleware  # noqa: B018


def test_the_middleware_package_lists_every_middleware_before_loading_it() -> None:
    code = (
        "import sys, asgikit.middleware as m; names = dir(m); "
        "print('CORSMiddleware' in names, 'asgikit.middleware.cors' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_every_middleware_is_listed_by_dir_before_it_is_loaded() -> None:
    import asgikit.middleware

    listed = dir(asgikit.middleware)
    for name in asgikit.middleware.__all__:
        assert name in listed
