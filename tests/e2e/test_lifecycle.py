"""The extension as a citizen of the Lambda lifecycle, on the local Lambda with the release binary:
flush at every invocation end before asking for the next event, SHUTDOWN within budget, and
nothing lost when the function times out, the runtime crashes or the Telemetry API is silent."""
import gzip
import http.server
import os
import threading
import time
import urllib.request

from checks import (SUMMARY, by_name, one_connected_tree, python_env, python_runtime,
                    shutdown_summary, trace_nodes)
from lam import BIN_DIR, wait_until
from xray import model


def root_of(result):
    return result["traceHeader"].split("Root=")[1].split(";")[0]


FUNCTION_CHILDREN = ["GET", "SQS", "validate"]


def function_server(nodes):
    """The Python function's SERVER span (named after the service, as X-Ray names segments),
    found as the parent of its `validate` span; asserts its three children are all there."""
    model.link(nodes)
    validate = by_name(nodes, "validate")
    (server,) = [n for n in nodes if n.id == validate.parent_id]
    assert server.kind == "segment" and server.name == "otel-xray-e2e", server.name
    # With the Runtime API proxy the function's SERVER span takes the invocation span's place,
    # and the cold start's Init span hangs there too.
    assert sorted(c.name for c in server.children if c.name != "Init") == FUNCTION_CHILDREN
    return server


def test_every_invocation_flushed_before_next_event_daemon(sandbox, daemon):
    lam = sandbox(python_runtime(), active_tracing=True,
                  env=python_env({"AWS_XRAY_DAEMON_ADDRESS": daemon.address}))
    seen = 0
    for i in range(3):
        result = lam.invoke({"order_id": "o-%d" % i})
        assert result["status"] == "success"
        # The invocation completes only when the extension has called event/next again; the
        # datagrams it sent before that are already queued at the daemon's socket.
        docs = daemon.drain()
        function_server(trace_nodes(docs, root_of(result)))
        assert len(docs) > seen
        seen = len(docs)
    lam.shutdown()
    # Nothing was left for SHUTDOWN: no function span arrives after the last invocation. (The
    # cold start's Init comes from the Telemetry API on Lambda's schedule, and with the Runtime
    # API proxy ending invocations before Lambda's batch arrives it may be exported at a later
    # flush, SHUTDOWN's included: it is the extension's span, not the function's.)
    after = [d for d in daemon.drain()[seen:] if d.get("name") != "Init"]
    assert after == [], after
    s = shutdown_summary(lam.extension_log())
    assert s["in_flight"] == 0 and s["dropped"] == 0 and s["received"] == s["exported"] > 0, s


def test_every_invocation_flushed_before_next_event_moto(sandbox, moto):
    lam = sandbox(python_runtime(), active_tracing=True, env=python_env({
        "OTEL_XRAY_EXPORTER": "api", "OTEL_XRAY_API_ENDPOINT": moto.endpoint}))
    for i in range(2):
        result = lam.invoke({"order_id": "m-%d" % i})
        assert result["status"] == "success"
        function_server(trace_nodes(moto.documents([root_of(result)]), root_of(result)))


def test_rust_function_flushed_each_invocation(sandbox, daemon):
    lam = sandbox([os.path.join(BIN_DIR, "bootstrap")], wrapper=False, active_tracing=True, env={
        "AWS_XRAY_DAEMON_ADDRESS": daemon.address, "OTEL_SERVICE_NAME": "orders-rs"})
    for i in range(2):
        result = lam.invoke({"order_id": "r-%d" % i})
        assert result["status"] == "success"
        nodes = trace_nodes(daemon.drain(), root_of(result))
        assert len([n for n in nodes if n.name != "otel-xray-e2e"]) >= 4
    lam.shutdown()
    s = shutdown_summary(lam.extension_log())
    assert s["in_flight"] == 0 and s["dropped"] == 0, s


def test_periodic_and_adaptive_deliver_everything_by_shutdown(sandbox, daemon):
    for mode in ("periodic,600000", "adaptive"):
        lam = sandbox(python_runtime(), active_tracing=True, env=python_env({
            "AWS_XRAY_DAEMON_ADDRESS": daemon.address, "OTEL_XRAY_FLUSH": mode}))
        roots = [root_of(lam.invoke({"order_id": "p-%d" % i})) for i in range(4)]
        lam.shutdown()
        docs = daemon.drain()
        for r in roots:
            function_server(trace_nodes(docs, r))
        s = shutdown_summary(lam.extension_log())
        assert s["in_flight"] == 0 and s["dropped"] == 0, (mode, s)
        daemon.documents.clear()


