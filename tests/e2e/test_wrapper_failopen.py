"""The wrapper fails open when the extension is not answering (issue 20): the layer's wrapper with
no extension in the layer, with the extension's every port held by other processes, or with the
proxy switched off and no extension. The real Python runtime (awslambdaric) and the real
OpenTelemetry SDK, on the local Lambda.

Before the fix a function whose SDK uses the default OTLP exporter took 13.6 s an invocation: the
wrapper pointed the exporter at a receiver that was not there, and the SDK retried for its whole
timeout in every force_flush. Now the wrapper probes first and, when nothing of otel-xray
answers, starts the runtime as if the layer were absent (nothing set, no auto-instrumentation
started) and says so in one line. Where the function's SDK has nowhere to export at all (the
user named no destination and nobody listens on the SDKs' default OTLP ports), it also sets
OTEL_SDK_DISABLED=true, so an SDK the function sets up in its own code does not retry either
(docs/wrapper.md, "When the extension is not answering").

The time bounds are correctness bounds on a 13 s failure (the handlers do nothing slow), not
benchmarks: an invocation must take well under a second more than without the layer."""
import http.server
import os
import shutil
import socket
import threading
import time

import pytest

from lam import LAYER, VENV_PY, LocalLambda, free_ports

HERE = os.path.dirname(os.path.abspath(__file__))
FUNCTION = os.path.join(HERE, "functions", "python_failopen")
# Generous: the handlers do nothing slow; the failure this guards against took 13.6 s.
BOUND_S = 1.5
ABSENT = "the otel-xray extension is not answering, so the function runs without otel-xray"


def nobody_listens(port):
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()
    return False


@pytest.fixture
def sdk_defaults_free():
    """The wrapper turns the SDK off only when nobody listens on the SDKs' default OTLP ports;
    another process on this machine holding one of them changes what it must decide."""
    taken = [p for p in (4318, 4317) if not nobody_listens(p)]
    if taken:
        pytest.skip("something listens on 127.0.0.1:%s on this machine" % taken)


@pytest.fixture
def wrapper_only_layer(tmp_path):
    """The layer's wrapper without the extension: what /opt holds when the extension is missing."""
    layer = tmp_path / "layer-wrapper-only"
    (layer / "extensions").mkdir(parents=True)
    shutil.copy2(os.path.join(LAYER, "otel-xray-wrapper"), str(layer))
    return str(layer)


@pytest.fixture
def no_layer(tmp_path):
    layer = tmp_path / "no-layer"
    (layer / "extensions").mkdir(parents=True)
    return str(layer)


class NotOtelXray(http.server.BaseHTTPRequestHandler):
    """Another process on the extension's ports: answers POST with 200, GET (the wrapper's health
    probe) with 501, as a server without a GET handler does."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class UsersCollector(http.server.BaseHTTPRequestHandler):
    """The user's own OTLP/HTTP collector: decodes every export it gets (span names)."""

    spans = []

    def do_POST(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                UsersCollector.spans.extend((self.path, s.name) for s in ss.spans)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(handler, port=0):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def wrapper_lines(lam):
    text = "".join(lam.read_log(n) for n in sorted(os.listdir(lam.log_dir))
                   if n.startswith("runtime") and n.endswith("stderr.log"))
    return [line for line in text.splitlines() if line.startswith("[otel-xray-wrapper]")]


def invoke_timed(lam, payload):
    started = time.monotonic()
    result = lam.invoke(payload)
    elapsed = time.monotonic() - started
    assert result["status"] == "success", result
    return result, elapsed


def sdk_function(sandbox, layer, env=None):
    return sandbox([VENV_PY, "-m", "awslambdaric", "sdk_in_code.handler"], layer=layer,
                   timeout_ms=30000,
                   env=dict({"PYTHONPATH": FUNCTION, "PYTHONUNBUFFERED": "1"}, **(env or {})))


def layer_free(env):
    """The watched variables the wrapper may set, without the sandbox's own OTEL_XRAY_* ports
    (chosen per sandbox) and without the runtime API (compared with each sandbox's own)."""
    return {k: v for k, v in env.items()
            if not k.startswith("OTEL_XRAY_") and k != "AWS_LAMBDA_RUNTIME_API"}


def assert_untouched(lam, env, **expected):
    """The runtime's environment is what the sandbox gave it, plus `expected`."""
    assert env.get("AWS_LAMBDA_RUNTIME_API") == lam.info["runtimeApi"], env
    for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_PROPAGATORS",
              "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRICS_EXPORTER",
              "OTEL_LOGS_EXPORTER", "OTEL_SDK_DISABLED"):
        assert env.get(k) == expected.get(k), (k, env)
    assert env.get("PYTHONPATH") == expected.get("PYTHONPATH", FUNCTION), env


