"""Command line: `statsig-forwarder run|receive|check`. Every Settings field is also a flag."""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from . import __version__
from .errors import ConfigError, ServeError, StateLockedError
from .logs import setup_logging
from .settings import Settings, load_settings

F = typing.TypeVar("F", bound=Callable[..., Any])

_SKIP_FLAGS = {"paths", "statsig_server_secret_key", "receiver.token"}
# Nested options get --<section>-<key>; these also have the short public name.
_SHORT_FLAGS = {"receiver.listen": "--listen", "receiver.durability": "--durability",
                "receiver.max_body_bytes": "--max-body-bytes",
                "receiver.max_batch_events": "--max-batch-events"}


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


def _flag_fields() -> list[tuple[str, list[str], FieldInfo]]:
    """(parameter name, flags, field) for every option with a flag; nested ones as section__key."""
    out = []
    for name, info in Settings.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for sub, sub_info in ann.model_fields.items():
                dotted = f"{name}.{sub}"
                if dotted not in _SKIP_FLAGS:
                    flags = [f"--{name}-{sub}".replace("_", "-")]
                    if dotted in _SHORT_FLAGS:
                        flags.insert(0, _SHORT_FLAGS[dotted])
                    out.append((f"{name}__{sub}", flags, sub_info))
        elif name not in _SKIP_FLAGS:
            out.append((name, ["--" + name.replace("_", "-")], info))
    return out


def settings_options(func: F) -> F:
    """Add one --flag per Settings field (default None: unset, so env/TOML apply)."""
    for name, flags, info in reversed(_flag_fields()):
        ctype, is_flag = _click_type(info)
        help_text = info.description
        if is_flag:
            func = click.option(f"{flags[0]}/--no-{flags[0][2:]}", name, default=None, help=help_text)(func)
        else:
            func = click.option(*flags, name, type=ctype, default=None, help=help_text)(func)
    func = click.option("--config", "config", type=click.Path(path_type=Path),
                        help="TOML config file (keys as in config/forwarder.example.toml).")(func)
    return func


def build_settings(config: Path | None, paths: tuple[str, ...], options: dict[str, Any]) -> Settings:
    overrides: dict[str, Any] = {}
    for name, value in options.items():
        section, _, key = name.partition("__")
        if key and value is not None:
            overrides.setdefault(section, {})[key] = value
        elif not key:
            overrides[name] = value
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
    setup_logging(settings.log_level, settings.log_format, [settings.secret_key or "",
                                                            settings.receiver.secret_token or ""])
    if not settings.paths:
        raise click.UsageError("no input: give file paths or globs (or '-' for stdin), or set paths in the config")
    if "-" in settings.paths and len(settings.paths) > 1:
        raise click.UsageError("'-' (stdin) cannot be combined with files")
    if settings.receiver.listen is not None:
        try:
            settings.receiver_log_path  # noqa: B018 - fails now, not after start-up, when it cannot be derived
        except ConfigError as e:
            raise click.UsageError(str(e)) from None
    try:
        Forwarder(settings).run()
    except (StateLockedError, ServeError, ConfigError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@main.command()
@click.argument("paths", nargs=-1)
@settings_options
def receive(config: Path | None, paths: tuple[str, ...], **options: Any) -> None:
    """Only the HTTP receiver: append posted events to receiver.log_path (default: the first of PATHS).

    Listens on --listen (default 127.0.0.1:8080); another process (`run`) tails and forwards the file.
    """
    from .receiver import receive as serve

    settings = build_settings(config, paths, options)
    setup_logging(settings.log_level, settings.log_format, [settings.secret_key or "",
                                                            settings.receiver.secret_token or ""])
    try:
        serve(settings)
    except (ServeError, ConfigError) as e:
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
    click.echo(result.describe(), err=not result.ok)
    sys.exit(0 if result.ok else 1)
