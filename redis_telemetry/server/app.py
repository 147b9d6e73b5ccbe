"""The HTTP application of ``redis-telemetry serve``: the JSON API, ``/metrics`` and health.

A thin shell over :class:`~redis_telemetry.AsyncTelemetryStore`: each route reads its request,
makes one call of the store (two for ``PUT /v1/limits``: the block, then the snapshot that
shows it) and writes the answer. Bodies are parsed by ``core.bodies``, failures become statuses
by ``core.statuses`` and tokens are checked by ``core.tokens``; nothing here keeps state but
the store (and, with ``ServerSettings.tier``, the local read tier that answers
``POST /v1/select`` from memory), so any number of servers can run side by side on one Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware

from .._version import __version__
from ..aio import AsyncTelemetryStore
from ..core import bodies, routing
from ..core.statuses import failure, one_line
from ..core.tier import RankOptions, TierSettings
from ..core.tokens import Scope, Tokens
from ..errors import TelemetryError, WindowMismatchError
from ..exporter import SnapshotCollector, scrape_budget
from ..models import CompletionEvent, ModelPerformanceSnapshot, TelemetrySummary, UsageSnapshot
from ..tier import AsyncLocalTier
from .bodies import DecodedBodies
from .feedback import record_and_feed
from .otlp import add_otlp_routes
from .providers import REQUEST_MODELS as PROVIDER_BODIES
from .providers import add_provider_routes
from .schemas import (
    ErrorBody,
    Lifted,
    LimitRequest,
    NoModelBody,
    RecordCounts,
    Selection,
    SelectRequest,
    candidates,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_SNAPSHOTS: TypeAdapter[list[ModelPerformanceSnapshot]] = TypeAdapter(
    list[ModelPerformanceSnapshot]
)
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How the application guards itself: its tokens, its body limit, and whether the probes
    and ``/metrics`` answer without a token."""

    tokens: Tokens = field(default_factory=Tokens)
    #: the largest request body, in bytes, counted after decompression
    body_limit: int = bodies.DEFAULT_BODY_LIMIT
    #: ``/metrics``, ``/healthz`` and ``/readyz`` answer without a token
    open_metrics: bool = False
    #: answer ``POST /v1/select`` from a local read tier with these settings (how old its
    #: data may get); None: read Redis for every request
    tier: TierSettings | None = None


class _Store:
    """The store the routes call, following the namespace's window when another process
    changes it on purpose (the store refuses the call with ``WindowMismatchError``, having
    written nothing; the call is made again with the namespace's window)."""

    def __init__(self, store: AsyncTelemetryStore) -> None:
        self.store = store

    async def __call__(self, call: Callable[[AsyncTelemetryStore], Awaitable[T]]) -> T:
        store = self.store
        try:
            return await call(store)
        except WindowMismatchError as exc:
            self.follow(store, exc.stored)
            return await call(self.store)

    def follow(self, store: AsyncTelemetryStore, window_secs: int) -> None:
        """``store`` was refused for the namespace's window: use that window from now on."""
        if store is self.store:
            log.info("following the namespace's window: %ss", window_secs)
            self.store = store.with_window(window_secs)


class _SelectTier:
    """``POST /v1/select``'s local read tier over the store the routes call, so that their
    own writes (a limit set, a limit error recorded) show in the next selection at once. Made
    again when the routes follow the namespace's window, or when a refresh was refused for
    another window (then it follows it)."""

    def __init__(self, stores: _Store, settings: TierSettings) -> None:
        self.stores, self.settings = stores, settings.check()
        self.tier: AsyncLocalTier | None = None

    def current(self) -> AsyncLocalTier:
        tier = self.tier
        if tier is not None and isinstance(tier.state.error, WindowMismatchError):
            self.stores.follow(tier.store, tier.state.error.stored)
        if tier is None or tier.store is not self.stores.store:
            if tier is not None:
                tier.close()
            tier = self.tier = AsyncLocalTier(self.stores.store, self.settings)
        return tier

    async def aclose(self) -> None:
        """Stop watching the store, and let a refresh in flight end."""
        if self.tier is not None:
            self.tier.close()
            await self.tier.settle()


