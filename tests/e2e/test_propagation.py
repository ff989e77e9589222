"""Propagation end to end: the real runtime clients (awslambdaric, aws-lambda-ric@3, Rust's
lambda_runtime) start through the wrapper, which points them at the extension's Runtime API proxy;
the proxy records the invocation span and hands the runtime a trace header whose parent is that
span; the functions' own SDKs continue it. Checked in the X-Ray documents the extension sends to
the daemon address, and in what each function reports it saw (its response's `seen`).

Every case asserts that the invocation's spans are one trace with exactly one root and no orphan
parent id. The one allowed "external" parent is the caller's span: Lambda's function segment
under active tracing (Lambda records it, not us), the W3C caller's span id for an API Gateway
event with `traceparent` (the caller records it). Where the context starts with the invocation
(no context, ALB's `Root` without `Parent`, SQS), the root has no parent.

One local Lambda per runtime and mode, shared by the cases of this module (start-up is the
expensive part).
"""
import json
import os
import shutil

import pytest

from checks import NODE_DIR, PY_FUNCTION, one_connected_tree, python_env, python_runtime, xray_id
from lam import BIN_DIR, LAYER, LocalLambda
from xray import model
from xray.daemon import DaemonListener

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_FUNCTION = os.path.join(HERE, "functions", "node")
NODE_RIC = os.path.join(NODE_DIR, "node_modules", "aws-lambda-ric", "bin", "index.mjs")

RUNTIMES = ["python", "node", "rust"]
# An internal span each function makes under its SERVER span.
LEAF = {"python": "validate", "node": "validate", "rust": "compute-total"}

# The caller of case 3: a W3C trace context and baggage, as an upstream service sends them.
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
BAGGAGE = "user.id=alice,tenant=acme%20corp"


def runtime_spec(runtime):
    """(runtime command, environment, task root) of a runtime's test function."""
    if runtime == "python":
        return python_runtime(), python_env(), None
    if runtime == "node":
        env = {"NODE_PATH": os.path.join(NODE_DIR, "node_modules")}
        return ["node", NODE_RIC, "index.handler"], env, NODE_FUNCTION
    return [os.path.join(BIN_DIR, "bootstrap")], {}, None


class Sandboxes:
    """Local Lambdas made on first use, one per (runtime, mode), closed at the end of the module."""

    def __init__(self, base):
        self.base = base
        self.made = {}

    def get(self, runtime, mode):
        key = (runtime, mode)
        if key not in self.made:
            cmd, env, task_root = runtime_spec(runtime)
            log_dir = os.path.join(self.base, "%s-%s" % key)
            os.makedirs(log_dir)
            daemon = DaemonListener()
            env = dict(env, AWS_XRAY_DAEMON_ADDRESS=daemon.address,
                       OTEL_XRAY_BAGGAGE_ATTRIBUTES="user.id")
            layer = LAYER
            if mode == "no-extension":
                # The wrapper alone: a layer without the extension.
                layer = os.path.join(self.base, "layer-%s" % runtime)
                os.makedirs(os.path.join(layer, "extensions"))
                shutil.copy2(os.path.join(LAYER, "otel-xray-wrapper"), layer)
            lam = LocalLambda(log_dir, cmd, env=env, layer=layer, task_root=task_root,
                              active_tracing=(mode == "active"), timeout_ms=10000,
                              function_name="prop-%s" % runtime)
            self.made[key] = (lam, daemon)
        return self.made[key]

    def close(self):
        for lam, daemon in self.made.values():
            lam.close()
            errors = daemon.errors
            daemon.close()
            assert not errors, "malformed datagrams: %s" % errors


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory):
    s = Sandboxes(str(tmp_path_factory.mktemp("propagation")))
    yield s
    s.close()


def header_fields(header):
    out = {}
    for part in (header or "").split(";"):
        if "=" in part:
            k, v = part.strip().split("=", 1)
            out[k] = v
    return out


def invoke_ok(lam, payload, trace_header=None):
    result = lam.invoke(payload, trace_header=trace_header)
    assert result["status"] == "success", result
    return result, result["response"]["seen"]


