"""Self-telemetry on the local Lambda with the release extension: with OTEL_XRAY_SELF_METRICS=true
the extension writes CloudWatch EMF records on stdout (one per flush, one at shutdown), each a
valid EMF document whose deltas add up to the shutdown summary; without it, nothing on stdout."""
import json
import os

from checks import python_env, python_runtime, shutdown_summary


def extension_stdout(lam):
    out = []
    for name in sorted(os.listdir(lam.log_dir)):
        if "otel-xray" in name and "wrapper" not in name and name.endswith("stdout.log"):
            out.append(lam.read_log(name))
    return "".join(out)


def run(sandbox, daemon, enabled):
    env = {"AWS_XRAY_DAEMON_ADDRESS": daemon.address}
    if enabled:
        env["OTEL_XRAY_SELF_METRICS"] = "true"
    lam = sandbox(python_runtime(), active_tracing=True, env=python_env(env),
                  function_name="orders-emf")
    for i in range(3):
        assert lam.invoke({"order_id": "e-%d" % i})["status"] == "success"
    lam.shutdown()
    return lam


def test_emf_records_add_up_to_the_shutdown_summary(sandbox, daemon):
    lam = run(sandbox, daemon, True)
    summary = shutdown_summary(lam.extension_log())
    records = [json.loads(line) for line in extension_stdout(lam).splitlines() if line.strip()]
    assert records, "no EMF record on the extension's stdout"
    events = [r["Event"] for r in records]
    assert events[-1] == "shutdown" and events.count("flush") >= 3, events
    for r in records:
        meta = r["_aws"]
        assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
        (directive,) = meta["CloudWatchMetrics"]
        assert directive["Namespace"] == "otel-xray"
        assert directive["Dimensions"] == [["FunctionName"]]
        assert r["FunctionName"] == "orders-emf"
        for metric in directive["Metrics"]:
            assert metric["Unit"] in ("Count", "Milliseconds"), metric
            assert isinstance(r[metric["Name"]], int), (metric, r)
        if r["Event"] == "flush":
            assert "FlushDurationMs" in r and r["FlushSpans"] >= 0
    total = lambda name: sum(r[name] for r in records)  # noqa: E731
    assert total("SpansReceived") == summary["received"] > 0, summary
    assert total("SpansExported") == summary["exported"], summary
    assert total("SpansDropped") == summary["dropped"], summary


def test_no_stdout_without_the_setting(sandbox, daemon):
    lam = run(sandbox, daemon, False)
    assert shutdown_summary(lam.extension_log())["received"] > 0
    assert extension_stdout(lam).strip() == ""
