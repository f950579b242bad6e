/* The float functions TVM's scalar lowering calls on Hexagon, for the freestanding harness
 * (runtime.c has no libc): expf, erff, sqrtf, the roundings to integers (floorf, ceilf, truncf,
 * roundf, nearbyintf, rintf), and the compiler-rt helpers LLVM's Hexagon backend calls for IEEE
 * arithmetic it does not inline on v66 (double multiply, float divide, float square root).
 *
 * The emulator's reference is the same graph compiled for this (x86-64) CPU, where TVM calls
 * glibc's libm, so these compute what glibc 2.36 computes, bit for bit, not merely something
 * accurate:
 *
 *  - expf: glibc's algorithm (ARM optimized-routines: x * 32/ln2 = k + r, 2^(k/32) from a table,
 *    a cubic in r, all in double). On a CPU with FMA glibc runs its FMA build, where GCC fused
 *    r = x * (32/ln2) - k: an unfused r differs on 2 of the 2^32 floats. Here the product is
 *    split exactly (32/ln2 = hi + lo, hi of 25 bits, so x * hi and x * lo are exact doubles for a
 *    float x) and r = (x * hi - k) + x * lo, where x * hi - k is exact: the fused result, without
 *    a fused instruction.
 *  - erff: glibc's erff is fdlibm's (Sun, 1993): rational approximations in float on four
 *    intervals, expf for the tail; the same operations in the same order, with its constants.
 *  - sqrtf and the helpers are correctly rounded (round to nearest, ties to even), as IEEE
 *    hardware is: exact integer arithmetic and one rounding. The roundings to integers have one
 *    right answer (the sign of a zero result is the argument's).
 *
 * Checked (tests/test_hexagon_zoo_regressions.py): against the host's glibc and hardware on the
 * host, compiled from this file (every float for each function of a float; random operands for
 * the helpers), and under qemu-hexagon against the host. No FP contraction anywhere: a fused
 * multiply-add rounds once where these round twice (compiled with -ffp-contract=off, and the
 * pragma below).
 *
 * S2D_NAME(f) names each function (f itself in the harness; the host test prefixes them). */
#include <stdint.h>

#pragma STDC FP_CONTRACT OFF

#ifndef S2D_NAME
#define S2D_NAME(f) f
#endif

static inline uint32_t bits_of_float(float f) {
  union { float f; uint32_t u; } v = {f};
  return v.u;
}
static inline float float_of_bits(uint32_t u) {
  union { uint32_t u; float f; } v = {u};
  return v.f;
}
static inline uint64_t bits_of_double(double d) {
  union { double d; uint64_t u; } v = {d};
  return v.u;
}
static inline double double_of_bits(uint64_t u) {
  union { uint64_t u; double d; } v = {u};
  return v.d;
}

static inline int leading_zeros(uint64_t m) { return __builtin_clzll(m); }

/* (sign) (m * 2^e, plus less than one unit of m if sticky) rounded to nearest even in a format
 * of `mant` fraction bits, exponent range [emin, emax]; m != 0. The bits of the result. */
static uint64_t round_bits(uint64_t sign, uint64_t m, int e, int sticky, int mant, int emin, int emax) {
  int lz = leading_zeros(m);
  m <<= lz;
  e -= lz;
  int lead = e + 63; /* the exponent of m's leading bit */
  int shift = lead >= emin ? 63 - mant : (emin - mant) - e;
  uint64_t kept, half = 0, rest = (uint64_t)sticky;
  if (shift >= 64) {
    kept = 0;
    if (shift == 64) {
      half = m >> 63;
      rest |= (m << 1) != 0;
    } else {
      rest |= 1; /* below half a unit, and not zero */
    }
  } else {
    kept = m >> shift;
    uint64_t below = shift ? m << (64 - shift) : 0;
    half = below >> 63;
    rest |= (below << 1) != 0;
  }
  if (half && (rest || (kept & 1))) kept++;
  uint64_t bits;
  if (lead >= emin) /* normal: the leading bit of kept adds one to the exponent field (a carry: two) */
    bits = ((uint64_t)(lead - emin) << mant) + kept;
  else /* subnormal: kept counts units of 2^(emin - mant); a carry into 2^mant makes the smallest normal */
    bits = kept;
  uint64_t inf = (uint64_t)(emax - emin + 2) << mant; /* the exponent field of inf: emax plus the bias, plus one */
  if (lead > emax || bits >= inf) bits = inf;
  return (sign << (mant + (mant == 52 ? 11 : 8))) | bits;
}

