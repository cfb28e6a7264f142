// The noise recipe of serving/sampler.py in plain JavaScript, so a browser (or
// Node) can build an exported model's inputs itself and get the very samples
// the Python sampler returns for the same seed.
//
// Python draws with numpy.random.default_rng(seed).standard_normal(shape,
// dtype=float32): SeedSequence -> PCG64 -> numpy's float32 ziggurat. All three
// are reproduced here bit for bit; float32 arithmetic is emulated with
// Math.fround wherever the C code computes in float (a float32 sum, product or
// quotient computed in double and then rounded is the correctly rounded float32
// result, so each fround below equals the C operation exactly).
//
// Exports: recipeNoise (the graph inputs), noiseSizes, resizeBilinear,
// defaultRng (the stream itself) and zigguratTables (for tests).

// ---------------------------------------------------------------------------
// SeedSequence(seed).generate_state(n, uint64): the constants of O'Neill's
// seed_seq as numpy's bit_generator.pyx uses them (pool of four 32-bit words).

const POOL_SIZE = 4;
const INIT_A = 0x43b0d7e5;
const MULT_A = 0x931e8875;
const INIT_B = 0x8b51f9dd;
const MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd;
const MIX_MULT_R = 0x4973f715;

/**
 * A non-negative integer seed as little-endian uint32 words (0 is one word, as in numpy);
 * an array of them is the concatenation of each one's words, as numpy coerces a sequence.
 */
function entropyWords(seed) {
  if (Array.isArray(seed)) return seed.flatMap((part) => entropyWords(part));
  let value;
  if (typeof seed === "bigint") {
    value = seed;
  } else if (typeof seed === "number" && Number.isSafeInteger(seed)) {
    value = BigInt(seed);
  } else {
    throw new TypeError("seed must be a safe integer Number or a BigInt");
  }
  if (value < 0n) throw new RangeError("seed must be non-negative");
  const words = [];
  do {
    words.push(Number(value & 0xffffffffn));
    value >>= 32n;
  } while (value > 0n);
  return words;
}

/** The uint32 words of SeedSequence(seed).generate_state(nWords64, uint64), low word of each uint64 first. */
function seedSequenceWords(seed, nWords64) {
  const entropy = entropyWords(seed);
  let hashConst = INIT_A;
  const hashmix = (value) => {
    value = (value ^ hashConst) >>> 0;
    hashConst = Math.imul(hashConst, MULT_A) >>> 0;
    value = Math.imul(value, hashConst) >>> 0;
    return (value ^ (value >>> 16)) >>> 0;
  };
  const mix = (x, y) => {
    const result = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
    return (result ^ (result >>> 16)) >>> 0;
  };
  const pool = new Uint32Array(POOL_SIZE);
  for (let i = 0; i < POOL_SIZE; i++) pool[i] = hashmix(i < entropy.length ? entropy[i] : 0);
  for (let src = 0; src < POOL_SIZE; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) {
      if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
    }
  }
  // Seeds wider than the pool (above 2**128) are folded into every pool word.
  for (let src = POOL_SIZE; src < entropy.length; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) pool[dst] = mix(pool[dst], hashmix(entropy[src]));
  }
  const out = new Uint32Array(2 * nWords64);
  let hash = INIT_B;
  for (let i = 0; i < out.length; i++) {
    let value = (pool[i % POOL_SIZE] ^ hash) >>> 0;
    hash = Math.imul(hash, MULT_B) >>> 0;
    value = Math.imul(value, hash) >>> 0;
    out[i] = (value ^ (value >>> 16)) >>> 0;
  }
  return out;
}

// ---------------------------------------------------------------------------
// PCG64 (XSL-RR 128/64) with numpy's next_uint32 buffering.
//
// The 128-bit state lives in six 24-bit limbs, least significant first (the
// top one holds the last 8 bits): a limb product is below 2**48 and a column
// of at most six of them plus the carry stays below 2**51, so plain double
// arithmetic is exact and no BigInt is needed per step. (Six 24-bit limbs
// need 21 products a step where eight 16-bit limbs need 36.)

