"""Sends a small, known trace through the real Python OpenTelemetry SDK and exits.

usage: sdk_emit.py <http/protobuf|grpc> <endpoint> <trace-label>
Prints the trace id (32 hex) on stdout.
"""
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def main():
    protocol, endpoint, label = sys.argv[1], sys.argv[2], sys.argv[3]
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"py-{label}", "cloud.account.id": "123456789012"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("sdk-emit")
    with tracer.start_as_current_span(
        "GET /orders/{id}",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "url.full": "https://api.example.com/orders/42",
            "http.response.status_code": 503,
            "user_agent.original": "curl/8.0",
            "client.address": "198.51.100.7",
            "enduser.id": "alice",
            "order.id": "42",
        },
    ) as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span(
            "DynamoDB.GetItem",
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "aws-api",
                "rpc.service": "DynamoDB",
                "rpc.method": "GetItem",
                "aws.region": "eu-west-1",
                "aws.dynamodb.table_names": ["orders"],
            },
        ):
            pass
        with tracer.start_as_current_span("load-order") as span:
            try:
                raise KeyError("order 42 missing")
            except KeyError as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, "missing"))
        root.set_status(Status(StatusCode.ERROR))
    provider.force_flush()
    provider.shutdown()
    print(trace_id)


if __name__ == "__main__":
    main()
