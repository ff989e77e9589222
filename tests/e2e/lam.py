"""Drives the local Lambda (`local-lambda` binary) from Python: start, invoke, shut down."""
import json
import os
import socket
import subprocess
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN_DIR = os.environ.get("OTEL_XRAY_BIN_DIR", os.path.join(ROOT, "target", "release"))
LAYER = os.environ.get("OTEL_XRAY_LAYER", os.path.join(ROOT, "target", "layer"))
VENV_PY = os.path.join(ROOT, "tests", ".venv", "bin", "python")


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class LocalLambda:
    """One sandbox: the layer's extension(s) plus a runtime, driven through the control API.

    `env` reaches every process of the sandbox, as a function's environment does on Lambda.
    The extension's ports are chosen free for each sandbox and put in `self.ports`.
    `managed_instances=N` runs it as a Lambda Managed Instances environment of concurrency N
    (`--managed-instances N`: AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances and
    AWS_LAMBDA_MAX_CONCURRENCY=N in the function's environment); `invoke(many=[...])` then runs
    invocations concurrently.
    """

    def __init__(self, log_dir, runtime_cmd, env=None, layer=LAYER, wrapper=True, timeout_ms=3000,
                 active_tracing=False, extra_args=(), function_name="otel-xray-e2e", task_root=None,
                 managed_instances=None):
        http, grpc, telemetry, proxy = free_ports(4)
        self.ports = {"http": http, "grpc": grpc, "telemetry": telemetry, "proxy": proxy}
        self.log_dir = log_dir
        base = {
            "OTEL_XRAY_HTTP_PORT": str(http),
            "OTEL_XRAY_GRPC_PORT": str(grpc),
            "OTEL_XRAY_TELEMETRY_PORT": str(telemetry),
            "OTEL_XRAY_PROXY_PORT": str(proxy),
            "OTEL_XRAY_LOG_LEVEL": "debug",
            "OTEL_XRAY_TEST_GRPC_ENDPOINT": "http://127.0.0.1:%d" % grpc,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        if wrapper:
            base["AWS_LAMBDA_EXEC_WRAPPER"] = os.path.join(layer, "otel-xray-wrapper")
        else:
            # OS-only runtimes have no exec wrapper: users point the SDK at the extension.
            base["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:%d" % http
            base["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        base.update(env or {})
        args = [os.path.join(BIN_DIR, "local-lambda"), "--layer", layer, "--log-dir", log_dir,
                "--timeout-ms", str(timeout_ms), "--function-name", function_name]
        if task_root:
            args += ["--env", "LAMBDA_TASK_ROOT=%s" % task_root]
        if active_tracing:
            args.append("--active-tracing")
        if managed_instances is not None:
            args += ["--managed-instances", str(managed_instances)]
        for k, v in base.items():
            args += ["--env", "%s=%s" % (k, v)]
        args += list(extra_args)
        args += ["--"] + list(runtime_cmd)
        self.stderr = open(os.path.join(log_dir, "local-lambda.stderr"), "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr,
                                     cwd=task_root or log_dir)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise RuntimeError("local-lambda did not start: %s" % self.read_log("local-lambda.stderr"))
        self.info = json.loads(line)
        self.control = self.info["control"]

    def _post(self, path, body, timeout=60):
        req = urllib.request.Request(self.control + path, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def invoke(self, payload=None, trace_header=None, many=None):
        """One invocation; or, with `many` (a list of payloads), one per payload started at once
        (`POST /invoke-many`), returning their results in order: invocation results, or
        `{"status": "rejected", "httpStatus": 400, "errorType": "Runtime.Unavailable", "body": ...}`
        for those a Lambda Managed Instances environment refused (every worker busy)."""
        if many is not None:
            invokes = []
            for p in many:
                one = {"payload": p}
                if trace_header:
                    one["traceHeader"] = trace_header
                invokes.append(one)
            return self._post("/invoke-many", {"invokes": invokes})["results"]
        body = {"payload": payload if payload is not None else {}}
        if trace_header:
            body["traceHeader"] = trace_header
        return self._post("/invoke", body)

    def timeline(self):
        with urllib.request.urlopen(self.control + "/timeline", timeout=10) as resp:
            return json.loads(resp.read())

    def shutdown(self):
        report = self._post("/shutdown", {})
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return report

    def read_log(self, name):
        path = os.path.join(self.log_dir, name)
        if not os.path.exists(path):
            return ""
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")

    def extension_log(self):
        """Everything the extension wrote to stderr (its logs), across resets."""
        out = []
        for name in sorted(os.listdir(self.log_dir)):
            if "otel-xray" in name and "wrapper" not in name and name.endswith("stderr.log"):
                out.append(self.read_log(name))
        return "".join(out)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.shutdown()
            except Exception:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.stderr.close()


def wait_until(predicate, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