const MULTIPLIER = 0x2360ed051fc65da44385df649fccf645n;
const LIMB = 2 ** 24;

function toLimbs(value) {
  const limbs = new Array(6);
  for (let i = 0; i < 6; i++) limbs[i] = Number((value >> BigInt(24 * i)) & 0xffffffn);
  return limbs;
}

const [M0, M1, M2, M3, M4, M5] = toLimbs(MULTIPLIER);

class PCG64 {
  /** Seeded as numpy's pcg64_set_seed: state and increment from the four words of the seed sequence. */
  constructor(seed) {
    const w = seedSequenceWords(seed, 4);
    const u64 = (k) => (BigInt(w[2 * k + 1]) << 32n) | BigInt(w[2 * k]);
    const mask = (1n << 128n) - 1n;
    const initState = (u64(0) << 64n) | u64(1);
    const initSeq = (u64(2) << 64n) | u64(3);
    // PCG's srandom: state 0, odd increment, step, add the initial state, step.
    const inc = ((initSeq << 1n) | 1n) & mask;
    let state = inc; // 0 * multiplier + inc
    state = (state + initState) & mask;
    state = (state * MULTIPLIER + inc) & mask;
    [this.s0, this.s1, this.s2, this.s3, this.s4, this.s5] = toLimbs(state);
    [this.c0, this.c1, this.c2, this.c3, this.c4, this.c5] = toLimbs(inc);
    this.hasUint32 = false;
    this.uinteger = 0;
  }

  /** state = state * MULTIPLIER + inc (mod 2**128), schoolbook on the limbs. */
  step() {
    const { s0, s1, s2, s3, s4, s5 } = this;
    // Each column: its products plus the carry in, split into a limb and the carry out.
    let t = s0 * M0 + this.c0;
    let carry = Math.floor(t / LIMB);
    this.s0 = t - carry * LIMB;
    t = carry + s0 * M1 + s1 * M0 + this.c1;
    carry = Math.floor(t / LIMB);
    this.s1 = t - carry * LIMB;
    t = carry + s0 * M2 + s1 * M1 + s2 * M0 + this.c2;
    carry = Math.floor(t / LIMB);
    this.s2 = t - carry * LIMB;
    t = carry + s0 * M3 + s1 * M2 + s2 * M1 + s3 * M0 + this.c3;
    carry = Math.floor(t / LIMB);
    this.s3 = t - carry * LIMB;
    t = carry + s0 * M4 + s1 * M3 + s2 * M2 + s3 * M1 + s4 * M0 + this.c4;
    carry = Math.floor(t / LIMB);
    this.s4 = t - carry * LIMB;
    t = carry + s0 * M5 + s1 * M4 + s2 * M3 + s3 * M2 + s4 * M1 + s5 * M0 + this.c5;
    this.s5 = t - Math.floor(t / 256) * 256; // bits 120..127: the rest is beyond 2**128
  }

  /**
   * numpy's pcg64_next32: one 64-bit output serves two calls, low half first.
   * The output is XSL-RR: step, xor the state's halves, rotate right by the
   * state's top six bits.
   */
  nextUint32() {
    if (this.hasUint32) {
      this.hasUint32 = false;
      return this.uinteger;
    }
    this.step();
    const { s0, s1, s2, s3, s4, s5 } = this;
    // The state's four 32-bit words, bits 0..31 (w0) to 96..127 (w3).
    const w0 = s0 | (s1 << 24);
    const w1 = (s1 >>> 8) | (s2 << 16);
    const w2 = (s2 >>> 16) | (s3 << 8);
    const w3 = s4 | (s5 << 24);
    const rot = s5 >>> 2;
    const hi = rot & 32 ? w2 ^ w0 : w3 ^ w1; // rotating by 32 swaps the halves
    const lo = rot & 32 ? w3 ^ w1 : w2 ^ w0;
    const r = rot & 31;
    this.hasUint32 = true;
    this.uinteger = (r ? (hi >>> r) | (lo << (32 - r)) : hi) >>> 0;
    return (r ? (lo >>> r) | (hi << (32 - r)) : lo) >>> 0;
  }

