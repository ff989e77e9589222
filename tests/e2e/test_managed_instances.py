"""Lambda Managed Instances on AWS's own emulator: the RIE in LMI mode
(`AWS_LAMBDA_MAX_CONCURRENCY=N`) runs the layer's real extension and wrapper with the real runtime
clients, N invocations at once, each with its own trace context.

- Python: awslambdaric 4.x forks N worker processes when `AWS_LAMBDA_MAX_CONCURRENCY` is set
  (`MultiConcurrentRunner.run_concurrent`); each does its own init and polls `/next` one request
  at a time, so N workers mean N concurrent invocations.
- Node.js: the installed aws-lambda-ric@3.3.0 has no LMI support (one `/next` at a time, whatever
  `AWS_LAMBDA_MAX_CONCURRENCY` says; its worker threads and `AWS_LAMBDA_NODEJS_WORKER_COUNT` came
  with 4.x, which needs Node.js 22). At N=1 it runs as it is; at N>1 the bootstrap starts N of
  its processes, one poller each, standing in for 4.x's worker threads.

For every request, in the documents the daemon stand-in received: one connected trace with the
request's own trace id, its invocation span as the root under the caller's span, the function's
SERVER span and its children under it, the request's id and order id on its spans and on no
other trace, the allow-listed baggage key on its root only and the rest of its baggage nowhere.
With `OTEL_XRAY_INVOCATION_SPAN=keep` the proxy's span is that root and the SERVER span its
child; with `merge` (the default) the SERVER span takes the proxy's place in every request (the
extension holds a running request's spans back from its background flushes). Then: SHUTDOWN-only registration (an INVOKE registration fails
init there, and the RIE exits 1), exact accounting in the shutdown line, and the extension's exit
within the 2 s SHUTDOWN deadline.
"""
import json
import os
import shutil
import threading
import uuid
import warnings

import pytest

from checks import (NODE_DIR, PY_FUNCTION, one_connected_tree, python_env, python_runtime, shutdown_summary,
                    xray_id)
from rie import DISPATCH_LINE, SHUTDOWN_BUDGET_S, Rie, unavailable_reason
from test_propagation import NODE_FUNCTION, NODE_RIC, api_gateway_event, header_fields
from xray import model
from xray.daemon import DaemonListener

_WHY = unavailable_reason()
if _WHY and os.environ.get("OTEL_XRAY_REQUIRE_LAYER"):
    # `make test` (and CI) must run these: a missing emulator is a failure there, not a skip.
    raise RuntimeError("AWS's emulator cannot run here: %s" % _WHY)
pytestmark = pytest.mark.skipif(_WHY is not None, reason=str(_WHY))

FUNCTION = "otel-xray-lmi"
# The function's own spans under its SERVER span.
CHILDREN = {"python": ["GET", "SQS", "validate"], "node": ["inventory.example.com", "validate"]}
# Python's handler sleeps this long after flushing, inside the invocation: every invocation of
# the burst is in flight at once (the Node function has no such knob).
HOLD_S = 1.0


class Request:
    """One invocation of the burst: odd ones come from a W3C caller through API Gateway (Lambda's
    header then says Sampled=0, as PassThrough), even ones from a sampled X-Ray caller."""

    def __init__(self, n, i, hold_s):
        self.i = i
        self.request_id = str(uuid.uuid4())
        self.order_id = "lmi-%02d-%02d" % (n, i)
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        if i % 2 == 0:
            self.kind = "xray"
            self.trace_id = "1-%s-%s" % (a[:8], a[8:])
            self.parent = b[:16]
            self.header = "Root=%s;Parent=%s;Sampled=1" % (self.trace_id, self.parent)
            self.unsampled_root = None
            self.user = self.secret = None
            self.event = {"order_id": self.order_id}
        else:
            self.kind = "w3c"
            self.trace_id, self.parent = xray_id(a), b[:16]
            self.unsampled_root = "1-%s-%s" % (uuid.uuid4().hex[:8], uuid.uuid4().hex[:24])
            self.header = "Root=%s;Parent=%s;Sampled=0" % (self.unsampled_root, uuid.uuid4().hex[:16])
            self.user, self.secret = "user-%02d-%02d" % (n, i), "secret-%s" % uuid.uuid4().hex[:12]
            self.event = api_gateway_event({
                "traceparent": "00-%s-%s-01" % (a, self.parent),
                "baggage": "user.id=%s,tenant=%s" % (self.user, self.secret),
                "content-type": "application/json",
            })
            self.event["order_id"] = self.order_id
        self.event["sleep_s"] = hold_s
        self.status = self.headers = self.seen = None


