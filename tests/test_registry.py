"""Names to middleware: built-ins, entry-point plug-ins, import strings; options from signatures."""

from __future__ import annotations

import enum
import functools
import importlib
import importlib.util
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import pytest

from asgikit.contract import enforce
from asgikit.middleware.request_id import RequestIDMiddleware, uuid7_hex
from asgikit.registry import (
    BUILTINS,
    REQUIRED,
    UNREPRESENTABLE,
    ImportString,
    Registry,
    RegistryError,
    _missing_module_hint,
    config_value,
    import_object,
    options_of,
    target_of,
)
from asgikit.types import ASGIApp

if TYPE_CHECKING:
    from decimal import Context  # only for type checkers: the annotation cannot resolve

PLUGIN_DIST = Path(__file__).resolve().parent / "plugin_dist"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test distribution (``stamp`` = StampMiddleware) installed, as far as
    ``importlib.metadata`` can tell."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIST))


def make_dist(root: Path, name: str, entry_points: str) -> None:
    """A distribution without code: a ``.dist-info`` with metadata and entry points."""
    info = root / f"{name.replace('-', '_')}-2.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


# --------------------------------------------------------------------------------------
# built-ins


def test_builtins_resolve_lazily_to_their_classes() -> None:
    registry = Registry()
    resolved = registry.resolve("request_id")
    assert resolved.factory is RequestIDMiddleware
    assert resolved.origin == "built-in"
    assert resolved.target == BUILTINS["request_id"]
    assert registry.resolve("contract").factory is enforce


def test_every_builtin_name_is_in_the_canonical_order_or_is_contract() -> None:
    from asgikit.pipeline import CANONICAL_ORDER

    assert list(BUILTINS) == [*CANONICAL_ORDER, "contract"]


def test_a_builtin_whose_module_is_not_there_is_not_available() -> None:
    registry = Registry({"future": "asgikit.middleware.not_yet:FutureMiddleware"})
    with pytest.raises(RegistryError, match=r"'future' is not available in this version"):
        registry.resolve("future")


@pytest.mark.parametrize("name", list(BUILTINS))
def test_every_builtin_resolves_to_what_it_names(name: str) -> None:
    resolved = Registry().resolve(name)
    module, _, attribute = BUILTINS[name].partition(":")
    assert resolved.factory is getattr(importlib.import_module(module), attribute)


def test_a_builtin_missing_a_dependency_names_it(tmp_path: Path) -> None:
    (tmp_path / "needs_dep.py").write_text("import not_a_real_dependency\n")
    sys.path.insert(0, str(tmp_path))
    try:
        registry = Registry({"needy": "needs_dep:Middleware"})
        with pytest.raises(RegistryError, match="needs 'not_a_real_dependency'"):
            registry.resolve("needy")
    finally:
        sys.path.remove(str(tmp_path))


def test_missing_optional_dependencies_point_at_the_extra() -> None:
    exc = ModuleNotFoundError("No module named 'redis.asyncio'", name="redis.asyncio")
    assert _missing_module_hint(exc) == " (pip install 'asgikit[redis]')"
    assert _missing_module_hint(ModuleNotFoundError("x", name="other")) == ""


# --------------------------------------------------------------------------------------
# names and import strings


def test_unknown_names_get_a_did_you_mean() -> None:
    with pytest.raises(
        RegistryError, match=r"unknown middleware 'requst_id'; did you mean 'request_id'\?"
    ):
        Registry().resolve("requst_id")


def test_unknown_names_without_a_close_one_list_what_there_is() -> None:
    with pytest.raises(
        RegistryError, match=r"use one of server_timing, proxy_headers, .* or an import"
    ):
        Registry(group=None).resolve("zzzzzz")


def test_import_strings_resolve_and_keep_a_builtin_name() -> None:
    resolved = Registry().resolve("asgikit.middleware.request_id:RequestIDMiddleware")
    assert resolved.factory is RequestIDMiddleware
    assert resolved.name == "request_id"  # the ordering rules still apply to it
    assert resolved.origin == "import string"
    other = Registry().resolve("tests.test_registry:Recorder")
    assert other.name == "tests.test_registry:Recorder"


