"""Lambda Managed Instances faults AWS's own emulator cannot produce, on the project's local Lambda
in its LMI mode (`--managed-instances 4`): the layer's real extension and wrapper, the real
Python runtime client and OpenTelemetry SDK, the X-Ray daemon stand-in at
`AWS_XRAY_DAEMON_ADDRESS`.

awslambdaric 4.x with `AWS_LAMBDA_MAX_CONCURRENCY=N` (`MultiConcurrentRunner.run_concurrent`)
forks N worker processes from the runtime's main process (the one Lambda started, which then only
joins them); each worker imports the handler itself and polls `/next` one request at a time. So
four workers are four concurrent invocations, a worker's crash is invisible to Lambda, and the
runtime crashes as a whole only when its main process dies (functions/python_lmi/lmi_handler.py
kills it on request).

The cases:
1. four invocations on four workers, one sleeping past its timeout: the other three answer with
   complete traces; the timed-out one's invocation span ends as a fault, from Lambda's failed
   `platform.report` or, with the Telemetry API silent, from the extension's background expiry
   (deadline + 200 ms);
2. the runtime crashes with four invocations in flight: all four fail, their invocation spans
   end as faults and are exported at the SHUTDOWN(failure) that follows, and the environment
   Lambda puts in its place serves the next invocations;
3. SHUTDOWN (spindown) with four invocations in flight: the extension ends the open invocation
   spans, exports them and exits within the 2 s deadline, with or without Telemetry API events;
4. eight invocations at once on four workers: four are refused `Runtime.Unavailable` and leave
   no trace anywhere, the four accepted keep their own traces;
5. no Runtime API proxy (`OTEL_XRAY_PROXY=false`): invocation spans from interleaved
   `platform.start` / `platform.report` events (no `platform.runtimeDone` on LMI), one per
   request, matched by request id.

Every case checks what the function saw, that every span the extension counted as exported is a
node the daemon received (nothing lost silently), and the shutdown line of every extension
lifetime: received = exported + dropped, none dropped, none in flight. With the proxy,
`OTEL_XRAY_INVOCATION_SPAN=keep` keeps the proxy's invocation span a span of its own, so that
its fault is seen apart from the function's SERVER span under it (with `merge`, the default, the
SERVER span takes its place when both leave in one flush: test_managed_instances.py covers it).
"""
import json
import os
import threading
import time
import urllib.request
import uuid

import pytest

from checks import PY_FUNCTION, SUMMARY, one_connected_tree, python_env, shutdown_summary
from lam import VENV_PY, wait_until
from test_propagation import header_fields
from xray import model

HERE = os.path.dirname(os.path.abspath(__file__))
LMI_FUNCTION = os.path.join(HERE, "functions", "python_lmi")
WORKERS = 4
FUNCTION = "otel-xray-e2e"
# The function's spans under its SERVER span (functions/python/handler.py).
CHILDREN = ["GET", "SQS", "validate"]
SHUTDOWN_DEADLINE_MS = 2000


# ------------------------------------------------------------------ sandbox

class Lmi:
    """A local Lambda in LMI mode with WORKERS awslambdaric workers polling."""

    def __init__(self, sandbox, daemon, timeout_ms, env=None, extra_args=()):
        base = {
            "PYTHONPATH": LMI_FUNCTION + os.pathsep + PY_FUNCTION,
            "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
            "OTEL_XRAY_INVOCATION_SPAN": "keep",
        }
        base.update(env or {})
        self.lam = sandbox([VENV_PY, "-m", "awslambdaric", "lmi_handler.handler"],
                           env=python_env(base), managed_instances=WORKERS, active_tracing=True,
                           timeout_ms=timeout_ms, extra_args=list(extra_args),
                           function_name=FUNCTION)
        self.daemon = daemon
        self.wait_idle()

    def get(self, path):
        with urllib.request.urlopen(self.lam.control + path, timeout=10) as resp:
            return json.loads(resp.read())

    def health(self):
        return self.get("/health")

    def wait_idle(self, n=WORKERS, timeout=20):
        """Every worker waits in /next (init is eager; a worker polls again once Lambda answered
        its previous result)."""
        got = wait_until(lambda: self.health()["idleWorkers"] >= n, timeout)
        assert got, "%d of %d runtime workers polling: %s\n%s" % (
            self.health()["idleWorkers"], n, self.health(), self.lam.extension_log()[-3000:])

    def timeline(self, kind):
        return [e for e in self.lam.timeline()["events"] if e["kind"] == kind]

    def emitted(self, kind):
        return [e for e in self.get("/telemetry")["emitted"] if e.get("type") == kind]

    def shutdown(self):
        """SHUTDOWN (spindown); the extension exits by itself, in time."""
        started = time.monotonic()
        report = self.lam.shutdown()
        took = time.monotonic() - started
        assert report["reason"] == "spindown", report
        extension_exited_in_time(report)
        return report, took