def node_workers(n):
    """A bootstrap command running n aws-lambda-ric@3 processes (one /next poller each)."""
    return ("#!/bin/sh\n"
            "# aws-lambda-ric@3 polls one invocation at a time: %d processes stand in for 4.x's\n"
            "# worker threads. The RIE signals this script only; pass SIGTERM on.\n"
            "pids=\n"
            "trap 'kill -TERM $pids 2>/dev/null; wait; exit 0' TERM INT\n"
            "i=0\n"
            "while [ $i -lt %d ]; do node %s index.handler & pids=\"$pids $!\"; i=$((i+1)); done\n"
            "wait\n" % (n, n, NODE_RIC))


def start(tmp_path, runtime, n, mode, daemon):
    env = {"AWS_XRAY_DAEMON_ADDRESS": daemon.address, "OTEL_XRAY_BAGGAGE_ATTRIBUTES": "user.id",
           "OTEL_XRAY_INVOCATION_SPAN": mode}
    if runtime == "python":
        return Rie(str(tmp_path), python_runtime(), env=python_env(env), max_concurrency=n,
                   task_root=PY_FUNCTION, function_name=FUNCTION)
    env.update(NODE_PATH=os.path.join(NODE_DIR, "node_modules"), AWS_EXECUTION_ENV="AWS_Lambda_nodejs20.x")
    node = shutil.which("node")
    if n == 1:
        return Rie(str(tmp_path), [node, NODE_RIC, "index.handler"], env=env, max_concurrency=n,
                   task_root=NODE_FUNCTION, function_name=FUNCTION, readable=[NODE_RIC])
    return Rie(str(tmp_path), ["/opt/node-workers"], env=env, max_concurrency=n,
               task_root=NODE_FUNCTION, function_name=FUNCTION, readable=[node, NODE_RIC],
               opt_files={"node-workers": node_workers(n)})