  /** numpy's next_float: 24 random bits scaled to [0, 1), exact in float32. */
  nextFloat() {
    return (this.nextUint32() >>> 8) * 2 ** -24;
  }
}

// ---------------------------------------------------------------------------
// numpy's float32 ziggurat (random_standard_normal_f): 256 layers, 23-bit
// magnitudes. numpy compiles its tables in; these are rebuilt with Marsaglia
// and Tsang's recipe (J. Stat. Softw. 5(8), 2000) in double, then rounded to
// nearest (float32 and integer alike, as numpy's probed thresholds show).
// tests/test_web_noise.py checks every entry against numpy's behaviour.

const ZIGGURAT_R = 3.6541528853610088; // start of the tail
const ZIGGURAT_V = 4.92867323399e-3; // area of each layer
const R_F = Math.fround(ZIGGURAT_R);
const NEG_INV_R_F = -Math.fround(0.27366123732975828); // -1/r as numpy's float literal

function buildTables() {
  const m = 2 ** 23;
  const ki = new Uint32Array(256);
  const wi = new Float32Array(256);
  const fi = new Float32Array(256);
  let x = ZIGGURAT_R;
  let xOuter = x;
  // Layer 0 is the base strip plus the tail: its width q makes it area v.
  const q = ZIGGURAT_V / Math.exp(-0.5 * x * x);
  ki[0] = Math.round((x / q) * m);
  ki[1] = 0;
  wi[0] = q / m;
  wi[255] = x / m;
  fi[0] = 1;
  fi[255] = Math.exp(-0.5 * x * x);
  for (let i = 254; i >= 1; i--) {
    x = Math.sqrt(-2 * Math.log(ZIGGURAT_V / x + Math.exp(-0.5 * x * x)));
    ki[i + 1] = Math.round((x / xOuter) * m);
    xOuter = x;
    fi[i] = Math.exp(-0.5 * x * x);
    wi[i] = x / m;
  }
  return { ki, wi, fi };
}

const { ki: KI, wi: WI, fi: FI } = buildTables();

/** Copies of the float32 ziggurat tables (ki, wi, fi), for tests. */
export function zigguratTables() {
  return { ki: KI.slice(), wi: WI.slice(), fi: FI.slice() };
}

// log1pf as glibc computes it (its float fdlibm code), which numpy's tail
// calls. It is not correctly rounded: for about 7% of the 2**24 arguments the
// tail can pass, Math.fround(Math.log1p(x)) is one ulp away, so glibc's float
// steps are replayed here (equal to glibc 2.36's log1pf on all of them).
// Only those arguments are handled: float32 x in (-1, 0].
const LN2_HI = Math.fround(6.9313812256e-1);
const LN2_LO = Math.fround(9.0580006145e-6);
const TWO_THIRDS = Math.fround(0.66666666666666666);
const LP = [
  6.6666668653e-1, 4.0000000596e-1, 2.8571429849e-1, 2.2222198546e-1, 1.8183572590e-1, 1.5313838422e-1,
  1.4798198640e-1,
].map(Math.fround);
const FLOAT_VIEW = new Float32Array(1);
const BITS_VIEW = new Int32Array(FLOAT_VIEW.buffer);

