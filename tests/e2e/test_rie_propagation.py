"""The propagation cases of test_propagation.py that AWS's emulator can reproduce, on the RIE in
on-demand mode with the layer's real extension and wrapper and the real Python (awslambdaric) and
Node.js (aws-lambda-ric@3) runtime clients; the helpers and assertions are test_propagation's.

What the on-demand RIE cannot reproduce, and so is left to the local Lambda: active tracing (the
RIE records no function segment) and anything that needs Lambda's trace header at the runtime
(it never sends `Lambda-Runtime-Trace-Id`, whatever the invoke's `X-Amzn-Trace-Id`), platform
spans (its Telemetry API is a stub that delivers nothing), Rust's runtime (not in this module).
So here the trace of a direct invocation starts at the proxy's invocation span, whose trace id
the runtime reports (`seen`), instead of Lambda's.

One RIE per runtime and mode, shared by the module's cases (invokes are serialised: a second
concurrent one crashes the on-demand RIE); each is shut down at the end with SIGTERM, and its
extension's accounting checked.
"""
import os

import pytest

from checks import shutdown_summary, xray_id
from rie import Rie, unavailable_reason
from test_propagation import (BAGGAGE, CALLER_SPAN, CALLER_TRACE, alb_event, api_gateway_event,
                              connected_trace, function_continued_the_proxy, header_fields, runtime_spec,
                              sqs_event)
from xray import model
from xray.daemon import DaemonListener

_WHY = unavailable_reason()
if _WHY and os.environ.get("OTEL_XRAY_REQUIRE_LAYER"):
    # `make test` (and CI) must run these: a missing emulator is a failure there, not a skip.
    raise RuntimeError("AWS's emulator cannot run here: %s" % _WHY)
pytestmark = pytest.mark.skipif(_WHY is not None, reason=str(_WHY))

RUNTIMES = ["python", "node"]


class RieSandboxes:
    """RIEs made on first use, one per (runtime, mode), shut down at the end of the module."""

    def __init__(self, base):
        self.base = base
        self.made = {}

    def get(self, runtime, mode):
        key = (runtime, mode)
        if key not in self.made:
            cmd, env, task_root = runtime_spec(runtime)
            work = os.path.join(self.base, "%s-%s" % key)
            os.makedirs(work)
            daemon = DaemonListener()
            env = dict(env, AWS_XRAY_DAEMON_ADDRESS=daemon.address, OTEL_XRAY_BAGGAGE_ATTRIBUTES="user.id")
            if mode == "no-extension":
                # Lambda hands the runtime `Sampled=0` under PassThrough, so there the function's
                # SDK records nothing; the RIE hands it no header, and the SDK would sample a trace
                # of its own and export it to nobody (Node's forceFlush then rejects after its
                # retries and fails the invoke). Its sampler does what Lambda's header does.
                env["OTEL_TRACES_SAMPLER"] = "parentbased_always_off"
            rie = Rie(work, cmd, env=env, task_root=task_root, extension=(mode != "no-extension"),
                      function_name="prop-%s" % runtime, timeout_s=10)
            assert rie.alive(), rie.log()[-3000:]
            self.made[key] = (rie, daemon)
        return self.made[key]

    def close(self):
        failures = []
        for (runtime, mode), (rie, daemon) in self.made.items():
            rc = rie.terminate()
            rie.close()
            daemon.drain()
            errors = daemon.errors
            daemon.close()
            if errors:
                failures.append("%s/%s: malformed datagrams: %s" % (runtime, mode, errors))
            if rc != 0:
                failures.append("%s/%s: RIE exit code %s" % (runtime, mode, rc))
            if mode != "no-extension":
                s = shutdown_summary(rie.extension_log())
                balanced = s["received"] == s["exported"] + s["dropped"]
                if not (balanced and s["dropped"] == 0 and s["in_flight"] == 0):
                    failures.append("%s/%s: shutdown summary %s" % (runtime, mode, s))
        assert not failures, failures


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory):
    s = RieSandboxes(str(tmp_path_factory.mktemp("rie-propagation")))
    yield s
    s.close()


def invoke_ok(rie, payload, trace_header=None):
    """(response, seen): the invoke succeeded (200, no error type) and the function answered."""
    response = rie.invoke(payload, trace_header=trace_header)
    return response, response["seen"]


