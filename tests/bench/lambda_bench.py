"""`make bench` (part 2): the release extension on the local Lambda, measured.

- spawn → registered: from the local Lambda starting the extension's process to its
  `/extension/register` request arriving (median of 10 cold starts);
- flush latency: from the Telemetry API batch carrying `platform.runtimeDone` leaving the local
  Lambda to the extension's next `/extension/event/next`, with 100 spans (one pre-encoded
  realistic OTLP/HTTP protobuf request: 20 traces of 5 spans, 20 documents) plus the function's own to flush: to the daemon address, and to a
  loopback PutTraceSegments (moto) — median of 20 invocations each;
- peak RSS of the extension (VmHWM) after those invocations.

The local Lambda answers every API request in a single write with TCP_NODELAY. The function is
the sample Rust function (examples/rust-function).
"""
import os
import statistics
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

from lam import BIN_DIR, LocalLambda  # noqa: E402
from xray.daemon import DaemonListener  # noqa: E402
from xray.moto_xray import MotoXRay  # noqa: E402



def realistic_request(traces=20, seed=7):
    """100 spans as an instrumented service sends them: 20 traces of a SERVER span with an AWS
    SDK call, an HTTP call, a database query and an internal span, about 8 attributes each."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def attr(span, key, value):
        kv = span.attributes.add()
        kv.key = key
        if isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = value

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in [("service.name", "orders"), ("cloud.provider", "aws"), ("cloud.platform", "aws_lambda"),
                 ("telemetry.sdk.name", "opentelemetry"), ("telemetry.sdk.language", "python")]:
        attr(rs.resource, k, v)
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    now = time.time_ns()
    for t in range(traces):
        trace_id = (seed * 1_000_003 + t + 1).to_bytes(16, "big")
        root_id = (seed * 100_000 + t * 10 + 1).to_bytes(8, "big")
        kinds = [("GET /orders/{id}", Span.SPAN_KIND_SERVER, {"http.request.method": "GET",
                  "url.full": "https://api.example.com/orders/%d" % t, "http.response.status_code": 200,
                  "user_agent.original": "curl/8", "client.address": "198.51.100.7", "order.id": str(t)}),
                 ("DynamoDB.GetItem", Span.SPAN_KIND_CLIENT, {"rpc.system": "aws-api", "rpc.service": "DynamoDB",
                  "rpc.method": "GetItem", "aws.region": "eu-west-1", "aws.request_id": "R%d" % t}),
                 ("GET", Span.SPAN_KIND_CLIENT, {"http.request.method": "GET", "server.address": "inventory.internal",
                  "url.full": "https://inventory.internal/items", "http.response.status_code": 200}),
                 ("SELECT orders", Span.SPAN_KIND_CLIENT, {"db.system": "postgresql", "db.name": "orders",
                  "db.statement": "SELECT * FROM orders WHERE id = $1", "server.address": "db.internal"}),
                 ("price", Span.SPAN_KIND_INTERNAL, {"order.items": 3, "order.currency": "EUR"})]
        for i, (name, kind, attrs) in enumerate(kinds):
            s = ss.spans.add()
            s.trace_id = trace_id
            s.span_id = root_id if i == 0 else (seed * 100_000 + t * 10 + 1 + i).to_bytes(8, "big")
            if i:
                s.parent_span_id = root_id
            s.name, s.kind = name, kind
            s.start_time_unix_nano = now + i * 1000
            s.end_time_unix_nano = now + 50_000
            for k, v in attrs.items():
                attr(s, k, v)
    return req.SerializeToString()

FUNCTION = [os.path.join(BIN_DIR, "bootstrap")]


def events(lam, kind):
    return [e for e in lam.timeline()["events"] if e["kind"] == kind]


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def extension_pid(lam):
    starts = [e for e in events(lam, "process.start") if e.get("role") == "extension"]
    return starts[-1]["pid"]


def startup(samples=10):
    out = []
    for _ in range(samples):
        d = DaemonListener()
        lam = LocalLambda(tempfile.mkdtemp(prefix="bench-"), FUNCTION, wrapper=False,
                          env={"AWS_XRAY_DAEMON_ADDRESS": d.address, "OTEL_XRAY_LOG_LEVEL": "warn"})
        try:
            tl = lam.timeline()["events"]
            spawn = [e for e in tl if e["kind"] == "process.start" and e.get("role") == "extension"][0]
            reg = [e for e in tl if e["kind"] == "extension.register"][0]
            out.append(reg["atMs"] - spawn["atMs"])
        finally:
            lam.close()
            d.close()
    return statistics.median(out), out


def flush_latency(env, n=20):
    lam = LocalLambda(tempfile.mkdtemp(prefix="bench-"), FUNCTION, wrapper=False,
                      env=dict(env, OTEL_XRAY_LOG_LEVEL="warn", OTEL_XRAY_PLATFORM_SPANS="false"))
    body = realistic_request()
    url = "http://127.0.0.1:%d/v1/traces" % lam.ports["http"]
    latencies = []
    try:
        lam.invoke({"order_id": "warm"})
        for i in range(n):
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"content-type": "application/x-protobuf"})
            assert urllib.request.urlopen(req, timeout=10).status == 200
            result = lam.invoke({"order_id": "b-%d" % i})
            assert result["status"] == "success", result
            rid = result["requestId"]
            tl = lam.timeline()["events"]
            sends = [e for e in tl if e["kind"] == "telemetry.send" and "platform.runtimeDone" in e.get("types", [])]
            nexts = [e for e in tl if e["kind"] == "extension.next" and e.get("requestId") == rid]
            sent = [s["atMs"] for s in sends if s["atMs"] <= nexts[0]["atMs"]][-1]
            latencies.append(nexts[0]["atMs"] - sent)
        rss = vm_hwm_kib(extension_pid(lam))
    finally:
        lam.close()
    return statistics.median(latencies), latencies, rss


def main():
    rows = []
    med, _ = startup()
    rows.append(("spawn → registered (median of 10)", "%.2f ms" % med, "≤ 5 ms"))

    d = DaemonListener()
    try:
        med, lat, rss_daemon = flush_latency({"AWS_XRAY_DAEMON_ADDRESS": d.address})
        got = len(d.drain())
    finally:
        d.close()
    rows.append(("runtimeDone → event/next, 100 spans, daemon (median of 20)", "%.2f ms" % med, "≤ 1 ms"))

    moto = MotoXRay(tempfile.mkdtemp(prefix="bench-moto-"))
    try:
        med_api, _, rss_api = flush_latency({"OTEL_XRAY_EXPORTER": "api", "OTEL_XRAY_API_ENDPOINT": moto.endpoint})
    finally:
        moto.close()
    rows.append(("runtimeDone → event/next, 100 spans, PutTraceSegments on moto (median of 20)",
                 "%.2f ms" % med_api, "≤ 10 ms"))
    rows.append(("peak RSS of the extension after 21 flushes (daemon / api)",
                 "%.1f / %.1f MiB" % (rss_daemon / 1024.0, rss_api / 1024.0), "≤ 10 MB"))
    size = os.path.getsize(os.path.join(os.environ.get("OTEL_XRAY_LAYER", ""), "extensions", "otel-xray")) \
        if os.environ.get("OTEL_XRAY_LAYER") else None

    print()
    print("otel-xray on the local Lambda (%s)" % time.strftime("%Y-%m-%d %H:%M"))
    print()
    print("| figure | measured | target |")
    print("|---|---|---|")
    for r in rows:
        print("| %s | %s | %s |" % r)
    if size:
        print("| extension binary (stripped) | %.2f MiB | — |" % (size / 1048576.0))
    print()
    print("(daemon stand-in received %d documents)" % got)


if __name__ == "__main__":
    main()
