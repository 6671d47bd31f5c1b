"""What a rule is, and how a list of rules is validated (TOML `[[rules]]` or a remote value)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

Scalar = str | int | float | bool
FIELD_ROOTS = ("user", "metadata", "value", "time")  # of the event as sent to Statsig


class RuleError(ValueError):
    """A rule list that cannot be used; `problems` has one line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Rule(BaseModel):
    """Events named `event` (exact or glob), optionally only those whose `field` equals (one of)
    `equals`: dropped, or sampled at `rate` (per event, or per user with `per_user`).
    `dry_run` counts what the rule would remove without removing it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str = Field(min_length=1, description="Event name, or a glob (* ? [...]).")
    action: Literal["drop", "sample"]
    rate: float | None = Field(default=None, gt=0, le=1, description="Share of matching events kept (sample).")
    field: str | None = Field(default=None, description="Dotted path in the event, e.g. metadata.source.")
    equals: Scalar | list[Scalar] | None = Field(default=None, description="Value(s) `field` must equal.")
    per_user: bool = Field(default=False, description="Sample whole users: keep all or none of a user's events.")
    dry_run: bool = Field(default=False, description="Count what the rule would remove; remove nothing.")
    name: str | None = Field(default=None, min_length=1, description="Label in metrics and logs (default: derived).")

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.action == "sample" and self.rate is None:
            raise ValueError("action 'sample' needs a rate in (0, 1]")
        if self.action == "drop" and self.rate is not None:
            raise ValueError("action 'drop' takes no rate (use action 'sample')")
        if self.per_user and self.action != "sample":
            raise ValueError("per_user applies only to action 'sample'")
        if (self.field is None) != (self.equals is None):
            raise ValueError("field and equals go together")
        if self.field is not None:
            parts = self.field.split(".")
            if parts[0] not in FIELD_ROOTS or not all(parts):
                raise ValueError(f"field must be a dotted path starting with one of {', '.join(FIELD_ROOTS)} "
                                 f"(got {self.field!r})")
        if isinstance(self.equals, list) and not self.equals:
            raise ValueError("equals must not be an empty list")
        return self

    @property
    def label(self) -> str:
        """The rule's name in metrics, logs and summaries."""
        if self.name is not None:
            return self.name
        return self.event if self.field is None else f"{self.event}[{self.field}={self.equals}]"

    def describe(self) -> str:
        what = "drop" if self.action == "drop" else f"sample {self.rate:g}" + (" per user" if self.per_user else "")
        where = "" if self.field is None else f" where {self.field} = {self.equals!r}"
        return f"{self.label}: {what} {self.event!r}{where}" + (" (dry run)" if self.dry_run else "")


def _unique_labels(rules: list[Rule]) -> list[Rule]:
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if rule.label in seen:
            raise ValueError(f"rules {seen[rule.label]} and {i} are both named {rule.label!r}; "
                             "give each a unique name")
        seen[rule.label] = i
    return rules


Rules = Annotated[list[Rule], AfterValidator(_unique_labels)]
_RULES: TypeAdapter[list[Rule]] = TypeAdapter(Rules)


def problems(e: ValidationError, prefix: str = "rules") -> list[str]:
    """One line per mistake, e.g. `rules.2.rate: Input should be less than or equal to 1 (got 1.5)`."""
    out = []
    for err in e.errors(include_url=False):
        where = ".".join([prefix, *(str(x) for x in err["loc"])])
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] in ("value_error", "missing") else f" (got {err.get('input')!r})"
        out.append(f"{where}: {msg}{got}")
    return out


def parse_remote(value: Any) -> list[Rule]:
    """A dynamic config's value `{"rules": [...]}` -> rules; `{}` means none. Raises RuleError."""
    if not isinstance(value, dict):
        raise RuleError([f"value must be a JSON object with a 'rules' list (got {type(value).__name__})"])
    extra = sorted(set(value) - {"rules"})
    if extra:
        raise RuleError([f"unknown key {k!r} in the value (only 'rules')" for k in extra])
    try:
        return _RULES.validate_python(value.get("rules", []))
    except ValidationError as e:
        raise RuleError(problems(e)) from None
