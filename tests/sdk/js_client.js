// Drive the real @statsig/js-client under Node, logging enabled: it posts to the sidecar's
// /v1/rgstr?k=<client key>&... (gzip marked only by gz=1 when "compression" is "forced").
// node js_client.js '{"key", "log_event_url", "api", "users", "events", "gates", "configs", "compression"}'
// Prints {"logged": n}.
const { StatsigClient } = require('@statsig/js-client');

async function main() {
  const spec = JSON.parse(process.argv[2]);
  let logged = 0;
  for (const uid of spec.users || []) {
    const client = new StatsigClient(spec.key, { userID: uid, email: `${uid}@example.com`, custom: { plan: 'pro' } }, {
      networkConfig: { api: spec.api, logEventUrl: spec.log_event_url, initializeHashAlgorithm: 'none' },
      loggingEnabled: 'always',
      logEventCompressionMode: spec.compression || 'disabled',
      logLevel: 0,
    });
    await client.initializeAsync();
    for (const gate of spec.gates || []) { client.checkGate(gate); logged++; }
    for (const config of spec.configs || []) { client.getDynamicConfig(config); logged++; }
    for (const e of spec.events || []) { client.logEvent(e.name, e.value, e.metadata); logged++; }
    await client.shutdown();
  }
  console.log(JSON.stringify({ logged }));
}

main().catch((e) => { console.error(e); process.exit(1); });
