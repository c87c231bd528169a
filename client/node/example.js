// qtrain from Node.js with @grpc/grpc-js and @grpc/proto-loader, straight from proto/: the
// .proto files are the whole contract. Trains a Fashion-MNIST MLP a few steps in float, then
// with int8 QAT, evaluates, and prints the quant stats.
//
//   node example.js [--server=127.0.0.1:50051] [--steps=40]
//                   [--tls_ca=CA.pem [--tls_cert=C.pem --tls_key=C.key]]   (or $QTRAIN_TLS_*)
//                   [--token=TOKEN]   (or $QTRAIN_TOKEN: a server with --auth_tokens; TLS only)
'use strict';

const path = require('path');
const fs = require('fs');
const zlib = require('zlib');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=')));
const server = args.server || process.env.QTRAIN_SERVER || '127.0.0.1:50051';
const steps = Number(args.steps || 40);
const BATCH = 64;
const FM = '/usr/share/datasets/fashion-mnist';

const definition = protoLoader.loadSync('qtrain/v1/trainer_service.proto', {
  includeDirs: [path.join(__dirname, '..', '..', 'proto')],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
});
const { Trainer } = grpc.loadPackageDefinition(definition).qtrain.v1;
// TLS when a CA is given ("system": Node's roots), with a client certificate for mutual TLS.
const tlsCa = args.tls_ca || process.env.QTRAIN_TLS_CA;
const tlsCert = args.tls_cert || process.env.QTRAIN_TLS_CERT;
const tlsKey = args.tls_key || process.env.QTRAIN_TLS_KEY;
const token = args.token || process.env.QTRAIN_TOKEN;
if (token && !tlsCa) throw new Error('--token needs --tls_ca: credentials never travel in plaintext');
let credentials = tlsCa
  ? grpc.credentials.createSsl(tlsCa === 'system' ? null : fs.readFileSync(tlsCa),
                               tlsKey ? fs.readFileSync(tlsKey) : null,
                               tlsCert ? fs.readFileSync(tlsCert) : null)
  : grpc.credentials.createInsecure();
if (token) {  // "authorization: Bearer <token>" with every call
  credentials = grpc.credentials.combineChannelCredentials(credentials,
    grpc.credentials.createFromMetadataGenerator((_, done) => {
      const metadata = new grpc.Metadata();
      metadata.set('authorization', `Bearer ${token}`);
      done(null, metadata);
    }));
}
const client = new Trainer(server, credentials);

// Every call that names a session carries it in the "qtrain-session" header too: a
// consistent-hash proxy in front of several servers routes on it (deploy/nginx).
const route = (sessionId) => {
  const metadata = new grpc.Metadata();
  if (sessionId) metadata.set('qtrain-session', sessionId);
  return metadata;
};

// Unary calls as promises.
const call = (method, request) =>
  new Promise((resolve, reject) =>
    client[method](request, route(request.session_id),
                   (err, response) => (err ? reject(err) : resolve(response))));

// An IDX file (gzipped) as { dims, bytes }.
function readIdx(file) {
  const raw = zlib.gunzipSync(fs.readFileSync(file));
  const rank = raw[3];
  const dims = Array.from({ length: rank }, (_, i) => raw.readUInt32BE(4 + 4 * i));
  return { dims, bytes: raw.subarray(4 + 4 * rank) };
}

// Batch `b` of Fashion-MNIST as wire tensors: the pixels as u8 (N, 28, 28, 1) with scale 1/255
// (the server computes pixel * scale in f32: a quarter of f32's bytes), i32 labels (N).
function batch(images, labels, b) {
  const pixels = 28 * 28;
  const x = new Uint8Array(BATCH * pixels);
  const y = new Int32Array(BATCH);
  const n = labels.bytes.length;
  for (let i = 0; i < BATCH; i++) {
    const row = (b * BATCH + i) % n;
    x.set(images.bytes.subarray(row * pixels, (row + 1) * pixels), i * pixels);
    y[i] = labels.bytes[row];
  }
  return {
    inputs: { dtype: 'U8', shape: [BATCH, 28, 28, 1], data: Buffer.from(x.buffer), scale: [1 / 255] },
    targets: { dtype: 'I32', shape: [BATCH], data: Buffer.from(y.buffer) },
  };
}

// Streams `count` batches over one Train call; resolves with the last step's result.
function train(sessionId, images, labels, first, count) {
  return new Promise((resolve, reject) => {
    const stream = client.Train(route(sessionId));
    let last = null;
    stream.on('data', (r) => { last = r; });
    stream.on('error', reject);
    stream.on('end', () => resolve(last));
    for (let b = 0; b < count; b++) {
      stream.write({ session_id: b === 0 ? sessionId : '', batch: batch(images, labels, first + b) });
    }
    stream.end();
  });
}

function evaluate(sessionId, images, labels, count) {
  return new Promise((resolve, reject) => {
    const stream = client.Evaluate(route(sessionId), (err, r) => (err ? reject(err) : resolve(r)));
    for (let b = 0; b < count; b++) {
      stream.write({ session_id: b === 0 ? sessionId : '', batch: batch(images, labels, b) });
    }
    stream.end();
  });
}

async function main() {
  const images = readIdx(`${FM}/train-images-idx3-ubyte.gz`);
  const labels = readIdx(`${FM}/train-labels-idx1-ubyte.gz`);
  const testImages = readIdx(`${FM}/t10k-images-idx3-ubyte.gz`);
  const testLabels = readIdx(`${FM}/t10k-labels-idx1-ubyte.gz`);

  // Named here (not left to the server) so that a routing proxy knows where it lives.
  const session = await call('CreateSession', {
    session_id: `node-${require('crypto').randomBytes(6).toString('hex')}`,
    model: {
      input: { shape: [28, 28, 1] },
      body: { sequential: { layers: [
        { flatten: {} },
        { linear: { features: 128 } },
        { activation: { kind: 'RELU' } },
        { name: 'head', linear: { features: 10 } },
      ] } },
    },
    optimizer: { adamw: {}, schedule: { learning_rate: 1e-3 } },
    seed: 1,
  });
  const id = session.session_id;
  console.log(`session ${id}: ${session.parameters} parameters`);

  let r = await train(id, images, labels, 0, steps);
  console.log(`float     step ${r.step}  loss ${r.loss.toFixed(4)}`);
  await call('UpdateRules', {
    session_id: id,
    rules: { rules: [{ weight_qtype: 'int8', act_qtype: 'int8', act_static_scale: true }] },
  });
  r = await train(id, images, labels, steps, steps);
  console.log(`QAT int8  step ${r.step}  loss ${r.loss.toFixed(4)}`);
  const ev = await evaluate(id, testImages, testLabels, 10);
  console.log(`eval: ${ev.examples} examples, accuracy ${ev.accuracy.toFixed(4)}`);

  const stats = await call('GetQuantStats', { session_id: id });
  for (const s of stats.stats) {
    const scale = s.scale && s.scale.data.length ? s.scale.data.readFloatLE(0) : NaN;
    console.log(`stat ${s.module_path} ${s.name} count ${s.count} scale ${scale.toPrecision(6)}`);
  }
  await call('DeleteSession', { session_id: id });
}

main().then(
  () => client.close(),
  (err) => {
    console.error(`qtrain node example: ${err.code !== undefined ? `gRPC code ${err.code}: ` : ''}${err.details || err.message}`);
    client.close();
    process.exit(1);
  },
);
