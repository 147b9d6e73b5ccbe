// A client of the HTTP API in Node, with nothing but its built-in fetch (Node 18 or later):
// record two events, read one model's snapshot, and pick a model. Run by tests/test_http_node.py.
//   REDIS_TELEMETRY_API=http://127.0.0.1:10464 REDIS_TELEMETRY_TOKEN=... node client.mjs
const base = process.env.REDIS_TELEMETRY_API ?? "http://127.0.0.1:10464";
const headers = {
  "Content-Type": "application/json",
  Authorization: `Bearer ${process.env.REDIS_TELEMETRY_TOKEN}`,
};

async function call(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) {
    // every error is {"error": "<one line>"}; a 503 says when to retry
    throw new Error(`${method} ${path}: ${response.status} ${answer.error}`);
  }
  return answer;
}

const now = new Date().toISOString();
const event = (model, latency_ms, success) => ({
  model,
  session_id: "node-session",
  completed_at: now,
  latency_ms,
  success,
  tokens: { total: 1500, input: 1200, output: 300, reasoning: 0, cache_read: 0, cache_write: 0 },
  cost_usd: 0.002,
  error: success ? null : "529 overloaded",
});

const recorded = await call("POST", "/v1/events", [
  event("node/fast-model", 800, true),
  event("node/slow-model", 4000, true),
]);
// a model name holds a "/": sent as %2F (or as it is)
const snapshot = await call("GET", `/v1/models/${encodeURIComponent("node/fast-model")}`);
const selection = await call("POST", "/v1/select", {
  candidates: ["node/slow-model", "node/fast-model"],
  strategy: "fastest",
});
console.log(JSON.stringify({ recorded, snapshot, selection }));
