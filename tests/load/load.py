"""`make load`: a bounded load test of the release extension on the local Lambda (loopback only).

While the sample Rust function is invoked back to back, LOAD_CLIENTS concurrent OTLP/HTTP
clients (keep-alive connections) each post pre-encoded protobuf requests of LOAD_SPANS spans,
as fast as they get answers, until LOAD_REQUESTS requests each or LOAD_SECONDS have passed.
The buffer is capped (OTEL_XRAY_BUFFER_MAX_SPANS = LOAD_BUFFER): past it the receiver answers
with OTLP partial success and counts `buffer_full` drops instead of growing.

Prints spans/s offered and accepted, p50/p99 request latency for each third of the run (flat
latency shows as similar thirds), the extension's peak RSS (VmHWM), invocations, and the
shutdown summary (received, exported, dropped by reason). Exits 1 if the accounting does not
balance, if peak RSS passes LOAD_RSS_CAP_MB, or if an invocation fails.
"""
import os
import socket
import statistics
import sys
import threading
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

from checks import shutdown_summary  # noqa: E402
from lam import BIN_DIR, LocalLambda  # noqa: E402

CLIENTS = int(os.environ.get("LOAD_CLIENTS", "32"))
SPANS = int(os.environ.get("LOAD_SPANS", "100"))
REQUESTS = int(os.environ.get("LOAD_REQUESTS", "1000"))
SECONDS = float(os.environ.get("LOAD_SECONDS", "20"))
BUFFER = int(os.environ.get("LOAD_BUFFER", "10000"))
RSS_CAP_MB = float(os.environ.get("LOAD_RSS_CAP_MB", "96"))