function log1pf(x) {
  const f32 = Math.fround;
  FLOAT_VIEW[0] = x;
  let hu = BITS_VIEW[0];
  if ((hu & 0x7fffffff) < 0x31000000) return x; // only ±0 here: the tail's uniforms are multiples of 2**-24
  let k = 0;
  let c = 0;
  let f = x;
  if (hu > (0xbe95f61f | 0)) {
    // x below -0.2929: log of u = 1 + x as k*ln2 + log of a mantissa in [sqrt(2)/2, sqrt(2)),
    // c carrying the rounding error of 1 + x.
    let u = f32(1 + x);
    FLOAT_VIEW[0] = u;
    hu = BITS_VIEW[0];
    k = (hu >> 23) - 127;
    c = f32((k > 0 ? f32(1 - f32(u - x)) : f32(x - f32(u - 1))) / u);
    hu &= 0x007fffff;
    if (hu < 0x3504f7) {
      BITS_VIEW[0] = hu | 0x3f800000;
    } else {
      k += 1;
      BITS_VIEW[0] = hu | 0x3f000000;
      hu = (0x00800000 - hu) >> 2;
    }
    f = f32(FLOAT_VIEW[0] - 1);
  } else {
    hu = 1; // no k*ln2 part, and never the |f| < 2**-20 shortcut below
  }
  const hfsq = f32(f32(0.5 * f) * f);
  const kHi = f32(k * LN2_HI);
  const kLo = f32(k * LN2_LO);
  if (hu === 0) {
    if (f === 0) return k === 0 ? 0 : f32(kHi + f32(c + kLo));
    const r = f32(hfsq * f32(1 - f32(TWO_THIRDS * f)));
    return k === 0 ? f32(f - r) : f32(kHi - f32(f32(r - f32(kLo + c)) - f));
  }
  const s = f32(f / f32(2 + f));
  const z = f32(s * s);
  let poly = LP[6];
  for (let i = 5; i >= 0; i--) poly = f32(LP[i] + f32(z * poly));
  const r = f32(z * poly);
  if (k === 0) return f32(f - f32(hfsq - f32(s * f32(hfsq + r))));
  return f32(kHi - f32(f32(hfsq - f32(f32(s * f32(hfsq + r)) + f32(kLo + c))) - f));
}

function standardNormalF32(rng) {
  for (;;) {
    const r = rng.nextUint32();
    const idx = r & 0xff;
    const rabs = r >>> 9;
    let x = Math.fround(rabs * WI[idx]);
    if (r & 0x100) x = -x;
    if (rabs < KI[idx]) return x;
    if (idx === 0) {
      // The tail beyond r (Marsaglia 1964), from two uniforms through log1pf.
      for (;;) {
        const xx = Math.fround(NEG_INV_R_F * log1pf(-rng.nextFloat()));
        const yy = -log1pf(-rng.nextFloat());
        if (Math.fround(yy + yy) > Math.fround(xx * xx)) {
          // numpy takes the tail's sign from bit 8 of rabs, not from the sign bit.
          return (rabs >>> 8) & 1 ? -Math.fround(R_F + xx) : Math.fround(R_F + xx);
        }
      }
    }
    // The wedge: a float32 point under the layer against the density in double.
    const f = Math.fround(Math.fround(Math.fround(FI[idx - 1] - FI[idx]) * rng.nextFloat()) + FI[idx]);
    if (f < Math.exp(-0.5 * x * x)) return x;
  }
}

/**
 * numpy.random.default_rng(seed), as far as the noise recipe needs it.
 *
 * @param {number|bigint|Array<number|bigint>} seed non-negative integer (a safe-integer Number
 *   or any BigInt), or an array of them (numpy's sequence entropy, e.g. default_rng([seed, 0xA417]))
 * @returns {{nextUint32: () => number, standardNormalF32: (count: number) => Float32Array}}
 *
 * @example
 * defaultRng(0).standardNormalF32(3)  // == default_rng(0).standard_normal(3, dtype=np.float32)
 */
export function defaultRng(seed) {
  const pcg = new PCG64(seed);
  return {
    nextUint32: () => pcg.nextUint32(),
    standardNormalF32(count) {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = standardNormalF32(pcg);
      return out;
    },
  };
}

// ---------------------------------------------------------------------------
// The recipe itself (serving/sampler.py).

function checkFactor(value) {
  if (!(typeof value === "number" && Number.isFinite(value) && value > 0)) {
    throw new RangeError("scale_h and scale_v must be finite and > 0");
  }
}

/**
 * Each scale's noise size for an output scaled by (scaleV, scaleH): half up, at least 1.
 *
 * @param {Array<[number, number]>} sizes the metadata's per-scale [h, w]
 * @returns {Array<[number, number]>}
 */