def extension_exited_in_time(report):
    (ext,) = [e for e in report["extensions"] if e["name"] == "otel-xray"]
    assert ext["events"] == ["SHUTDOWN"] and ext["receivedShutdown"], ext
    assert ext["exitCode"] == 0 and not ext["killed"] and ext["signal"] is None, ext
    # exitedAfterMs counts from the SHUTDOWN phase's start; deadlineMs is that start + 2,000 ms.
    assert 0 <= ext["exitedAfterMs"] < SHUTDOWN_DEADLINE_MS, ext
    return ext


# ------------------------------------------------------------------ documents

def meta(node):
    return (node.doc.get("metadata") or {}).get("default", {})


def is_invocation_span(node):
    """The proxy's or the Telemetry API's invocation span (the function's own SERVER span has
    `faas.invocation_id` too, but no `faas.trigger`)."""
    return "faas.trigger" in meta(node)


def root_of(result):
    return header_fields(result["traceHeader"])["Root"]


def lambda_parent(result):
    """Lambda's function segment (active tracing): recorded by Lambda, not by us."""
    return header_fields(result["traceHeader"])["Parent"]


def ready_traces(results, fault=None):
    """A predicate for daemon.wait_for: each result's trace has its invocation span (a fault
    where `fault(result)` says so) and the function's spans."""
    def ready(docs):
        traces = model.traces(docs)
        for r in results:
            nodes = traces.get(root_of(r), [])
            inv = [n for n in nodes if is_invocation_span(n)
                   and meta(n).get("faas.invocation_id") == r["requestId"]]
            names = [n.name for n in nodes]
            if len(inv) != 1 or not all(c in names for c in CHILDREN):
                return False
            if fault is not None and bool(inv[0].doc.get("fault")) != fault(r):
                return False
        return True
    return ready


def proxy_trace(docs, result, others, error_type=None):
    """One request's trace through the proxy: one connected tree under Lambda's segment, rooted
    at the proxy's invocation span (a fault with `error_type`, or not a fault), the function's
    SERVER span under it with its three children, nothing of any other request."""
    for d in docs:
        model.validate(d)
    nodes = model.traces(docs).get(root_of(result), [])
    assert nodes, "no document of %s's trace %s" % (result["requestId"], root_of(result))
    root = one_connected_tree(nodes, allowed_external_parent=lambda_parent(result))
    assert root.parent_id == lambda_parent(result) and root.kind == "segment", root.doc
    assert is_invocation_span(root) and meta(root)["faas.invocation_id"] == result["requestId"], root.doc
    assert [n for n in nodes if is_invocation_span(n)] == [root], "one invocation span per request"
    if error_type is None:
        assert not root.doc.get("fault") and not root.doc.get("error"), root.doc
        assert "error.type" not in meta(root), root.doc
    else:
        assert root.doc.get("fault") is True, root.doc
        assert meta(root).get("error.type") == error_type, root.doc
    (server,) = [n for n in nodes if n.parent_id == root.id and n.name != "Init"]
    assert server.kind == "segment" and server.name == FUNCTION, server.doc
    assert meta(server).get("faas.invocation_id") == result["requestId"], server.doc
    assert sorted(c.name for c in server.children) == CHILDREN, [c.name for c in server.children]
    extra = [n for n in nodes if n not in (root, server) and n not in server.children]
    assert all(n.name == "Init" and n.parent_id == root.id for n in extra), [n.name for n in extra]
    no_cross_talk(nodes, result, others)
    return root, server