def test_timeout_crash_and_silent_telemetry_lose_nothing(sandbox, daemon):
    # A function that times out (its spans were flushed by the SDK before it hung).
    lam = sandbox(python_runtime(), active_tracing=True, timeout_ms=1500,
                  env=python_env({"AWS_XRAY_DAEMON_ADDRESS": daemon.address}))
    result = lam.invoke({"order_id": "t-1", "sleep_s": 5})
    assert result["status"] == "timeout", result
    # The timeout resets the sandbox: the extension got SHUTDOWN and flushed before exiting.
    root = root_of(result)
    docs = daemon.wait_for(lambda d: any(x.get("trace_id") == root and x.get("subsegments") for x in d), 5)
    function_server(trace_nodes(docs, root))
    # The reset is asynchronous: the documents can reach the daemon before the extension has
    # written its summary line (the last thing it does before exiting).
    log = wait_until(lambda: SUMMARY.search(lam.extension_log()) and lam.extension_log(), 10)
    s = shutdown_summary(log or lam.extension_log())
    assert s["in_flight"] == 0 and s["dropped"] == 0, s
    # The sandbox re-initialises and works again.
    assert lam.invoke({"order_id": "t-2"})["status"] == "success"
    lam.close()

    # A runtime that crashes after its SDK flushed.
    daemon.documents.clear()
    lam = sandbox(python_runtime(), active_tracing=True,
                  env=python_env({"AWS_XRAY_DAEMON_ADDRESS": daemon.address}))
    result = lam.invoke({"order_id": "c-1", "crash": True})
    assert result["status"] in ("failure", "error"), result
    root = root_of(result)
    docs = daemon.wait_for(lambda d: any(x.get("trace_id") == root and x.get("subsegments") for x in d), 5)
    function_server(trace_nodes(docs, root))
    lam.close()

    # A Telemetry API that never delivers: the deadline ends the wait, event/next comes in time.
    daemon.documents.clear()
    lam = sandbox(python_runtime(), active_tracing=True, timeout_ms=1500,
                  extra_args=["--telemetry-never"],
                  env=python_env({"AWS_XRAY_DAEMON_ADDRESS": daemon.address}))
    # The first invocation also waits for the runtime's init; measure a warm one.
    assert lam.invoke({"order_id": "n-0"})["status"] == "success"
    result = lam.invoke({"order_id": "n-1"})
    assert result["status"] == "success", result
    timings = result["timings"]
    for ext in timings["extensions"]:
        # nextAtMs is on the sandbox's clock, like startedAtMs.
        assert ext["nextAtMs"] is not None, ext
        assert ext["nextAtMs"] - timings["startedAtMs"] < 1500, (ext, timings)
    assert timings["durationMs"] < 1500, timings
    function_server(trace_nodes(daemon.drain(), root_of(result)))


def count_spans(doc):
    return 1 + sum(count_spans(sub) for sub in doc.get("subsegments", []))


class SlowXRay(http.server.BaseHTTPRequestHandler):
    """A PutTraceSegments endpoint that answers slowly and counts the spans it accepted."""
    delay = 0.4
    accepted = 0
    lock = threading.Lock()

    def do_POST(self):
        import json
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        docs = json.loads(body)["TraceSegmentDocuments"]
        assert len(docs) <= 50
        time.sleep(self.delay)
        spans = sum(count_spans(json.loads(d)) for d in docs)
        with SlowXRay.lock:
            SlowXRay.accepted += spans
        out = b'{"UnprocessedTraceSegments": []}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def otlp_request(n_spans, trace_seed):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "bulk"
    ss = rs.scope_spans.add()
    now = time.time_ns()
    for i in range(n_spans):
        s = ss.spans.add()
        s.trace_id = (trace_seed * 1_000_003 + i // 100 + 1).to_bytes(16, "big")
        s.span_id = (i + 1 + trace_seed * 100_000).to_bytes(8, "big")
        s.name = "work-%d" % i
        s.kind = Span.SPAN_KIND_INTERNAL
        s.start_time_unix_nano = now
        s.end_time_unix_nano = now + 1000
    return req.SerializeToString()


def test_shutdown_with_10000_spans_and_slow_xray(sandbox):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowXRay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lam = sandbox(python_runtime(), env=python_env({
            "OTEL_XRAY_EXPORTER": "api",
            "OTEL_XRAY_API_ENDPOINT": "http://127.0.0.1:%d" % server.server_address[1],
            "OTEL_XRAY_FLUSH": "periodic,600000",
            "OTEL_XRAY_PLATFORM_SPANS": "false",
            # Without the proxy's invocation span the PassThrough invocation stays unsampled.
            "OTEL_XRAY_PROXY": "false",
        }))
        assert lam.invoke({})["status"] == "success"  # first invocation flushes (4 spans)
        for k in range(10):
            req = urllib.request.Request(
                "http://127.0.0.1:%d/v1/traces" % lam.ports["http"], data=otlp_request(1000, k + 1),
                headers={"content-type": "application/x-protobuf"}, method="POST")
            assert urllib.request.urlopen(req, timeout=10).status == 200
        report = lam.shutdown()
        (ext,) = [e for e in report["extensions"] if e["name"] == "otel-xray"]
        assert ext["exitCode"] == 0 and not ext["killed"], ext
        # Lambda gives extensions 2,000 ms from SHUTDOWN (deadlineMs is that instant, epoch ms).
        assert ext["exitedAfterMs"] < 2000, ext
        s = shutdown_summary(lam.extension_log())
        # Without active tracing the function's own spans are unsampled (Sampled=0): only the bulk.
        assert s["received"] == 10_000, s
        assert s["in_flight"] == 0 and s["received"] == s["exported"] + s["dropped"], s
        assert s["exported"] == SlowXRay.accepted, (s, SlowXRay.accepted)
    finally:
        server.shutdown()
