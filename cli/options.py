"""Command-line options generated from `RunSettings`, so defaults and help exist once.

Each settings field becomes `--<run-config key>` (a few keep older names as well), typed from
the field, its help the field's description, its shown default the settings' default (`auto`
for the keys a model recipe decides). An option left out is not passed at all: the settings
fill it (recipe included), exactly as for `flwr run` or a sweep's grid.
"""

from __future__ import annotations

import inspect
import re
import tomllib
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import click
import typer
from flwr.common.config import parse_config_args

from jointcredit.federation.recipes import AUTO, AUTO_KEYS
from jointcredit.federation.settings import RunSettings, SettingsError, canonical_keys

# Flags kept from before they were generated (the first is shown in --help).
FLAGS: dict[str, tuple[str, ...]] = {
    "synthetic-heterogeneity": ("--heterogeneity", "--synthetic-heterogeneity"),
}
RUN_CONFIG_HELP = (
    "any run-config key: 'key=value key2=value2' (repeatable) or a TOML file, as for flwr run"
)
_PANEL = "Run settings"


def run_config_key(name: str) -> str:
    field = RunSettings.model_fields[name]
    return field.alias or name


class _AutoOr(click.ParamType):  # type: ignore[type-arg]
    """A number, or `auto` (the model's recipe decides)."""

    def __init__(self, inner: click.ParamType) -> None:  # type: ignore[type-arg]
        self.inner = inner
        self.name = f"{inner.name}|{AUTO}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value if value == AUTO else self.inner.convert(value, param, ctx)


def _parameter(name: str) -> inspect.Parameter:
    field = RunSettings.model_fields[name]
    key = run_config_key(name)
    annotation = field.annotation
    recipe = key in AUTO_KEYS
    kwargs: dict[str, Any] = {"help": field.description, "rich_help_panel": _PANEL}
    python_type: Any = annotation
    if typing.get_origin(annotation) is Literal:
        values = [*map(str, typing.get_args(annotation)), *([AUTO] if recipe else [])]
        kwargs["click_type"] = click.Choice(values)
        python_type = str
    elif recipe:
        kwargs["click_type"] = _AutoOr(click.FLOAT if annotation is float else click.INT)
        python_type = str
    flags = FLAGS.get(key, (f"--{key}",))
    if python_type is bool:
        flags = (f"{flags[0]}/--no-{flags[0].removeprefix('--')}",)
    default = AUTO if recipe else field.default
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[python_type, typer.Option(*flags, **kwargs)],
    )


# Settings no command takes as a generated option: `simulate` has its own `--layout`.
NOT_OPTIONS = frozenset({"layout"})


def settings_parameters(exclude: set[str]) -> list[inspect.Parameter]:
    return [
        _parameter(name)
        for name in RunSettings.model_fields
        if run_config_key(name) not in exclude | NOT_OPTIONS
    ]


# One `key=value` pair as Flower's parser splits them (a quoted value may hold spaces).
_PAIR = re.compile(r"(\S+?)=('[^']*'|\"[^\"]*\"|\S+)")


def parse_run_config(items: list[str] | None) -> dict[str, Any]:
    """`--run-config` values, as `flwr run --run-config` reads them (TOML values, or one TOML
    file), except that a bare word that is no TOML value (`privacy=dp-record`) is taken as
    text. Field names (`learning_rate`) become run-config keys (`learning-rate`)."""
    try:
        values = dict(parse_config_args(items or None))
    except click.ClickException:
        values = {}
        for item in items or []:
            for key, raw in _PAIR.findall(item):
                try:
                    values.update(tomllib.loads(f"{key} = {raw}"))
                except tomllib.TOMLDecodeError:
                    values[key] = raw.strip("'\"")
    except (ValueError, OSError) as exc:
        raise SettingsError(f"--run-config: {exc}") from exc
    return canonical_keys(values)


def with_settings_options(
    exclude: set[str],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one option per run setting (but `exclude`). The command's first
    parameter, `config`, receives the run-config keys the user gave: the options set, merged
    with `--run-config` (a key given both ways is refused)."""

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(func, eval_str=True).parameters.values())
        if not own or own[0].name != "config":
            raise TypeError(f"{func.__name__} must take `config` first")
        generated = settings_parameters(exclude)
        names = {p.name for p in generated}
        run_config = inspect.Parameter(
            "run_config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[list[str] | None, typer.Option(help=RUN_CONFIG_HELP)],
        )

        def command(**kwargs: Any) -> None:
            # Only what the user typed: the settings fill the rest (recipes included).
            source = click.get_current_context().get_parameter_source
            given = {n: kwargs.pop(n) for n in names}
            chosen = {
                run_config_key(n): v
                for n, v in given.items()
                if source(n) not in (None, click.core.ParameterSource.DEFAULT)
            }
            try:
                config = parse_run_config(kwargs.pop("run_config"))
                twice = sorted(set(chosen) & set(config))
                if twice:
                    raise SettingsError(
                        f"{', '.join(twice)}: given as an option and in --run-config"
                    )
            except SettingsError as exc:
                raise click.UsageError(str(exc)) from exc
            func({**config, **chosen}, **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[1:]]
        signature = inspect.Signature([*params, *generated, run_config])
        command.__signature__ = signature  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        command.__name__ = func.__name__
        command.__doc__ = func.__doc__
        command.__module__ = func.__module__
        return command

    return decorate
