"""`make bench` (part 2): the release extension measured, one table (docs/performance.md).

Every figure, how it is taken:
- start-up: `delivery --startup-runs 10` (extension/benches/delivery.rs) is its own stand-in
  Extensions API (one write per response, TCP_NODELAY). It spawns the extension pinned to CPU 0,
  itself on CPU 1, and records spawn → `/extension/register` arriving, spawn → 127.0.0.1:<http>
  accepting (a connecting spinner), and VmHWM/VmRSS 200 ms after registering. Medians of 10.
- throughput (each run BENCH_RUNS times, default 3; medians): the extension on the local Lambda (tests/local-lambda: one write per response,
  TCP_NODELAY), local Lambda and extension pinned to CPU 0; `delivery` on CPU 1 sends
  pre-encoded realistic OTLP/HTTP protobuf requests (100 spans: 20 traces of 5, 2-6 attributes a
  span; 256 of them with distinct ids, cycled) over 8 keep-alive connections for 10 s, closed
  loop, and is the upstream: a UDP daemon sink that decodes every document and counts its segments and subsegments, or an OTLP/HTTP sink
  that walks every request's protobuf and counts its spans. Afterwards one invocation flushes what
  the buffer still holds and the sink drains. Accepted/s = spans not rejected / load time;
  delivered/s = spans the sink had when the load stopped / load time.
- 100,000 spans through: the same with 1,000 requests, then VmHWM of the extension.
- runtimeDone → event/next: the local Lambda's timeline, from the Telemetry API batch carrying
  `platform.runtimeDone` leaving it to the extension's next `/extension/event/next`, with the
  100-span request received during each invocation; daemon (and PutTraceSegments on moto with
  `--api`). Median of 20.
- sizes of the stripped binaries.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

from lam import BIN_DIR, LAYER, LocalLambda, free_ports, wait_until  # noqa: E402
from xray.daemon import DaemonListener  # noqa: E402

FUNCTION = [os.path.join(BIN_DIR, "bootstrap")]
EXTENSION = os.path.join(LAYER, "extensions", "otel-xray")
WRAPPER = os.path.join(LAYER, "otel-xray-wrapper")
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
EXT_CPU, LOAD_CPU = ({0}, {1}) if TWO_CPUS else (None, None)
# Throughput and 100k-span runs are repeated and their median reported (BENCH_RUNS, default 3).
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
# Every command this bench runs, printed under the table (`$D` the delivery binary, `$L` the layer).
COMMANDS = []


def note_command(what, argv, env=None):
    text = " ".join(argv)
    for path, short in ((EXTENSION, "$L/extensions/otel-xray"), (LAYER, "$L")):
        text = text.replace(path, short)
    if env:
        text = " ".join("%s=%s" % kv for kv in sorted(env.items())) + " (extension env); " + text
    line = "%s: %s" % (what, text)
    if line not in COMMANDS:
        COMMANDS.append(line)


def realistic_request(traces=20, seed=7):
    """100 spans as an instrumented service sends them: 20 traces of a SERVER span with an AWS
    SDK call, an HTTP call, a database query and an internal span, 2-6 attributes each."""
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


def write_payloads(path, variants=256):
    """`variants` requests like `realistic_request()` with distinct trace and span ids, each
    prefixed by its length (4 bytes, big-endian): the load cycles through them so that a flush
    sees distinct traces, as real traffic has (one request sent again and again would make every
    flush one giant trace per id)."""
    with open(path, "wb") as f:
        for seed in range(1, variants + 1):
            body = realistic_request(seed=seed)
            f.write(len(body).to_bytes(4, "big") + body)


def delivery_binary():
    """The bench program's path, built by `make bench` (cargo bench --no-run); or $DELIVERY_BIN."""
    if os.environ.get("DELIVERY_BIN"):
        return os.environ["DELIVERY_BIN"]
    out = subprocess.run(["cargo", "bench", "-q", "-p", "otel-xray-extension", "--bench", "delivery",
                          "--no-run", "--message-format=json"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "delivery" \
                and msg.get("executable"):
            return msg["executable"]
    raise RuntimeError("cargo did not name the delivery bench binary")


def pinned(cpus, args):
    return (["taskset", "-c", ",".join(map(str, sorted(cpus)))] + args) if cpus else args


def vm_kib(pid, key="VmHWM:"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return None


def extension_pid(lam):
    starts = [e for e in lam.timeline()["events"]
              if e["kind"] == "process.start" and e.get("role") == "extension"]
    return starts[-1]["pid"]


def local_lambda(env, log_level="warn", cpu=None, wrapper=False):
    """A sandbox whose processes all run on `cpu`, default EXT_CPU (children inherit the
    affinity at fork); `wrapper`: the runtime started through the layer's wrapper, so that it
    talks to Lambda through the extension's Runtime API proxy."""
    mine = os.sched_getaffinity(0)
    cpu = cpu or EXT_CPU
    if cpu:
        os.sched_setaffinity(0, cpu)
    try:
        lam = LocalLambda(tempfile.mkdtemp(prefix="bench-"), FUNCTION, wrapper=wrapper,
                          env=dict(env, OTEL_XRAY_LOG_LEVEL=log_level, OTEL_XRAY_PLATFORM_SPANS="false"))
    finally:
        os.sched_setaffinity(0, mine)
    return lam


def accepting(port, timeout=5.0):
    def ok():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    wait_until(ok, timeout=timeout, interval=0.005)


def startup(delivery, runs=10):
    argv = pinned(LOAD_CPU, [delivery, "--startup-runs", str(runs), "--extension", EXTENSION]
                  + (["--pin-extension", "0"] if TWO_CPUS else []))
    note_command("start-up", [a.replace(delivery, "$D") for a in argv])
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


# Lambda Managed Instances: SHUTDOWN-only registration, background flushes (README).
LMI_ENV = {"AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances"}


def through(delivery, payload_file, sink, seconds=10.0, requests=None, connections=8, extra_env=None):
    """Load through the extension to a sink ("daemon" or "otlp"). Returns the figures.
    `extra_env` (e.g. LMI_ENV) reaches the sandbox's processes."""
    (sink_port,) = free_ports(1)
    sink_addr = "127.0.0.1:%d" % sink_port
    if sink == "daemon":
        env = {"AWS_XRAY_DAEMON_ADDRESS": sink_addr}
        sink_args = ["--daemon-sink", sink_addr]
    else:
        env = {"OTEL_XRAY_EXPORTER": "otlp", "OTEL_XRAY_OTLP_ENDPOINT": "http://%s/v1/traces" % sink_addr}
        sink_args = ["--otlp-sink", sink_addr]
    managed = bool(extra_env and extra_env.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "lambda-managed-instances")
    env.update(extra_env or {})
    lam = None
    argv = pinned(LOAD_CPU, [delivery, "--payload", payload_file, "--spans", "100",
                             "--connections", str(connections), "--seconds", str(seconds)]
                  + (["--requests", str(requests)] if requests else []) + sink_args)
    note_command("%s%s" % (sink, ", %d requests" % requests if requests else ""),
                 [a.replace(delivery, "$D").replace(payload_file, "requests.pb")
                  .replace(sink_addr, "127.0.0.1:SINK") for a in argv]
                 + ["(extension on the local Lambda%s)" % (" pinned to CPU 0" if TWO_CPUS else "")],
                 {k: v.replace(sink_addr, "127.0.0.1:SINK") for k, v in env.items()})
    tool = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(tool.stdout.readline())["phase"] == "ready"
        lam = local_lambda(env, log_level="info")  # info: the SHUTDOWN summary line
        accepting(lam.ports["http"])
        tool.stdin.write("http 127.0.0.1:%d\n" % lam.ports["http"])
        tool.stdin.flush()
        load = json.loads(tool.stdout.readline())
        if managed:
            # No INVOKE reaches the extension there: the background flush (1 s) sends the rest.
            time.sleep(1.5)
        else:
            # What the buffer still holds leaves at the end of an invocation.
            result = lam.invoke({"order_id": "flush"})
            assert result["status"] == "success", result
        tool.stdin.write("drain\n")
        tool.stdin.flush()
        drained = json.loads(tool.stdout.readline())
        pid = extension_pid(lam)
        hwm = vm_kib(pid)
    finally:
        if lam:
            lam.close()
        tool.stdin.close()
        tool.wait(timeout=30)
    # The extension's SHUTDOWN summary: received, exported, dropped by reason.
    summary = [line for line in lam.extension_log().splitlines() if "received" in line and "dropped" in line]
    return dict(load, **drained, hwm_kib=hwm, summary=summary[-1] if summary else "(no summary line)")


def pin_sandbox_processes(lam, cpus):
    """Moves every thread of the extension and the function's runtime to `cpus`."""
    for e in lam.timeline()["events"]:
        if e["kind"] == "process.start" and e.get("pid"):
            for tid in os.listdir("/proc/%d/task" % e["pid"]):
                os.sched_setaffinity(int(tid), cpus)


def invocations_after_spans(env, n, apart, measure, wrapper=False):
    """`n` invocations of a sandbox, each after the 100-span request has been posted to the
    extension; `measure(lam, result)` gives each one's figure (ms). The extension and the function
    run on EXT_CPU; the local Lambda (the stand-in Extensions, Telemetry and Runtime APIs) runs
    there too, or, with `apart`, on LOAD_CPU. Returns the figures and the extension's VmHWM."""
    apart = apart and TWO_CPUS
    lam = local_lambda(env, cpu=LOAD_CPU if apart else None, wrapper=wrapper)
    body = realistic_request()
    url = "http://127.0.0.1:%d/v1/traces" % lam.ports["http"]
    figures = []
    try:
        lam.invoke({"order_id": "warm"})
        if apart:
            pin_sandbox_processes(lam, EXT_CPU)
        for i in range(n):
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"content-type": "application/x-protobuf"})
            assert urllib.request.urlopen(req, timeout=10).status == 200
            result = lam.invoke({"order_id": "b-%d" % i})
            assert result["status"] == "success", result
            figures.append(measure(lam, result))
        rss = vm_kib(extension_pid(lam))
    finally:
        lam.close()
    return figures, rss


def runtime_done_to_next(lam, result):
    """The local Lambda's timeline: the Telemetry API batch with `platform.runtimeDone` leaving it
    → the extension's next `event/next`."""
    rid = result["requestId"]
    tl = lam.timeline()["events"]
    sends = [e for e in tl if e["kind"] == "telemetry.send" and "platform.runtimeDone" in e.get("types", [])]
    nexts = [e for e in tl if e["kind"] == "extension.next" and e.get("requestId") == rid]
    sent = [s["atMs"] for s in sends if s["atMs"] <= nexts[0]["atMs"]][-1]
    return nexts[0]["atMs"] - sent


def flush_latency(env, n=20, stand_in_apart=False):
    """runtimeDone → event/next. With `stand_in_apart`, the stand-in APIs on LOAD_CPU, as the
    issue's peers were measured (extension pinned to one core, the stand-in APIs and the load on
    the other)."""
    latencies, rss = invocations_after_spans(env, n, stand_in_apart, runtime_done_to_next)
    return statistics.median(latencies), latencies, rss


def proxy_flush_latency(env, n=20):
    """The proxy's end signal → event/next: the runtime through the wrapper and the Runtime API
    proxy, whose forwarding of the response ends the invocation for the extension (no waiting for
    the Telemetry API). The local Lambda's post-runtime duration: from the response complete at
    Lambda to the extension's next `event/next`. Stand-in APIs on LOAD_CPU."""
    post, _ = invocations_after_spans(env, n, True, lambda lam, result: result["timings"]["postRuntimeMs"],
                                      wrapper=True)
    return statistics.median(post), post


def spread(values):
    return "min %s, max %s" % (format(int(min(values)), ","), format(int(max(values)), ","))


def main():
    with_api = "--api" in sys.argv
    delivery = delivery_binary()
    payload_file = os.path.join(tempfile.mkdtemp(prefix="bench-payload-"), "requests.pb")
    write_payloads(payload_file)
    rows = []
    med = statistics.median

    s = startup(delivery)
    rows.append(("spawn → registered (median of 10)", "%.2f ms" % med(s["register_ms"]), "≤ 1.5 ms"))
    rows.append(("spawn → 127.0.0.1:4318 accepting (median of 10)", "%.2f ms" % med(s["accept_ms"]),
                 "by register"))
    rows.append(("peak RSS, idle after registering (VmHWM, median of 10)",
                 "%.1f MiB" % (med(s["idle_hwm_kib"]) / 1024), "≤ 4 MiB"))

    summaries = []
    for sink, label in (("daemon", "X-Ray documents to the daemon (UDP)"), ("otlp", "OTLP/HTTP to a loopback sink")):
        runs = [through(delivery, payload_file, sink) for _ in range(RUNS)]
        for r in runs:
            summaries.append("%s, 10 s: %s" % (sink, r["summary"]))
        accepted = [(r["sent_spans"] - r["rejected_spans"]) / r["load_seconds"] for r in runs]
        delivered = [r["delivered_so_far"] / r["load_seconds"] for r in runs]
        rows.append(("spans/s accepted, 8 connections, 10 s — %s (median of %d)" % (label, RUNS),
                     "%s (%s)" % (format(int(med(accepted)), ","), spread(accepted)), "—"))
        rows.append(("spans/s delivered during the load — %s (median of %d)" % (label, RUNS),
                     "%s (%s)" % (format(int(med(delivered)), ","), spread(delivered)), "≥ 600,000"))
        rows.append(("delivered / accepted (rejected at the buffer cap), every run — %s" % label,
                     "; ".join("%s / %s (%s)" % (format(r["delivered_spans"], ","),
                                                 format(r["sent_spans"] - r["rejected_spans"], ","),
                                                 format(r["rejected_spans"], ",")) for r in runs), "all"))
        rows.append(("peak RSS after the load — %s (median of %d)" % (label, RUNS),
                     "%.1f MiB" % (med([r["hwm_kib"] for r in runs]) / 1024), "—"))

    # Managed Instances: 16 connections at once (16 runtime workers exporting), background flushes.
    runs = [through(delivery, payload_file, "daemon", connections=16, extra_env=LMI_ENV) for _ in range(RUNS)]
    for r in runs:
        summaries.append("daemon, Managed Instances, 16 connections, 10 s: %s" % r["summary"])
    accepted = [(r["sent_spans"] - r["rejected_spans"]) / r["load_seconds"] for r in runs]
    delivered = [r["delivered_so_far"] / r["load_seconds"] for r in runs]
    rows.append(("Managed Instances (background flush), 16 connections, extension on one CPU, 10 s: "
                 "spans/s accepted / delivered during the load, daemon (median of %d)" % RUNS,
                 "%s / %s (delivered %s)" % (format(int(med(accepted)), ","), format(int(med(delivered)), ","),
                                             spread(delivered)), "—"))
    rows.append(("Managed Instances: delivered / accepted (rejected at the buffer cap), every run",
                 "; ".join("%s / %s (%s)" % (format(r["delivered_spans"], ","),
                                             format(r["sent_spans"] - r["rejected_spans"], ","),
                                             format(r["rejected_spans"], ",")) for r in runs), "all"))

    runs = [through(delivery, payload_file, "daemon", seconds=60, requests=1000) for _ in range(RUNS)]
    for r in runs:
        summaries.append("daemon, 100,000 spans: %s" % r["summary"])
    rows.append(("peak RSS with 100,000 spans passing through (daemon, median of %d)" % RUNS,
                 "%.1f MiB (%s)" % (med([r["hwm_kib"] for r in runs]) / 1024,
                                    ", ".join("%.1f" % (r["hwm_kib"] / 1024) for r in runs)), "≤ 20 MiB"))
    rows.append(("of those 100,000: delivered / rejected, every run",
                 "; ".join("%s / %s" % (format(r["delivered_spans"], ","), format(r["rejected_spans"], ","))
                           for r in runs), "100,000 / 0"))

    d = DaemonListener()
    try:
        lat, _, rss_daemon = flush_latency({"AWS_XRAY_DAEMON_ADDRESS": d.address}, stand_in_apart=True)
        lat_shared, _, _ = flush_latency({"AWS_XRAY_DAEMON_ADDRESS": d.address})
        lat_proxy, _ = proxy_flush_latency({"AWS_XRAY_DAEMON_ADDRESS": d.address})
        got = len(d.drain())
    finally:
        d.close()
    note_command("runtimeDone → event/next", ["(local Lambda timeline; the extension and the function on CPU 0, "
                                              "the local Lambda's stand-in APIs on CPU 1, then all on CPU 0)"])
    note_command("the proxy's response → event/next", ["(the runtime through $L/otel-xray-wrapper; the local "
                                                       "Lambda's postRuntimeMs: response complete → the extension's "
                                                       "event/next)"])
    rows.append(("runtimeDone → event/next, 100 spans, daemon; stand-in APIs on the other CPU (median of 20)",
                 "%.2f ms" % lat, "≤ 0.5 ms"))
    rows.append(("the same with the stand-in APIs on the extension's CPU (median of 20)",
                 "%.2f ms" % lat_shared, "—"))
    rows.append(("the proxy's response → event/next (wrapper, Runtime API proxy), 100 spans, daemon; "
                 "stand-in APIs on the other CPU (median of 20)", "%.2f ms" % lat_proxy, "≤ 0.5 ms"))
    if with_api:
        from xray.moto_xray import MotoXRay
        moto = MotoXRay(tempfile.mkdtemp(prefix="bench-moto-"))
        try:
            lat_api, _, _ = flush_latency({"OTEL_XRAY_EXPORTER": "api", "OTEL_XRAY_API_ENDPOINT": moto.endpoint})
        finally:
            moto.close()
        rows.append(("runtimeDone → event/next, 100 spans, PutTraceSegments on moto (median of 20)",
                     "%.2f ms" % lat_api, "—"))
    rows.append(("extension binary (stripped)", "%.2f MiB" % (os.path.getsize(EXTENSION) / 1048576.0),
                 "layer zip < 4 MB"))
    rows.append(("wrapper binary (stripped)", "%d KiB" % (os.path.getsize(WRAPPER) // 1024), "≤ 500 KiB"))

    print()
    print("otel-xray, %s, %d CPUs%s" % (time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(),
                                       ", extension on CPU 0, load and sinks on CPU 1" if TWO_CPUS else ""))
    print()
    print("| figure | measured | target |")
    print("|---|---|---|")
    for row in rows:
        print("| %s | %s | %s |" % row)
    print()
    print("(flush-latency runs: the daemon stand-in received %d documents; raw start-up samples: %s)"
          % (got, json.dumps({k: v for k, v in s.items() if k != "phase"})))
    print()
    print("Commands ($D: %s, $L: %s):" % (delivery, LAYER))
    for line in COMMANDS:
        print("- " + line)
    print("- runtimeDone → event/next: tests/bench/lambda_bench.py flush_latency(), the local Lambda's "
          "timeline (telemetry.send → extension.next)")
    print()
    print("The extension's SHUTDOWN summaries (drops by reason):")
    for line in summaries:
        print("- " + line)


if __name__ == "__main__":
    main()
