// A Node.js Lambda function instrumented with the OpenTelemetry SDK, run by the real
// aws-lambda-ric@3. It exports over OTLP/HTTP (JSON) to OTEL_EXPORTER_OTLP_ENDPOINT (the
// extension, as the wrapper sets it), continues the X-Ray trace header the runtime hands it
// (_X_AMZN_TRACE_ID), makes a SERVER span with two children, flushes before returning, and
// reports what it saw (`seen`): the trace header, the context its SERVER span continued, the W3C
// baggage of the event's HTTP headers and AWS_LAMBDA_RUNTIME_API.
'use strict';
const api = require('@opentelemetry/api');
const { W3CBaggagePropagator } = require('@opentelemetry/core');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { AWSXRayPropagator } = require('@opentelemetry/propagator-aws-xray');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');

const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({
    'service.name': process.env.OTEL_SERVICE_NAME || 'node-function',
  }),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
});
provider.register();
const tracer = api.trace.getTracer('node-function');
const xray = new AWSXRayPropagator();
const baggagePropagator = new W3CBaggagePropagator();

function baggageOf(event) {
  const headers = event && typeof event.headers === 'object' && event.headers ? event.headers : {};
  const carrier = {};
  for (const [k, v] of Object.entries(headers)) carrier[k.toLowerCase()] = v;
  const ctx = baggagePropagator.extract(api.ROOT_CONTEXT, carrier, api.defaultTextMapGetter);
  const bag = api.propagation.getBaggage(ctx);
  const out = {};
  if (bag) for (const [k, entry] of bag.getAllEntries()) out[k] = entry.value;
  return out;
}

exports.handler = async (event, context) => {
  const traceHeader = process.env._X_AMZN_TRACE_ID || '';
  const parent = xray.extract(api.ROOT_CONTEXT, { 'x-amzn-trace-id': traceHeader },
    api.defaultTextMapGetter);
  const parentSpan = api.trace.getSpanContext(parent);
  const orderId = (event && event.order_id) || 'o-1';
  const server = tracer.startSpan('handle-order', {
    kind: api.SpanKind.SERVER,
    attributes: { 'faas.invocation_id': context.awsRequestId, 'order.id': orderId },
  }, parent);
  const inside = api.trace.setSpan(parent, server);
  const get = tracer.startSpan('GET', {
    kind: api.SpanKind.CLIENT,
    attributes: {
      'http.request.method': 'GET',
      'url.full': `https://inventory.example.com/items/${orderId}`,
      'server.address': 'inventory.example.com',
      'http.response.status_code': 200,
    },
  }, inside);
  await new Promise((resolve) => setTimeout(resolve, 2));
  get.end();
  tracer.startSpan('validate', { attributes: { 'order.id': orderId } }, inside).end();
  server.end();
  await provider.forceFlush();
  const sc = server.spanContext();
  return {
    order_id: orderId,
    status: 'accepted',
    seen: {
      trace_header: traceHeader,
      trace_id: sc.traceId,
      span_id: sc.spanId,
      parent_id: parentSpan && api.isSpanContextValid(parentSpan) ? parentSpan.spanId : null,
      sampled: (sc.traceFlags & api.TraceFlags.SAMPLED) === api.TraceFlags.SAMPLED,
      baggage: baggageOf(event),
      runtime_api: process.env.AWS_LAMBDA_RUNTIME_API || null,
    },
  };
};
