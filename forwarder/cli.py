"""Command line: run, receive, check, replay, validate, checkpoints, reload, status, top.

Every Settings field is also a flag of `run` and `replay`; the other commands offer those they
use (settings.also). Start-up failures of every command (bad configuration, a busy port, a
locked state directory, missing files) end in one line on stderr, `error: ...`, and exit 2
(`_Commands`).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from . import __version__
from .errors import ConfigError, ServeError, StateLockedError
from .logs import Scrubber, is_journal_stream, setup_logging
from .settings import Settings, flag_commands, load_settings

F = typing.TypeVar("F", bound=Callable[..., Any])

_SKIP_FLAGS = {"paths", "statsig_server_secret_key", "receiver.token", "relay.keys", "rules",
               "remote_rules_user_custom"}
# Nested options get --<section>-<key>; these also have the short public name.
_SHORT_FLAGS = {"receiver.listen": "--listen", "receiver.durability": "--durability",
                "receiver.max_body_bytes": "--max-body-bytes",
                "receiver.max_batch_events": "--max-batch-events"}


def _click_type(info: FieldInfo) -> tuple[Any, bool]:
    """(click type, is_flag) for a Settings field."""
    ann = info.annotation
    if typing.get_origin(ann) is not typing.Literal:  # Optional[X] -> X
        ann = next((a for a in typing.get_args(ann) if a is not type(None)), ann)
    base = ann
    if base is bool:
        return bool, True
    if typing.get_origin(base) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(base)]), False
    if base in (int, float):
        return base, False
    if base is Path:
        return click.Path(path_type=Path), False
    return str, False


def _flag_fields(command: str) -> list[tuple[str, list[str], FieldInfo]]:
    """(parameter name, flags, field) for every option `command` offers as a flag (settings.also);
    nested ones as section__key."""
    out = []
    for name, info in Settings.model_fields.items():
        if command not in flag_commands(info):
            continue
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


def settings_options(command: str) -> Callable[[F], F]:
    """Add one --flag per Settings field `command` uses (default None: unset, so env/TOML apply)."""
    return lambda func: _add_settings_options(func, command)


def _add_settings_options(func: F, command: str) -> F:
    for name, flags, info in reversed(_flag_fields(command)):
        ctype, is_flag = _click_type(info)
        help_text = info.description
        if is_flag:
            func = click.option(f"{flags[0]}/--no-{flags[0][2:]}", name, default=None, help=help_text)(func)
        elif typing.get_origin(info.annotation) is list:
            func = click.option(*flags, name, type=str, multiple=True, callback=_list_or_none,
                                help=f"{help_text} (repeatable)")(func)
        else:
            func = click.option(*flags, name, type=ctype, default=None, help=help_text)(func)
    func = click.option("--config", "config", type=click.Path(path_type=Path),
                        help="TOML config file (keys as in config/forwarder.example.toml).")(func)
    return func


def _list_or_none(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str] | None:
    return list(value) or None  # not given: let env/TOML apply


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
    return load_settings(config, **overrides)


class StartupError(click.ClickException):
    """A command cannot start: one line `error: ...` on stderr, exit 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class _Commands(click.Group):
    """Every command's start-up failures become a StartupError (the errors.py tree: these
    three are raised only before a command starts working)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, StateLockedError, ServeError) as e:
            raise StartupError(str(e)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="statsig-forwarder")
def main() -> None:
    """Forward NDJSON analytics events to Statsig without losing one."""


@main.command()
@click.argument("paths", nargs=-1)
@settings_options("run")
def run(config: Path | None, paths: tuple[str, ...], **options: Any) -> None:
    """Tail PATHS (files or globs; '-' for stdin) and deliver their events to Statsig.

    Without STATSIG_SERVER_SECRET_KEY, runs as a dry run that prints events to stdout.
    """
    from .app import RUN, Forwarder

    settings = build_settings(config, paths, options)
    setup_logging(settings.log_level, settings.log_format, settings.secrets)
    if not settings.paths:
        raise click.UsageError("no input: give file paths or globs (or '-' for stdin), or set paths in the config")
    if "-" in settings.paths and len(settings.paths) > 1:
        raise click.UsageError("'-' (stdin) cannot be combined with files")
    if settings.receiver.listen is not None:
        settings.receiver_log_path  # noqa: B018 - fails now, not after start-up, when it cannot be derived
    progress = None
    hooks = RUN
    if settings.once and settings.paths != ["-"] and sys.stderr.isatty():
        from .commands.progress import Progress, delivered_bytes

        commits = settings.commit or not (settings.dry_run or settings.secret_key is None)  # as app.py decides
        progress = Progress("run --once", delivered_bytes(lambda: forwarder.lag(), commits), None, True)
        hooks = dataclasses.replace(RUN, tick=progress.tick)
    forwarder = Forwarder(settings, reload=lambda: build_settings(config, paths, options), hooks=hooks)
    result = None
    try:
        result = forwarder.run()
    finally:
        if progress is not None:
            progress.close(complete=result is not None and result.clean and not result.interrupted)
    if result.failed:
        sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1)
@settings_options("receive")
def receive(config: Path | None, paths: tuple[str, ...], **options: Any) -> None:
    """Only the HTTP receiver: append posted events to receiver.log_path (default: the first of PATHS).

    Listens on --listen (default 127.0.0.1:8080); another process (`run`) tails and forwards the file.
    """
    from .receiver import receive as serve

    settings = build_settings(config, paths, options)
    setup_logging(settings.log_level, settings.log_format, settings.secrets)
    serve(settings)


@main.command()
@settings_options("check")
def check(config: Path | None, **options: Any) -> None:
    """Check with statsig-python-core that the key and the Statsig endpoints answer; show the SDK relay."""
    from .receiver.relay import relay_status
    from .startup import check_statsig

    settings = build_settings(config, (), options)
    setup_logging(settings.log_level, settings.log_format, settings.secrets)
    result = check_statsig(settings)
    text = f"{result.describe()}\n{relay_status(settings.relay, settings.secret_key).describe()}"
    click.echo(Scrubber(settings.secrets)(text), err=not result.ok)
    sys.exit(0 if result.ok else 1)


def _instance_options(func: F) -> F:
    func = click.option("--address", metavar="HOST:PORT",
                        help="Its /metrics address (default: from <state_dir>/runtime.json).")(func)
    func = click.option("--state-dir", "state_dir", type=click.Path(path_type=Path),
                        help="Its state directory (default: as `run` would use).")(func)
    func = click.option("--config", "config", type=click.Path(path_type=Path),
                        help="TOML config file, for its state_dir and addresses.")(func)
    return func


@main.command()
@_instance_options
@click.option("--interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between the two scrapes that give the rates (0: one scrape, no rates).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def status(config: Path | None, state_dir: Path | None, address: str | None, interval: float,
           as_json: bool) -> None:
    """One screen on a forwarder: files and lag, Statsig state, last problem, rates, dead letters.

    From a running instance's /metrics and /readyz (--metrics-listen, or the receiver's
    address), or from its state directory when it is stopped. Exit 0 when it runs, 3 when not.
    """
    import orjson

    from .commands.status import Target, render_text, sample

    settings = build_settings(config, (), {"state_dir": state_dir})
    st = sample(Target.find(settings, address), interval)
    if as_json:
        click.echo(orjson.dumps(st.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_text(st))
    sys.exit(0 if st.running else 3)


@main.command()
@_instance_options
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes (one /metrics scrape each).")
def top(config: Path | None, state_dir: Path | None, address: str | None, interval: float) -> None:
    """`status`, live: rates, lag per file with its trend and a bar; q or Ctrl-C quits."""
    from .commands.status import Target
    from .commands.top import top as show

    settings = build_settings(config, (), {"state_dir": state_dir})
    sys.exit(show(lambda: Target.find(settings, address), interval))


@main.command("reload")
@click.option("--pid", type=int, required=True, help="Process id of the running forwarder ($MAINPID).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Seconds to wait for its answer.")
@click.option("--state-dir", "state_dir", type=click.Path(path_type=Path),
              help="Its state directory (default: found from the lock the process holds).")
def reload_cmd(pid: int, timeout: float, state_dir: Path | None) -> None:
    """Make a running forwarder re-read its configuration, and wait until it applied or refused it.

    For systemd's ExecReload=. Exit 0 when applied, 1 when refused (the reason on stderr; it keeps
    running on its previous configuration), 2 when there is no answer (no such process, timeout).
    """
    from .commands.reload import EXIT_APPLIED
    from .commands.reload import reload as do_reload

    answer = do_reload(pid, state_dir, timeout)
    failed = answer.code != EXIT_APPLIED
    # Under ExecReload= stderr is the journal: file a refusal as an error there (`journalctl -p err`).
    prefix = "<3>" if failed and is_journal_stream(2) else ""
    click.echo(prefix + answer.message, err=failed)
    sys.exit(answer.code)


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--since", help="Only events with time >= this (ISO-8601, or epoch ms).")
@click.option("--until", help="Only events with time < this (ISO-8601, or epoch ms).")
@click.option("--require-time", is_flag=True, help="Skip events without a time (kept by default).")
@click.option("--filter-event", "filter_event", multiple=True, metavar="NAME",
              help="Only events with this event_name (repeatable).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), metavar="EVENTS_PER_S",
              help="Deliver at most this many events a second.")
@click.option("--restart", is_flag=True, help="Forget this replay's saved positions of FILES; start over.")
@click.option("--progress-interval", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds between progress log lines (when not on a terminal).")
@settings_options("replay")
def replay(config: Path | None, files: tuple[str, ...], since: str | None, until: str | None,
           require_time: bool, filter_event: tuple[str, ...], rate: float | None, restart: bool,
           progress_interval: float, **options: Any) -> None:
    """Deliver whole FILES (paths or globs, plain or .gz) once more, oldest first, then exit.

    Resumes where an interrupted replay of the same files stopped (positions kept apart from
    `run`'s, in <state_dir>/replay-checkpoints.json); --restart starts over on purpose.
    Exit 0 when done, 130 when interrupted.
    """
    from .commands.replay import EventSelector, ReplayOptions, parse_time
    from .commands.replay import replay as do_replay

    settings = build_settings(config, (), options)
    setup_logging(settings.log_level, settings.log_format, [settings.secret_key or ""])
    try:
        selector = EventSelector(
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
            require_time=require_time,
            names=frozenset(filter_event) if filter_event else None,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    sys.exit(do_replay(settings, files, ReplayOptions(selector, rate, restart, progress_interval)))


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per bad line, then a summary object.")
@settings_options("validate")
def validate(config: Path | None, files: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Check FILES ('-' for stdin; .gz read through) line by line as `run` would; send nothing.

    Prints each bad line as FILE:LINE:OFFSET: REASON. Exit 0 when every line is good, 1 when
    any line is bad, 2 when a file cannot be read.
    """
    import orjson

    from .commands.validate import BadLine, FileReport, open_input, validate_stream

    settings = build_settings(config, (), options)

    def on_bad(bad: BadLine) -> None:
        click.echo(orjson.dumps(bad.__dict__).decode() if as_json else str(bad))

    reports: list[FileReport] = []
    unreadable = 0
    for name in files:
        try:
            with open_input(name) as stream:
                reports.append(validate_stream(name, stream, settings.max_line_bytes,
                                               settings.unknown_fields, on_bad, settings.oversize_fields))
        except (OSError, EOFError) as e:
            unreadable += 1
            click.echo(f"{name}: cannot read: {getattr(e, 'strerror', None) or e}", err=True)
    totals = {k: sum(int(r.as_dict()[k]) for r in reports) for k in ("lines", "valid", "bad", "blank")}
    if as_json:
        click.echo(orjson.dumps({"summary": {**totals, "files": [r.as_dict() for r in reports],
                                             "unreadable": unreadable}}).decode())
    else:
        for r in reports:
            click.echo(f"{r.file}: {r.lines} lines, {r.valid} valid, {r.bad} bad, {r.blank} blank", err=True)
        verdict = "OK" if not totals["bad"] and not unreadable else "FAILED"
        click.echo(f"{verdict}: {len(reports)} file(s), {totals['lines']} lines, {totals['valid']} valid, "
                   f"{totals['bad']} bad" + (f", {unreadable} unreadable" if unreadable else ""), err=True)
    sys.exit(2 if unreadable else 1 if totals["bad"] else 0)


def _state_options(func: F) -> F:
    func = click.option("--namespace", type=click.Choice(["run", "replay"]), default="run", show_default=True,
                        help="Whose positions: `run`'s, or `replay`'s.")(func)
    func = click.option("--fingerprint-bytes", "fingerprint_bytes", type=int,
                        help="As given to `run`: files are identified the same way.")(func)
    func = click.option("--state-dir", "state_dir", type=click.Path(path_type=Path),
                        help="State directory (default: as `run` would use).")(func)
    func = click.option("--config", "config", type=click.Path(path_type=Path),
                        help="TOML config file, for its state_dir.")(func)
    return func


def _open_checkpoints(config: Path | None, state_dir: Path | None, fingerprint_bytes: int | None,
                      namespace: str, readonly: bool) -> tuple[Any, Any, Settings]:
    from .commands.checkpoints import NAMESPACES
    from .state.checkpoints import Checkpoints
    from .state.lock import StateDirLock

    settings = build_settings(config, (), {"state_dir": state_dir, "fingerprint_bytes": fingerprint_bytes})
    if not settings.state_dir.is_dir():
        raise StartupError(f"state directory {settings.state_dir} does not exist")
    file_name, lock_name = NAMESPACES[namespace]
    lock = None
    if not readonly:
        lock = StateDirLock(settings.state_dir, lock_name)
        try:
            lock.acquire()
        except StateLockedError as e:
            raise StartupError(f"refusing to change checkpoints: {e}; stop it first") from None
    return Checkpoints(settings.state_dir, file_name, readonly=readonly), lock, settings


@main.group()
def checkpoints() -> None:
    """Show and edit saved delivery positions (refused while their owner runs)."""


@checkpoints.command("list")
@_state_options
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def checkpoints_list(config: Path | None, state_dir: Path | None, fingerprint_bytes: int | None,
                     namespace: str, as_json: bool) -> None:
    """Every tracked file: fingerprint, offset, size, lag, last delivered time, path."""
    import orjson

    from .commands.checkpoints import rows

    cps, _, settings = _open_checkpoints(config, state_dir, fingerprint_bytes, namespace, readonly=True)
    table = rows(cps, settings.fingerprint_bytes)
    if as_json:
        click.echo(orjson.dumps([r.as_dict() for r in table], option=orjson.OPT_INDENT_2).decode())
        return
    if not table:
        click.echo(f"no checkpoints in {cps.path}", err=True)
        return
    click.echo(f"{'FINGERPRINT':<22} {'OFFSET':>12} {'SIZE':>12} {'LAG':>12} {'LAST DELIVERED':<20}  PATH")
    for r in table:
        size = "-" if r.size is None else str(r.size)
        lag = "-" if r.lag is None else str(r.lag)
        status = "" if r.status == "ok" else f"  ({r.status})"
        click.echo(f"{r.fingerprint:<22} {r.offset:>12} {size:>12} {lag:>12} {r.last_delivered or '-':<20}  "
                   f"{r.path}{status}")


@checkpoints.command("show")
@click.argument("target")
@_state_options
def checkpoints_show(config: Path | None, state_dir: Path | None, fingerprint_bytes: int | None,
                     namespace: str, target: str) -> None:
    """The checkpoint(s) of TARGET (a path or a fingerprint), as JSON."""
    import orjson

    from .commands.checkpoints import find, rows

    cps, _, settings = _open_checkpoints(config, state_dir, fingerprint_bytes, namespace, readonly=True)
    keys = set(find(cps, target))
    found = [r.as_dict() for r in rows(cps, settings.fingerprint_bytes) if r.fingerprint in keys]
    if not found:
        click.echo(f"no checkpoint for {target!r} in {cps.path}", err=True)
        sys.exit(1)
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


@checkpoints.command("set")
@click.argument("target")
@click.argument("offset")
@_state_options
def checkpoints_set(config: Path | None, state_dir: Path | None, fingerprint_bytes: int | None,
                    namespace: str, target: str, offset: str) -> None:
    """Move TARGET's position (a path, or a fingerprint) to OFFSET: bytes, 'start' or 'end'.

    An offset inside a line moves forward to the next line start. For .gz files, offsets
    count decompressed bytes.
    """
    from .commands.checkpoints import PositionError, set_position

    cps, lock, settings = _open_checkpoints(config, state_dir, fingerprint_bytes, namespace, readonly=False)
    try:
        key, old, new = set_position(cps, target, offset, settings.fingerprint_bytes)
        cps.flush()
    except PositionError as e:
        raise click.ClickException(str(e)) from None
    finally:
        lock.release()
    click.echo(f"{key}: offset {'(none)' if old is None else old} -> {new}")


@checkpoints.command("reset")
@click.argument("targets", nargs=-1)
@click.option("--all", "reset_all", is_flag=True, help="Clear every position of the namespace.")
@_state_options
def checkpoints_reset(config: Path | None, state_dir: Path | None, fingerprint_bytes: int | None,
                      namespace: str, targets: tuple[str, ...], reset_all: bool) -> None:
    """Clear the positions of TARGETS (paths or fingerprints), or --all: they count as new files
    (read from the beginning, or skipped to the end with start_at = "end")."""
    from .commands.checkpoints import find

    if not targets and not reset_all:
        raise click.UsageError("give the files (or fingerprints) to reset, or --all")
    cps, lock, _ = _open_checkpoints(config, state_dir, fingerprint_bytes, namespace, readonly=False)
    try:
        keys = list(cps.snapshot()) if reset_all else [k for t in targets for k in find(cps, t)]
        for t in targets:
            if not find(cps, t):
                click.echo(f"{t}: no checkpoint", err=True)
        for key in keys:
            cps.remove(key)
            click.echo(f"{key}: reset")
        cps.flush()
    finally:
        lock.release()
