"""A Python function that sets up the OpenTelemetry SDK in its own code with the default OTLP/HTTP
exporter, as the layer's README and examples/python-function do, and force_flushes before it
returns. With the wrapper and an extension that answers, the wrapper's OTEL_EXPORTER_OTLP_ENDPOINT
points that exporter at the extension; without either, the exporter goes to its default
(localhost:4318) or wherever the user's own environment says.

Its response reports how long the flush took and the environment the runtime was started with
(the variables the wrapper may set), so the tests see what the wrapper decided from the
function's side."""
import os
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider = TracerProvider()
_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(_provider)
_tracer = trace.get_tracer("failopen-function")

WATCHED = ("OTEL_", "PYTHONPATH", "AWS_LAMBDA_RUNTIME_API", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS")


def watched_env():
    return {k: v for k, v in os.environ.items() if k.startswith(WATCHED)}


def handler(event, context):
    with _tracer.start_as_current_span("failopen-work", attributes={"order.id": event.get("order_id", "")}):
        pass
    started = time.monotonic()
    flushed = _provider.force_flush()
    return {
        "order_id": event.get("order_id"),
        "status": "accepted",
        "flushed": flushed,
        "flush_s": round(time.monotonic() - started, 3),
        "env": watched_env(),
    }