static inline double make_double(uint64_t sign, uint64_t m, int e, int sticky) {
  return double_of_bits(round_bits(sign, m, e, sticky, 52, -1022, 1023));
}

static inline float make_float(uint64_t sign, uint64_t m, int e, int sticky) {
  return float_of_bits((uint32_t)round_bits(sign, m, e, sticky, 23, -126, 127));
}

/* A finite nonzero double as m * 2^e (m < 2^53). */
static inline void split_double(uint64_t u, uint64_t* m, int* e) {
  int field = (int)((u >> 52) & 0x7ff);
  *m = u & 0xfffffffffffffULL;
  if (field) *m |= 1ULL << 52;
  *e = (field ? field : 1) - 1075;
}

/* A finite nonzero float as m * 2^e (m < 2^24). */
static inline void split_float(uint32_t u, uint64_t* m, int* e) {
  int field = (int)((u >> 23) & 0xff);
  *m = u & 0x7fffff;
  if (field) *m |= 1u << 23;
  *e = (field ? field : 1) - 150;
}

/* ---- compiler-rt helpers -------------------------------------------------------------------- */

double S2D_NAME(__hexagon_muldf3)(double a, double b) {
  uint64_t ua = bits_of_double(a), ub = bits_of_double(b), sign = (ua ^ ub) >> 63;
  uint64_t aa = ua & ~(1ULL << 63), ab = ub & ~(1ULL << 63), inf = 0x7ffULL << 52;
  if (aa > inf || ab > inf) return a + b; /* NaN */
  if (aa == inf || ab == inf) {
    if (aa == 0 || ab == 0) return double_of_bits(0x7ff8000000000000ULL); /* inf * 0 */
    return double_of_bits((sign << 63) | inf);
  }
  if (aa == 0 || ab == 0) return double_of_bits(sign << 63);
  uint64_t ma, mb;
  int ea, eb;
  split_double(aa, &ma, &ea);
  split_double(ab, &mb, &eb);
  /* the 106-bit product by 32-bit halves */
  uint64_t a0 = ma & 0xffffffff, a1 = ma >> 32, b0 = mb & 0xffffffff, b1 = mb >> 32;
  uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  uint64_t mid = (p00 >> 32) + (p01 & 0xffffffff) + (p10 & 0xffffffff);
  uint64_t lo = (p00 & 0xffffffff) | (mid << 32);
  uint64_t hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
  int e = ea + eb;
  if (hi == 0) return make_double(sign, lo, e, 0);
  int lz = leading_zeros(hi);
  uint64_t m = lz ? (hi << lz) | (lo >> (64 - lz)) : hi;
  int sticky = (lz ? lo << lz : lo) != 0;
  return make_double(sign, m, e + 64 - lz, sticky);
}

float S2D_NAME(__hexagon_divsf3)(float a, float b) {
  uint32_t ua = bits_of_float(a), ub = bits_of_float(b), aa = ua & 0x7fffffff, ab = ub & 0x7fffffff;
  uint64_t sign = (ua ^ ub) >> 31;
  if (aa > 0x7f800000 || ab > 0x7f800000) return a + b; /* NaN */
  if ((aa == 0x7f800000 && ab == 0x7f800000) || (aa == 0 && ab == 0)) return float_of_bits(0x7fc00000);
  if (aa == 0x7f800000 || ab == 0) return float_of_bits((uint32_t)(sign << 31) | 0x7f800000);
  if (ab == 0x7f800000 || aa == 0) return float_of_bits((uint32_t)(sign << 31));
  uint64_t ma, mb;
  int ea, eb;
  split_float(aa, &ma, &ea);
  split_float(ab, &mb, &eb);
  int shift = leading_zeros(ma); /* the dividend up to bit 63: a quotient of at least 40 bits */
  uint64_t num = ma << shift, q = num / mb, r = num % mb;
  return make_float(sign, q, ea - shift - eb, r != 0);
}

