"""Fault injection on the local Lambda with the release extension and the real Python runtime and
SDK. For every fault: the function's result is what it is without the layer, the extension keeps
its deadlines (event/next comes within the invocation's budget, SHUTDOWN exits 0 within Lambda's
2,000 ms), and the shutdown summary balances: received = exported + dropped (by reason), nothing
left in flight. docs/hardening.md has the table of faults and what each test checks.

The X-Ray stand-in (`FakeXRay`) decodes every PutTraceSegments call it gets (JSON body, at most
50 documents, each a JSON document, SigV4 `Authorization` header present) before it misbehaves."""
import gzip
import http.server
import json
import os
import socket
import threading
import time
import urllib.request

import pytest

from checks import python_env, python_runtime, shutdown_summary
from lam import free_ports

EXPECTED_RESULT = {"status": "accepted"}


def count_spans(doc):
    return 1 + sum(count_spans(sub) for sub in doc.get("subsegments", []))


class FakeXRay:
    """PutTraceSegments on 127.0.0.1 that answers according to `mode`:
    ok, 500, 429 (ThrottledException), unprocessed (every segment in UnprocessedTraceSegments),
    403 (UnrecognizedClientException), hang (never answers), slow (answers ok after `delay`)."""

    def __init__(self, mode, delay=1.0):
        self.mode = mode
        self.delay = delay
        self.requests = []  # span counts per call
        self.accepted = 0
        self.errors = []
        self.stop = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    if self.headers.get("content-encoding") == "gzip":
                        body = gzip.decompress(body)
                    docs = [json.loads(d) for d in json.loads(body)["TraceSegmentDocuments"]]
                    assert 0 < len(docs) <= 50, len(docs)
                    assert self.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 ")
                except Exception as e:  # recorded, asserted by the test
                    fake.errors.append(repr(e))
                    docs = []
                spans = sum(count_spans(d) for d in docs)
                fake.requests.append(spans)
                if fake.mode == "hang":
                    fake.stop.wait(30)
                    return
                if fake.mode == "slow":
                    time.sleep(fake.delay)
                status, out = 200, {"UnprocessedTraceSegments": []}
                if fake.mode == "500":
                    status, out = 500, {"__type": "InternalFailure", "message": "boom"}
                elif fake.mode == "429":
                    status, out = 429, {"__type": "ThrottledException", "message": "Rate exceeded"}
                elif fake.mode == "403":
                    status, out = 403, {"__type": "UnrecognizedClientException",
                                        "message": "The security token included in the request is invalid."}
                elif fake.mode == "unprocessed":
                    out = {"UnprocessedTraceSegments": [
                        {"Id": d["id"], "ErrorCode": "ThrottlingException", "Message": "x"} for d in docs]}
                else:
                    fake.accepted += spans
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("content-type", "application/x-amz-json-1.1")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port():
    (port,) = free_ports(1)
    return port


def business(response):
    """The function's own result: its response without `seen` (the trace context it observed,
    which differs per invocation by design)."""
    return {k: v for k, v in response.items() if k != "seen"}


def run_sandbox(sandbox, env, invokes=2, extra_args=(), timeout_ms=3000, between=None):
    """Runs `invokes` invocations and a SHUTDOWN; checks result, deadlines and accounting."""
    lam = sandbox(python_runtime(), active_tracing=True, timeout_ms=timeout_ms,
                  extra_args=list(extra_args), env=python_env(env))
    for i in range(invokes):
        result = lam.invoke({"order_id": "f-%d" % i})
        assert result["status"] == "success", result
        assert business(result["response"]) == dict(EXPECTED_RESULT, order_id="f-%d" % i), result
        timings = result["timings"]
        for ext in timings["extensions"]:
            assert ext["nextAtMs"] is not None, ext
            assert ext["nextAtMs"] - timings["startedAtMs"] < timeout_ms, (ext, timings)
        if between:
            between(lam, i)
    report = lam.shutdown()
    (ext,) = [e for e in report["extensions"] if e["name"] == "otel-xray"]
    assert ext["exitCode"] == 0 and not ext["killed"], ext
    assert ext["exitedAfterMs"] < 2000, ext
    s = shutdown_summary(lam.extension_log())
    assert s["in_flight"] == 0, s
    assert s["received"] == s["exported"] + s["dropped"] == s["exported"] + sum(s["reasons"].values()), s
    assert s["received"] > 0, s
    print("summary:", s)  # docs/hardening.md's table (pytest -rP shows it)
    return s, lam


