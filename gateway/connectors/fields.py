"""Connector config declared as a table of fields: save, status, has_<key> and activation follow."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# A normaliser takes what a client sent (JSON, or a form's strings) and returns the value to
# store, or raises ValueError with a sentence a user can act on.
Normaliser = Callable[[Any], Any]

SECRET_MAX = 4096  # no provider token or secret comes near this; 100 KB values are refused
TEXT_MAX = 500


class FieldError(ValueError):
    """A value a field refuses; `field` names it for the 400 answer."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Field:
    """One config key of a connector (DESIGN §7)."""

    name: str
    normalise: Normaliser
    secret: bool = False
    default: Any = None
    required: bool = False  # needed before the connector can be active
    project: bool = False  # a TimeTracker project id the user must be allowed to use

    def clean(self, raw: Any) -> Any:
        try:
            return self.normalise(raw)
        except FieldError:
            raise
        except (ValueError, TypeError) as exc:
            raise FieldError(self.name, str(exc) or f"{self.name} is not valid") from None


class FieldTable:
    """The fields of one connector, in the order the card shows them."""

    def __init__(self, fields: Iterable[Field]) -> None:
        self.fields: tuple[Field, ...] = tuple(fields)
        self.by_name: dict[str, Field] = {f.name: f for f in self.fields}
        if len(self.by_name) != len(self.fields):
            raise ValueError("field names must be unique")

    @property
    def secret_keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.secret)

    @property
    def defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in self.fields if not f.secret}

    def parse(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """(plain changes, secret changes) from a save's body; FieldError on a bad value.

        Only keys the body names are changed. A blank or absent secret leaves the stored one
        unchanged (DESIGN §7), so secrets appear only when given.
        """
        plain: dict[str, Any] = {}
        secrets: dict[str, str] = {}
        for field in self.fields:
            if field.name not in body:
                continue
            raw = body[field.name]
            if field.secret:
                if raw is None or (isinstance(raw, str) and not raw.strip()):
                    continue
                secrets[field.name] = field.clean(raw)
            else:
                plain[field.name] = field.clean(raw)
        return plain, secrets

    def missing(self, values: Mapping[str, Any], has_secret: Callable[[str], bool]) -> list[str]:
        """The required fields that still have no value."""
        absent = []
        for field in self.fields:
            if not field.required:
                continue
            present = has_secret(field.name) if field.secret else _present(values.get(field.name))
            if not present:
                absent.append(field.name)
        return absent


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


# -- normalisers -------------------------------------------------------------------------------


def text(max_length: int = TEXT_MAX, *, blank_is_none: bool = True) -> Normaliser:
    def normalise(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be text")
        value = value.replace("\x00", "").strip()
        if not value and blank_is_none:
            return None
        if len(value) > max_length:
            raise ValueError(f"may be at most {max_length} characters")
        return value

    return normalise


def secret(max_length: int = SECRET_MAX, min_length: int = 1) -> Normaliser:
    def normalise(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be text")
        value = value.strip()
        if "\x00" in value or any(ch in value for ch in "\r\n"):
            raise ValueError("must be one line of text")
        if len(value) > max_length:
            raise ValueError(f"may be at most {max_length} characters")
        if len(value) < min_length:
            raise ValueError(f"needs at least {min_length} characters")
        return value

    return normalise


_TRUE = {"true", "on", "1", "yes"}
_FALSE = {"false", "off", "0", "no", ""}


def boolean(value: Any) -> bool:
    """JSON booleans, or the strings "true"/"false" (and on/off, 1/0) that forms send."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return True
    if isinstance(value, str) and value.strip().lower() in _FALSE:
        return False
    raise ValueError("must be true or false")


def optional_id(value: Any) -> int | None:
    """A positive database id (JSON number or ASCII digits), or None for blank."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("must be a positive integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError("must be a positive integer")
    if not 0 < number < 2**31:
        raise ValueError("must be a positive integer")
    return number


def choice(*options: str) -> Normaliser:
    def normalise(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in options:
            raise ValueError("must be one of " + ", ".join(options))
        return value.strip().lower()

    return normalise


def bounded_int(lo: int, hi: int) -> Normaliser:
    """An integer clamped into [lo, hi] (DESIGN: sync_days_back is clamped, not refused)."""

    def normalise(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        if not isinstance(value, int):
            raise ValueError("must be a number")
        return min(max(value, lo), hi)

    return normalise


def checked(base: Normaliser, check: Callable[[Any], bool], message: str) -> Normaliser:
    """`base`, then a predicate on a non-empty result."""

    def normalise(value: Any) -> Any:
        result = base(value)
        if result is not None and not check(result):
            raise ValueError(message)
        return result

    return normalise


__all__ = [
    "Field",
    "FieldError",
    "FieldTable",
    "boolean",
    "bounded_int",
    "checked",
    "choice",
    "optional_id",
    "secret",
    "text",
]
