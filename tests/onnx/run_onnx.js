// Runs an ONNX model in ONNX Runtime (CPU) on one input tensor read from a raw little-endian
// file, and writes the first output the same way, with its shape on stdout as JSON.
// Usage: node run_onnx.js MODEL.onnx INPUT.bin DTYPE(float32|int32) DIMS(2,28,28,1) OUTPUT.bin
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, inputPath, dtype, dims, outputPath] = process.argv.slice(2);
  if (!outputPath) {
    console.error('usage: node run_onnx.js MODEL INPUT.bin DTYPE DIMS OUTPUT.bin');
    process.exit(2);
  }
  const raw = fs.readFileSync(inputPath);
  const shape = dims.split(',').map(Number);
  const Array = dtype === 'int32' ? Int32Array : Float32Array;
  const data = new Array(raw.buffer, raw.byteOffset, raw.byteLength / Array.BYTES_PER_ELEMENT);
  const session = await ort.InferenceSession.create(model, {executionProviders: ['cpu']});
  const input = new ort.Tensor(dtype, data, shape);
  const results = await session.run({[session.inputNames[0]]: input});
  const out = results[session.outputNames[0]];
  fs.writeFileSync(outputPath, Buffer.from(out.data.buffer, out.data.byteOffset, out.data.byteLength));
  console.log(JSON.stringify({inputs: session.inputNames, outputs: session.outputNames,
                              shape: out.dims, type: out.type}));
}

main().catch((e) => {
  console.error(`run_onnx: ${e.message || e}`);
  process.exit(1);
});
