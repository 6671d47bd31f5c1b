"""Command line: `statsig-forwarder run|check`. Every Settings field is also a flag."""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic.fields import FieldInfo

from . import __version__
from .errors import ConfigError, StateLockedError
from .logs import Scrubber, setup_logging
from .settings import Settings, load_settings

F = typing.TypeVar("F", bound=Callable[..., Any])

_SKIP_FLAGS = {"paths", "statsig_server_secret_key"}


def _click_type(info: FieldInfo) -> tuple[Any, bool]:
    """(click type, is_flag) for a Settings field."""
    ann = info.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
    base = args[0]
    if base is bool:
        return bool, True
    if typing.get_origin(base) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(base)]), False
    if base in (int, float):
        return base, False
    if base is Path:
        return click.Path(path_type=Path), False
    return str, False


def settings_options(func: F) -> F:
    """Add one --flag per Settings field (default None: unset, so env/TOML apply)."""
    for name, info in reversed(list(Settings.model_fields.items())):
        if name in _SKIP_FLAGS:
            continue
        flag = "--" + name.replace("_", "-")
        ctype, is_flag = _click_type(info)
        help_text = info.description
        if is_flag:
            func = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)(func)
        elif typing.get_origin(info.annotation) is list:
            func = click.option(flag, name, type=str, multiple=True, callback=_list_or_none,
                                help=f"{help_text} (repeatable)")(func)
        else:
            func = click.option(flag, name, type=ctype, default=None, help=help_text)(func)
    func = click.option("--config", "config", type=click.Path(path_type=Path),
                        help="TOML config file (keys as in config/forwarder.example.toml).")(func)
    return func


def _list_or_none(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str] | None:
    return list(value) or None  # not given: let env/TOML apply


def build_settings(config: Path | None, paths: tuple[str, ...], options: dict[str, Any]) -> Settings:
    overrides = dict(options)
    if paths:
        overrides["paths"] = list(paths)
    try:
        return load_settings(config, **overrides)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="statsig-forwarder")
def main() -> None:
    """Forward NDJSON analytics events to Statsig without losing one."""


@main.command()
@click.argument("paths", nargs=-1)
@settings_options
def run(config: Path | None, paths: tuple[str, ...], **options: Any) -> None:
    """Tail PATHS (files or globs; '-' for stdin) and deliver their events to Statsig.

    Without STATSIG_SERVER_SECRET_KEY, runs as a dry run that prints events to stdout.
    """
    from .app import Forwarder

    settings = build_settings(config, paths, options)
    setup_logging(settings.log_level, settings.log_format, [settings.secret_key or ""])
    if not settings.paths:
        raise click.UsageError("no input: give file paths or globs (or '-' for stdin), or set paths in the config")
    if "-" in settings.paths and len(settings.paths) > 1:
        raise click.UsageError("'-' (stdin) cannot be combined with files")
    try:
        Forwarder(settings, reload=lambda: build_settings(config, paths, options)).run()
    except (StateLockedError, ConfigError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@main.command()
@settings_options
def check(config: Path | None, **options: Any) -> None:
    """Check with statsig-python-core that the key and the Statsig endpoints answer."""
    from .startup_check import check_statsig

    settings = build_settings(config, (), options)
    setup_logging(settings.log_level, settings.log_format, [settings.secret_key or ""])
    result = check_statsig(settings)
    click.echo(Scrubber([settings.secret_key or ""])(result.describe()), err=not result.ok)
    sys.exit(0 if result.ok else 1)
