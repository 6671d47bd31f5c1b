"""All options in one table: type, default, description. Sources, highest first:
command-line flags > environment (FORWARDER_*, STATSIG_SERVER_SECRET_KEY) > TOML file
(--config) > defaults. Unknown keys and bad values fail before anything starts."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError
from .rules.model import Rules

ENV_PREFIX = "FORWARDER_"
DEFAULT_API = "https://events.statsigapi.net/v1"
# Exact environment names that map to a nested option (besides FORWARDER_<SECTION>__<KEY>).
ENV_ALIASES = {"FORWARDER_RECEIVER_TOKEN": ("receiver", "token")}
# A web origin as browsers send it: scheme://host[:port], lower case, no path (receiver.cors_origins).
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(\[[0-9a-f:.]+\]|[a-z0-9_.~-]+)(:[0-9]{1,5})?")


def also(*commands: str) -> dict[str, Any]:
    """Field metadata: the commands besides `run` and `replay` (which take every option) that
    offer this option as a flag; the others still accept it from the environment and TOML."""
    return {"commands": list(commands)}


def flag_commands(info: Any) -> set[str]:
    """The commands whose --help lists the option described by FieldInfo `info`."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return {"run", "replay", *extra.get("commands", [])}


def _default_state_dir() -> Path:
    # systemd's StateDirectory= exports $STATE_DIRECTORY (possibly several, colon-separated).
    state = os.environ.get("STATE_DIRECTORY")
    return Path(state.split(":")[0]) if state else Path(".statsig-forwarder")


def parse_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT', or ':PORT' for 127.0.0.1) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class ReceiverSettings(BaseModel):
    """The HTTP receiver (`run --listen`, `receive`): options of the [receiver] section."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    listen: str | None = Field(
        default=None,
        description="HOST:PORT of the HTTP receiver; unset: no receiver in `run` "
        "(`receive`: 127.0.0.1:8080).")
    log_path: Path | None = Field(
        default=None, description="File the receiver appends to (default: the first tailed path).")
    durability: Literal["fsync", "write"] = Field(
        default="fsync",
        description="Answer 2xx after fsync (fsync) or after the write to the page cache (write).")
    token: SecretStr | None = Field(
        default=None, description="Bearer token required on POSTs (env FORWARDER_RECEIVER_TOKEN).")
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body, also once gunzipped (413).")
    max_batch_events: int = Field(default=1000, ge=1, description="Most events in one request (413).")
    read_timeout: float = Field(
        default=10.0, gt=0,
        description="Seconds a client may take to send a request body (408); also the idle keep-alive limit.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins of web pages allowed to post events (CORS), exact, e.g. https://app.example.com, "
        "or \"*\" for any; a request from another origin gets 403. Empty: no CORS headers, Origin not checked "
        "(env FORWARDER_RECEIVER__CORS_ORIGINS as a JSON list).")

    @model_validator(mode="after")
    def _check_listen(self) -> ReceiverSettings:
        if self.listen is not None:
            parse_listen(self.listen)
        return self

    @model_validator(mode="after")
    def _check_origins(self) -> ReceiverSettings:
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"cors_origins: {origin!r} is not an origin: write scheme://host[:port] in lower "
                                 "case, with no path or trailing slash (e.g. https://app.example.com), or \"*\" for "
                                 "any origin")
        return self

    @property
    def secret_token(self) -> str | None:
        token = self.token
        return token.get_secret_value() if token is not None and token.get_secret_value() else None


class RelaySettings(BaseModel):
    """The Statsig SDK relay on the receiver (`POST /v1/log_event`, `/v1/rgstr`): the [relay] section."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(
        default=True, description="Serve Statsig's event endpoints wherever the receiver listens.")
    accept_server_key: bool = Field(
        default=True, description="Accept the forwarder's own server secret key as STATSIG-API-KEY.")
    keys: list[SecretStr] = Field(
        default_factory=list, description="More keys the relay accepts: other server secret keys, and the "
        "client keys of client SDKs (env FORWARDER_RELAY__KEYS as a JSON list).")
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="Largest relay request body, also once decompressed (413); an SDK batch of 2,000 "
        "exposures is a few MB.")
    max_batch_events: int = Field(
        default=10_000, ge=1, description="Most events in one relay request (413); SDKs send at most 2,000.")
    internal_events: Literal["forward", "drop"] = Field(
        default="forward", description="SDK-internal events (statsig:: names other than exposures, "
        "e.g. statsig::diagnostics): forwarded like any event, or dropped by the relay.")

    def accepted_keys(self, server_key: str | None) -> list[str]:
        """Every key a relay request may carry, the server key first."""
        own = [server_key] if server_key and self.accept_server_key else []
        return own + [k.get_secret_value() for k in self.keys if k.get_secret_value()]


