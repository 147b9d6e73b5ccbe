"""The OTLP receiver's benchmark: spans a second through ``POST /v1/traces``, against
``record_batch`` of the same events in process, same run.

    python benchmarks/otlp_bench.py              # its own redis-server and serve process
    python benchmarks/otlp_bench.py --url URL    # on a server you run (it is FLUSHED)
    python benchmarks/otlp_bench.py --quick      # a smoke run with small sizes

``--clients`` processes (4) act as OpenTelemetry exporters: each sends its GenAI chat spans
to ``/v1/traces`` in protobuf, 512 spans a request (the SDK batch processor's
``max_export_batch_size``), over one keep-alive connection, encoding each request as it goes
(as the SDK's exporter does at each export). Then the same processes call ``record_batch``
with the same events (the ones the receiver maps those spans to), built from their plain
fields. Rounds alternate; every span and event has an id of its own, so nothing is a
duplicate. Figures: spans (events) a second, and the median of the rounds' ratios OTLP /
direct. Writes benchmarks/results/otlp.json (``--out``) and prints a table; the published
figures are in benchmarks/otlp-results.json and docs/otlp.md.
"""

from __future__ import annotations

import http.client
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _clients import direct_store, per_second, timed_after  # processes behind a barrier
from bench import RESULTS, arguments, flushed, publish  # the same server, options, report
from http_bench import TOKEN, serving  # the same serve process
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from redis_telemetry import CompletionEvent, TelemetryStore
from redis_telemetry.otlp import decode, map_batch

MODELS = [f"bench/otlp-{i}" for i in range(5)]
BATCH = 512
HEADERS = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"}


def spans(w: int, b: int, rnd: int) -> trace_service_pb2.ExportTraceServiceRequest:
    """One exporter's batch of ``BATCH`` chat spans, with ids of their own."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    res = request.resource_spans.add()
    res.resource.attributes.add(key="service.name").value.string_value = f"bench-{w}"
    scope = res.scope_spans.add()
    scope.scope.name = "bench"
    end = time.time_ns()
    for i in range(BATCH):
        s = scope.spans.add()
        s.trace_id = (rnd * 1_000_003 + w).to_bytes(8, "big") + (b * BATCH + i).to_bytes(8, "big")
        s.span_id = (b * BATCH + i + 1).to_bytes(8, "big")
        s.name, s.kind = "chat", 3
        s.start_time_unix_nano, s.end_time_unix_nano = end - (200 + i) * 1_000_000, end
        for key, text in (
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", MODELS[i % len(MODELS)]),
            ("gen_ai.conversation.id", f"conv-{w}-{i % 20}"),
        ):
            s.attributes.add(key=key).value.string_value = text
        for key, n in (
            ("gen_ai.usage.input_tokens", 2500),
            ("gen_ai.usage.cache_read.input_tokens", 1000),
            ("gen_ai.usage.output_tokens", 500),
        ):
            s.attributes.add(key=key).value.int_value = n
    return request


def _client(how: str, target: str, batches: int, rnd: int, w: int, ready: Any, out: Any) -> None:
    """One exporter process: its span batches over HTTP (``target`` a port), or the events
    they map to, from their plain fields, given to ``record_batch`` (``target`` a Redis URL
    and namespace). Each side's own work is timed."""
    requests = [spans(w, b, rnd) for b in range(batches)]
    if how == "otlp":
        conn = http.client.HTTPConnection("127.0.0.1", int(target), timeout=60)
        with timed_after(ready, out):
            for req in requests:
                conn.request("POST", "/v1/traces", req.SerializeToString(), HEADERS)
                resp = conn.getresponse()
                body = resp.read()
                assert (resp.status, body) == (200, b""), body
            conn.close()
    else:
        now = datetime.now(UTC)
        held = [
            [
                e.model_dump(mode="json")
                for e in map_batch(decode("traces", r.SerializeToString(), "protobuf"), now).events
            ]
            for r in requests
        ]
        store = direct_store(target)
        with timed_after(ready, out):
            for batch in held:
                result = store.record_batch([CompletionEvent(**fields) for fields in batch])
                assert result.stored == BATCH, result
            store.close()


def _run(how: str, target: str, clients: int, batches: int, rnd: int) -> float:
    """Spans (events) a second of ``clients`` processes, each sending ``batches``."""
    return per_second(_client, (how, target, batches, rnd), clients, batches * BATCH, 900)


def bench(url: str, clients: int, batches: int, rounds: int) -> dict[str, Any]:
    """OTLP and direct in alternating rounds, each round's ratio, and the medians."""
    otlp_rates, direct_rates = [], []
    with serving(url, "bench-otlp") as server:
        for rnd in range(rounds):
            otlp_rates.append(_run("otlp", str(server.port), clients, batches, rnd))
            direct_rates.append(_run("direct", f"{url} bench-otlp-direct", clients, batches, rnd))
    ratios = [o / d for o, d in zip(otlp_rates, direct_rates, strict=True)]
    with TelemetryStore.from_url(url, namespace="bench-otlp") as store:
        stored = sum(store.model_performance(m).successful_completions for m in MODELS)
    return {
        "clients": clients,
        "batch": BATCH,
        "requests_per_client": batches,
        "rounds": rounds,
        "otlp_spans_per_s": round(statistics.median(otlp_rates)),
        "direct_events_per_s": round(statistics.median(direct_rates)),
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "spans_sent": clients * batches * BATCH * rounds,
        "events_stored": stored,
    }


def report(res: dict[str, Any]) -> str:
    t = res["traces"]
    return "\n".join(
        [
            f"OTLP receiver benchmark ({res['machine']}; {res['when']})",
            "",
            "| figure | OTLP | in process | ratio |",
            "| --- | --- | --- | --- |",
            f"| `POST /v1/traces`, protobuf, {t['clients']} exporters, batches of {t['batch']} "
            f"| {t['otlp_spans_per_s']:,} spans/s | {t['direct_events_per_s']:,} events/s "
            f"(`record_batch`) | {t['ratio']:.2f}x |",
            "",
            f"{t['spans_sent']:,} spans sent, {t['events_stored']:,} events stored",
        ]
    )


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--clients", type=int, default=4, help="exporter processes (default 4)")
    parser.add_argument("--out", type=Path, default=RESULTS / "otlp.json")
    args = parser.parse_args()
    with flushed(args.url) as (url, run):
        res: dict[str, Any] = {**run, "quick": args.quick}
        res["traces"] = bench(url, args.clients, 2 if args.quick else 12, 1 if args.quick else 5)
    publish(res, args.out, report(res))
    if res["traces"]["events_stored"] != res["traces"]["spans_sent"]:
        sys.exit("the receiver did not store every span once")


if __name__ == "__main__":
    main()