def no_cross_talk(nodes, result, others):
    text = json.dumps([n.doc for n in nodes])
    for o in others:
        if o is result:
            continue
        for mark in (o.get("requestId"), o.get("order_id")):
            if mark:
                assert mark not in text, "%s is in %s's trace" % (mark, result["requestId"])


def exact_accounting(lam, lifetimes=1):
    """Every extension lifetime's shutdown line balances, drops nothing and leaves nothing in
    flight; returns the lines' numbers."""
    wait_until(lambda: len(SUMMARY.findall(lam.extension_log())) >= lifetimes, 5)
    log = lam.extension_log()
    lines = SUMMARY.findall(log)
    assert len(lines) == lifetimes, "expected %d shutdown lines: %s" % (lifetimes, lines)
    out = []
    for received, exported, dropped, reasons, in_flight in lines:
        s = {"received": int(received), "exported": int(exported), "dropped": int(dropped),
             "reasons": reasons, "in_flight": int(in_flight)}
        assert s["received"] == s["exported"] + s["dropped"], s
        assert s["dropped"] == 0 and not s["reasons"] and s["in_flight"] == 0, s
        assert s["received"] > 0, s
        out.append(s)
    assert out[-1]["exported"] == shutdown_summary(log)["exported"]
    return out


def nothing_lost(daemon, summaries):
    """Every span counted as exported reached the daemon as one node (no merges with `keep`),
    and no node twice."""
    docs = daemon.drain()
    for d in docs:
        model.validate(d)
    nodes = model.flatten(docs)
    ids = [n.id for n in nodes]
    assert len(ids) == len(set(ids)), "a span was exported twice"
    assert sum(s["exported"] for s in summaries) == len(nodes), (summaries, len(nodes))
    return docs


def oid(prefix, i):
    """A distinctive order id: found in a document only if that request's spans are there."""
    return "%s-%d-%s" % (prefix, i, uuid.uuid4().hex[:12])


def business(result, order_id):
    assert result["status"] == "success", result
    r = result["response"]
    assert (r["order_id"], r["status"]) == (order_id, "accepted"), r
    return r


def invoke_all(lmi, payloads):
    results = lmi.lam.invoke(many=payloads)
    assert len(results) == len(payloads)
    for r, p in zip(results, payloads):
        r["order_id"] = p["order_id"]
    return results


# ------------------------------------------------------------------ 1. timeout

@pytest.mark.parametrize("telemetry", ["delivered", "never"])
def test_one_of_four_times_out(sandbox, daemon, telemetry):
    timeout_s = 1.0
    lmi = Lmi(sandbox, daemon, timeout_ms=int(timeout_s * 1000),
              extra_args=["--telemetry-never"] if telemetry == "never" else [])
    payloads = [{"order_id": oid("t", i)} for i in range(WORKERS)]
    payloads[2]["sleep_s"] = 2.5  # after its spans are flushed: past the 1 s timeout
    results = invoke_all(lmi, payloads)
    late = results[2]
    ok = [r for r in results if r is not late]

    # What the function and its caller see.
    assert late["status"] == "timeout" and late["error"]["errorType"] == "Sandbox.Timedout", late
    responses = [business(r, r["order_id"]) for r in ok]
    for r, resp in zip(ok, responses):
        h = header_fields(resp["seen"]["trace_header"])
        assert h["Root"] == root_of(r) and h["Sampled"] == "1", resp["seen"]
    # One worker process per request, all forked from the runtime's main process.
    assert len({resp["pid"] for resp in responses}) == 3, responses
    (ppid,) = {resp["ppid"] for resp in responses}
    assert ppid in lmi.health()["pids"], (ppid, lmi.health())

    # Lambda reports the timeout (or, with the Telemetry API silent, nothing does and the
    # extension's background flush ends the span once the deadline is 200 ms past).
    error_type = "Sandbox.Timedout" if telemetry == "delivered" else "timeout"
    docs = daemon.wait_for(ready_traces(results, fault=lambda r: r is late), timeout=8)
    for r in ok:
        root, server = proxy_trace(docs, r, results)
        assert root.id == r["response"]["seen"]["parent_id"], "the function continued the proxy's span"
        assert server.id == r["response"]["seen"]["span_id"]
    root, _ = proxy_trace(docs, late, results, error_type=error_type)
    took = root.duration_ms / 1000.0
    if telemetry == "delivered":
        assert timeout_s - 0.05 <= took < timeout_s + 0.5, took
    else:
        # deadline + 200 ms <= end <= deadline + 200 ms + one background period (1 s) + slack
        assert timeout_s + 0.2 - 0.05 <= took < timeout_s + 0.2 + 1.0 + 0.5, took

    # The late answer (Lambda: 410 InvokeTimeout) makes no second span; the worker polls again
    # and the environment is not reset by a timeout.
    lmi.wait_idle(timeout=5)
    assert lmi.get("/resets") == []
    _, took_shutdown = lmi.shutdown()
    summaries = exact_accounting(lmi.lam)
    docs = nothing_lost(daemon, summaries)
    assert len([n for n in model.flatten(docs) if is_invocation_span(n)]) == WORKERS
    print("timeout(%s): invocation span %.0f ms, summary %s, shutdown %.0f ms"
          % (telemetry, took * 1000, summaries, took_shutdown * 1000))