API_FAULTS = [
    # mode, reason the spans must be dropped for
    ("500", "export_failed"),
    ("429", "export_failed"),
    ("unprocessed", "export_rejected"),
    ("403", "export_rejected"),
    ("hang", None),
]


@pytest.mark.parametrize("mode,reason", API_FAULTS, ids=[m for m, _ in API_FAULTS])
def test_xray_api_faults(sandbox, mode, reason):
    xray = FakeXRay(mode)
    try:
        s, _ = run_sandbox(sandbox, {
            "OTEL_XRAY_EXPORTER": "api", "OTEL_XRAY_API_ENDPOINT": xray.endpoint,
            "OTEL_XRAY_EXPORT_TIMEOUT_MS": "500"})
    finally:
        xray.close()
    assert not xray.errors, xray.errors
    assert xray.requests, "the extension never called PutTraceSegments"
    assert s["exported"] == 0 and s["dropped"] == s["received"], s
    if reason:
        assert s["reasons"].get(reason) == s["received"], s
    else:
        # A hanging endpoint: the flush budget runs out (or the call is abandoned as failed).
        assert set(s["reasons"]) <= {"export_timeout", "export_failed", "shutdown"}, s


def test_xray_api_refusing_connections(sandbox):
    s, _ = run_sandbox(sandbox, {
        "OTEL_XRAY_EXPORTER": "api", "OTEL_XRAY_API_ENDPOINT": "http://127.0.0.1:%d" % closed_port()})
    assert s["exported"] == 0 and s["reasons"].get("export_failed") == s["received"], s


def test_daemon_address_unreachable(sandbox):
    # UDP is fire and forget: a datagram to a closed port either counts as sent or, once the
    # kernel reports the refusal, as failed; never lost from the accounting.
    s, _ = run_sandbox(sandbox, {"AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:%d" % closed_port()},
                       invokes=3)
    assert set(s["reasons"]) <= {"export_failed"}, s


def test_shutdown_arrives_during_a_flush(sandbox):
    # Periodic flushes every 200 ms against an endpoint that takes 1.5 s to answer: SHUTDOWN
    # comes while a flush is in flight, and the extension still exits in budget and balances.
    xray = FakeXRay("slow", delay=1.5)
    try:
        def burst(lam, i):
            post_otlp(lam.ports["http"], 300)
            time.sleep(0.3)  # the periodic flush has started and is waiting on X-Ray

        s, _ = run_sandbox(sandbox, {
            "OTEL_XRAY_EXPORTER": "api", "OTEL_XRAY_API_ENDPOINT": xray.endpoint,
            "OTEL_XRAY_FLUSH": "periodic,200", "OTEL_XRAY_PLATFORM_SPANS": "false"},
            invokes=1, between=burst)
    finally:
        xray.close()
    assert not xray.errors, xray.errors
    assert s["received"] >= 300, s
    assert s["exported"] <= xray.accepted, (s, xray.accepted)


def post_otlp(port, n_spans, seed=7):
    from test_lifecycle import otlp_request
    req = urllib.request.Request(
        "http://127.0.0.1:%d/v1/traces" % port, data=otlp_request(n_spans, seed),
        headers={"content-type": "application/x-protobuf"}, method="POST")
    assert urllib.request.urlopen(req, timeout=10).status == 200