export function noiseSizes(sizes, scaleH = 1, scaleV = 1) {
  checkFactor(scaleH);
  checkFactor(scaleV);
  return sizes.map(([h, w]) => [Math.max(1, Math.floor(h * scaleV + 0.5)), Math.max(1, Math.floor(w * scaleH + 0.5))]);
}

/** Source rows (or columns) and float32 weights of a half-pixel-centre resize, as numpy computes them. */
function resizeCoords(nIn, nOut) {
  const lo = new Int32Array(nOut);
  const hi = new Int32Array(nOut);
  const frac = new Float32Array(nOut);
  for (let i = 0; i < nOut; i++) {
    const pos = Math.max(((i + 0.5) * nIn) / nOut - 0.5, 0);
    lo[i] = Math.min(Math.floor(pos), nIn - 1);
    hi[i] = Math.min(lo[i] + 1, nIn - 1);
    frac[i] = pos - lo[i];
  }
  return { lo, hi, frac };
}

/**
 * Bilinear resize of NHWC float32 data with half-pixel centres, clamped at the
 * edges: sampler.py's _resize_bilinear (and the exported graph's resize).
 *
 * @param {Float32Array} data n*h*w*c values, NHWC
 * @returns {Float32Array} n*outH*outW*c values, NHWC
 */
export function resizeBilinear(data, n, h, w, c, outH, outW) {
  const ys = resizeCoords(h, outH);
  const xs = resizeCoords(w, outW);
  const out = new Float32Array(n * outH * outW * c);
  const f = Math.fround;
  let o = 0;
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < outH; i++) {
      const fy = ys.frac[i];
      const gy = f(1 - fy);
      const row0 = (b * h + ys.lo[i]) * w;
      const row1 = (b * h + ys.hi[i]) * w;
      for (let j = 0; j < outW; j++) {
        const fx = xs.frac[j];
        const gx = f(1 - fx);
        const x0 = xs.lo[j];
        const x1 = xs.hi[j];
        for (let k = 0; k < c; k++) {
          // numpy works in float32 throughout: round after every operation.
          const top = f(f(data[(row0 + x0) * c + k] * gx) + f(data[(row0 + x1) * c + k] * fx));
          const bot = f(f(data[(row1 + x0) * c + k] * gx) + f(data[(row1 + x1) * c + k] * fx));
          out[o++] = f(f(top * gy) + f(bot * fy));
        }
      }
    }
  }
  return out;
}