# ------------------------------------------------------------------ 2. runtime crash

def test_runtime_crash_with_four_in_flight(sandbox, daemon):
    lmi = Lmi(sandbox, daemon, timeout_ms=5000)
    payloads = [{"order_id": oid("c", i), "sleep_s": 3} for i in range(WORKERS)]
    payloads[1] = {"order_id": oid("c", 1), "kill_runtime_after_s": 0.5}
    results = invoke_all(lmi, payloads)

    # Every in-flight invocation fails with the runtime's exit.
    for r in results:
        assert r["status"] == "error" and r["reset"], r
        assert r["error"]["errorType"] == "Runtime.ExitError", r
        assert r["error"]["errorMessage"] == "Runtime exited with error: signal: 9", r
    (failed,) = lmi.timeline("environment.failed")
    assert (failed["role"], failed["errorType"], failed["signal"]) == ("runtime", "Runtime.ExitError", 9), failed
    # The failed environment's shutdown runs on after its invocations have been answered.
    assert wait_until(lambda: lmi.get("/resets"), 5), "no reset after the crash"
    (reset,) = lmi.get("/resets")
    starts = [e for e in lmi.timeline("shutdown.start") if e["reason"] == "failure"]
    assert len(starts) == 1 and sorted(starts[0]["abortedRequestIds"]) == sorted(r["requestId"] for r in results), starts
    assert reset["reason"] == "failure", reset
    extension_exited_in_time(reset)
    # The extension of the failed environment flushed at its SHUTDOWN(failure): every in-flight
    # request's invocation span is there, a fault, over the function's spans.
    docs = daemon.wait_for(ready_traces(results, fault=lambda r: True), timeout=5)
    for r in results:
        proxy_trace(docs, r, results, error_type="Runtime.ExitError")
    # The extension's stderr reaches its log file as it comes: bounded wait.
    first_life = wait_until(lambda: SUMMARY.findall(lmi.lam.extension_log()), 5)
    assert len(first_life) == 1, first_life

    # Lambda replaces the environment: the next invocation initialises a new one, then all
    # four workers serve again.
    after_order = oid("c-after", 0)
    after = lmi.lam.invoke({"order_id": after_order})
    after["order_id"] = after_order
    business(after, after_order)
    assert after["coldStart"] and not after["reset"], after
    lmi.wait_idle()
    again = invoke_all(lmi, [{"order_id": oid("c-again", i)} for i in range(WORKERS)])
    for r in again:
        business(r, r["order_id"])
    assert len({r["response"]["pid"] for r in again}) == WORKERS
    assert {r["response"]["ppid"] for r in again} == {after["response"]["ppid"]}
    later = [after] + again
    docs = daemon.wait_for(ready_traces(later, fault=lambda r: False), timeout=5)
    everyone = results + later
    for r in later:
        proxy_trace(docs, r, everyone)
    lmi.wait_idle()
    lmi.shutdown()
    summaries = exact_accounting(lmi.lam, lifetimes=2)
    nothing_lost(daemon, summaries)
    print("crash: summaries %s" % summaries)