float S2D_NAME(__hexagon_sqrtf)(float x) {
  uint32_t u = bits_of_float(x);
  if ((u & 0x7fffffff) == 0) return x; /* +-0 */
  if (u > 0x7f800000 && u < 0x80000000) return x + x; /* NaN */
  if (u >> 31) return float_of_bits(0x7fc00000);    /* negative, -NaN */
  if (u == 0x7f800000) return x;
  uint64_t m;
  int e;
  split_float(u, &m, &e);
  int lz = leading_zeros(m) - 1; /* m < 2^63 */
  if ((e - lz) & 1) lz--;       /* an even exponent */
  m <<= lz;
  e -= lz;
  /* the integer square root of m (< 2^63), bit by bit */
  uint64_t root = 0, rem = m, bit = 1ULL << 62;
  while (bit > rem) bit >>= 2;
  while (bit) {
    if (rem >= root + bit) {
      rem -= root + bit;
      root = (root >> 1) + bit;
    } else {
      root >>= 1;
    }
    bit >>= 2;
  }
  return make_float(0, root, e / 2, rem != 0);
}

float S2D_NAME(sqrtf)(float x) { return S2D_NAME(__hexagon_sqrtf)(x); }

/* ---- rounding to integers (exact: one right answer, the sign of zero included) ------------ */

/* x with the fraction bits below its units cleared (toward zero); `up` (a sign: +1 toward +inf,
 * -1 toward -inf, 0 none) moves a value with fraction bits one unit away where its sign is the
 * direction's. `half`: round half away from zero (the unit's half added first). */
static float to_integer(float x, int up, int half) {
  uint32_t u = bits_of_float(x), negative = u >> 31;
  int e = (int)((u >> 23) & 0xff) - 127;
  if (e >= 23) return x; /* integral already, inf or NaN */
  if (e < 0) {           /* |x| < 1 */
    if ((u & 0x7fffffff) == 0) return x;
    if (half && e == -1) return float_of_bits((negative << 31) | 0x3f800000); /* |x| in [0.5, 1) */
    if (up && (up < 0) == (int)negative) return float_of_bits((negative << 31) | 0x3f800000);
    return float_of_bits(negative << 31);
  }
  uint32_t mask = 0x007fffffu >> e;
  if ((u & mask) == 0) return x;
  if (half) u += 0x00400000u >> e;
  else if (up && (up < 0) == (int)negative) u += mask; /* carries into the units: one more */
  return float_of_bits(u & ~mask);
}

float S2D_NAME(truncf)(float x) { return to_integer(x, 0, 0); }
float S2D_NAME(floorf)(float x) { return to_integer(x, -1, 0); }
float S2D_NAME(ceilf)(float x) { return to_integer(x, 1, 0); }
float S2D_NAME(roundf)(float x) { return to_integer(x, 0, 1); }

/* Round half to even (the default rounding mode; quantize lowers to it). */
float S2D_NAME(nearbyintf)(float x) {
  uint32_t u = bits_of_float(x);
  int e = (int)((u >> 23) & 0xff) - 127;
  if (e >= 23) return x;
  float t = to_integer(x, 0, 0), r = x - t; /* exact: the fraction, with x's sign */
  float a = r < 0 ? -r : r;
  if (a > 0.5f || (a == 0.5f && ((uint32_t)(t < 0 ? -t : t) & 1))) t += r < 0 ? -1.0f : 1.0f;
  return t == 0 ? float_of_bits(u & 0x80000000u) : t; /* the sign of zero is x's */
}

float S2D_NAME(rintf)(float x) { return S2D_NAME(nearbyintf)(x); }

/* ---- expf ------------------------------------------------------------------------------------ */

/* 2^(i/32) rounded to the nearest double, minus i << 47 (so that adding k << 47 for k = i mod 32
 * scales it by 2^(k div 32)): derived in the test from exact arithmetic. */