def _json(value: BaseModel, status: int = 200) -> Response:
    return Response(value.model_dump_json(), status, media_type=JSON)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(ErrorBody(error=message).model_dump_json(), status, headers, media_type=JSON)


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """An operation's JSON request body, for the OpenAPI document (the route parses it)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"required": True, "content": {JSON: {"schema": ref}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of an operation, for the OpenAPI document."""
    words = {
        400: "The body is not JSON, or not valid gzip.",
        401: "No valid bearer token.",
        403: "The token may not do this (the read token writes nothing).",
        409: "No candidate is usable now; each one's reason.",
        413: "The body is larger than the limit, counted after decompression.",
        415: "A Content-Encoding other than gzip.",
        422: "JSON, but not valid: the message names the field (and the event's index).",
        503: "Redis did not answer within the deadline; retry after Retry-After seconds.",
    }
    models: dict[int, type[BaseModel]] = {409: NoModelBody}
    return {s: {"model": models.get(s, ErrorBody), "description": words[s]} for s in statuses}


#: the error answers every operation may give
_ALWAYS = (401, 503)
_BODY = (400, 413, 415, 422)
#: the request bodies the routes parse themselves, as JSON (strict types, as serde reads them)
_REQUEST_MODELS = (CompletionEvent, SelectRequest, LimitRequest, TelemetrySummary, *PROVIDER_BODIES)


#: the OpenAPI document's security scheme (the tokens are checked by ``core.tokens``)
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="The read token reads, the write token writes and reads; "
    "a server without tokens needs none.",
)


