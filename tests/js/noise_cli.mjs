// Runs serving/static/noise.mjs for tests/test_web_noise.py: one JSON request
// on stdin, one JSON answer on stdout. Float arrays travel as base64 of their
// little-endian bytes (compact and exact); seeds may be decimal strings so
// that seeds above 2**53 survive JSON.
//
//   {"op": "normals", "seed": S, "count": N}         -> {"data": b64 float32}
//   {"op": "uint32", "seed": S, "count": N}          -> {"data": b64 uint32}
//   {"op": "tables"}                                 -> {"ki": [...], "wi": b64, "fi": b64}
//   {"op": "sizes", "sizes": [[h, w], ...], "factors": [[sh, sv], ...]}
//                                                    -> {"sizes": [[[h, w], ...] or {"error"}, ...]}
//   {"op": "recipe", "meta": {...}, "seed": S, "n": N, "scale_h", "scale_v", "start_scale"}
//                                                    -> {"z_0": {"dims", "data"}, ...} or {"error"}
//   {"op": "walk", "meta": {...}, "seed": S, "frames": T, "start_scale", "alpha", "beta", "scale_h", "scale_v"}
//                                                    -> {"z_0": {"dims", "data"}, ...} or {"error"}
import { readFileSync } from "node:fs";

import {
  defaultRng,
  noiseSizes,
  recipeNoise,
  walkNoise,
  zigguratTables,
} from "../../serving/static/noise.mjs";

const b64 = (array) => Buffer.from(array.buffer, array.byteOffset, array.byteLength).toString("base64");
const seedOf = (request) => (typeof request.seed === "string" ? BigInt(request.seed) : request.seed);

function attempt(fn) {
  try {
    return fn();
  } catch (err) {
    return { error: `${err.name}: ${err.message}` };
  }
}

const encodeFeeds = (feeds) =>
  Object.fromEntries(Object.entries(feeds).map(([name, z]) => [name, { dims: z.dims, data: b64(z.data) }]));

const ops = {
  normals: (q) => ({ data: b64(defaultRng(seedOf(q)).standardNormalF32(q.count)) }),
  uint32: (q) => {
    const rng = defaultRng(seedOf(q));
    const out = new Uint32Array(q.count);
    for (let i = 0; i < q.count; i++) out[i] = rng.nextUint32();
    return { data: b64(out) };
  },
  tables: () => {
    const { ki, wi, fi } = zigguratTables();
    return { ki: Array.from(ki), wi: b64(wi), fi: b64(fi) };
  },
  // Factors may be strings ("NaN", "Infinity"), which JSON cannot carry as numbers.
  sizes: (q) => ({
    sizes: q.factors.map(([sh, sv]) => attempt(() => noiseSizes(q.sizes, Number(sh), Number(sv)))),
  }),
  recipe: (q) =>
    attempt(() => {
      const feeds = recipeNoise(q.meta, seedOf(q), q.n, q.scale_h, q.scale_v, q.start_scale);
      return encodeFeeds(feeds);
    }),
  walk: (q) =>
    attempt(() => {
      const args = [q.start_scale, q.alpha, q.beta, q.scale_h, q.scale_v];
      return encodeFeeds(walkNoise(q.meta, seedOf(q), q.frames, ...args));
    }),
};

const request = JSON.parse(readFileSync(0, "utf8"));
const op = ops[request.op];
if (!op) {
  process.stderr.write(`unknown op ${request.op}\n`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(op(request)));
