// Sample Node.js function for the otel-xray layer: the OpenTelemetry SDK, nothing X-Ray specific.
//
// The wrapper (AWS_LAMBDA_EXEC_WRAPPER=/opt/otel-xray-wrapper) has pointed the OTLP exporter at
// the extension on 127.0.0.1:4318 (OTEL_EXPORTER_OTLP_ENDPOINT, which the exporter reads) and set
// OTEL_SERVICE_NAME and the Lambda resource attributes (OTEL_RESOURCE_ATTRIBUTES, which the
// environment detector reads). Two things are Lambda-specific: continue the trace Lambda hands the
// runtime (_X_AMZN_TRACE_ID) with the X-Ray propagator, and flush the provider before returning,
// so that the extension has every span before Lambda freezes the sandbox.
'use strict';
const api = require('@opentelemetry/api');
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { defaultResource, detectResources, envDetector } = require('@opentelemetry/resources');
const { AWSXRayPropagator } = require('@opentelemetry/propagator-aws-xray');

const provider = new NodeTracerProvider({
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the wrapper's Lambda attributes).
  resource: defaultResource().merge(detectResources({ detectors: [envDetector] })),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
});
provider.register();
const tracer = api.trace.getTracer('orders');
const xray = new AWSXRayPropagator();

exports.handler = async (event, context) => {
  const carrier = { 'x-amzn-trace-id': process.env._X_AMZN_TRACE_ID || '' };
  const parent = xray.extract(api.context.active(), carrier, api.defaultTextMapGetter);
  const orderId = String((event && event.order_id) || 'o-1');
  try {
    return await tracer.startActiveSpan('handle-order', {
      kind: api.SpanKind.SERVER,
      attributes: { 'faas.invocation_id': context.awsRequestId, 'order.id': orderId },
    }, parent, async (server) => {
      try {
        // An outgoing HTTP call: a remote subsegment with its http block.
        const get = tracer.startSpan('GET', {
          kind: api.SpanKind.CLIENT,
          attributes: {
            'http.request.method': 'GET',
            'url.full': `https://inventory.example.com/items/${orderId}`,
            'http.response.status_code': 200,
          },
        });
        get.end();
        // An AWS SDK call: an `aws` subsegment named after the service.
        const put = tracer.startSpan('DynamoDB.PutItem', {
          kind: api.SpanKind.CLIENT,
          attributes: { 'rpc.system': 'aws-api', 'rpc.service': 'DynamoDB', 'rpc.method': 'PutItem' },
        });
        put.end();
        return { order_id: orderId, status: 'accepted' };
      } finally {
        server.end();
      }
    });
  } finally {
    await provider.forceFlush();
  }
};