def connected_trace(daemon, runtime, trace_id, external_parent):
    """Waits (bounded) for the invocation's documents, then returns (nodes, root) of the one
    connected tree of `trace_id`, with the runtime's leaf span under the root."""

    def check(docs):
        for d in docs:
            model.validate(d)
        nodes = model.traces(docs).get(trace_id, [])
        assert nodes, "no document of trace %s among %d" % (trace_id, len(docs))
        root = one_connected_tree(nodes, allowed_external_parent=external_parent)
        assert root.parent_id == external_parent, (root.name, root.parent_id, external_parent)
        assert root.kind == "segment"
        # One invocation span: the function's own FaaS SERVER span takes the proxy's place
        # (OTEL_XRAY_INVOCATION_SPAN=merge, the default) instead of doubling it.
        segments = [n.name for n in nodes if n.kind == "segment"]
        assert len(segments) == 1, segments
        by_id = {n.id: n for n in nodes}
        leaves = [n for n in nodes if n.name == LEAF[runtime]]
        assert len(leaves) == 1, [n.name for n in nodes]
        node, hops = leaves[0], 0
        while node is not root and hops < 20:
            node, hops = by_id[node.parent_id], hops + 1
        assert node is root
        return nodes, root

    def ready(docs):
        try:
            check(docs)
            return True
        except (AssertionError, KeyError):
            return False

    return check(daemon.wait_for(ready, timeout=10))


def function_continued_the_proxy(seen, trace_id, external_parent):
    """The runtime got the proxy's header: our trace, a parent that is neither the caller nor
    Lambda's, sampled; the function's SERVER span continued it."""
    h = header_fields(seen["trace_header"])
    assert h.get("Root") == trace_id, seen
    assert h.get("Sampled") == "1", seen
    assert h.get("Parent") and h["Parent"] == seen["parent_id"], seen
    assert seen["parent_id"] != external_parent, seen
    assert seen["trace_id"] == trace_id[2:10] + trace_id[11:], seen
    assert seen["sampled"] is True, seen


def api_gateway_event(headers):
    return {
        "resource": "/orders", "path": "/orders", "httpMethod": "POST",
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "requestContext": {"resourcePath": "/orders", "httpMethod": "POST", "stage": "prod",
                           "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"},
        "body": "{}", "isBase64Encoded": False,
    }


def alb_event(headers):
    return {
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:"
                                                     "123456789012:targetgroup/orders/6d0ecf831eec9f09"}},
        "httpMethod": "GET", "path": "/orders", "queryStringParameters": {},
        "headers": headers, "body": "", "isBase64Encoded": False,
    }


