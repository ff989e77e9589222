// Calls the handler of examples/node-function once, in this process, the way the Node.js runtime
// would: the environment (OTEL_*, _X_AMZN_TRACE_ID) comes from the caller, as Lambda's does.
// usage: node node_invoke.js <function-dir> <event-json> <request-id>; prints the result as JSON.
'use strict';
const path = require('path');

async function main() {
  const [dir, eventJson, requestId] = process.argv.slice(2);
  const { handler } = require(path.resolve(dir, 'index.js'));
  const result = await handler(JSON.parse(eventJson), { awsRequestId: requestId });
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => { console.error(e); process.exit(1); });
