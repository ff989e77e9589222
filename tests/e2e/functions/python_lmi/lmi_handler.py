"""The Python test function (functions/python/handler.py) with what the Lambda Managed
Instances fault tests need on top, run by awslambdaric in its multi-concurrent mode (one forked
worker process per AWS_LAMBDA_MAX_CONCURRENCY, each polling /next one request at a time).

Event keys, besides those of handler.py (`order_id`, `sleep_s` after its spans are flushed,
`crash`, which ends this worker only):
- `kill_runtime_after_s`: after the spans are flushed, wait that long, then SIGKILL the
  runtime's main process (the parent of every worker, the process Lambda started): the runtime
  crashes as a whole while the other workers' invocations are in flight.

The response adds `pid` and `ppid`, so tests see which worker served which request.
"""
import os
import signal
import time

from handler import handler as _function


def handler(event, context):
    kill_after = event.pop("kill_runtime_after_s", None) if isinstance(event, dict) else None
    result = _function(event, context)
    if kill_after is not None:
        time.sleep(float(kill_after))
        os.kill(os.getppid(), signal.SIGKILL)
        os._exit(137)
    result["pid"] = os.getpid()
    result["ppid"] = os.getppid()
    return result