def sqs_event(trace_headers):
    return {"Records": [{
        "messageId": "m-%d" % i, "receiptHandle": "r", "body": "{}",
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000",
                       "AWSTraceHeader": h},
        "messageAttributes": {}, "md5OfBody": "99914b932bd37a50b983c5e7c90ae93b",
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:orders",
        "awsRegion": "us-east-1",
    } for i, h in enumerate(trace_headers)]}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_no_incoming_context_starts_a_trace_at_the_invocation(sandboxes, runtime):
    lam, daemon = sandboxes.get(runtime, "passthrough")
    result, seen = invoke_ok(lam, {"order_id": "c1"})
    # PassThrough: Lambda's header names a trace but recorded nothing; the invocation is the root.
    trace_id = header_fields(result["traceHeader"])["Root"]
    connected_trace(daemon, runtime, trace_id, None)
    function_continued_the_proxy(seen, trace_id, None)
    assert seen["runtime_api"] == "127.0.0.1:%d" % lam.ports["proxy"], seen


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_active_tracing_hangs_everything_under_lambdas_segment(sandboxes, runtime):
    lam, daemon = sandboxes.get(runtime, "active")
    result, seen = invoke_ok(lam, {"order_id": "c2"})
    lambda_header = header_fields(result["traceHeader"])
    assert lambda_header["Sampled"] == "1"
    trace_id, lambda_segment = lambda_header["Root"], lambda_header["Parent"]
    connected_trace(daemon, runtime, trace_id, lambda_segment)
    function_continued_the_proxy(seen, trace_id, lambda_segment)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_api_gateway_w3c_traceparent_and_baggage(sandboxes, runtime):
    lam, daemon = sandboxes.get(runtime, "passthrough")
    event = api_gateway_event({
        "traceparent": "00-%s-%s-01" % (CALLER_TRACE, CALLER_SPAN),
        "baggage": BAGGAGE,
        "content-type": "application/json",
    })
    result, seen = invoke_ok(lam, event)
    trace_id = xray_id(CALLER_TRACE)
    assert header_fields(result["traceHeader"])["Root"] != trace_id  # Lambda's own, unused
    nodes, root = connected_trace(daemon, runtime, trace_id, CALLER_SPAN)
    function_continued_the_proxy(seen, trace_id, CALLER_SPAN)
    assert seen["baggage"] == {"user.id": "alice", "tenant": "acme corp"}, seen
    # Only the allow-listed key becomes an attribute of the invocation span (the root; metadata
    # unless indexed), and no span carries the other baggage entry.
    assert (root.doc.get("metadata") or {}).get("default", {}).get("user.id") == "alice", root.doc
    texts = [json.dumps(n.doc) for n in nodes]
    assert not any("acme" in t for t in texts), texts


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sqs_batch_links_each_message(sandboxes, runtime):
    lam, daemon = sandboxes.get(runtime, "passthrough")
    producers = [("1-5759e988-bd862e3fe1be46a994272793", "53995c3f42cd8ad8"),
                 ("1-6a3a8b2e-0123456789abcdef01234567", "0af7651916cd43dd")]
    event = sqs_event(["Root=%s;Parent=%s;Sampled=1" % p for p in producers])
    result, seen = invoke_ok(lam, event)
    trace_id = header_fields(result["traceHeader"])["Root"]
    nodes, root = connected_trace(daemon, runtime, trace_id, None)
    function_continued_the_proxy(seen, trace_id, None)
    # One link per message, on the invocation span (the root), and nowhere else.
    links = [(link.get("trace_id"), link.get("id")) for link in root.doc.get("links", [])]
    assert sorted(links) == sorted(producers), root.doc
    assert not any(n.doc.get("links") for n in nodes if n is not root)
    for producer_trace, _ in producers:
        assert producer_trace not in model.traces(daemon.drain()), "a producer's trace got spans"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_xray_header_unsampled_and_root_only(sandboxes, runtime):
    lam, daemon = sandboxes.get(runtime, "passthrough")
    # Sampled=0 from the caller: the function is told so, and nothing is exported.
    unsampled = "1-67891233-abcdef012345678912345678"
    result, seen = invoke_ok(lam, api_gateway_event({
        "X-Amzn-Trace-Id": "Root=%s;Parent=53995c3f42cd8ad8;Sampled=0" % unsampled}))
    assert header_fields(seen["trace_header"]).get("Sampled") == "0", seen
    assert seen["sampled"] is False, seen
    skipped_lambda_root = header_fields(result["traceHeader"])["Root"]
    # ALB's header: Root, no Parent. The invocation is the root of the caller's trace. Its
    # documents arrive after any of the unsampled invocation's (flushes are in order).
    root_only = "1-5f84c7a1-0123456789abcdefabcdef01"
    _, seen = invoke_ok(lam, alb_event({"x-amzn-trace-id": "Root=%s" % root_only}))
    connected_trace(daemon, runtime, root_only, None)
    function_continued_the_proxy(seen, root_only, None)
    traces = model.traces(daemon.drain())
    assert unsampled not in traces and skipped_lambda_root not in traces, sorted(traces)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_wrapper_without_extension_leaves_the_runtime_alone(sandboxes, runtime):
    lam, daemon = sandboxes.get(runtime, "no-extension")
    result, seen = invoke_ok(lam, {"order_id": "c6"})
    assert seen["runtime_api"] == lam.info["runtimeApi"], seen
    assert seen["trace_header"] == result["traceHeader"], seen  # Lambda's header, as given
    assert daemon.drain() == []
    wrapper_log = "".join(lam.read_log(n) for n in sorted(os.listdir(lam.log_dir))
                          if n.startswith("runtime") and n.endswith("stderr.log"))
    notes = [line for line in wrapper_log.splitlines()
             if "[otel-xray-wrapper] Runtime API proxy not used" in line]
    assert len(notes) == 1, wrapper_log[-2000:]