# ------------------------------------------------------------------ 3. SHUTDOWN in flight

@pytest.mark.parametrize("telemetry", ["delivered", "never"])
def test_shutdown_with_four_in_flight(sandbox, daemon, telemetry):
    lmi = Lmi(sandbox, daemon, timeout_ms=10000,
              extra_args=["--telemetry-never"] if telemetry == "never" else [])
    payloads = [{"order_id": oid("s", i), "sleep_s": 5} for i in range(WORKERS)]
    out = {}
    worker = threading.Thread(target=lambda: out.update(results=invoke_all(lmi, payloads)), daemon=True)
    worker.start()
    assert wait_until(lambda: lmi.health()["inFlight"] == WORKERS, 10), lmi.health()
    # The function's spans reach the daemon in the background (periodic,1000); the invocation
    # spans are still open.
    docs = daemon.wait_for(
        lambda d: [n.name for n in model.flatten(d)].count("validate") == WORKERS, timeout=5)
    assert [n.name for n in model.flatten(docs)].count("validate") == WORKERS
    assert not [n for n in model.flatten(docs) if is_invocation_span(n)], "spans of open invocations"

    report, took = lmi.shutdown()
    worker.join(timeout=10)
    assert not worker.is_alive() and "results" in out, "the in-flight invocations did not end"
    results = out["results"]
    for r in results:
        assert r["status"] == "failure" and r["error"]["errorType"] == "Client.ExecutionEnvironmentShutDown", r
    assert all(r["reset"] for r in results), results

    # Ended as faults, exported by the SHUTDOWN flush: Lambda's failed reports end them, or,
    # without Telemetry API events, the extension's SHUTDOWN handling does.
    error_type = "Client.ExecutionEnvironmentShutDown" if telemetry == "delivered" else "shutdown: spindown"
    docs = daemon.drain()
    for r in results:
        root, _ = proxy_trace(docs, r, results, error_type=error_type)
        assert root.duration_ms < 5000, root.duration_ms
    summaries = exact_accounting(lmi.lam)
    nothing_lost(daemon, summaries)
    (ext,) = [e for e in report["extensions"] if e["name"] == "otel-xray"]
    print("shutdown(%s): extension exited %.1f ms after SHUTDOWN began, /shutdown %.0f ms, summary %s"
          % (telemetry, ext["exitedAfterMs"], took * 1000, summaries))


# ------------------------------------------------------------------ 4. burst of 8 on 4

def test_burst_of_eight_on_four_workers(sandbox, daemon):
    lmi = Lmi(sandbox, daemon, timeout_ms=5000)
    payloads = [{"order_id": oid("b", i), "sleep_s": 0.5} for i in range(2 * WORKERS)]
    results = invoke_all(lmi, payloads)
    accepted = [r for r in results if r["status"] != "rejected"]
    rejected = [r for r in results if r["status"] == "rejected"]
    assert len(accepted) == len(rejected) == WORKERS, [r["status"] for r in results]
    for r in rejected:
        assert (r["httpStatus"], r["errorType"]) == (400, "Runtime.Unavailable"), r
        assert json.loads(r["body"]) == {"errorType": "Runtime.Unavailable"}, r
        assert "requestId" not in r and "traceHeader" not in r, r
    for r in accepted:
        business(r, r["order_id"])
    # Lambda refused them before any runtime or platform event: four starts, four refusals.
    assert [e["errorType"] for e in lmi.timeline("invoke.rejected")] == ["Runtime.Unavailable"] * WORKERS
    assert sorted(e["record"]["requestId"] for e in lmi.emitted("platform.start")) == \
        sorted(r["requestId"] for r in accepted)

    docs = daemon.wait_for(ready_traces(accepted, fault=lambda r: False), timeout=5)
    roots = [proxy_trace(docs, r, results)[0] for r in accepted]
    # The four were in flight at one instant.
    assert max(r.doc["start_time"] for r in roots) < min(r.doc["end_time"] for r in roots)
    lmi.wait_idle()
    lmi.shutdown()
    summaries = exact_accounting(lmi.lam)
    docs = nothing_lost(daemon, summaries)
    assert sorted(model.traces(docs)) == sorted(root_of(r) for r in accepted)
    text = json.dumps(docs)
    for r in rejected:
        assert r["order_id"] not in text, "a refused invocation left a trace: %s" % r["order_id"]
    print("burst: %d accepted, %d refused, summary %s" % (len(accepted), len(rejected), summaries))