def otlp_request(n_spans, seed):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "load"
    ss = rs.scope_spans.add()
    now = time.time_ns()
    for i in range(n_spans):
        s = ss.spans.add()
        s.trace_id = (seed * 1_000_003 + i // 10 + 1).to_bytes(16, "big")
        s.span_id = (i + 1 + seed * 100_000).to_bytes(8, "big")
        if i % 10:
            s.parent_span_id = (i - i % 10 + 1 + seed * 100_000).to_bytes(8, "big")
        s.name = "op-%d" % (i % 10)
        s.kind = Span.SPAN_KIND_SERVER if i % 10 == 0 else Span.SPAN_KIND_CLIENT
        s.start_time_unix_nano = now
        s.end_time_unix_nano = now + 1_000_000
        a = s.attributes.add()
        a.key, a.value.string_value = "http.url", "https://example.com/items/%d" % i
    return req.SerializeToString()


def extension_pid(lam):
    marker = ("OTEL_XRAY_HTTP_PORT=%d" % lam.ports["http"]).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.path.basename(os.readlink("/proc/%s/exe" % entry)) != "otel-xray":
                    continue
                with open("/proc/%s/environ" % entry, "rb") as f:
                    if marker in f.read().split(b"\0"):
                        return int(entry)
            except OSError:
                continue
    return None


def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def drain_udp(sock, stop, counter):
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            sock.recv(70000)
            counter[0] += 1
        except socket.timeout:
            pass


def client(port, bodies, deadline, latencies, outcomes):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for body in bodies:
        if time.monotonic() >= deadline:
            break
        t0 = time.monotonic()
        try:
            conn.request("POST", "/v1/traces", body=body,
                         headers={"content-type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            outcomes.append(resp.status)
        except (OSError, http.client.HTTPException) as e:
            outcomes.append(repr(e))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        latencies.append((t0, time.monotonic() - t0))
    conn.close()


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
    udp.bind(("127.0.0.1", 0))
    stop, datagrams = threading.Event(), [0]
    threading.Thread(target=drain_udp, args=(udp, stop, datagrams), daemon=True).start()
    log_dir = os.environ.get("LOAD_LOG_DIR") or "/tmp/otel-xray-load-%d" % os.getpid()
    os.makedirs(log_dir, exist_ok=True)
    lam = LocalLambda(log_dir, [os.path.join(BIN_DIR, "bootstrap")], wrapper=False, env={
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:%d" % udp.getsockname()[1],
        "OTEL_SERVICE_NAME": "load", "OTEL_XRAY_LOG_LEVEL": "info",
        "OTEL_XRAY_BUFFER_MAX_SPANS": str(BUFFER)}, active_tracing=True)
    failures = []
    try:
        lam.invoke({"order_id": "warm"})
        pid = extension_pid(lam)
        bodies = [otlp_request(SPANS, seed) for seed in range(1, 33)]
        latencies, outcomes = [], []
        deadline = time.monotonic() + SECONDS
        invocations = [0]

        def invoke_loop():
            while time.monotonic() < deadline and not stop.is_set():
                r = lam.invoke({"order_id": "load-%d" % invocations[0]})
                invocations[0] += 1
                if r["status"] != "success":
                    failures.append(r)

        threads = [threading.Thread(target=invoke_loop)]
        for c in range(CLIENTS):
            mine = [bodies[(c + k) % len(bodies)] for k in range(REQUESTS)]
            threads.append(threading.Thread(
                target=client, args=(lam.ports["http"], mine, deadline, latencies, outcomes)))
        start = time.monotonic()
        for t in threads:
            t.start()
        peak_kb = 0
        while any(t.is_alive() for t in threads):
            if pid:
                peak_kb = max(peak_kb, vm_hwm_kb(pid))
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        if pid:
            peak_kb = max(peak_kb, vm_hwm_kb(pid))
        report = lam.shutdown()
    finally:
        stop.set()
        lam.close()
    s = shutdown_summary(lam.extension_log())
    ok = sum(1 for o in outcomes if o == 200)
    errors = [o for o in outcomes if o != 200]
    # Latency by request order: the first, middle and last third of the requests answered.
    ordered = [lat * 1000 for _, lat in sorted(latencies)]
    n = len(ordered)
    thirds = [ordered[i * n // 3:(i + 1) * n // 3] for i in range(3)]
    print("load: %d clients x up to %d requests of %d spans, %.1f s, buffer cap %d spans"
          % (CLIENTS, REQUESTS, SPANS, elapsed, BUFFER))
    print("  requests: %d answered 200, %d errors; invocations back to back: %d (%d failed)"
          % (ok, len(errors), invocations[0], len(failures)))
    print("  spans/s offered: %.0f; received by the extension: %d (%.0f/s); exported: %d; dropped: %d %s"
          % (ok * SPANS / elapsed, s["received"], s["received"] / elapsed, s["exported"], s["dropped"],
             s["reasons"]))
    all_lat = ordered
    print("  request latency ms: p50 %.2f p99 %.2f (all)" % (pct(all_lat, 50), pct(all_lat, 99)))
    for i, part in enumerate(thirds):
        print("    third %d: p50 %.2f p99 %.2f (%d requests)" % (i + 1, pct(part, 50), pct(part, 99), len(part)))
    print("  extension peak RSS (VmHWM): %.1f MiB (cap %.0f MiB); datagrams at the daemon: %d"
          % (peak_kb / 1024, RSS_CAP_MB, datagrams[0]))
    (ext,) = [e for e in report["extensions"] if e["name"] == "otel-xray"]
    print("  shutdown: exit %s after %s ms" % (ext["exitCode"], ext["exitedAfterMs"]))
    bad = []
    if s["received"] != s["exported"] + s["dropped"] or s["in_flight"]:
        bad.append("accounting does not balance: %s" % s)
    if peak_kb / 1024 > RSS_CAP_MB:
        bad.append("peak RSS over the cap")
    if failures or errors:
        bad.append("failed invocations or requests: %s %s" % (failures[:3], errors[:3]))
    if ext["exitCode"] != 0:
        bad.append("extension exit code %s" % ext["exitCode"])
    for b in bad:
        print("FAIL: " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