def burst(rie, requests):
    """All invocations at once, one thread each; no retry: every worker is waiting in /next."""
    go = threading.Barrier(len(requests))

    def one(req):
        try:
            go.wait(timeout=10)
            req.status, req.headers, body = rie.invoke_raw(req.event, trace_header=req.header, timeout=30,
                                                           headers={"X-Amzn-RequestId": req.request_id})
            req.seen = json.loads(body)["seen"] if req.status == 200 else body
        except Exception as e:  # reported by the caller's assertion
            req.seen = repr(e)

    threads = [threading.Thread(target=one, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    assert not any(t.is_alive() for t in threads), "an invocation did not return within 40 s"


def check_request(req, nodes, runtime, mode, others):
    """One request's trace: connected, rooted at its invocation span under the caller's, the
    function's spans below it, nothing of another request. `keep`: the proxy's span is the root
    and the function's SERVER span its child; `merge` (the default): the SERVER span takes the
    proxy's place (its attributes included) and is the root."""
    root = one_connected_tree(nodes, allowed_external_parent=req.parent)
    assert root.parent_id == req.parent and root.kind == "segment", (root.name, root.parent_id, req.parent)
    meta = (root.doc.get("metadata") or {}).get("default", {})
    assert meta.get("faas.invocation_id") == req.request_id, root.doc
    source = "lambda-sampled" if req.kind == "xray" else "traceparent"
    assert meta.get("otel_xray.parent_context") == source, meta
    # The runtime was handed the proxy's span as its parent, in the request's trace, sampled.
    h = header_fields(req.seen["trace_header"])
    handed = (h.get("Root"), h.get("Parent"), h.get("Sampled"))
    assert handed == (req.trace_id, req.seen["parent_id"], "1"), req.seen
    assert req.seen["parent_id"] != req.parent and req.seen["sampled"] is True, req.seen
    (server,) = [n for n in nodes if n.id == req.seen["span_id"]]
    if mode == "keep" or server is not root:
        # keep; or merge when a periodic flush fell between the SDK's export of the function's
        # spans and the end of the invocation: the two invocation spans then leave in different
        # flushes and cannot merge (still one connected trace, the function's under the proxy's).
        assert root.id == req.seen["parent_id"], (root.id, req.seen)
        assert server.parent_id == root.id and server.kind == "segment", (server.name, server.parent_id)
        req.merged = False
    else:
        assert [n.kind for n in nodes].count("segment") == 1, [(n.name, n.kind) for n in nodes]
        req.merged = True
    smeta = (server.doc.get("metadata") or {}).get("default", {})
    assert (smeta.get("faas.invocation_id"), smeta.get("order.id")) == (req.request_id, req.order_id), smeta
    assert sorted(c.name for c in server.children if c.name != "Init") == CHILDREN[runtime], \
        [c.name for c in server.children]
    allowed = {root.id, server.id} | {c.id for c in server.children}
    extra = [n for n in nodes if n.id not in allowed]
    assert all(n.name == "Init" and n.parent_id == root.id for n in extra), \
        [(n.name, n.parent_id) for n in extra]
    # Baggage: the allow-listed key on the invocation span, the rest nowhere.
    if req.kind == "w3c":
        assert req.seen["baggage"] == {"user.id": req.user, "tenant": req.secret}, req.seen
        assert meta.get("user.id") == req.user, meta
    else:
        assert req.seen["baggage"] == {} and "user.id" not in meta, (req.seen, meta)
    text = json.dumps([n.doc for n in nodes])
    assert "secret-" not in text, text
    for other in others:
        for mark in (other.request_id, other.order_id, other.user):
            if mark:
                assert mark not in text, "request %d's %s is in request %d's trace" % (other.i, mark, req.i)
    return root


def complete(requests, runtime, mode):
    """Whether every request's trace has its proxy span and the function's spans (documents are
    exported by the periodic flush, every second by default on LMI)."""
    def ready(docs):
        traces = model.traces(docs)
        for req in requests:
            names = [n.name for n in traces.get(req.trace_id, [])]
            if names.count(FUNCTION) < (2 if mode == "keep" else 1) or \
                    not all(c in names for c in CHILDREN[runtime]):
                return False
        return True
    return ready


CASES = [(rt, n, "keep") for rt in ("python", "node") for n in (1, 4, 16)] + \
        [(rt, 16, "merge") for rt in ("python", "node")]


@pytest.mark.parametrize("runtime,n,mode", CASES, ids=["%s-%d-%s" % c for c in CASES])
def test_concurrent_invocations_keep_their_own_traces(tmp_path, runtime, n, mode):
    for attempt in (1, 2):
        daemon = DaemonListener()
        base = tmp_path / ("attempt-%d" % attempt)
        base.mkdir()
        rie = start(base, runtime, n, mode, daemon)
        # Init is eager on LMI; an init failure (an INVOKE registration, say) ends the RIE with 1.
        assert rie.alive(), "the RIE exited during init (rc %s):\n%s" % (rie.proc.poll(), rie.log()[-4000:])
        idle = rie.wait_idle_workers(n, timeout=60)
        assert idle == n, "%d of %d runtime workers polling:\n%s" % (idle, n, rie.log()[-4000:])
        # Held invocations overlap for sure; unheld ones let `merge` find both spans in one flush.
        requests = [Request(n, i, HOLD_S if mode == "keep" else 0) for i in range(n)]
        burst(rie, requests)
        # Twice in about 40 runs the emulator took a burst and dispatched none of it (no
        # "Sending Invoke to Runtime" in its log, every invoke timed out at the client): an
        # emulator stall, not the layer (which never saw an invocation). One fresh environment
        # more; a second stall fails below with the log.
        stalled = all(r.status is None for r in requests) and DISPATCH_LINE not in rie.log()
        if not (stalled and attempt == 1):
            break
        warnings.warn("the RIE dispatched none of a burst of %d; trying a fresh environment" % n)
        rie.close()
        daemon.close()
    try:
        # A 400 Runtime.Unavailable would mean that a worker was not polling after all.
        bad = [(r.i, r.request_id, r.status, r.headers, r.seen) for r in requests if r.status != 200]
        assert not bad, "%s\n%s" % (bad, rie.log()[-6000:])
        assert all(r.headers.get("lambda-runtime-function-response-mode") == "buffered" for r in requests)
        daemon.wait_for(complete(requests, runtime, mode), timeout=15)

        rc = rie.terminate()
        docs = daemon.drain()  # the SHUTDOWN flush's documents included
    finally:
        rie.close()
        errors = daemon.errors
        daemon.close()
    assert not errors, "malformed datagrams: %s" % errors
    assert rc == 0, "RIE exit code %s:\n%s" % (rc, rie.log()[-4000:])

    for d in docs:
        model.validate(d)
    traces = model.traces(docs)
    assert sorted(traces) == sorted(r.trace_id for r in requests), sorted(traces)
    roots = [check_request(r, traces[r.trace_id], runtime, mode, [o for o in requests if o is not r])
             for r in requests]
    assert [n_.name for t in traces.values() for n_ in t].count("Init") <= 1
    unmerged = [r.i for r in requests if not r.merged]
    # The extension holds a running request's spans back from a background flush until the
    # request ends, so that the function's span always replaces the proxy's.
    assert mode != "merge" or not unmerged, (
        "merge: %d of %d invocation spans not merged into the function's (requests %s)"
        % (len(unmerged), n, unmerged))
    if runtime == "python" and n > 1 and mode == "keep":
        # All N were in flight at one instant: N workers, not one after another.
        assert max(r.doc["start_time"] for r in roots) < min(r.doc["end_time"] for r in roots), \
            [(r.doc["start_time"], r.doc["end_time"]) for r in roots]

    # Registration: SHUTDOWN only (LMI refuses INVOKE), in managed-instances mode.
    log = rie.log()
    registered_line = 'msg="External agent registered" agentName=otel-xray'
    registrations = [line for line in log.splitlines() if registered_line in line]
    assert len(registrations) == 1 and registrations[0].endswith("events=[SHUTDOWN]"), \
        registrations or log[:3000]
    assert "Failed to register agent event" not in log
    ext_log = rie.extension_log()
    registered = [json.loads(line) for line in ext_log.splitlines() if '"message":"registered"' in line]
    assert len(registered) == 1 and registered[0]["managed_instances"] is True, registered

    # Accounting: everything received was exported, one span per node the daemon got (a merged
    # proxy span is not a span of its own).
    s = shutdown_summary(ext_log)
    assert s["received"] == s["exported"] + s["dropped"] and s["dropped"] == 0 and s["in_flight"] == 0, s
    assert s["exported"] == sum(len(t) for t in traces.values()), (s, {k: len(v) for k, v in traces.items()})
    assert '"message":"SHUTDOWN","reason":"spindown"' in ext_log, ext_log[-2000:]

    # SHUTDOWN: the extension exited by itself (status 0, not killed) within the 2 s that start
    # when the RIE handles SIGTERM; the RIE, which waits for it, exited as soon.
    signalled = rie.first("SignalHandler received")
    cause, signo, status, exited = rie.terminations()["extension-otel-xray"]
    assert (cause, status) == ("exited", "0"), (cause, signo, status)
    assert 0 <= (exited - signalled).total_seconds() < SHUTDOWN_BUDGET_S, (signalled, exited)
    assert rie.shutdown_seconds() < SHUTDOWN_BUDGET_S, rie.shutdown_seconds()