# ------------------------------------------------------------------ 5. platform spans

def test_platform_spans_without_the_proxy(sandbox, daemon):
    lmi = Lmi(sandbox, daemon, timeout_ms=5000, env={"OTEL_XRAY_PROXY": "false"})
    runtime_api = lmi.health()["runtimeApi"]
    # Started together, answered in the reverse order: the Telemetry API's events interleave.
    payloads = [{"order_id": oid("p", i), "sleep_s": 0.2 * (WORKERS - i)} for i in range(WORKERS)]
    results = invoke_all(lmi, payloads)
    for r in results:
        seen = business(r, r["order_id"])["seen"]
        # No proxy: the runtime talks to Lambda itself and gets Lambda's own trace header.
        assert seen["runtime_api"] == runtime_api, seen
        assert seen["trace_header"] == r["traceHeader"], seen

    kinds = [e["type"] for e in lmi.get("/telemetry")["emitted"]
             if e["type"] in ("platform.start", "platform.report", "platform.runtimeDone")]
    assert "platform.runtimeDone" not in kinds, kinds
    assert kinds[:WORKERS] == ["platform.start"] * WORKERS and kinds[WORKERS:] == ["platform.report"] * WORKERS, kinds
    starts = {e["record"]["requestId"]: e["record"] for e in lmi.emitted("platform.start")}
    reports = {e["record"]["requestId"]: e["record"] for e in lmi.emitted("platform.report")}
    report_order = [e["record"]["requestId"] for e in lmi.emitted("platform.report")]
    assert report_order == [r["requestId"] for r in reversed(results)], "reports in reverse order"

    docs = daemon.wait_for(ready_traces(results, fault=lambda r: False), timeout=8)
    for d in docs:
        model.validate(d)
    traces = model.traces(docs)
    cold = 0
    for r in results:
        nodes = traces[root_of(r)]
        roots, orphans = model.link(nodes)
        # No root of our own: everything hangs under Lambda's function segment.
        assert not roots and {o.parent_id for o in orphans} == {lambda_parent(r)}, \
            [(o.name, o.parent_id) for o in orphans]
        inv = [n for n in nodes if is_invocation_span(n)]
        assert len(inv) == 1, "one invocation span per request: %s" % [n.doc for n in inv]
        (span,) = inv
        # Matched by request id: its id is that request's platform.start spanId, its parent
        # Lambda's segment, its length that request's platform.report durationMs.
        assert meta(span)["faas.invocation_id"] == r["requestId"], span.doc
        assert span.id == starts[r["requestId"]]["tracing"]["spanId"], span.doc
        assert span.parent_id == lambda_parent(r) and span.kind == "segment", span.doc
        assert not span.doc.get("fault") and not span.doc.get("error"), span.doc
        assert abs(span.duration_ms - reports[r["requestId"]]["metrics"]["durationMs"]) <= 3, \
            (span.duration_ms, reports[r["requestId"]])
        cold += bool(meta(span).get("faas.coldstart"))
        # The function's SERVER span continues Lambda's header: a sibling under Lambda's segment.
        (server,) = [n for n in nodes if n.name == FUNCTION and not is_invocation_span(n)]
        assert server.parent_id == lambda_parent(r), server.doc
        assert meta(server)["faas.invocation_id"] == r["requestId"]
        assert sorted(c.name for c in server.children) == CHILDREN
        assert all(n.name == "Init" and n.parent_id == span.id
                   for n in nodes if n not in (span, server) and n not in server.children)
        no_cross_talk(nodes, r, results)
    assert cold == 1, "exactly the first invocation of the environment is a cold start"
    lmi.wait_idle()
    lmi.shutdown()
    summaries = exact_accounting(lmi.lam)
    nothing_lost(daemon, summaries)
    print("platform spans: summary %s" % summaries)
