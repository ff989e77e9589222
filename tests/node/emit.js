// Sends a small, known trace through the real Node.js OpenTelemetry SDK over OTLP/HTTP JSON
// (the exporter sends the body chunked) and prints the trace id.
// usage: node emit.js <traces-url> <label>
'use strict';
const { BasicTracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const api = require('@opentelemetry/api');

async function main() {
  const [url, label] = process.argv.slice(2);
  const exporter = new OTLPTraceExporter({ url });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': `node-${label}` }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('node-emit');
  const root = tracer.startSpan('POST /checkout', {
    kind: api.SpanKind.SERVER,
    attributes: {
      'http.method': 'POST',
      'http.scheme': 'https',
      'http.host': 'shop.example.com',
      'http.target': '/checkout',
      'http.status_code': 429,
      'http.user_agent': 'node-test',
      'cart.size': 3,
    },
  });
  const ctx = api.trace.setSpan(api.context.active(), root);
  const child = tracer.startSpan('SELECT shop.carts', {
    kind: api.SpanKind.CLIENT,
    attributes: {
      'db.system': 'postgresql',
      'db.name': 'shop',
      'db.statement': 'SELECT * FROM carts WHERE id = $1',
      'net.peer.name': 'db.internal',
      'db.user': 'app',
    },
  }, ctx);
  child.end();
  root.end();
  await provider.forceFlush();
  await provider.shutdown();
  process.stdout.write(root.spanContext().traceId + '\n');
}

main().catch((e) => { console.error(e); process.exit(1); });