def test_python_auto_instrumentation_handoff(sandbox, daemon):
    """The function ships opentelemetry-distro and opentelemetry-instrumentation (on its
    PYTHONPATH) and configures nothing: through the wrapper its SDK is configured from the
    environment at interpreter start, exports to the extension, and continues the proxy's trace."""
    import opentelemetry.instrumentation.auto_instrumentation as auto

    site = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(auto.__file__))))
    function = os.path.join(HERE, "functions", "python_auto")
    lam = sandbox([python_runtime()[0], "-m", "awslambdaric",
                   "auto_handler.handler"], env={
        "PYTHONPATH": "%s:%s" % (function, site),
        "PYTHONUNBUFFERED": "1",
        "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
    })
    result = lam.invoke({})
    assert result["status"] == "success", result
    out = result["response"]
    assert out["provider"] == "opentelemetry.sdk.trace.TracerProvider", out
    assert out["sitecustomize"] == os.path.join(os.path.dirname(auto.__file__), "sitecustomize.py"), out
    trace_id = header_fields(out["trace_header"])["Root"]
    assert header_fields(out["trace_header"])["Parent"] != header_fields(result["traceHeader"]).get("Parent")

    def check(docs):
        nodes = model.traces(docs).get(trace_id, [])
        root = one_connected_tree(nodes)
        assert root.parent_id is None
        assert [n.name for n in nodes].count("auto-work") == 1, [n.name for n in nodes]
        return nodes

    def ready(docs):
        try:
            return bool(check(docs))
        except AssertionError:
            return False

    check(daemon.wait_for(ready, timeout=10))
    # The wrapper kept the distro's metrics and logs exporters off the traces-only receiver.
    assert out["exporters"] == ["none", "none"], out
    lam.shutdown()
    assert "/v1/metrics" not in lam.extension_log() and "/v1/logs" not in lam.extension_log()


@pytest.mark.parametrize("mode", ["keep", "merge"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cold_start_trace_is_whole_after_shutdown(sandbox, daemon, runtime, mode):
    """The first invocation's trace, read after SHUTDOWN so that every late document is in
    (platform spans such as Init come from the Telemetry API, possibly in a later flush): still
    one tree under the caller's span, Init included when it came."""
    cmd, env, task_root = runtime_spec(runtime)
    env = dict(env, AWS_XRAY_DAEMON_ADDRESS=daemon.address, OTEL_XRAY_INVOCATION_SPAN=mode)
    lam = sandbox(cmd, env=env, task_root=task_root)
    event = api_gateway_event({"traceparent": "00-%s-%s-01" % (CALLER_TRACE, CALLER_SPAN)})
    _, seen = invoke_ok(lam, event)
    invoke_ok(lam, {"order_id": "warm"})  # a later flush, which usually carries Init
    lam.shutdown()
    nodes = [n for n in model.traces(daemon.drain()).get(xray_id(CALLER_TRACE), [])]
    assert nodes, "no document of the caller's trace"
    root = one_connected_tree(nodes, allowed_external_parent=CALLER_SPAN)
    assert root.parent_id == CALLER_SPAN
    # Init is there when the Telemetry API delivered the init events before SHUTDOWN (not
    # guaranteed); when it is, it is in the tree (checked above).
    assert [n.name for n in nodes].count("Init") <= 1, [n.name for n in nodes]
    if mode == "keep":
        # Both invocation spans: the proxy's is the root, the function's SERVER span its child.
        assert root.id == seen["parent_id"], (root.id, seen)
        assert any(n.id == seen["span_id"] and n.parent_id == root.id for n in nodes)
