// Drive the real @statsig/statsig-node-core (zstd bodies): event URL at the sidecar, specs at the fake.
// node node_core.js '{"key", "log_event_url", "specs_url", "users", "events", "gates", "configs"}'
// Same behaviour as python_core.py; prints {"logged": n}.
const { Statsig, StatsigUser } = require('@statsig/statsig-node-core');

async function main() {
  const spec = JSON.parse(process.argv[2]);
  const statsig = new Statsig(spec.key, {
    logEventUrl: spec.log_event_url,
    specsUrl: spec.specs_url,
    outputLogLevel: 'none',
    disableCountryLookup: true,
  });
  await statsig.initialize();
  let logged = 0;
  for (const uid of spec.users || []) {
    const user = new StatsigUser({ userID: uid, email: `${uid}@example.com`, custom: { plan: 'pro' } });
    for (const gate of spec.gates || []) { statsig.checkGate(user, gate); logged++; }
    for (const config of spec.configs || []) { statsig.getDynamicConfig(user, config); logged++; }
    for (const e of spec.events || []) { statsig.logEvent(user, e.name, e.value, e.metadata); logged++; }
  }
  await statsig.shutdown();
  console.log(JSON.stringify({ logged }));
}

main().catch((e) => { console.error(e); process.exit(1); });
