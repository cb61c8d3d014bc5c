"""How values reach the driver: payloads as compact JSON text, URLs for psycopg 3."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
from typing import Any
from uuid import UUID

from sqlalchemy.engine import URL, make_url

from pgconductor.errors import InvalidInput

__all__ = ["to_json", "to_sqlalchemy_url"]


def to_sqlalchemy_url(url: str | URL) -> URL:
    """Turn `postgresql://` / `postgres://` URLs into `postgresql+psycopg://` ones."""
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def json_default(value: Any) -> Any:
    """Encode the non-JSON types payloads and results commonly hold (for `json.dumps`)."""
    if hasattr(value, "model_dump"):  # a pydantic model
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> str:
    """Encode a payload or result as compact JSON text (raises InvalidInput when it can't)."""
    try:
        return json.dumps(value, separators=(",", ":"), default=json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"value is not JSON serialisable: {exc}", sqlstate="22023") from exc
