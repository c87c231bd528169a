// Offline checks of the manifests (no cluster): every document against the Kubernetes schemas
// (kubernetes-models), then what the schemas cannot know about qtrain — the probes name the
// server's health services, every flag in the container's args exists in the server, and the
// termination grace period covers the drain and the final checkpoints.
//   node validate.js QTRAIN_SERVER_HELP_FILE
'use strict';
const fs = require('fs');
const path = require('path');
const yaml = require('js-yaml');

const helpText = fs.readFileSync(process.argv[2], 'utf8');
const dir = __dirname;
const kustomization = yaml.load(fs.readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8'));
const failures = [];
const fail = (what) => failures.push(what);

function modelFor(doc) {
  const [group, version] = doc.apiVersion.includes('/') ? doc.apiVersion.split('/') : ['', doc.apiVersion];
  const module = group ? `kubernetes-models/${group}/${version}/${doc.kind}` : `kubernetes-models/${version}/${doc.kind}`;
  return require(module)[doc.kind];
}

let documents = 0;
for (const file of kustomization.resources) {
  for (const doc of yaml.loadAll(fs.readFileSync(path.join(dir, file), 'utf8'))) {
    if (!doc) continue;
    ++documents;
    const where = `${file}: ${doc.kind} ${doc.metadata && doc.metadata.name}`;
    try {
      new (modelFor(doc))(doc).validate();
    } catch (e) {
      fail(`${where}: ${e.message}`);
      continue;
    }
    if (doc.kind !== 'StatefulSet') continue;
    const pod = doc.spec.template.spec;
    const server = pod.containers.find((c) => c.name === 'qtrain-server');
    if (!server) { fail(`${where}: no qtrain-server container`); continue; }
    const probes = { startupProbe: 'startup', livenessProbe: 'liveness', readinessProbe: 'readiness' };
    for (const [probe, service] of Object.entries(probes)) {
      const p = server[probe];
      if (!p || !p.grpc || p.grpc.service !== service) fail(`${where}: ${probe} must be gRPC service "${service}"`);
    }
    const flags = {};
    const args = server.args.map((a) => a.replace(/\s+#.*$/, ''));
    for (const arg of args) {
      const m = /^--([a-z_]+)=(.*)$/.exec(arg);
      if (!m) { fail(`${where}: arg ${arg} is not --flag=value`); continue; }
      if (!helpText.includes(`--${m[1]} `) && !helpText.includes(`-${m[1]} `)) {
        fail(`${where}: qtrain-server has no flag --${m[1]}`);
      }
      flags[m[1]] = m[2];
    }
    const needed = Number(flags.drain_grace_seconds || 0) + Number(flags.shutdown_deadline_seconds || 30) + 30;
    if (pod.terminationGracePeriodSeconds < needed) {
      fail(`${where}: terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} < drain + deadline + 30 s for checkpoints (${needed})`);
    }
    // The server's own rules, checked before a pod would crash-loop on them: a network listen
    // needs authentication (and tokens need TLS); probes cannot speak TLS, so with TLS they go
    // to the plaintext --health_listen port; every file a flag names is on a mounted volume.
    const loopback = /^(127\.|localhost|\[::1\])/.test(flags.listen || '127.0.0.1');
    if (!loopback && !flags.auth_tokens && flags.allow_insecure !== 'true') {
      fail(`${where}: --listen=${flags.listen} without --auth_tokens: the server refuses to start`);
    }
    if (flags.auth_tokens && !flags.tls_cert) fail(`${where}: --auth_tokens needs --tls_cert`);
    const healthPort = flags.health_listen ? Number(flags.health_listen.split(':').pop()) : null;
    for (const probe of Object.keys(probes)) {
      const p = server[probe];
      if (flags.tls_cert && p && p.grpc && p.grpc.port !== healthPort) {
        fail(`${where}: ${probe} on port ${p.grpc.port}: with TLS, probes need --health_listen's port`);
      }
    }
    const mounts = (server.volumeMounts || []).map((m) => m.mountPath);
    for (const flag of ['tls_cert', 'tls_key', 'tls_client_ca', 'auth_tokens']) {
      if (flags[flag] && !mounts.some((m) => flags[flag].startsWith(`${m}/`))) {
        fail(`${where}: --${flag}=${flags[flag]} is on no volume mount`);
      }
    }
    if (!server.securityContext || server.securityContext.readOnlyRootFilesystem !== true) {
      fail(`${where}: the root file system must be read-only`);
    }
  }
}
if (failures.length) {
  for (const f of failures) console.error(`deploy/kubernetes: ${f}`);
  process.exit(1);
}
console.log(`deploy/kubernetes: ${documents} documents valid`);
