"""A Python Lambda function instrumented with the OpenTelemetry SDK, run by the real awslambdaric.

It exports over the protocol in OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf or grpc) to the
extension, continues the X-Ray trace Lambda hands the runtime, and flushes before returning.
"""
import os
import time

from opentelemetry import trace
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


def handler(event, context):
    carrier = {"X-Amzn-Trace-Id": os.environ.get("_X_AMZN_TRACE_ID", "")}
    parent = _propagator.extract(carrier)
    order_id = event.get("order_id", "o-1")
    with _tracer.start_as_current_span(
        "handle-order",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"faas.invocation_id": context.aws_request_id, "order.id": order_id},
    ) as server:
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
    return {"order_id": order_id, "status": "accepted"}