class _App(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, with the schemas of the bodies the routes parse themselves."""
        schema = super().openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if _REQUEST_MODELS[0].__name__ not in components:  # once: FastAPI keeps the document
            _, defs = models_json_schema(
                [(m, "validation") for m in _REQUEST_MODELS],
                ref_template="#/components/schemas/{model}",
            )
            components.update(defs["$defs"])
        return schema


def create_app(
    store: AsyncTelemetryStore,
    settings: ServerSettings | None = None,
    metrics: SnapshotCollector | None = None,
) -> FastAPI:
    """The ASGI application over ``store`` (closed when the application shuts down), with
    ``/metrics`` from ``metrics`` when given. Run it with any ASGI server."""
    settings = settings or ServerSettings()
    stores = _Store(store)
    tier = None if settings.tier is None else _SelectTier(stores, settings.tier)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if tier is not None:
            await tier.aclose()
        await stores.store.aclose()

    app = _App(
        title="redis-telemetry",
        version=__version__,
        summary="Live telemetry of AI-agent model calls, shared in Redis: record, read, route.",
        docs_url=None,
        redoc_url=None,
        separate_input_output_schemas=False,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,  # operationId: the function's
    )
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(DecodedBodies, limit=settings.body_limit)
    _handle_errors(app)

    def allow(scope: Scope, probe: bool = False) -> Any:
        async def check(
            request: Request,
            _: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
        ) -> None:
            if not (probe and settings.open_metrics):
                settings.tokens.check(request.headers.get("authorization"), scope)

        return Depends(check)

    read, write = allow(Scope.READ), allow(Scope.WRITE)
    probe = allow(Scope.READ, probe=True)

    def route(
        method: str, path: str, answer: Any, guard: Any, *errors: int, body: Any = None
    ) -> Callable[[F], F]:
        """A route's decorator: its answer, token check, error answers and request body (the
        route parses it), for the OpenAPI document."""
        return app.api_route(
            path,
            methods=[method],
            response_model=answer,
            dependencies=[guard],
            responses=_errors(*_ALWAYS, *errors),
            openapi_extra={"requestBody": body} if body else None,
        )

    @route("POST", "/v1/events", RecordCounts, write, 403, *_BODY, body=_events_body())
    async def record_events(request: Request) -> Response:
        """Record one event, a JSON array of events, or JSON Lines (`application/x-ndjson`).
        Every event is checked first: one invalid event and nothing is written. An event
        whose `event_id` the model already has counts as a duplicate, one older than the
        window as outside it. The events newly stored then feed their providers' state
        (a 429 backs the provider off, a success ends its backoff): a retried request
        stores nothing again and feeds nothing again."""
        media_type = bodies.content_type(request.headers.get("content-type"))
        events, single = bodies.parse_events(await request.body(), media_type)
        result = await record_and_feed(stores, events, single)
        return _json(RecordCounts.of(result))

    @route("GET", "/v1/models", list[ModelPerformanceSnapshot], read, 422)
    async def list_models(
        percentiles: Annotated[
            bool, Query(description="exact percentiles, read from the window's events")
        ] = False,
    ) -> Response:
        """Every model's snapshot over the window, sorted by model."""
        snaps = await stores(lambda s: s.all_model_performances(percentiles))
        return Response(_SNAPSHOTS.dump_json(snaps), media_type=JSON)

    @route("GET", "/v1/models/{model:path}", ModelPerformanceSnapshot, read, 422)
    async def get_model(
        model: str,
        percentiles: Annotated[
            bool, Query(description="exact percentiles, read from the window's events")
        ] = False,
    ) -> Response:
        """One model's snapshot (a model without data has an empty one). A `/` in the name is
        sent as it is, or as `%2F`."""
        return _json(await stores(lambda s: s.model_performance(model, percentiles)))

    @route("POST", "/v1/select", Selection, read, 409, *_BODY, body=_body(SelectRequest))
    async def select_model(request: Request) -> Response:
        """The model to use now among the candidates, and each candidate's rank or the reason
        it was left out (a subscription-limited one says so, with when it comes back)."""
        ask = bodies.parse_model(SelectRequest, await request.body())
        options: RankOptions = {
            "weights": ask.weights,
            "max_staleness_secs": ask.max_staleness_secs,
            "stale_policy": ask.stale_policy,
        }
        age, stale = 0.0, False
        if tier is None:
            ranking = await stores(lambda s: s.rank_models(ask.candidates, ask.strategy, **options))
        else:
            ranking, age, stale = await tier.current().rank_models(
                ask.candidates, ask.strategy, **options
            )
        chosen = routing.choose(ranking, ask.exploration)
        answer = Selection(model=chosen, ranking=candidates(ranking), age_secs=age, stale=stale)
        return _json(answer)

    @route("GET", "/v1/sessions/{session_id:path}", UsageSnapshot, read, 422)
    async def session_usage(session_id: str) -> Response:
        """One session's tokens and cost per model, within the window."""
        return _json(await stores(lambda s: s.session_usage(session_id)))

    @route("GET", "/v1/summary", TelemetrySummary, read)
    async def export_summary() -> Response:
        """The `TelemetrySummary` of every model."""
        return _json(await stores(lambda s: s.export_summary()))

    @route("POST", "/v1/summary", RecordCounts, write, 403, *_BODY, body=_body(TelemetrySummary))
    async def import_summary(request: Request) -> Response:
        """Import a `TelemetrySummary`: its limits, and events synthesised from its counts
        (importing the same summary again adds nothing)."""
        summary = bodies.parse_model(TelemetrySummary, await request.body())
        return _json(RecordCounts.of(await stores(lambda s: s.import_summary(summary))))

    @route(
        "PUT",
        "/v1/limits/{model:path}",
        ModelPerformanceSnapshot,
        write,
        403,
        *_BODY,
        body=_body(LimitRequest),
    )
    async def set_limit(model: str, request: Request) -> Response:
        """Block a model for `ttl_secs`, or `until` a time (a past time blocks nothing; a
        longer block in place is kept); an empty body blocks it for the default TTL. Answers
        the model's snapshot, which shows the block."""
        raw = await request.body()
        ask = bodies.parse_model(LimitRequest, raw) if raw.strip() else LimitRequest()
        await stores(
            lambda s: s.mark_subscription_limited(
                model, ask.ttl_secs, until=ask.until, reason=ask.reason
            )
        )
        return _json(await stores(lambda s: s.model_performance(model)))

    @route("DELETE", "/v1/limits/{model:path}", Lifted, write, 403, 422)
    async def clear_limit(model: str) -> Response:
        """Lift a model's block."""
        return _json(Lifted(lifted=await stores(lambda s: s.clear_subscription_limit(model))))

    add_provider_routes(route, stores, read, write, _body, _BODY)

    @app.get("/healthz", response_class=PlainTextResponse, dependencies=[probe])
    async def healthz() -> str:
        """The process answers (Redis is not asked)."""
        return "ok\n"

    @app.get(
        "/readyz",
        response_class=PlainTextResponse,
        dependencies=[probe],
        responses=_errors(*_ALWAYS),
    )
    async def readyz() -> str:
        """Redis answers a read within the store's deadline."""
        await stores(lambda s: s.stored_window())
        return "ok\n"

    async def bearer(_: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]) -> None:
        """The bearer scheme, for the document (the OTLP routes check the token themselves)."""

    add_otlp_routes(app, stores, settings.tokens, Depends(bearer))
    if metrics is not None:
        _add_metrics(app, metrics, probe)
    return app