/** Repeat each value three times: one channel becomes the graph's three. */
function toThreeChannels(single) {
  const out = new Float32Array(single.length * 3);
  for (let i = 0; i < single.length; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = single[i];
  return out;
}

/**
 * Graph inputs z_0..z_N for `n` samples by the exported metadata's noise recipe
 * (sampler.py's recipe_noise): one stream default_rng(seed) draws every scale
 * in order, one channel at scale 0 repeated to three; scales below startScale
 * take the reconstruction noise instead (z* resized at scale 0, zeros above),
 * their draws still taken from the stream so later scales do not shift.
 *
 * @param {{sizes: Array<[number, number]>, rec_noise: {shape: number[], values: number[]}}} meta
 *   the model's parsed singan_tf metadata
 * @param {number|bigint} seed
 * @param {number} n number of samples
 * @returns {Object<string, {dims: number[], data: Float32Array}>} z_k -> NHWC float32 [n, h_k, w_k, 3]
 */
export function recipeNoise(meta, seed, n, scaleH = 1, scaleV = 1, startScale = 0) {
  const { sizes } = meta;
  if (!(Number.isInteger(startScale) && startScale >= 0 && startScale < sizes.length)) {
    throw new RangeError(`start_scale must be in 0..${sizes.length - 1}`);
  }
  if (!(Number.isInteger(n) && n >= 0)) throw new RangeError("n must be a non-negative integer");
  const rng = defaultRng(seed);
  const feeds = {};
  noiseSizes(sizes, scaleH, scaleV).forEach(([h, w], k) => {
    const channels = k === 0 ? 1 : 3;
    let z = rng.standardNormalF32(n * h * w * channels);
    if (k < startScale) {
      if (k === 0) {
        const z0 = recNoiseAt(meta, h, w);
        for (let b = 0; b < n; b++) z.set(z0, b * z0.length);
      } else {
        z.fill(0);
      }
    }
    feeds[`z_${k}`] = { dims: [n, h, w, 3], data: channels === 1 ? toThreeChannels(z) : z };
  });
  return feeds;
}

/** The reconstruction noise at scale 0 resized to (h, w), one channel (as recipe_noise uses it). */
function recNoiseAt(meta, h, w) {
  const [, recH, recW] = meta.rec_noise.shape;
  const rec = Float32Array.from(meta.rec_noise.values.flat(Infinity));
  return recH === h && recW === w ? rec : resizeBilinear(rec, 1, recH, recW, 1, h, w);
}

/**
 * Graph inputs for `frames` animation frames, the batch axis being time: sampler.py's
 * walk_noise. Scales from startScale up keep one draw of the noise recipe (seed, batch 1);
 * scales below follow a momentum random walk pulled toward the reconstruction noise,
 * z_t = alpha z_rec + (1 - alpha) (z_{t-1} + beta (z_{t-1} - z_{t-2}) + (1 - beta) eps_t),
 * starting at z_rec, with eps from default_rng([seed, 0xA417]) scale by scale, frame by
 * frame, one channel at scale 0. numpy computes it in float32 with the Python constants
 * rounded to float32 first, operation by operation in this order.
 *
 * @returns {Object<string, {dims: number[], data: Float32Array}>} z_k -> [frames, h_k, w_k, 3]
 */
export function walkNoise(meta, seed, frames, startScale, alpha = 0.1, beta = 0.9, scaleH = 1, scaleV = 1) {
  const { sizes } = meta;
  if (!(Number.isInteger(frames) && frames >= 2)) throw new RangeError("frames must be >= 2");
  if (!(Number.isInteger(startScale) && startScale >= 1 && startScale <= sizes.length)) {
    throw new RangeError(`animation start scale must be in 1..${sizes.length}`);
  }
  if (!(alpha >= 0 && alpha <= 1 && beta >= 0 && beta < 1)) {
    throw new RangeError("alpha must be in [0, 1] and beta in [0, 1)");
  }
  const f = Math.fround;
  const [a, oneMinusA, b, oneMinusB] = [f(alpha), f(1 - alpha), f(beta), f(1 - beta)];
  const feeds = {};
  for (const [name, z] of Object.entries(recipeNoise(meta, seed, 1, scaleH, scaleV, 0))) {
    const data = new Float32Array(frames * z.data.length);
    for (let t = 0; t < frames; t++) data.set(z.data, t * z.data.length);
    feeds[name] = { dims: [frames, ...z.dims.slice(1)], data };
  }
  const rng = defaultRng([seed, 0xa417]);
  noiseSizes(sizes, scaleH, scaleV).slice(0, startScale).forEach(([h, w], k) => {
    const rec = k === 0 ? recNoiseAt(meta, h, w) : new Float32Array(h * w * 3);
    const walk = new Float32Array(frames * rec.length);
    let prev = rec, prev2 = rec;
    for (let t = 0; t < frames; t++) {
      const eps = rng.standardNormalF32(rec.length);
      const z = walk.subarray(t * rec.length, (t + 1) * rec.length);
      for (let i = 0; i < rec.length; i++) {
        const momentum = f(prev[i] + f(b * f(prev[i] - prev2[i])));
        z[i] = f(f(a * rec[i]) + f(oneMinusA * f(momentum + f(oneMinusB * eps[i]))));
      }
      [prev2, prev] = [prev, z];
    }
    feeds[`z_${k}`] = { dims: [frames, h, w, 3], data: k === 0 ? toThreeChannels(walk) : walk };
  });
  return feeds;
}