static const uint64_t EXP2_TABLE[32] = {
    0x3ff0000000000000ULL, 0x3fefd9b0d3158574ULL, 0x3fefb5586cf9890fULL, 0x3fef9301d0125b51ULL,
    0x3fef72b83c7d517bULL, 0x3fef54873168b9aaULL, 0x3fef387a6e756238ULL, 0x3fef1e9df51fdee1ULL,
    0x3fef06fe0a31b715ULL, 0x3feef1a7373aa9cbULL, 0x3feedea64c123422ULL, 0x3feece086061892dULL,
    0x3feebfdad5362a27ULL, 0x3feeb42b569d4f82ULL, 0x3feeab07dd485429ULL, 0x3feea47eb03a5585ULL,
    0x3feea09e667f3bcdULL, 0x3fee9f75e8ec5f74ULL, 0x3feea11473eb0187ULL, 0x3feea589994cce13ULL,
    0x3feeace5422aa0dbULL, 0x3feeb737b0cdc5e5ULL, 0x3feec49182a3f090ULL, 0x3feed503b23e255dULL,
    0x3feee89f995ad3adULL, 0x3feeff76f2fb5e47ULL, 0x3fef199bdd85529cULL, 0x3fef3720dcef9069ULL,
    0x3fef5818dcfba487ULL, 0x3fef7c97337b9b5fULL, 0x3fefa4afa2a490daULL, 0x3fefd0765b6e4540ULL,
};

float S2D_NAME(expf)(float x) {
  /* 32/ln2 and its leading 25 bits; the cubic's coefficients (glibc's, for r in units of 1/32) */
  const double scale = 0x1.71547652b82fep+5, scale_hi = 0x1.715476p+5, scale_lo = scale - scale_hi;
  const double round_shift = 0x1.8p+52;
  const double c0 = 0x1.c6af84b912394p-5 / 32 / 32 / 32, c1 = 0x1.ebfce50fac4f3p-3 / 32 / 32,
               c2 = 0x1.62e42ff0c52d6p-1 / 32;
  uint32_t u = bits_of_float(x), top = (u >> 20) & 0x7ff;
  if (top >= (bits_of_float(88.0f) >> 20)) { /* |x| >= 88, inf or NaN */
    if (u == 0xff800000u) return 0.0f;
    if (top >= (0x7f800000u >> 20)) return x + x;
    if (x > 0x1.62e42ep6f) return float_of_bits(0x7f800000); /* overflow */
    if (x < -0x1.9fe368p6f) return 0.0f;                     /* underflow */
  }
  double xd = (double)x;
  double z = S2D_NAME(__hexagon_muldf3)(scale, xd);
  double kd = z + round_shift; /* k = round(z), ties to even, in the low bits */
  uint64_t ki = bits_of_double(kd);
  kd -= round_shift;
  /* r = x * scale - k with one rounding: x * hi and x * lo are exact (x has 24 bits), so is
   * x * hi - k (|r| < 1, x * hi of at most 49 bits) */
  double r = (S2D_NAME(__hexagon_muldf3)(scale_hi, xd) - kd) + S2D_NAME(__hexagon_muldf3)(scale_lo, xd);
  double s = double_of_bits(EXP2_TABLE[ki % 32] + (ki << 47));
  double p = S2D_NAME(__hexagon_muldf3)(c0, r) + c1;
  double r2 = S2D_NAME(__hexagon_muldf3)(r, r);
  double y = S2D_NAME(__hexagon_muldf3)(c2, r) + 1.0;
  y = S2D_NAME(__hexagon_muldf3)(p, r2) + y;
  return (float)S2D_NAME(__hexagon_muldf3)(y, s);
}

/* ---- erff ------------------------------------------------------------------------------------ */

/* fdlibm's rational approximations of erf (Sun Microsystems, 1993: freely granted), as glibc's
 * erff evaluates them: Horner's rule from the highest coefficient, in float. The coefficients by
 * their bits (fdlibm gives each one's bits beside its decimal value). */
typedef union {
  uint32_t u;
  float f;
} float_bits;
static const float_bits ERF_P[5] = {{0x3e0375d4}, {0xbea66beb}, {0xbce9528f}, {0xbbbd1489}, {0xb7c756b1}};
static const float_bits ERF_Q[5] = {{0x3ecbbbce}, {0x3d852a63}, {0x3ba68116}, {0x390aee49}, {0xb684e21a}};
static const float_bits ERF_PA[7] = {{0xbb1acdc6}, {0x3ed46805}, {0xbebe9208}, {0x3ea2fe54},
                                     {0xbde31cc2}, {0x3d1151b3}, {0xbb0df9c0}};