def _events_body() -> dict[str, Any]:
    event = {"$ref": "#/components/schemas/CompletionEvent"}
    return {
        "required": True,
        "content": {
            JSON: {"schema": {"oneOf": [event, {"type": "array", "items": event}]}},
            "application/x-ndjson": {
                "schema": event,
                "description": "JSON Lines: one event a line (also `application/jsonl`)",
            },
        },
    }


def _add_metrics(app: FastAPI, collector: SnapshotCollector, probe: Any) -> None:
    """``/metrics`` (and ``/``, as before): the Prometheus exposition, read in a worker
    thread, so a slow Redis holds up no other request."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    async def metrics(request: Request) -> Response:
        """Prometheus metrics: one snapshot of every model (see the Metrics page), within
        Prometheus's scrape timeout when it sends one (else ``up`` 0 in time)."""
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        budget = scrape_budget(request.headers.get("x-prometheus-scrape-timeout-seconds"))
        started = time.perf_counter()
        reading = run_in_threadpool(encoder, registry)
        try:
            body = await (reading if budget is None else asyncio.wait_for(reading, budget))
        except TimeoutError:
            log.warning("scrape: Redis did not answer within the scrape timeout (%.2f s)", budget)
            late = CollectorRegistry(auto_describe=False)
            late.register(_Unanswered(collector, time.perf_counter() - started))
            body = encoder(late)
        return Response(body, media_type=content_type)

    # not in the OpenAPI document: the exposition format is Prometheus' own contract
    for path in ("/metrics", "/"):
        app.add_api_route(path, metrics, dependencies=[probe], include_in_schema=False)


class _Unanswered(Collector):
    """The exposition of a scrape that ran out of Prometheus's time."""

    def __init__(self, collector: SnapshotCollector, duration: float) -> None:
        self.collector, self.duration = collector, duration

    def collect(self) -> Iterator[Metric]:
        return self.collector.unanswered(self.duration)


def _handle_errors(app: FastAPI) -> None:
    """Every error as ``{"error": "<one line>"}``, with the status ``core.statuses`` gives."""

    @app.exception_handler(routing.NoModelAvailable)
    async def no_model(_: Request, exc: routing.NoModelAvailable) -> Response:
        body = NoModelBody(error=one_line(str(exc)), ranking=candidates(exc.ranking))
        return _json(body, 409)

    @app.exception_handler(TelemetryError)
    async def refused(_: Request, exc: TelemetryError) -> Response:
        answer = failure(exc)
        if answer.status == 500:  # the server's Redis user, or Redis, refused: say so here too
            log.error("request failed: %s", exc)
        return _error(*answer)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> Response:
        return _error(*failure(exc))  # and the server logs the traceback

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = {
            404: f"no such path: {request.url.path} (the API's paths are in /openapi.json)",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, one_line(str(exc.detail)))
        return _error(exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, one_line(f"{where}: {first.get('msg', 'invalid')}"))