@pytest.mark.parametrize("case", ["no-extension", "ports-taken", "proxy-off"])
def test_sdk_with_default_exporter_is_fast_without_the_extension(
        sandbox, wrapper_only_layer, sdk_defaults_free, case):
    servers = []
    env, layer = {}, wrapper_only_layer
    if case == "ports-taken":
        # The real extension, every one of its loopback ports held by another process: it runs
        # (and says which variables to change), but nothing of otel-xray answers.
        layer = LAYER
        ports = free_ports(3)
        servers = [serve(NotOtelXray, p) for p in ports]
        env = {"OTEL_XRAY_HTTP_PORT": str(ports[0]), "OTEL_XRAY_GRPC_PORT": str(ports[1]),
               "OTEL_XRAY_PROXY_PORT": str(ports[2])}
    elif case == "proxy-off":
        env = {"OTEL_XRAY_PROXY": "false"}
    try:
        lam = sdk_function(sandbox, layer, env)
        for i in range(3):
            result, elapsed = invoke_timed(lam, {"order_id": "fo-%d" % i})
            out = result["response"]
            assert (out["order_id"], out["status"]) == ("fo-%d" % i, "accepted"), out
            print(case, "invoke %d: %.3f s wall, durationMs %.1f, flush %.3f s"
                  % (i, elapsed, result["timings"]["durationMs"], out["flush_s"]))
            assert elapsed < BOUND_S, (elapsed, result["timings"], out)
            assert result["timings"]["durationMs"] < BOUND_S * 1000, result["timings"]
        assert_untouched(lam, out["env"], OTEL_SDK_DISABLED="true")
        lines = wrapper_lines(lam)
        assert len(lines) == 1, lines
        (line,) = lines
        assert ABSENT in line and "but for OTEL_SDK_DISABLED=true" in line, line
        if case == "proxy-off":
            assert line.startswith("[otel-xray-wrapper] OTLP/HTTP receiver not answering (connect "
                                   "127.0.0.1:%d" % lam.ports["http"]), line
            assert "Runtime API proxy off (OTEL_XRAY_PROXY=false)" in line, line
        elif case == "ports-taken":
            assert line.startswith("[otel-xray-wrapper] Runtime API proxy not used (not otel-xray"), line
            assert "OTLP/HTTP receiver not answering (not otel-xray" in line, line
            lam.shutdown()
            log = lam.extension_log()
            for variable in ("OTEL_XRAY_HTTP_PORT", "OTEL_XRAY_GRPC_PORT", "OTEL_XRAY_PROXY_PORT"):
                assert variable in log, (variable, log[-2000:])
        else:
            assert line.startswith("[otel-xray-wrapper] Runtime API proxy not used (connect "
                                   "127.0.0.1:%d" % lam.ports["proxy"]), line
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def test_auto_instrumented_function_runs_as_without_the_layer(
        sandbox, wrapper_only_layer, no_layer, sdk_defaults_free, tmp_path):
    """A function that ships the auto-instrumentation and sets up nothing: without the extension
    the wrapper does not start it, so the function runs exactly as with no layer at all (the SDK's
    off switch aside): the API's default provider, no sitecustomize, the same environment."""
    import opentelemetry.instrumentation.auto_instrumentation as auto

    site = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(auto.__file__))))
    env = {"PYTHONPATH": "%s:%s" % (FUNCTION, site), "PYTHONUNBUFFERED": "1"}
    cmd = [VENV_PY, "-m", "awslambdaric", "auto_instrumented.handler"]
    without = sandbox(cmd, layer=wrapper_only_layer, env=env, timeout_ms=30000)
    # No layer at all: no extension, no exec wrapper (its own log folder).
    bare_logs = tmp_path / "bare-logs"
    bare_logs.mkdir()
    bare = LocalLambda(str(bare_logs), cmd, layer=no_layer, timeout_ms=30000,
                       env=dict(env, AWS_LAMBDA_EXEC_WRAPPER=""))
    try:
        seen = {}
        for name, lam in (("no extension", without), ("no layer", bare)):
            result, elapsed = invoke_timed(lam, {})
            out = result["response"]
            print(name, "%.3f s wall, durationMs %.1f" % (elapsed, result["timings"]["durationMs"]))
            assert elapsed < BOUND_S and result["timings"]["durationMs"] < BOUND_S * 1000, result
            assert out["provider"] == "opentelemetry.trace.ProxyTracerProvider", out
            assert out["sitecustomize"] is None, out
            assert out["env"]["AWS_LAMBDA_RUNTIME_API"] == lam.info["runtimeApi"], out
            seen[name] = layer_free(out["env"])
        assert seen["no extension"] == dict(seen["no layer"], OTEL_SDK_DISABLED="true"), seen
        assert len(wrapper_lines(without)) == 1, wrapper_lines(without)
        assert wrapper_lines(bare) == [], wrapper_lines(bare)
    finally:
        bare.close()


