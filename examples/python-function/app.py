"""Sample Python function for the otel-xray layer: the OpenTelemetry SDK, nothing X-Ray specific.

The wrapper (AWS_LAMBDA_EXEC_WRAPPER=/opt/otel-xray-wrapper) has already pointed the SDK's OTLP
exporter at the extension on 127.0.0.1:4318 (OTEL_EXPORTER_OTLP_ENDPOINT) and set the service
name and Lambda resource attributes (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), so the SDK is
configured with its defaults. Two things are Lambda-specific:
- continue the trace Lambda hands the runtime (`_X_AMZN_TRACE_ID`), with the X-Ray propagator;
- flush the provider before returning, so the extension has every span before Lambda freezes
  the sandbox (the extension exports them right after the response is sent).
"""
import os
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

provider = TracerProvider(resource=Resource.create())
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("orders")
propagator = AwsXRayPropagator()


def handler(event, context):
    parent = propagator.extract({"X-Amzn-Trace-Id": os.environ.get("_X_AMZN_TRACE_ID", "")})
    order_id = str(event.get("order_id", "o-1"))
    try:
        with tracer.start_as_current_span(
            "handle-order",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"faas.invocation_id": context.aws_request_id, "order.id": order_id},
        ) as server:
            # An outgoing HTTP call (semantic conventions: it becomes a remote subsegment).
            with tracer.start_as_current_span(
                "GET",
                kind=SpanKind.CLIENT,
                attributes={
                    "http.request.method": "GET",
                    "url.full": f"https://inventory.example.com/items/{order_id}",
                    "http.response.status_code": 200,
                },
            ):
                time.sleep(0.002)
            # An AWS SDK call (rpc.system=aws-api: an `aws` subsegment named after the service).
            with tracer.start_as_current_span(
                "DynamoDB.PutItem",
                kind=SpanKind.CLIENT,
                attributes={
                    "rpc.system": "aws-api",
                    "rpc.service": "DynamoDB",
                    "rpc.method": "PutItem",
                    "aws.dynamodb.table_names": ["orders"],
                },
            ):
                pass
            with tracer.start_as_current_span("validate", attributes={"order.id": order_id}) as span:
                if event.get("fail"):
                    error = ValueError("order rejected")
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, str(error)))
                    server.set_status(Status(StatusCode.ERROR, str(error)))
    finally:
        provider.force_flush()
    return {"order_id": order_id, "status": "rejected" if event.get("fail") else "accepted"}