static const float_bits ERF_QA[6] = {{0x3dd9f331}, {0x3f0a5785}, {0x3d931ae7}, {0x3e013307}, {0x3c5f6e13}, {0x3c445aa3}};
static const float_bits ERF_RA[8] = {{0xbc21a093}, {0xbf31a0b7}, {0xc128f022}, {0xc2798057},
                                     {0xc322658c}, {0xc3389ae7}, {0xc2a2932b}, {0xc11d077e}};
static const float_bits ERF_SA[8] = {{0x419d35ce}, {0x4309a863}, {0x43d9486f}, {0x442158c9},
                                     {0x43d6810b}, {0x42d9451f}, {0x40d23f7c}, {0xbd777f97}};
static const float_bits ERF_RB[7] = {{0xbc21a092}, {0xbf4c9dd4}, {0xc18e104b}, {0xc320a2ea},
                                     {0xc41f6441}, {0xc480230b}, {0xc3f1c275}};
static const float_bits ERF_SB[7] = {{0x41f2b459}, {0x43a2e571}, {0x44c01759}, {0x4547fdbb},
                                     {0x451f90ce}, {0x43ed43a7}, {0xc1b38712}};
static const float_bits ERX = {0x3f58560b}, EFX = {0x3e0375d4};

/* c[0] + t * (c[1] + t * (... + t * c[n - 1])) */
static float horner(const float_bits* c, int n, float t) {
  float v = c[n - 1].f;
  for (int i = n - 2; i >= 0; i--) v = c[i].f + t * v;
  return v;
}

/* 1 + t * (c[0] + t * (... + t * c[n - 1])) */
static float horner1(const float_bits* c, int n, float t) { return 1.0f + t * horner(c, n, t); }

float S2D_NAME(erff)(float x) {
  uint32_t u = bits_of_float(x), a = u & 0x7fffffff;
  int negative = (int)(u >> 31);
  if (a >= 0x7f800000) return (float)(1 - 2 * negative) + S2D_NAME(__hexagon_divsf3)(1.0f, x); /* +-1, NaN */
  if (a < 0x3f580000) {     /* |x| < 0.84375 */
    if (a < 0x31800000) {   /* |x| < 2^-28 */
      if (a < 0x04000000) return 0.0625f * (16.0f * x + (16.0f * EFX.f) * x);
      return x + EFX.f * x;
    }
    float z = x * x;
    float y = S2D_NAME(__hexagon_divsf3)(horner(ERF_P, 5, z), horner1(ERF_Q, 5, z));
    return x + x * y;
  }
  if (a < 0x3fa00000) { /* 0.84375 <= |x| < 1.25 */
    float s = float_of_bits(a) - 1.0f;
    float q = S2D_NAME(__hexagon_divsf3)(horner(ERF_PA, 7, s), horner1(ERF_QA, 6, s));
    return negative ? -ERX.f - q : ERX.f + q;
  }
  if (a >= 0x40c00000) return negative ? 1e-30f - 1.0f : 1.0f - 1e-30f; /* |x| >= 6 */
  float ax = float_of_bits(a);
  float s = S2D_NAME(__hexagon_divsf3)(1.0f, ax * ax);
  float big_r, big_s;
  if (a < 0x4036db6e) { /* |x| < 1/0.35 */
    big_r = horner(ERF_RA, 8, s);
    big_s = horner1(ERF_SA, 8, s);
  } else {
    big_r = horner(ERF_RB, 7, s);
    big_s = horner1(ERF_SB, 7, s);
  }
  float z = float_of_bits(a & 0xfffff000);
  float r = S2D_NAME(expf)(-z * z - 0.5625f) *
            S2D_NAME(expf)((z - ax) * (z + ax) + S2D_NAME(__hexagon_divsf3)(big_r, big_s));
  float q = S2D_NAME(__hexagon_divsf3)(r, ax);
  return negative ? q - 1.0f : 1.0f - q;
}