def proxy_trace(seen):
    """The trace the runtime was handed (by the proxy: the RIE hands it none)."""
    return header_fields(seen["trace_header"])["Root"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_no_incoming_context_starts_a_trace_at_the_invocation(sandboxes, runtime):
    rie, daemon = sandboxes.get(runtime, "passthrough")
    _, seen = invoke_ok(rie, {"order_id": "c1"})
    trace_id = proxy_trace(seen)
    connected_trace(daemon, runtime, trace_id, None)
    function_continued_the_proxy(seen, trace_id, None)
    assert seen["runtime_api"] == "127.0.0.1:%d" % rie.ports["proxy"], seen


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_api_gateway_w3c_traceparent_and_baggage(sandboxes, runtime):
    rie, daemon = sandboxes.get(runtime, "passthrough")
    event = api_gateway_event({
        "traceparent": "00-%s-%s-01" % (CALLER_TRACE, CALLER_SPAN),
        "baggage": BAGGAGE,
        "content-type": "application/json",
    })
    _, seen = invoke_ok(rie, event)
    trace_id = xray_id(CALLER_TRACE)
    nodes, root = connected_trace(daemon, runtime, trace_id, CALLER_SPAN)
    function_continued_the_proxy(seen, trace_id, CALLER_SPAN)
    assert seen["baggage"] == {"user.id": "alice", "tenant": "acme corp"}, seen
    assert (root.doc.get("metadata") or {}).get("default", {}).get("user.id") == "alice", root.doc
    texts = [str(n.doc) for n in nodes]
    assert not any("acme" in t for t in texts), texts


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sqs_batch_links_each_message(sandboxes, runtime):
    rie, daemon = sandboxes.get(runtime, "passthrough")
    producers = [("1-5759e988-bd862e3fe1be46a994272793", "53995c3f42cd8ad8"),
                 ("1-6a3a8b2e-0123456789abcdef01234567", "0af7651916cd43dd")]
    event = sqs_event(["Root=%s;Parent=%s;Sampled=1" % p for p in producers])
    _, seen = invoke_ok(rie, event)
    trace_id = proxy_trace(seen)
    nodes, root = connected_trace(daemon, runtime, trace_id, None)
    function_continued_the_proxy(seen, trace_id, None)
    links = [(link.get("trace_id"), link.get("id")) for link in root.doc.get("links", [])]
    assert sorted(links) == sorted(producers), root.doc
    assert not any(n.doc.get("links") for n in nodes if n is not root)
    for producer_trace, _ in producers:
        assert producer_trace not in model.traces(daemon.drain()), "a producer's trace got spans"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_xray_header_unsampled_and_root_only(sandboxes, runtime):
    rie, daemon = sandboxes.get(runtime, "passthrough")
    # Sampled=0 from the caller, in the event's header and in the invoke's X-Amzn-Trace-Id (which
    # the RIE keeps from the runtime): the function is told so, and nothing is exported.
    unsampled = "1-67891233-abcdef012345678912345678"
    invoke_unsampled = "1-67891234-abcdef012345678912345679"
    _, seen = invoke_ok(rie, api_gateway_event({
        "X-Amzn-Trace-Id": "Root=%s;Parent=53995c3f42cd8ad8;Sampled=0" % unsampled}),
        trace_header="Root=%s;Parent=53995c3f42cd8ad9;Sampled=0" % invoke_unsampled)
    assert header_fields(seen["trace_header"]).get("Sampled") == "0", seen
    assert header_fields(seen["trace_header"]).get("Root") == unsampled, seen
    assert seen["sampled"] is False, seen
    # ALB's header: Root, no Parent. The invocation is the root of the caller's trace.
    root_only = "1-5f84c7a1-0123456789abcdefabcdef01"
    _, seen = invoke_ok(rie, alb_event({"x-amzn-trace-id": "Root=%s" % root_only}))
    connected_trace(daemon, runtime, root_only, None)
    function_continued_the_proxy(seen, root_only, None)
    traces = model.traces(daemon.drain())
    assert unsampled not in traces and invoke_unsampled not in traces, sorted(traces)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_wrapper_without_extension_leaves_the_runtime_alone(sandboxes, runtime):
    rie, daemon = sandboxes.get(runtime, "no-extension")
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    _, seen = invoke_ok(rie, {"order_id": "c6"}, trace_header=header)
    assert seen["runtime_api"] == rie.runtime_api, seen
    # Lambda's header, as given: the on-demand RIE gives the runtime none.
    assert seen["trace_header"] == "", seen
    assert daemon.drain() == []
    notes = [line for line in rie.log().splitlines()
             if "[otel-xray-wrapper] Runtime API proxy not used" in line]
    assert len(notes) == 1, rie.log()[-3000:]
