// Runs a model written by `fmhost export --onnx` with ONNX Runtime on images
// given as raw little-endian float32 [n, 1, 28, 28] (normalised pixels), in
// batches of `batch` (the last one shorter: the batch dimension is free), and
// writes the logits as raw float32 [n, 10].
//
//   node run_onnx.js MODEL.onnx IMAGES.f32 N LOGITS.f32 BATCH
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, imagesPath, nText, outPath, batchText] = process.argv.slice(2);
  if (!batchText) {
    console.error('usage: node run_onnx.js MODEL.onnx IMAGES.f32 N LOGITS.f32 BATCH');
    process.exit(2);
  }
  const n = Number(nText), batch = Number(batchText), pixels = 28 * 28;
  const bytes = fs.readFileSync(imagesPath);
  if (bytes.length !== n * pixels * 4) throw new Error(`${imagesPath}: ${bytes.length} bytes, expected ${n * pixels * 4}`);
  const images = new Float32Array(bytes.buffer, bytes.byteOffset, n * pixels);
  const session = await ort.InferenceSession.create(model, { graphOptimizationLevel: 'disabled' });
  if (session.inputNames[0] !== 'input' || session.outputNames[0] !== 'logits')
    throw new Error(`${model}: inputs ${session.inputNames}, outputs ${session.outputNames}`);
  const logits = new Float32Array(n * 10);
  for (let start = 0; start < n; start += batch) {
    const b = Math.min(batch, n - start);
    const x = new ort.Tensor('float32', images.subarray(start * pixels, (start + b) * pixels), [b, 1, 28, 28]);
    const out = (await session.run({ input: x })).logits;
    if (out.dims.length !== 2 || out.dims[0] !== b || out.dims[1] !== 10)
      throw new Error(`${model}: logits of shape [${out.dims}] for ${b} images`);
    logits.set(out.data, start * 10);
  }
  fs.writeFileSync(outPath, Buffer.from(logits.buffer));
  console.log(`onnxruntime-node ${require('onnxruntime-node/package.json').version}: ${model} on ${n} images`);
}

main().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
