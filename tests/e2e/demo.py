"""`make demo`: the real layer on a local Lambda with a sample Rust function; prints the X-Ray traces.

The function (examples/rust-function, built with lambda_runtime and the OpenTelemetry SDK) runs
on an OS-only runtime, so — as on provided.al2023 — it is pointed at the extension with
OTEL_EXPORTER_OTLP_ENDPOINT rather than through the wrapper. Lambda's active tracing is on: the
extension sends documents to the X-Ray daemon address, here a local UDP stand-in that decodes
and schema-checks every datagram.
"""
import argparse
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lam import LocalLambda  # noqa: E402
from xray.daemon import DaemonListener  # noqa: E402
from xray import model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", required=True)
    ap.add_argument("--bin-dir", required=True)
    args = ap.parse_args()

    log_dir = tempfile.mkdtemp(prefix="otel-xray-demo-")
    daemon = DaemonListener()
    lam = None
    try:
        lam = LocalLambda(
            log_dir,
            [os.path.join(os.path.abspath(args.bin_dir), "bootstrap")],
            layer=os.path.abspath(args.layer),
            wrapper=False,
            active_tracing=True,
            function_name="orders-demo",
            env={
                "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
                "OTEL_XRAY_INDEXED_ATTRIBUTES": "order.id,faas.coldstart",
                "OTEL_XRAY_LOG_LEVEL": "info",
                "OTEL_SERVICE_NAME": "orders-demo",
            },
        )
        print("otel-xray demo: local Lambda up (runtime API %s), logs in %s" % (lam.info["runtimeApi"], log_dir))
        print()
        payloads = [
            {"order_id": "o-1001", "items": 2},
            {"order_id": "o-1002", "items": 5},
            {"order_id": "o-1003", "items": 1, "fail": True},
        ]
        for p in payloads:
            before = len(daemon.drain())
            result = lam.invoke(p)
            docs = daemon.drain()
            ext = (result.get("timings") or {}).get("extensions") or []
            post = ext[0].get("afterRuntimeDoneMs") if ext else None
            print(
                "invoke %-28s -> %-7s  %2d documents at X-Ray before the extension asked for the next event%s"
                % (
                    str(p),
                    result["status"],
                    len(docs) - before,
                    ("  (response -> event/next %.1f ms, mostly the Telemetry API's 25 ms batching)" % post) if isinstance(post, (int, float)) else "",
                )
            )
        report = lam.shutdown()
        docs = daemon.drain()
        print()
        print("X-Ray traces (%d documents, all schema-valid):" % len(docs))
        print()
        for d in docs:
            model.validate(d)
        print(model.render(docs))
        summary = [line for line in lam.extension_log().splitlines() if "summary" in line or "received=" in line]
        if summary:
            print("extension shutdown summary: %s" % re.sub(r"\x1b\[[0-9;]*m", "", summary[-1]).strip())
        for e in report.get("extensions", []):
            print("extension %s exited with code %s %.1f ms after SHUTDOWN (Lambda allows 2000 ms)"
                  % (e.get("name"), e.get("exitCode"), e.get("exitedAfterMs") or 0.0))
        if daemon.errors:
            print("daemon stand-in errors: %s" % daemon.errors)
            return 1
        return 0
    finally:
        if lam:
            lam.close()
        daemon.close()


if __name__ == "__main__":
    sys.exit(main())
