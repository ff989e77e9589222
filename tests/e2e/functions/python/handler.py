"""A Python Lambda function instrumented with the OpenTelemetry SDK, run by the real awslambdaric.

It exports over the protocol in OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf or grpc) to the
extension, continues the X-Ray trace Lambda hands the runtime, and flushes before returning.

Its response reports what it saw (`seen`): the trace header, the context its SERVER span
continued, the W3C baggage of the event's HTTP headers and AWS_LAMBDA_RUNTIME_API, so tests check
propagation from the function's side too.
"""
import os
import time

from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    _exporter = OTLPSpanExporter(
        endpoint=os.environ.get("OTEL_XRAY_TEST_GRPC_ENDPOINT", "http://127.0.0.1:4317"), insecure=True
    )
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    _exporter = OTLPSpanExporter()

_provider = TracerProvider(resource=Resource.create())
_provider.add_span_processor(BatchSpanProcessor(_exporter))
trace.set_tracer_provider(_provider)
_tracer = trace.get_tracer("python-function")
_propagator = AwsXRayPropagator()


def _baggage_of(event):
    """W3C baggage of an HTTP-triggered event (API Gateway, ALB, function URL)."""
    headers = event.get("headers") if isinstance(event, dict) else None
    if not isinstance(headers, dict):
        return {}
    carrier = {str(k).lower(): v for k, v in headers.items()}
    ctx = W3CBaggagePropagator().extract(carrier)
    return {k: str(v) for k, v in otel_baggage.get_all(ctx).items()}


def handler(event, context):
    trace_header = os.environ.get("_X_AMZN_TRACE_ID", "")
    carrier = {"X-Amzn-Trace-Id": trace_header}
    parent = _propagator.extract(carrier)
    if not isinstance(event, dict):
        event = {}
    parent_span = trace.get_current_span(parent).get_span_context()
    order_id = event.get("order_id", "o-1")
    with _tracer.start_as_current_span(
        "handle-order",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"faas.invocation_id": context.aws_request_id, "order.id": order_id},
    ) as server:
        server_ctx = server.get_span_context()
        with _tracer.start_as_current_span(
            "GET",
            kind=SpanKind.CLIENT,
            attributes={
                "http.method": "GET",
                "http.url": f"https://inventory.example.com/items/{order_id}",
                "http.status_code": 200,
            },
        ):
            time.sleep(0.002)
        with _tracer.start_as_current_span(
            "SQS.SendMessage",
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "aws-api",
                "rpc.service": "SQS",
                "rpc.method": "SendMessage",
                "aws.region": "us-east-1",
                "messaging.url": "https://sqs.us-east-1.amazonaws.com/123456789012/orders",
            },
        ):
            pass
        with _tracer.start_as_current_span("validate", attributes={"order.id": order_id}) as span:
            if event.get("fail"):
                try:
                    raise ValueError("order rejected")
                except ValueError as exc:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    server.set_status(Status(StatusCode.ERROR, str(exc)))
    _provider.force_flush()
    if event.get("sleep_s"):
        time.sleep(float(event["sleep_s"]))
    if event.get("crash"):
        os._exit(3)
    seen = {
        "trace_header": trace_header,
        "trace_id": "%032x" % server_ctx.trace_id,
        "span_id": "%016x" % server_ctx.span_id,
        "parent_id": "%016x" % parent_span.span_id if parent_span.is_valid else None,
        "sampled": bool(server_ctx.trace_flags.sampled),
        "baggage": _baggage_of(event),
        "runtime_api": os.environ.get("AWS_LAMBDA_RUNTIME_API"),
    }
    return {"order_id": order_id, "status": "accepted", "seen": seen}