def test_slow_and_disconnecting_otlp_clients(sandbox, daemon):
    held = []

    def misbehave(lam, i):
        port = lam.ports["http"]
        body = b"\x0a" * 1000
        head = (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(head + body[:100])  # and then nothing: a client that stalls mid-body
        held.append(slow)
        gone = socket.create_connection(("127.0.0.1", port), timeout=5)
        gone.sendall(head + body[:500])
        gone.close()  # disconnects mid-body
        # A stalled gRPC (HTTP/2) client: preface only.
        g = socket.create_connection(("127.0.0.1", lam.ports["grpc"]), timeout=5)
        g.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        held.append(g)
        post_otlp(port, 10, seed=i + 1)  # a good client still gets through

    try:
        s, _ = run_sandbox(sandbox, {"AWS_XRAY_DAEMON_ADDRESS": daemon.address},
                           invokes=2, between=misbehave)
    finally:
        for c in held:
            c.close()
    # The partial bodies were never counted as spans; the good ones were, and all exported.
    assert s["dropped"] == 0 and s["exported"] == s["received"] >= 20, s


@pytest.mark.parametrize("flag", [["--telemetry-delay-ms", "800"], ["--telemetry-twice"],
                                  ["--telemetry-never"]], ids=["late", "twice", "never"])
def test_telemetry_api_late_twice_never(sandbox, daemon, flag):
    s, _ = run_sandbox(sandbox, {"AWS_XRAY_DAEMON_ADDRESS": daemon.address}, invokes=3,
                       extra_args=flag, timeout_ms=2000)
    assert s["dropped"] == 0 and s["exported"] == s["received"], s
    docs = daemon.drain()
    assert docs
    ids = [d["id"] for d in docs]
    # Delivered twice, the platform events still make one set of spans: no document twice.
    assert len(ids) == len(set(ids)), "duplicate documents: %s" % ids


class Occupier(http.server.BaseHTTPRequestHandler):
    """Another process's server on the extension's ports: answers 200 to anything."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_receiver_and_proxy_ports_already_taken(sandbox, daemon):
    # Another process holds the OTLP ports and the Runtime API proxy's port (and answers GET with
    # 501, so the wrapper's health probe finds no otel-xray there): the function still succeeds,
    # talks to Lambda directly, and the extension names the variables to change.
    http_port, grpc_port, proxy_port = free_ports(3)
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", p), Occupier)
               for p in (http_port, grpc_port, proxy_port)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        lam = sandbox(python_runtime(), active_tracing=True, env=python_env({
            "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
            "OTEL_XRAY_HTTP_PORT": str(http_port), "OTEL_XRAY_GRPC_PORT": str(grpc_port),
            "OTEL_XRAY_PROXY_PORT": str(proxy_port)}))
        lam.ports.update(http=http_port, grpc=grpc_port, proxy=proxy_port)
        for i in range(2):
            result = lam.invoke({"order_id": "p-%d" % i})
            assert result["status"] == "success", result
            assert business(result["response"]) == dict(EXPECTED_RESULT, order_id="p-%d" % i), result
            runtime_api = result["response"]["seen"]["runtime_api"]
            assert runtime_api and not runtime_api.endswith(":%d" % proxy_port), result
        report = lam.shutdown()
        (ext,) = [e for e in report["extensions"] if e["name"] == "otel-xray"]
        assert ext["exitCode"] == 0 and not ext["killed"] and ext["exitedAfterMs"] < 2000, ext
        log = lam.extension_log()
        for variable in ("OTEL_XRAY_HTTP_PORT", "OTEL_XRAY_GRPC_PORT", "OTEL_XRAY_PROXY_PORT"):
            assert variable in log, (variable, log)
        s = shutdown_summary(log)
        # The function's SDK spoke to the other process; the extension still sends its own
        # platform spans, and balances.
        assert s["in_flight"] == 0 and s["received"] == s["exported"] + s["dropped"], s
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


@pytest.mark.parametrize("fault", ["crash", "timeout"])
def test_runtime_crash_or_timeout_mid_invocation(sandbox, daemon, fault):
    # The runtime dies (or overruns its timeout) after its SDK flushed: Lambda resets the sandbox,
    # the extension gets SHUTDOWN and exits in budget with a balanced summary, and the next
    # invocation (a fresh init) works and returns the function's own result.
    from checks import SUMMARY
    lam = sandbox(python_runtime(), active_tracing=True, timeout_ms=1500,
                  env=python_env({"AWS_XRAY_DAEMON_ADDRESS": daemon.address}))
    event = {"order_id": "x-1", "crash": True} if fault == "crash" else {"order_id": "x-1", "sleep_s": 5}
    result = lam.invoke(event)
    assert result["status"] == ("timeout" if fault == "timeout" else result["status"]), result
    assert result["status"] != "success", result
    after = lam.invoke({"order_id": "f-0"})
    assert after["status"] == "success" and business(after["response"]) == dict(EXPECTED_RESULT, order_id="f-0"), after
    report = lam.shutdown()
    (ext,) = [e for e in report["extensions"] if e["name"] == "otel-xray"]
    assert ext["exitCode"] == 0 and not ext["killed"] and ext["exitedAfterMs"] < 2000, ext
    log = lam.extension_log()
    lines = SUMMARY.findall(log)
    assert len(lines) == 2, "one summary per extension lifetime expected: %s" % lines
    for received, exported, dropped, _, in_flight in lines:
        assert int(received) == int(exported) + int(dropped) and int(in_flight) == 0, lines
    assert int(lines[0][0]) > 0, lines
    print("summaries:", lines)
