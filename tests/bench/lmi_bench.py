"""Lambda Managed Instances: what the Runtime API proxy adds to a request at concurrency 16 on one
CPU, printed as a table (a benchmark, not a test: it asserts nothing).

The local Lambda (tests/local-lambda) in its Managed Instances mode (`--managed-instances 16`)
runs the layer's extension and a minimal runtime of 16 worker processes, each a keep-alive
Runtime API loop that answers `{}` at once (so the function's own work does not bury the
difference), started through the layer's wrapper. Once with the proxy (the default: every
worker's `/next` and `/response` go through the extension) and once with `OTEL_XRAY_PROXY=false`
(the workers talk to the local Lambda directly). Every process of both sandboxes, and this
script, run on one CPU (`os.sched_setaffinity`, inherited at fork), as on a 1-vCPU instance.
Active tracing is on, so every request gets an invocation span that the extension flushes in
the background. Two loads, the two sandboxes interleaved:
- single requests, one at a time, while all 16 workers hold a `/next` (the proxy holds 16
  long polls): each invocation's `runtimeMs` (Lambda's clock: the event handed to a worker →
  its response complete) is one sample;
- bursts of 16 at once (`POST /invoke-many`): the same per invocation, the queueing of 16
  workers on one CPU included.
p50 and p99 of each, and the differences.

usage: lmi_bench.py [--bursts N]   (default 60; OTEL_XRAY_LAYER and OTEL_XRAY_BIN_DIR as for the
e2e tests; `make bench` sets them)
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

from lam import LocalLambda  # noqa: E402
from propagation_bench import MINI_RUNTIME  # noqa: E402
from xray.daemon import DaemonListener  # noqa: E402

CONCURRENCY = 16

# N workers (AWS_LAMBDA_MAX_CONCURRENCY), each propagation_bench's minimal runtime (next,
# respond, repeat, on its own keep-alive connection), as awslambdaric's multi-process mode does.
WORKERS_RUNTIME = r"""
import os
for _ in range(int(os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY", "1")) - 1):
    if os.fork() == 0:
        break
""" + MINI_RUNTIME


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bursts", type=int, default=60)
    ap.add_argument("--singles", type=int, default=400)
    args = ap.parse_args()
    one_cpu = {sorted(os.sched_getaffinity(0))[0]}
    os.sched_setaffinity(0, one_cpu)
    runtime = [sys.executable, "-c", WORKERS_RUNTIME]
    samples = {"proxy": [], "direct": []}
    singles = {"proxy": [], "direct": []}
    failures = {"proxy": 0, "direct": 0}
    with tempfile.TemporaryDirectory(prefix="lmibench-") as tmp:
        daemon = DaemonListener()
        made = {}
        try:
            for name in ("proxy", "direct"):
                log_dir = os.path.join(tmp, name)
                os.makedirs(log_dir)
                env = {"AWS_XRAY_DAEMON_ADDRESS": daemon.address, "OTEL_XRAY_LOG_LEVEL": "warn"}
                if name == "direct":
                    env["OTEL_XRAY_PROXY"] = "false"
                made[name] = LocalLambda(log_dir, runtime, env=env, function_name="lmi-bench",
                                         managed_instances=CONCURRENCY, timeout_ms=10000,
                                         active_tracing=True)
            for lam in made.values():  # warm: every worker polling, the proxy's pool filled
                for _ in range(5):
                    lam.invoke(many=[{}] * CONCURRENCY)
            for _ in range(args.singles):
                for name, lam in made.items():
                    result = lam.invoke({})
                    if result.get("status") != "success":
                        failures[name] += 1
                        continue
                    singles[name].append(result["timings"]["runtimeMs"])
            for _ in range(args.bursts):
                for name, lam in made.items():
                    for result in lam.invoke(many=[{}] * CONCURRENCY):
                        if result.get("status") != "success":
                            failures[name] += 1
                            continue
                        samples[name].append(result["timings"]["runtimeMs"])
                time.sleep(0.01)
            spans = len(daemon.drain())
        finally:
            for lam in made.values():
                lam.close()
            daemon.close()
    p = {name: (statistics.median(v), percentile(v, 99)) for name, v in samples.items() if v}
    q = {name: (statistics.median(v), percentile(v, 99)) for name, v in singles.items() if v}
    print()
    print("otel-xray on Managed Instances, %s: %d workers, bursts of %d, %d bursts a sandbox, "
          "everything on CPU %d" % (time.strftime("%Y-%m-%d %H:%M"), CONCURRENCY, CONCURRENCY,
                                    args.bursts, min(one_cpu)))
    print()
    print("| figure | p50 | p99 |")
    print("|---|---|---|")
    print("| single request through the proxy, 16 workers polling (runtimeMs, %d samples) | %.3f ms | %.3f ms |"
          % (len(singles["proxy"]), q["proxy"][0], q["proxy"][1]))
    print("| single request direct, OTEL_XRAY_PROXY=false (%d samples) | %.3f ms | %.3f ms |"
          % (len(singles["direct"]), q["direct"][0], q["direct"][1]))
    print("| added by the proxy, single requests | %+.3f ms | %+.3f ms |"
          % (q["proxy"][0] - q["direct"][0], q["proxy"][1] - q["direct"][1]))
    print("| burst of 16 through the proxy (runtimeMs, %d samples) | %.3f ms | %.3f ms |"
          % (len(samples["proxy"]), p["proxy"][0], p["proxy"][1]))
    print("| burst of 16 direct, OTEL_XRAY_PROXY=false (%d samples) | %.3f ms | %.3f ms |"
          % (len(samples["direct"]), p["direct"][0], p["direct"][1]))
    print("| added by the proxy, bursts of 16 | %+.3f ms | %+.3f ms |"
          % (p["proxy"][0] - p["direct"][0], p["proxy"][1] - p["direct"][1]))
    print()
    print("(failed or rejected invocations: proxy %d, direct %d; documents the daemon stand-in "
          "received: %d)" % (failures["proxy"], failures["direct"], spans))


if __name__ == "__main__":
    main()