class Settings(BaseSettings):
    """Every option of statsig-forwarder (see config/forwarder.example.toml)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        env_nested_delimiter="__",
        populate_by_name=True,
    )

    paths: list[str] = Field(default_factory=list, description="Files or globs to tail; '-' is stdin.")
    state_dir: Path = Field(default_factory=_default_state_dir,
                            description="Checkpoints, lock and dead-letter file ($STATE_DIRECTORY under systemd).")
    statsig_api: str = Field(DEFAULT_API, description="Statsig API base; events go to {statsig_api}/log_event.",
                             json_schema_extra=also("check"))
    statsig_server_secret_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("statsig_server_secret_key", "STATSIG_SERVER_SECRET_KEY"),
        description="Server secret key (env STATSIG_SERVER_SECRET_KEY). Without it: dry run.",
    )
    specs_url: str | None = Field(
        None,
        description="Config-specs URL for the start-up check "
        "(default: {statsig_api}/download_config_specs, or the SDK's CDN for the default API).",
        json_schema_extra=also("check"),
    )
    check_timeout: float = Field(5.0, gt=0, description="Seconds the start-up check may take.",
                                 json_schema_extra=also("check"))
    batch_size: int = Field(500, ge=1, le=10000, description="Events per request at most.")
    batch_bytes: int = Field(1_000_000, ge=1024, description="Raw line bytes per request at most.")
    flush_interval: float = Field(1.0, gt=0, description="Seconds after its first event a batch is sent anyway.")
    max_in_flight: int = Field(2, ge=1, le=64, description="Requests to Statsig in flight at once.")
    request_timeout: float = Field(30.0, gt=0, description="Seconds to wait for Statsig's answer.")
    retry_initial: float = Field(0.5, gt=0, description="First retry delay in seconds (doubles, with jitter).")
    retry_max: float = Field(30.0, gt=0, description="Longest retry delay in seconds.")
    gzip_level: int = Field(1, ge=1, le=9, description="gzip level of request bodies.")
    checkpoint_fsync_interval: float = Field(
        1.0, ge=0, description="Most seconds between two fsyncs of the checkpoint (0: every write). It "
        "reaches the kernel after every acknowledgement, so a process crash (kill -9, OOM) re-sends at most "
        "max_in_flight x batch_size events; a machine crash (power loss) loses what was not fsync'd and "
        "re-sends at most that plus this many seconds of traffic.")
    checkpoint_interval: float | None = Field(
        None, ge=0, description="Deprecated, ignored (a warning says so): the checkpoint is written after "
        "every acknowledgement; see checkpoint_fsync_interval.")
    shutdown_timeout: float = Field(10.0, ge=0, description="Seconds to deliver what was read after SIGTERM.")
    start_at: Literal["beginning", "end"] = Field("beginning", description="Where a file without checkpoint starts.")
    max_line_bytes: int = Field(1024 * 1024, ge=64, description="Longer lines are dead-lettered.",
                                json_schema_extra=also("receive", "validate"))
    unknown_fields: Literal["metadata", "reject"] = Field(
        "metadata", description="Unknown top-level keys of an event: moved into metadata, or reject the line.",
        json_schema_extra=also("receive", "validate"))
    oversize_fields: Literal["send", "reject"] = Field(
        "send", description="Events with a field over Statsig's documented size limits (event_name or "
        "string value over 64 characters, metadata or user over 4096 stringified): send as is, or "
        "reject to the dead-letter file; counted either way.", json_schema_extra=also("receive", "validate"))
    event_id_field: str = Field(
        "forwarder_event_id", description="Metadata key of each event's stable id (file fingerprint + byte "
        "offset of its line), for downstream de-duplication; empty: no id.")
    dead_letter_path: Path | None = Field(None, description="Dead-letter NDJSON file "
                                          "(default: <state_dir>/dead-letter.ndjson).")
    rotate_wait: float = Field(5.0, ge=0, description="Seconds a rotated/deleted file is kept open after its "
                               "last growth, once read to its end; also how long a compressed (.gz) file "
                               "must stay unchanged before it is read.")
    glob_interval: float = Field(5.0, gt=0, description="Seconds between re-scans of paths and globs.")
    exclude: list[str] = Field(default_factory=list, description="Globs of paths not to follow, matched "
                               "against the whole path or the file name (e.g. '*.tmp').")
    fingerprint_bytes: int = Field(256, ge=16, le=65536, description="A file's identity is a checksum "
                                   "of its first line, or of its first fingerprint_bytes bytes.")
    fingerprint_wait: float = Field(5.0, ge=0, description="Seconds a file with an incomplete first "
                                    "line waits before it is identified by the bytes it has.")
    partial_line_timeout: float = Field(30.0, gt=0, description="Seconds a last line without newline "
                                        "is held; then delivered if a whole JSON event, else dead-lettered.")
    checkpoint_ttl: float = Field(7 * 86400.0, gt=0, description="Seconds the checkpoint of a file no "
                                  "longer found is kept.")
    ignore_older: float = Field(0.0, ge=0, description="Files not modified for this many seconds are not "
                                "opened until they change (0: off).")
    max_open_files: int = Field(512, ge=1, description="Files kept open at once; idle ones are closed and "
                                "reopened when they change.")
    poll: bool = Field(False, description="Use polling instead of native (inotify) file events.")
    poll_interval: float = Field(0.25, gt=0, description="Seconds between polls of open files.")
    once: bool = Field(False, description="Read every file to its end, deliver, and exit (no following).")
    dry_run: bool = Field(False, description="Print events to stdout instead of sending them.")
    commit: bool = Field(False, description="With --dry-run: advance checkpoints anyway.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.",
                                                                    json_schema_extra=also("receive", "check"))
    log_format: Literal["auto", "text", "json"] = Field(
        "auto", description="Log format; auto is text on a terminal, JSON otherwise.",
        json_schema_extra=also("receive", "check"))
    metrics_listen: str | None = Field(
        None, description="HOST:PORT serving only /healthz, /readyz and /metrics (--listen serves them too).")
    ready_max_lag_bytes: int | None = Field(
        None, ge=0, description="/readyz fails while a file is more bytes behind than this "
        "(unset: no bound).")
    ready_max_lag_seconds: float | None = Field(
        None, gt=0, description="/readyz fails while the oldest undelivered event is older than this "
        "many seconds (unset: no bound).")
    rules: Rules = Field(default_factory=list, description="Event rules ([[rules]] tables; TOML or env "
                         "FORWARDER_RULES as JSON only): drop or sample events by name and field.")
    remote_rules: str | None = Field(None, description="Name of a Statsig dynamic config whose value "
                                     "{\"rules\": [...]} adds fleet-wide event rules (unset: none).")
    remote_rules_sync_interval: float = Field(10.0, ge=1.0, description="Seconds between downloads of "
                                              "Statsig's config specs (the SDK's minimum is 1).")
    remote_rules_user_id: str | None = Field(None, description="userID this forwarder evaluates "
                                             "remote_rules as (default: $POD_NAME, else the host name).")
    remote_rules_user_custom: dict[str, str] = Field(
        default_factory=dict, description="Custom fields of that user for Statsig targeting, e.g. "
        "{service = \"checkout\"}; added to host, version, and namespace/node/pod from $POD_NAMESPACE, "
        "$NODE_NAME, $POD_NAME.")
    receiver: ReceiverSettings = Field(default_factory=lambda: ReceiverSettings(),
                                       description="The HTTP receiver.", json_schema_extra=also("receive"))
    relay: RelaySettings = Field(default_factory=lambda: RelaySettings(),
                                 description="The Statsig SDK relay on the receiver.",
                                 json_schema_extra=also("receive"))

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if self.dead_letter_path is None:
            self.dead_letter_path = self.state_dir / "dead-letter.ndjson"
        if not self.statsig_api.startswith(("http://", "https://")):
            raise ValueError(f"statsig_api must be an http(s) URL, got {self.statsig_api!r}")
        self.statsig_api = self.statsig_api.rstrip("/")
        if self.metrics_listen is not None:
            parse_listen(self.metrics_listen)
        return self

    @property
    def receiver_log_path(self) -> Path:
        """Where the receiver appends: receiver.log_path, else the first tailed path."""
        if self.receiver.log_path is not None:
            return self.receiver.log_path
        first = self.paths[0] if self.paths else None
        if first is None or first == "-" or glob.has_magic(first):
            raise ConfigError("receiver.log_path: required when the first path is missing, stdin or a glob "
                              f"(got paths {self.paths!r})")
        return Path(first)

    @property
    def secret_key(self) -> str | None:
        key = self.statsig_server_secret_key
        return key.get_secret_value() if key is not None and key.get_secret_value() else None

    @property
    def secrets(self) -> list[str]:
        """Every configured secret, for the log scrubber: the server key, the receiver token, relay keys."""
        return [s for s in (self.secret_key, self.receiver.secret_token,
                            *self.relay.accepted_keys(None)) if s]

    @property
    def check_specs_url(self) -> str | None:
        if self.specs_url:
            return self.specs_url
        return None if self.statsig_api == DEFAULT_API else f"{self.statsig_api}/download_config_specs"

    _toml_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, _EnvAliases(settings_cls)]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)


class _EnvAliases(PydanticBaseSettingsSource):
    """Nested options under their exact documented names (ENV_ALIASES), below FORWARDER_X__Y."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for env, (section, key) in ENV_ALIASES.items():
            if env in os.environ:
                out.setdefault(section, {})[key] = os.environ[env]
        return out


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from all sources; raises ConfigError with one line per problem."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")
    _check_env_names()
    Settings._toml_file = config_file
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise ConfigError(describe_config_error(e, config_file)) from None
    except (OSError, ValueError) as e:  # unreadable or malformed TOML
        raise ConfigError(f"cannot read config file {config_file}: {e}") from None
    finally:
        Settings._toml_file = None


def describe_config_error(e: ValidationError, config_file: Path | None) -> str:
    problems = []
    for err in e.errors(include_url=False):
        key = ".".join(str(x) for x in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            where = f" in {config_file}" if config_file else ""
            problems.append(f"unknown option {key!r}{where}")
        elif err["type"] in ("value_error", "missing"):  # a validator's sentence names what it got
            problems.append(f"{key}: {err['msg'].removeprefix('Value error, ')}")
        else:
            problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})"
                            if not any(w in key for w in ("secret", "token", "keys")) else f"{key}: {err['msg']}")
    if len(problems) == 1:
        return "invalid configuration: " + problems[0]
    return "invalid configuration:\n  " + "\n  ".join(problems)  # one line per mistake


def _check_env_names() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name in os.environ:
        if name.startswith(ENV_PREFIX) and name not in ENV_ALIASES:
            field = name[len(ENV_PREFIX):].split("__")[0].upper()
            if field not in known:
                raise ConfigError(f"invalid configuration: unknown environment variable {name}")