def test_import_strings_that_are_not_callable_are_rejected() -> None:
    with pytest.raises(RegistryError, match="not a middleware class or factory"):
        Registry().resolve("asgikit.registry:ENTRY_POINT_GROUP")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("os.path.join", r"not an import string .*; did you mean 'os.path:join'\?"),
        ("os:", "not an import string"),
        ("no_such_module_here:thing", "no module named 'no_such_module_here'"),
        ("no_such_pkg.sub:thing", "no module named 'no_such_pkg'"),
        ("asgikit.registry:Registri", r"has no attribute 'Registri'; did you mean 'Registry'\?"),
        ("asgikit.registry:Registry.nope", "has no attribute 'nope'"),
    ],
)
def test_bad_import_strings_say_what_is_wrong(target: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        import_object(target)


def test_import_strings_reach_dotted_attributes() -> None:
    assert import_object("asgikit.registry:Registry.resolve") is Registry.resolve


def test_an_error_inside_the_imported_module_propagates(tmp_path: Path) -> None:
    (tmp_path / "broken_module.py").write_text("import not_installed_anywhere\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ModuleNotFoundError, match="not_installed_anywhere"):
            import_object("broken_module:thing")
    finally:
        sys.path.remove(str(tmp_path))


def test_target_of_unwraps_partials_and_refuses_lambdas() -> None:
    assert (
        target_of(functools.partial(RequestIDMiddleware, header_name="x")) == BUILTINS["request_id"]
    )
    assert target_of(lambda app: app) is None
    assert target_of(object()) is None


# --------------------------------------------------------------------------------------
# plug-ins


@pytest.mark.usefixtures("plugin")
def test_plugins_are_found_by_entry_point() -> None:
    registry = Registry()
    assert "stamp" in registry.names()
    assert registry.plugins == {"stamp": "asgikit_test_plugin:StampMiddleware"}
    resolved = registry.resolve("stamp")
    assert resolved.origin == "plug-in asgikit-test-plugin 1.0"
    assert resolved.factory.__name__ == "StampMiddleware"
    assert registry.name_of(resolved.factory) == "stamp"
    assert registry.name_of(Recorder) is None
    assert registry.problems() == []


def test_without_the_entry_point_group_there_are_no_plugins() -> None:
    assert Registry(group=None).plugins == {}


@pytest.mark.usefixtures("plugin")
def test_a_name_two_distributions_register_is_an_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist(tmp_path, "other-stamps", "[asgikit.middleware]\nstamp = other_stamps:Stamp\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    with pytest.raises(RegistryError) as caught:
        registry.resolve("stamp")
    message = str(caught.value)
    assert "registered by two distributions" in message
    assert "'asgikit-test-plugin' (asgikit_test_plugin:StampMiddleware)" in message
    assert "'other-stamps' (other_stamps:Stamp)" in message
    assert registry.problems() == [message]
    assert "stamp" not in registry.plugins


def test_a_plugin_cannot_shadow_a_builtin_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist(tmp_path, "evil-cors", "[asgikit.middleware]\nrequest_id = evil:RequestID\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    assert registry.resolve("request_id").factory is RequestIDMiddleware
    note = registry.shadowing("request_id")
    assert note is not None
    assert "plug-in evil-cors 2.0 also registers the built-in name 'request_id'" in note
    assert "write its import string 'evil:RequestID'" in note
    assert registry.problems() == [note]
    assert registry.shadowing("proxy_headers") is None


def test_a_plugin_that_cannot_be_loaded_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist(
        tmp_path,
        "broken-plugin",
        """\
        [asgikit.middleware]
        broken = not_a_module_anywhere:Thing
        constant = asgikit.registry:ENTRY_POINT_GROUP
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    with pytest.raises(
        RegistryError, match=r"broken-plugin 2.0 registers 'broken' .* ModuleNotFound"
    ):
        registry.resolve("broken")
    with pytest.raises(RegistryError, match="registers 'constant' as a non-callable"):
        registry.resolve("constant")


def test_name_of_knows_builtins_without_importing_and_nothing_else() -> None:
    registry = Registry({"fake": "tests.test_registry:Recorder"}, group=None)
    assert registry.name_of(Recorder) == "fake"
    assert registry.name_of(RequestIDMiddleware) is None
    assert registry.name_of(lambda app: app) is None


# --------------------------------------------------------------------------------------
# options from signatures


class Recorder:
    """A middleware whose options cover the kinds of annotation.

    Args:
        app: The app.
        name: A plain str.
        count: An int with bounds.
            The description goes on.
        hook: A callable, given as an import string.
        hooks: Callables.
        header_names: A str or many.
        table: A mapping.
        hooks_by_name: Callables by name.
        maybe_hook: A callable or nothing.
        mode: One of two.
        color: An enum.
        pair: A fixed tuple.
        many: A homogeneous tuple.
        unique: A set.
        frozen: A frozen set.
        anything: No annotation.
        opaque: A type no file can hold.
        either: A str or a type no file can hold.
        context: An annotation that cannot be resolved at run time.
        required: Must be given.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = "x",
        count: Annotated[int, msgspec.Meta(ge=0)] = 1,
        hook: Callable[[], str] = uuid7_hex,
        hooks: Sequence[Callable[[], str]] = (),
        header_names: str | Iterable[str] = ("a", "b"),
        table: Mapping[str, int] | None = None,
        hooks_by_name: Mapping[str, Callable[[], str]] | None = None,
        maybe_hook: Callable[[], str] | None = None,
        mode: Literal["fast", "slow"] = "fast",
        color: Color = None,  # type: ignore[assignment]
        pair: tuple[int, str] = (1, "a"),
        many: tuple[int, ...] = (),
        unique: set[str] | None = None,
        frozen: frozenset[str] = frozenset({"b", "a"}),
        anything=None,  # type: ignore[no-untyped-def]
        opaque: Opaque | None = None,
        either: str | Opaque = "s",
        context: Context | None = None,
        required: int,
    ) -> None:
        self.app = app


class Color(enum.Enum):
    RED = "red"


class Opaque:
    pass


class Other:
    pass


OPAQUE = Opaque()


def test_options_map_each_annotation_to_what_a_file_can_hold() -> None:
    spec = options_of(Recorder)
    types = {name: option.type for name, option in spec.options.items()}
    assert types["name"] is str
    assert types["count"] == Annotated[int, msgspec.Meta(ge=0)]
    assert types["hook"] == ImportString
    assert types["hooks"] == list[ImportString]
    assert types["header_names"] == str | list[str]
    assert types["table"] == dict[str, int] | None
    assert types["hooks_by_name"] == dict[str, ImportString] | None
    assert types["maybe_hook"] == ImportString | None
    assert types["mode"] == Literal["fast", "slow"]
    assert types["color"] is Color
    assert types["pair"] == tuple[int, str]
    assert types["many"] == list[int]
    assert types["unique"] == set[str] | None
    assert types["frozen"] == frozenset[str]
    assert types["anything"] is Any
    assert types["opaque"] is None  # only a null fits in a file
    assert types["either"] is str
    assert types["context"] is Any  # unresolvable: the middleware checks it
    assert spec.options["required"].required
    assert spec.options["name"].default == "x"
    assert not spec.extra
    assert spec.summary == "A middleware whose options cover the kinds of annotation."
    assert spec.options["count"].description == "An int with bounds. The description goes on."


def test_converters_import_callables_wherever_they_are() -> None:
    spec = options_of(Recorder)
    target = "asgikit.middleware.request_id:uuid7_hex"
    convert = {name: option.convert for name, option in spec.options.items()}
    assert convert["name"] is None
    assert convert["hook"] is not None and convert["hook"](target) is uuid7_hex
    assert convert["hooks"] is not None and convert["hooks"]([target]) == [uuid7_hex]
    by_name = convert["hooks_by_name"]
    assert by_name is not None
    assert by_name({"a": target}) == {"a": uuid7_hex}
    assert by_name(None) is None
    maybe = convert["maybe_hook"]
    assert maybe is not None and maybe(target) is uuid7_hex and maybe(None) is None
    with pytest.raises(RegistryError, match="is not callable"):
        convert["hook"]("asgikit.registry:ENTRY_POINT_GROUP")


def test_a_str_that_means_a_str_wins_over_one_that_means_an_import() -> None:
    def factory(app: ASGIApp, *, value: str | Callable[[], str] = "x") -> ASGIApp:
        return app

    def reversed_factory(app: ASGIApp, *, value: Callable[[], str] | str = "x") -> ASGIApp:
        return app

    for each in (factory, reversed_factory):
        option = options_of(each).options["value"]
        assert option.type is str
        assert option.convert is None


def test_unions_msgspec_cannot_decode_are_left_to_the_middleware() -> None:
    def factory(app: ASGIApp, *, value: str | bytes = "a", other: Any | int = 1) -> ASGIApp:
        return app

    spec = options_of(factory)
    assert spec.options["value"].type is Any
    assert spec.options["other"].type is Any


def test_annotations_without_msgspec_metadata_and_unions_of_nothing() -> None:
    def factory(
        app: ASGIApp,
        *,
        documented: Annotated[int, "just a note"] = 1,
        neither: Opaque | type[Opaque] | None = None,
    ) -> ASGIApp:
        return app

    types = {name: option.type for name, option in options_of(factory).options.items()}
    assert types["documented"] is int
    assert types["neither"] == ImportString | None


def test_a_union_of_nothing_a_file_can_hold_takes_anything() -> None:
    def factory(
        app: ASGIApp, *, value: Opaque | Other | None = None, both: Opaque | Other = OPAQUE
    ) -> ASGIApp:
        return app

    options = options_of(factory).options
    assert options["value"].type is None  # only a null fits
    assert options["both"].type is Any  # nothing fits: the factory checks what it gets


def test_containers_of_what_a_file_cannot_hold_take_anything() -> None:
    def factory(
        app: ASGIApp,
        *,
        items: list[Opaque] = [],  # noqa: B006
        table: dict[str, Opaque] | None = None,
        keyed: dict[Callable[[], str], int] | None = None,
        pair: tuple[Callable[[], str], int] | None = None,
        bare: list = [],  # type: ignore[type-arg]  # noqa: B006
        mapping: dict = {},  # type: ignore[type-arg]  # noqa: B006
    ) -> ASGIApp:
        return app

    types = {name: option.type for name, option in options_of(factory).options.items()}
    assert types["items"] is Any
    assert types["table"] is Any
    assert types["keyed"] is Any
    assert types["pair"] is Any
    assert types["bare"] == list[Any]
    assert types["mapping"] == dict[str, Any]


def test_sets_of_callables_become_lists_of_import_strings() -> None:
    def factory(app: ASGIApp, *, hooks: frozenset[Callable[[], str]] = frozenset()) -> ASGIApp:
        return app

    option = options_of(factory).options["hooks"]
    assert option.type == list[ImportString]


def test_keyword_and_positional_or_keyword_parameters_are_options() -> None:
    class Starlette:
        def __init__(
            self, app: ASGIApp, minimum_size: int = 500, *args: Any, **kwargs: Any
        ) -> None:
            pass

    spec = options_of(Starlette)
    assert list(spec.options) == ["minimum_size"]
    assert spec.extra  # **kwargs: other keys are passed on


def test_positional_only_parameters_with_defaults_are_not_options() -> None:
    def factory(app: ASGIApp, level: int = 1, /, *, name: str = "x") -> ASGIApp:
        return app

    assert list(options_of(factory).options) == ["name"]


def test_a_required_positional_only_parameter_cannot_be_configured() -> None:
    def factory(app: ASGIApp, level: int, /) -> ASGIApp:
        return app

    with pytest.raises(RegistryError, match="required positional-only parameter 'level'"):
        options_of(factory)


def test_a_factory_without_an_app_parameter_is_refused() -> None:
    def factory(*, name: str = "x") -> None:
        pass

    with pytest.raises(RegistryError, match="does not take the app as its first argument"):
        options_of(factory)
    assert list(options_of(factory, takes_app=False).options) == ["name"]


def test_a_signature_that_cannot_be_read_is_an_error() -> None:
    with pytest.raises(RegistryError, match="cannot read the signature"):
        options_of(max)


def test_partials_and_functions_have_options_too() -> None:
    spec = options_of(functools.partial(RequestIDMiddleware, header_name="x-id"))
    assert "header_name" in spec.options  # keyword-only: still overridable
    assert options_of(enforce).options["strict"].default is False


def test_callable_instances_are_read_through_their_call_method() -> None:
    class Factory:
        def __call__(self, app: ASGIApp, *, level: int = 1) -> ASGIApp:
            return app

    option = options_of(Factory()).options["level"]
    assert option.type is int


def test_descriptions_come_from_the_args_section() -> None:
    def factory(app: ASGIApp, *, a: int = 1, b: int = 2, c: int = 3) -> ASGIApp:
        """Summary line.

        Args:
            app: The app.
            a (int): First.

                An indented paragraph after a blank line, left out.
            b: Second,
                continued.
            c: Third, at the end.
        """
        return app

    spec = options_of(factory)
    assert spec.options["a"].description == "First."
    assert spec.options["b"].description == "Second, continued."
    assert spec.options["c"].description == "Third, at the end."


def test_resolvable_annotations_keep_their_types_when_another_is_not() -> None:
    namespace: dict[str, Any] = {}
    source = "def factory(app, *, a: int = 1, b: 'NotDefinedAnywhere' = None):\n    return app\n"
    # Compiled without this module's `from __future__ import annotations`: `int` stays a
    # class, and only the other annotation is a string.
    exec(compile(source, "<factory>", "exec", dont_inherit=True), namespace)
    spec = options_of(namespace["factory"])
    assert spec.options["a"].type is int
    assert spec.options["b"].type is Any


def test_no_args_section_means_no_descriptions() -> None:
    def factory(app: ASGIApp, *, a: int = 1) -> ASGIApp:
        """Only a summary."""
        return app

    assert options_of(factory).options["a"].description == ""


def test_structs_and_defaults_for_the_schema() -> None:
    spec = options_of(Recorder)
    defaults = spec.defaults()
    assert defaults["hook"] == "asgikit.middleware.request_id:uuid7_hex"
    assert defaults["header_names"] == ["a", "b"]
    assert defaults["frozen"] == ["a", "b"]
    assert "required" not in defaults
    assert "color" in defaults
    struct = spec.struct("recorder")
    instance: Any = struct(required=1)  # defaults as the signature has them
    assert instance.hook is uuid7_hex
    assert instance.frozen == frozenset({"a", "b"})
    schema = msgspec.json.schema(struct)
    definition = schema["$defs"]["middleware.recorder"]
    assert definition["properties"]["use"] == {"enum": ["recorder"]}
    assert definition["required"] == ["use", "required"]
    assert definition["additionalProperties"] is False


def test_config_values_are_what_a_file_would_write() -> None:
    assert config_value(Color.RED) == "red"
    assert config_value({"a": (1, 2)}) == {"a": [1, 2]}
    assert config_value({3, 1}) == [1, 3]
    assert sorted(config_value({1, "a"}), key=str) == [1, "a"]  # unsortable: kept as found
    assert config_value(RequestIDMiddleware) == BUILTINS["request_id"]
    assert config_value(lambda: 1) is UNREPRESENTABLE
    assert config_value(object()) is UNREPRESENTABLE
    assert REQUIRED is not None


def test_defaults_a_file_cannot_write_stay_out_of_the_schema() -> None:
    sentinel = object()

    def factory(app: ASGIApp, *, thing: Opaque = sentinel, things: Opaque = (sentinel,)) -> ASGIApp:  # type: ignore[assignment]
        return app

    spec = options_of(factory)
    assert spec.defaults() == {}
    assert msgspec.json.schema(spec.struct("f"))["$defs"]["middleware.f"]["properties"][
        "thing"
    ] == {"description": ""}


def test_options_annotated_any_are_for_code_only() -> None:
    def factory(
        app: ASGIApp,
        *,
        provider: Any = None,
        maybe: Any | None = None,
        processors: Sequence[Any] = (),
        pair: tuple[Any, ...] = (),
        routes: Mapping[str, Any] | None = None,
        name: str = "x",
    ) -> ASGIApp:
        return app

    spec = options_of(factory)
    assert spec.code_only == ("provider", "maybe", "processors", "pair")
    assert list(spec.options) == ["routes", "name"]  # data: a file can write them
