"""Propagation costs, printed as a table (a benchmark, not a test: it asserts nothing).

1. Wrapper start-up: exec of `otel-xray-wrapper /bin/true` against `/bin/true` directly, with a
   Lambda-like environment; once with nobody on the proxy port (a refused connect) and once
   with the real extension's proxy answering the health check. Median of many runs, interleaved.
2. Per-invocation proxy overhead: the runtime's share of invocations (invoke -> response
   complete, on Lambda's clock: what the caller waits for), and the post-runtime share, on the local Lambda (with the extension)
   of a minimal runtime (a keep-alive Runtime API loop that answers `{}`, so the function's own
   work does not bury the difference) through the wrapper, once with the Runtime API proxy
   (default) and once with `OTEL_XRAY_PROXY=false` (the runtime talks to Lambda directly). The
   proxy's share includes its invocation span. Median of many invocations, interleaved.

Targets: start-up overhead <= 2 ms, proxy overhead <= 200 us a invocation.

usage: propagation_bench.py [--runs N] [--invocations N]
(uses OTEL_XRAY_LAYER and OTEL_XRAY_BIN_DIR like the e2e tests; `make bench` sets them)
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

from lam import LAYER, LocalLambda, free_ports  # noqa: E402
from xray.daemon import DaemonListener  # noqa: E402

LAMBDA_ENV = {
    "PATH": "/usr/bin:/bin",
    "AWS_LAMBDA_FUNCTION_NAME": "bench",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
    "AWS_REGION": "us-east-1",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bench",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/22/[$LATEST]0123456789abcdef",
    "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
    "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
    "LAMBDA_TASK_ROOT": "/var/task",
}


# The smallest real Runtime API client: next, respond, repeat, on one keep-alive connection.
MINI_RUNTIME = r"""
import http.client, os
conn = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse(); r.read()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    conn.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid, body=b"{}",
                 headers={"content-type": "application/json"})
    conn.getresponse().read()
"""

QUIET = [(os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)]


def spawn_ns(argv, env):
    """Wall time of fork/exec/wait of argv, in nanoseconds; the command must succeed."""
    start = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=QUIET)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter_ns() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("%s exited with %s" % (argv, status))
    return elapsed


def startup(runs, proxy_port):
    """Medians (ms) of the runtime alone, through the wrapper with no proxy, and with the proxy."""
    wrapper = os.path.join(LAYER, "otel-xray-wrapper")
    true = "/bin/true"
    (closed,) = free_ports(1)
    direct, no_proxy, with_proxy = [], [], []
    env_closed = dict(LAMBDA_ENV, OTEL_XRAY_PROXY_PORT=str(closed))
    env_proxy = dict(LAMBDA_ENV, OTEL_XRAY_PROXY_PORT=str(proxy_port))
    for _ in range(20):  # warm the page cache
        spawn_ns([wrapper, true], env_proxy)
    for _ in range(runs):
        direct.append(spawn_ns([true], LAMBDA_ENV))
        no_proxy.append(spawn_ns([wrapper, true], env_closed))
        with_proxy.append(spawn_ns([wrapper, true], env_proxy))
    return [statistics.median(x) / 1e6 for x in (direct, no_proxy, with_proxy)]


def invocations(lam_proxy, lam_direct, n):
    """Medians (ms, Lambda's clock) through the proxy and direct: the runtime's share (invoke ->
    response complete, what the caller waits for) and the post-runtime share (response ->
    every extension back in event/next)."""
    through, direct, through_post, direct_post = [], [], [], []
    for i in range(10):  # warm both
        lam_proxy.invoke({"order_id": "w%d" % i})
        lam_direct.invoke({"order_id": "w%d" % i})
    for i in range(n):
        for lam, out, post in ((lam_proxy, through, through_post),
                               (lam_direct, direct, direct_post)):
            result = lam.invoke({"order_id": "b%d" % i})
            if result["status"] != "success":
                raise RuntimeError("invocation failed: %s" % result)
            out.append(result["timings"]["runtimeMs"])
            post.append(result["timings"]["postRuntimeMs"])
    return [statistics.median(x) for x in (through, direct, through_post, direct_post)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--invocations", type=int, default=300)
    args = ap.parse_args()
    runtime = [sys.executable, "-c", MINI_RUNTIME]
    with tempfile.TemporaryDirectory(prefix="propbench-") as tmp:
        daemon = DaemonListener()
        made = []
        try:
            for name in ("proxy", "direct"):
                log_dir = os.path.join(tmp, name)
                os.makedirs(log_dir)
                env = {"AWS_XRAY_DAEMON_ADDRESS": daemon.address, "OTEL_XRAY_LOG_LEVEL": "warn"}
                if name == "direct":
                    env["OTEL_XRAY_PROXY"] = "false"
                made.append(LocalLambda(log_dir, runtime, env=env, function_name="bench"))
            lam_proxy, lam_direct = made
            # The proxy's health check is what the wrapper asks before using it.
            proxied = True
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/otel-xray/health"
                                       % lam_proxy.ports["proxy"], timeout=2).read()
            except OSError:
                proxied = False
            direct_ms, no_proxy_ms, proxy_ms = startup(args.runs, lam_proxy.ports["proxy"])
            through_ms, plain_ms, through_post, plain_post = invocations(
                lam_proxy, lam_direct, args.invocations)
            daemon.drain()
        finally:
            for lam in made:
                lam.close()
            daemon.close()

    rows = [
        ("exec /bin/true directly", "%.3f ms" % direct_ms, ""),
        ("  through the wrapper, no proxy listening", "%.3f ms" % no_proxy_ms,
         "+%.3f ms" % (no_proxy_ms - direct_ms)),
        ("  through the wrapper, proxy answering", "%.3f ms" % proxy_ms,
         "+%.3f ms (target <= 2 ms)" % (proxy_ms - direct_ms)),
        ("invocation, runtime <-> Lambda: invoke -> response", "%.3f ms" % plain_ms, ""),
        ("  runtime <-> proxy <-> Lambda", "%.3f ms" % through_ms,
         "%+.0f us (target <= 200 us)" % ((through_ms - plain_ms) * 1000)),
        ("post-runtime (extension), direct", "%.3f ms" % plain_post, ""),
        ("  with the proxy", "%.3f ms" % through_post,
         "%+.0f us" % ((through_post - plain_post) * 1000)),
    ]
    width = max(len(r[0]) for r in rows)
    print("propagation bench (%d execs, %d invocations each, medians; proxy answering: %s)"
          % (args.runs, args.invocations, "yes" if proxied else "NO"))
    for name, value, delta in rows:
        print("  %-*s  %10s  %s" % (width, name, value, delta))


if __name__ == "__main__":
    main()