def test_the_users_own_collector_is_left_alone(sandbox, wrapper_only_layer):
    """The user pointed the SDK at their own collector: without the extension the wrapper changes
    nothing (not even the SDK's switch), and the function's spans reach that collector."""
    UsersCollector.spans = []
    collector = serve(UsersCollector)
    try:
        endpoint = "http://127.0.0.1:%d" % collector.server_address[1]
        lam = sdk_function(sandbox, wrapper_only_layer, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        result, elapsed = invoke_timed(lam, {"order_id": "mine"})
        out = result["response"]
        assert out["flushed"] is True, out
        assert elapsed < BOUND_S, (elapsed, result["timings"])
        assert_untouched(lam, out["env"], OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
        assert ("/v1/traces", "failopen-work") in UsersCollector.spans, UsersCollector.spans
        (line,) = wrapper_lines(lam)
        assert ABSENT in line and line.endswith("its environment untouched"), line
    finally:
        collector.shutdown()
        collector.server_close()


def test_with_the_extension_the_wrapper_still_points_the_sdk_at_it(sandbox):
    """The control: the same function with the whole layer gets the wrapper's plan and no line
    about a missing extension, whether the proxy is on or off (then the receiver answers the
    health check)."""
    for env in ({}, {"OTEL_XRAY_PROXY": "false"}):
        lam = sdk_function(sandbox, LAYER, env)
        result, _ = invoke_timed(lam, {"order_id": "with"})
        seen = result["response"]["env"]
        assert seen["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:%d" % lam.ports["http"], seen
        assert "OTEL_SDK_DISABLED" not in seen, seen
        proxied = "127.0.0.1:%d" % lam.ports["proxy"]
        assert (seen["AWS_LAMBDA_RUNTIME_API"] == proxied) == (env == {}), (env, seen)
        assert result["response"]["flushed"] is True
        assert not any("not answering" in line for line in wrapper_lines(lam)), wrapper_lines(lam)
        lam.shutdown()
        if env:  # proxy off: the wrapper asked the receiver, at debug level in the extension's log
            assert "health check answered" in lam.extension_log(), lam.extension_log()[-2000:]
