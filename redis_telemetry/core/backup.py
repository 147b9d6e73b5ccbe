"""The ``dump``/``restore`` format: JSON Lines, lossless for every raw event and limit.

Line 1 is a header; then one line per event (with its ``event_id``, so restoring twice adds
nothing) and one per active subscription limit::

    {"type": "dump", "version": 1, "namespace": "...", "window_secs": 3600, "dumped_at": "..."}
    {"type": "event", "event": {"model": "...", ..., "event_id": "..."}}
    {"type": "limit", "model": "...", "expires_at": "..." | null, "reason": "..."}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from ..errors import InvalidInputError
from ..models import CompletionEvent, Int, ModelName, UtcDatetime


class DumpHeader(BaseModel):
    """First line of a dump."""

    type: Literal["dump"] = "dump"
    version: Literal[1] = 1
    namespace: str
    window_secs: Int
    dumped_at: UtcDatetime


class DumpEvent(BaseModel):
    """One stored event, id included."""

    type: Literal["event"] = "event"
    event: CompletionEvent


class DumpLimit(BaseModel):
    """One subscription limit; ``expires_at`` is None for a block without expiry."""

    type: Literal["limit"] = "limit"
    model: ModelName
    expires_at: UtcDatetime | None
    reason: str


DumpLine = Annotated[DumpHeader | DumpEvent | DumpLimit, Field(discriminator="type")]
_LINE: TypeAdapter[DumpHeader | DumpEvent | DumpLimit] = TypeAdapter(DumpLine)


class Dump(BaseModel):
    """A whole dump in memory."""

    header: DumpHeader
    events: list[CompletionEvent]
    limits: list[DumpLimit]

    def lines(self) -> list[str]:
        """The JSON Lines text, one string per line."""
        out = [self.header.model_dump_json()]
        out += [DumpEvent(event=e).model_dump_json() for e in self.events]
        out += [limit.model_dump_json() for limit in self.limits]
        return out


def parse_line(text: str, lineno: int) -> DumpHeader | DumpEvent | DumpLimit:
    """One dump line, or an :class:`InvalidInputError` naming the line and the field."""
    try:
        return _LINE.validate_json(text)
    except ValidationError as exc:
        raise InvalidInputError(f"line {lineno}: {describe_validation(exc)}") from None


#: Plain words for pydantic's complaints about a whole line, by error type.
_PLAIN = {
    "union_tag_not_found": 'no "type" field: a dump line is a JSON object whose "type" is '
    '"dump", "event" or "limit"',
    "union_tag_invalid": 'its "type" is {tag!r}; a dump line\'s is "dump", "event" or "limit"',
    "json_invalid": "not JSON ({error})",  # the column: a dump line is one line
    "dict_type": "not a JSON object",
    "model_type": "not a JSON object",
    "model_attributes_type": "not a JSON object",
}


def describe_validation(exc: ValidationError) -> str:
    """pydantic's first complaint as 'field.path: message', in plain words where pydantic's
    own are about its machinery (a discriminator, a tag)."""
    first = exc.errors()[0]
    loc = list(first["loc"])
    if loc and loc[0] in ("dump", "event", "limit"):
        loc = loc[1:]  # the union's tag, not a field
    where = ".".join(str(p) for p in loc)
    plain = _PLAIN.get(first["type"]) if not where else None
    if plain is not None:
        context = {k: str(v) for k, v in (first.get("ctx") or {}).items()}
        if "error" in context:
            context["error"] = context["error"].replace(" at line 1 column ", " at column ")
        return plain.format(**context)
    msg = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg
