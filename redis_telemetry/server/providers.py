"""The HTTP API's provider routes: read every provider's spend, caps, verdict, block and
backoff; set a provider's budget; block and unblock it. Mounted by ``app.create_app``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ..aio import AsyncTelemetryStore
from ..core import bodies
from ..core.providers import ProviderStatus
from ..models import UtcDatetime

JSON = "application/json"
_PROVIDERS = TypeAdapter(list[ProviderStatus])
_USD = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False, strict=True)]


class BudgetRequest(BaseModel):
    """``PUT /v1/providers/{provider}/budget``: the caps in USD for the UTC hour and day; an
    absent or null cap is no cap."""

    model_config = ConfigDict(extra="forbid")

    hour_usd: _USD | None = None
    day_usd: _USD | None = None


class BlockRequest(BaseModel):
    """``PUT /v1/providers/{provider}/block``: block until ``until``, else until the reset
    time ``reason`` names ("usage limit, resets in 2 hours"), else for 900 s."""

    model_config = ConfigDict(extra="forbid")

    reason: str = "manual"
    #: an RFC 3339 time; one without an offset is UTC
    until: UtcDatetime | None = None


#: the request bodies these routes parse, for the OpenAPI document
REQUEST_MODELS = (BudgetRequest, BlockRequest)

F = TypeVar("F", bound=Callable[..., Any])


class Route(Protocol):
    """``app.create_app``'s route decorator factory."""

    def __call__(
        self, method: str, path: str, answer: Any, guard: Any, *errors: int, body: Any = None
    ) -> Callable[[F], F]: ...


Stores = Callable[[Callable[[AsyncTelemetryStore], Awaitable[Any]]], Awaitable[Any]]


def _json(value: BaseModel) -> Response:
    return Response(value.model_dump_json(), media_type=JSON)


def add_provider_routes(
    route: Route,
    stores: Stores,
    read: Any,
    write: Any,
    body: Callable[[type[BaseModel]], dict[str, Any]],
    body_errors: tuple[int, ...],
) -> None:
    """Mount the provider routes with ``app.create_app``'s ``route`` decorator, store and
    token checks."""

    @route("GET", "/v1/providers", list[ProviderStatus], read)
    async def list_providers() -> Response:
        """Every provider the namespace knows: its models, its spend this UTC hour and day
        against its caps, its verdict, and any block or 429 backoff."""
        found = await stores(lambda s: s.providers())
        return Response(_PROVIDERS.dump_json(found), media_type=JSON)

    @route("GET", "/v1/providers/{provider}", ProviderStatus, read, 422)
    async def get_provider(provider: str) -> Response:
        """One provider (one without anything recorded has an empty, uncapped state)."""
        return _json(await stores(lambda s: s.provider_status(provider)))

    async def answer(
        provider: str, change: Callable[[AsyncTelemetryStore], Awaitable[Any]]
    ) -> Response:
        await stores(change)
        return _json(await stores(lambda s: s.provider_status(provider)))

    @route(
        "PUT",
        "/v1/providers/{provider}/budget",
        ProviderStatus,
        write,
        403,
        *body_errors,
        body=body(BudgetRequest),
    )
    async def set_provider_budget(provider: str, request: Request) -> Response:
        """Set the provider's caps (null: uncapped); answers the provider's state."""
        ask = bodies.parse_model(BudgetRequest, await request.body())
        return await answer(
            provider, lambda s: s.set_budget(provider, hour_usd=ask.hour_usd, day_usd=ask.day_usd)
        )

    @route(
        "PUT",
        "/v1/providers/{provider}/block",
        ProviderStatus,
        write,
        403,
        *body_errors,
        body=body(BlockRequest),
    )
    async def block_provider(provider: str, request: Request) -> Response:
        """Block every model of the provider (a block in place that ends later is kept)."""
        raw = await request.body()
        ask = bodies.parse_model(BlockRequest, raw) if raw.strip() else BlockRequest()
        until: datetime | None = ask.until
        return await answer(provider, lambda s: s.block_provider(provider, ask.reason, until))

    @route("DELETE", "/v1/providers/{provider}/block", ProviderStatus, write, 403, 422)
    async def unblock_provider(provider: str) -> Response:
        """End the provider's block and 429 backoff."""
        return await answer(provider, lambda s: s.unblock_provider(provider))
