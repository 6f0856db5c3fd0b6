// mx_common.cuh -- integer-exact helpers shared by every MX kernel (and by the host test harness).
//
// Everything here works on IEEE bit patterns with integer arithmetic, never on float arithmetic,
// so results do not depend on flush-to-zero (CuPy always compiles with -ftz=true), on the fast-math
// flags, or on whether the code runs on the device or on the host (tests/test_cu_host.py compiles
// these functions for the CPU with nvcc and compares them with the NumPy spec).
//
// No #include: NVRTC has no standard headers. The loader pastes this file in place of the
// `#include "mx_common.cuh"` line, so CuPy's kernel cache sees (and hashes) the full text.
#pragma once

#define MXK_HD __host__ __device__ __forceinline__

typedef unsigned int mxk_u32;
typedef unsigned long long mxk_u64;
typedef long long mxk_i64;

// ---- bit casts -----------------------------------------------------------------------------------

MXK_HD mxk_u64 mxk_f64_bits(double d) {
#ifdef __CUDA_ARCH__
    return (mxk_u64)__double_as_longlong(d);
#else
    mxk_u64 u;
    __builtin_memcpy(&u, &d, 8);
    return u;
#endif
}

MXK_HD double mxk_bits_f64(mxk_u64 u) {
#ifdef __CUDA_ARCH__
    return __longlong_as_double((long long)u);
#else
    double d;
    __builtin_memcpy(&d, &u, 8);
    return d;
#endif
}

MXK_HD int mxk_clz32(mxk_u32 x) {   // x != 0
#ifdef __CUDA_ARCH__
    return __clz((int)x);
#else
    return __builtin_clz(x);
#endif
}

MXK_HD int mxk_clz64(mxk_u64 x) {   // x != 0
#ifdef __CUDA_ARCH__
    return __clzll((long long)x);
#else
    return __builtin_clzll(x);
#endif
}

// ---- input widening (all exact) ------------------------------------------------------------------

// bfloat16 bits -> float32 bits: the top half of a float32.
MXK_HD mxk_u32 mxk_bf16_to_f32bits(mxk_u32 h) { return h << 16; }

// float16 bits -> float32 bits (exact; subnormals normalised, Inf/NaN kept, NaN payload kept).
MXK_HD mxk_u32 mxk_f16_to_f32bits(mxk_u32 h) {
    mxk_u32 sign = (h & 0x8000u) << 16;
    mxk_u32 e = (h >> 10) & 0x1Fu;
    mxk_u32 m = h & 0x3FFu;
    if (e == 0x1Fu) return sign | 0x7F800000u | (m << 13);          // Inf / NaN
    if (e != 0) return sign | ((e + 112u) << 23) | (m << 13);       // normal: bias 15 -> 127
    if (m == 0) return sign;                                        // +-0
    int lz = mxk_clz32(m) - 21;                                     // shift m's top bit to bit 10
    m = (m << lz) & 0x3FFu;
    return sign | ((mxk_u32)(113 - lz) << 23) | (m << 13);
}

// float64 -> float32 bits, round to nearest even, subnormal results and overflow to Inf included.
// Used instead of a float cast because -ftz=true may flush a subnormal float32 result to zero.
MXK_HD mxk_u32 mxk_f64_to_f32bits_rne(double d) {
    mxk_u64 u = mxk_f64_bits(d);
    mxk_u32 sign = (mxk_u32)(u >> 32) & 0x80000000u;
    int e = (int)((u >> 52) & 0x7FF);
    mxk_u64 m = u & 0xFFFFFFFFFFFFFull;
    if (e == 0x7FF) return sign | 0x7F800000u | (m ? 0x400000u | (mxk_u32)(m >> 29) : 0u);
    if (e == 0 && m == 0) return sign;
    if (e == 0) e = 1; else m |= 1ull << 52;         // float64 subnormals are far below float32's range
    int E = e - 1023;                                // value = m * 2^(E - 52)
    int qexp = (E > -126 ? E : -126) - 23;           // float32 quantum at this magnitude
    int shift = qexp - (E - 52);                     // bits of m to drop (>= 29)
    mxk_u64 n;
    if (shift >= 64) {
        n = 0;                                       // far below half the smallest subnormal
    } else {
        n = m >> shift;
        mxk_u64 rem = m & ((1ull << shift) - 1);
        mxk_u64 half = 1ull << (shift - 1);
        if (rem > half || (rem == half && (n & 1))) n++;
    }
    // n * 2^qexp; for normal range n in [2^23, 2^24] (2^24 carries into the exponent below)
    mxk_i64 bexp = (mxk_i64)qexp + 23 + 127;         // biased exponent if n has its top bit at 23
    if (E < -126) return sign | (mxk_u32)n;          // subnormal (n == 2^23 is the smallest normal)
    mxk_u64 bits = ((mxk_u64)(bexp - 1) << 23) + n;  // n's implicit bit adds the 1 to the exponent
    if (bits >= 0x7F800000ull) return sign | 0x7F800000u;
    return sign | (mxk_u32)bits;
}

// float32 bits -> float64, exactly (normal, subnormal, zero; finite only).
MXK_HD double mxk_f32bits_to_f64(mxk_u32 a) {
    mxk_u64 sign = (mxk_u64)(a >> 31) << 63;
    int e = (int)(a >> 23) & 0xFF;
    mxk_u64 m = a & 0x7FFFFFu;
    if (e == 0) {
        if (m == 0) return mxk_bits_f64(sign);
        int lz = mxk_clz64(m) - 40;                  // move the top bit to bit 23
        m = (m << lz) & 0x7FFFFFu;
        e = 1 - lz;
    }
    return mxk_bits_f64(sign | ((mxk_u64)(e - 127 + 1023) << 52) | (m << 29));
}

// ---- conventions: one int of flags (packed by cupy_kernels/_conventions.py from a QuantConfig) ------

#define MXK_SR_FLOOR 0          // b = E - emax                      (ScaleRule.FLOOR)
#define MXK_SR_CEIL 1           // b = E + (M != 0) - emax           (ScaleRule.CEIL)
#define MXK_SR_EVEN 2           // round amax to mbits, then FLOOR   (ScaleRule.EVEN)
#define MXK_SR_RCEIL 3          // b = ceil(log2 fl32(amax / max))   (ScaleRule.RCEIL)

#define MXK_RND_RNE 0           // Rounding.RNE
#define MXK_RND_AWAY 1          // Rounding.AWAY
#define MXK_RND_ZERO 2          // Rounding.ZERO
#define MXK_RND_MX 3            // Rounding.MX_NEAREST: AWAY, plus microxcaling's float32 quirks

#define MXK_NF_NAN_SCALE 0      // NonFinite.NAN_SCALE: 0xFF
#define MXK_NF_SATURATE 1       // NonFinite.SATURATE: 0xFE
#define MXK_NF_TRITON 2         // NonFinite.TRITON: Inf -> 0xFF, NaN -> 0x00 (RCEIL) / 0xFF (FLOOR)

#define MXK_ELEM_E2M1 0
#define MXK_ELEM_E4M3 1
#define MXK_ELEM_E5M2 2

struct MxkConv {
    int scale_rule;        // MXK_SR_*
    int descale_divide;    // RCEIL: 1 = fl32(amax / max) (Descale.DIVIDE), 0 = fl32(amax * fl32(1/max))
    int subnormal_bump;    // RCEIL, subnormal descale: 1 = any non-zero -> byte 1 (BUMP), 0 = CEIL
    int rounding;          // MXK_RND_*
    int amax_nan_ignore;   // 1 = AmaxNaN.IGNORE
    int nonfinite;         // MXK_NF_*
    int edge_zero;         // 1 = EdgeMultiplier.ZERO (bytes 0x00 and 0xFF multiply by 0)
    int nan_code_torchao;  // E2M1 magnitude code of a NaN: 1 -> 0x3, 0 -> 0x7
    int elem;              // MXK_ELEM_*
    int log2_f32;          // FLOOR: 1 = floor of a float32 log2 (Log2.FLOAT32), 0 = exponent bits
    int even_overflow;     // EVEN, amax rounding up to 2^128: 0 EXACT (b = 255 - emax, clamped),
                           // 1 NAN_SCALE (0xFF), 2 SATURATE (0xFE)
    int log2_quotient;     // FLOOR: 1 = exponent field of fl32(amax / 2^emax) (Log2.QUOTIENT)
};

MXK_HD MxkConv mxk_unpack_conv(int f) {
    MxkConv c;
    c.scale_rule = f & 7;
    c.descale_divide = (f >> 3) & 1;
    c.subnormal_bump = (f >> 4) & 1;
    c.rounding = (f >> 5) & 3;
    c.amax_nan_ignore = (f >> 7) & 1;
    c.nonfinite = (f >> 8) & 3;
    c.edge_zero = (f >> 10) & 1;
    c.nan_code_torchao = (f >> 11) & 1;
    c.elem = (f >> 12) & 3;
    c.log2_f32 = (f >> 14) & 1;
    c.even_overflow = (f >> 15) & 3;
    c.log2_quotient = (f >> 17) & 1;
    return c;
}

// Element format constants.
MXK_HD int mxk_elem_ebits(int elem) { return elem == MXK_ELEM_E2M1 ? 2 : (elem == MXK_ELEM_E4M3 ? 4 : 5); }
MXK_HD int mxk_elem_mbits(int elem) { return elem == MXK_ELEM_E2M1 ? 1 : (elem == MXK_ELEM_E4M3 ? 3 : 2); }
MXK_HD int mxk_elem_emax(int elem) { return elem == MXK_ELEM_E2M1 ? 2 : (elem == MXK_ELEM_E4M3 ? 8 : 15); }
MXK_HD mxk_u32 mxk_elem_maxcode(int elem) {    // largest finite magnitude code
    return elem == MXK_ELEM_E2M1 ? 0x7u : (elem == MXK_ELEM_E4M3 ? 0x7Eu : 0x7Bu);
}
MXK_HD double mxk_elem_max(int elem) { return elem == MXK_ELEM_E2M1 ? 6.0 : (elem == MXK_ELEM_E4M3 ? 448.0 : 57344.0); }
MXK_HD int mxk_elem_signbit(int elem) { return elem == MXK_ELEM_E2M1 ? 3 : 7; }
MXK_HD mxk_u32 mxk_nan_mag(const MxkConv& c) {
    if (c.elem != MXK_ELEM_E2M1) return 0x7Fu;      // E4M3 NaN, and a NaN of E5M2
    return c.nan_code_torchao ? 0x3u : 0x7u;
}

// floor(log2f(amax)) where log2f is the correctly rounded float32 log2 (NumPy's float32 log2 agrees
// with it at every float32 below a power of two, tests/test_cu_host.py): it differs from the exact
// E - 127 only when log2 rounds UP to the next integer for an amax a few ulps below 2^(E-126).
// A: finite amax bits (sign clear); 0 gives a very negative value (clamped to byte 0 by the caller).
MXK_HD int mxk_floor_log2_f32(mxk_u32 A) {
    int E = (int)(A >> 23) & 0xFF;
    if (A == 0) return -1000;
    if (E == 0) return -127 - (mxk_clz32(A) - 9);      // subnormal: exact (never near 2^k from below
                                                      // in a way that changes the clamped byte)
    if ((A & 0x7FFFFFu) < 0x7F0000u) return E - 127;    // not within 2^-7 below 2^(E-126): exact
    double l;
#ifdef __CUDA_ARCH__
    l = log2(mxk_f32bits_to_f64(A));
#else
    l = __builtin_log2(mxk_f32bits_to_f64(A));
#endif
    double lf = mxk_f32bits_to_f64(mxk_f64_to_f32bits_rne(l));     // rounded to float32
    return (lf >= (double)(E - 126)) ? E - 126 : E - 127;
}

// ---- E8M0 scale byte of a block ----------------------------------------------------------------------
//
// A: float32 bits of the block's amax (sign clear; NaN if the block's max is NaN). Returns 0..255.
// mxfp4ref/scales.py::scale_bytes in integer arithmetic.
MXK_HD mxk_u32 mxk_scale_byte(mxk_u32 A, const MxkConv& c) {
    int E = (int)(A >> 23) & 0xFF;
    int M = (int)(A & 0x7FFFFFu);
    int emax = mxk_elem_emax(c.elem);
    bool nonfinite = (E == 0xFF);
    int b;
    if (c.scale_rule == MXK_SR_FLOOR && c.log2_f32) {
        b = mxk_floor_log2_f32(A) + 127 - emax;
    } else if (c.scale_rule == MXK_SR_FLOOR) {
        b = E - emax;
        // Log2.QUOTIENT: fl32(amax / 2^emax) is a subnormal tie that rounds up to 2^-126 (byte 1)
        // exactly when amax = (2 - 2^-23) * 2^(emax-127); in integers, so -ftz cannot change it.
        if (c.log2_quotient && E == emax && M == 0x7FFFFF) b = 1;
    } else if (c.scale_rule == MXK_SR_CEIL) {
        b = E + (M != 0) - emax;
    } else if (c.scale_rule == MXK_SR_EVEN) {
        mxk_u32 half = 1u << (23 - mxk_elem_mbits(c.elem) - 1);
        int Er = (int)((A + half) >> 23);          // may carry to 255 (2^128) for E = 254
        b = Er - emax;
        if (Er == 0xFF && !nonfinite && c.even_overflow == 1) return 0xFFu;
        if (Er == 0xFF && !nonfinite && c.even_overflow == 2) return 0xFEu;
    } else if (!nonfinite && c.elem == MXK_ELEM_E2M1 && E >= 4) {
        // RCEIL, E2M1, the descale amax/6 a normal float32 (E >= 4): ceil(log2(amax/6)) in integers,
        // b = E - 2 + (significand > 1.5). Both descale arithmetics give this byte here (rounding
        // fl(amax/6) or fl(amax * fl(1/6)) never crosses a power of two; tests/test_cu_host.py
        // checks every mantissa of several binades against the spec).
        b = E - 2 + (M > 0x400000);
    } else if (!nonfinite) {  // RCEIL: the float32 descale D, rounded once (float64 holds the
        double mx = mxk_elem_max(c.elem);  // exact product; fl32(fl64(a / m)) == fl32(a / m))
        double a64 = mxk_f32bits_to_f64(A);
        mxk_u32 Dbits;
        if (c.descale_divide) {
            Dbits = mxk_f64_to_f32bits_rne(a64 / mx);
        } else {
            double inv = mxk_f32bits_to_f64(mxk_f64_to_f32bits_rne(1.0 / mx));  // fl32(1/max)
            Dbits = mxk_f64_to_f32bits_rne(a64 * inv);                          // 24 x 24 bits: exact
        }
        int ED = (int)(Dbits >> 23) & 0xFF;
        int MD = (int)(Dbits & 0x7FFFFFu);
        if (ED == 0) b = c.subnormal_bump ? (MD != 0) : (MD > 0x400000);
        else b = ED + (MD != 0);
    } else {
        b = 0;
    }
    b = b < 0 ? 0 : (b > 254 ? 254 : b);
    if (!nonfinite) return (mxk_u32)b;
    if (c.nonfinite == MXK_NF_NAN_SCALE) return 0xFFu;
    if (c.nonfinite == MXK_NF_SATURATE) return 0xFEu;
    bool is_nan = (E == 0xFF) && (M != 0);
    return (is_nan && c.scale_rule == MXK_SR_RCEIL) ? 0x00u : 0xFFu;
}

// Multiplier of a block with byte b, as the exponent k of 2^k, or one of the edge kinds.
#define MXK_MUL_POW2 0     // multiply by 2^k (exact)
#define MXK_MUL_ZERO 1     // multiply by 0.0
#define MXK_MUL_NAN 2      // multiply by NaN (0x7FC00000)

MXK_HD int mxk_multiplier(mxk_u32 b, const MxkConv& c, int* k) {
    *k = 127 - (int)b;
    if (b == 0xFFu) return c.edge_zero ? MXK_MUL_ZERO : MXK_MUL_NAN;
    if (b == 0u && c.edge_zero) return MXK_MUL_ZERO;
    return MXK_MUL_POW2;
}

// ---- the element encoder ---------------------------------------------------------------------------
//
// Magnitude code of |x| * 2^k in a small float format with `ebits` exponent bits (bias 2^(ebits-1)-1),
// `mbits` mantissa bits and subnormals, rounded by `rnd`, saturating at `maxcode`.
// a: |x| as float32 bits, finite (a < 0x7F800000). The arithmetic is exact: the result equals the
// spec's "round the real number x * 2^k to the grid", whatever the magnitudes involved.
MXK_HD mxk_u32 mxk_encode_mag(mxk_u32 a, int k, int ebits, int mbits, int rnd, mxk_u32 maxcode) {
    if (a == 0) return 0;
    int e = (int)(a >> 23);
    mxk_u32 m = a & 0x7FFFFFu;
    if (e == 0) {                                   // float32 subnormal: normalise
        int lz = mxk_clz32(m) - 8;
        m <<= lz;
        e = 1 - lz;
    } else {
        m |= 0x800000u;
    }
    int E = e - 127 + k;                            // value = m * 2^(E - 23), m in [2^23, 2^24)
    int bias = (1 << (ebits - 1)) - 1;
    int emin = 1 - bias;
    if (E - emin > 40) return maxcode;              // far above the format: saturate
    int qexp = (E > emin ? E : emin) - mbits;       // quantum of the target grid here
    int shift = qexp - (E - 23);                    // bits of m below the quantum (>= 23 - mbits)
    mxk_u32 n;
    if (rnd == MXK_RND_MX && E == emin - mbits - 2 && m == 0xFFFFFFu) {
        n = 1;   // microxcaling: fl32(t + 0.5) with t = 0.5 - 2^-25 rounds to 1.0: the float just below
                 // half the smallest subnormal rounds UP to it (E2M1: 0x3E7FFFFF -> 0.5)
    } else if (shift > 25) {
        n = 0;                                      // value < quantum / 4: rounds to zero in every rule
    } else {
        n = m >> shift;
        mxk_u32 rem = m & ((1u << shift) - 1u);
        mxk_u32 half = 1u << (shift - 1);
        if (rnd == MXK_RND_RNE) {
            if (rem > half || (rem == half && (n & 1u))) n++;
        } else if (rnd == MXK_RND_AWAY || rnd == MXK_RND_MX) {
            if (rem >= half) n++;
        }
    }
    // value == n * 2^qexp. Below emin n is the subnormal code (n == 2^mbits is the smallest normal);
    // at or above emin the code is ((E - emin) << mbits) + n, and a carry out of n moves the exponent.
    mxk_u32 code = (E < emin) ? n : ((mxk_u32)(E - emin) << mbits) + n;
    return code > maxcode ? maxcode : code;
}

// E2M1 magnitude of |x| * 2^k, through the generic encoder.
MXK_HD mxk_u32 mxk_e2m1_mag(mxk_u32 a, int k, int rnd) { return mxk_encode_mag(a, k, 2, 1, rnd, 7u); }

// ---- fast E2M1 encode by thresholds ------------------------------------------------------------------
//
// For a block whose multiplier is 2^k with every threshold t * 2^-k a normal float32, the E2M1 code of
// |x| * 2^k is the number of thresholds that |x| reaches. Thresholds are made inclusive (|x| >= T):
// "|x| > t" is "|x| >= the next float32 after t" (bit pattern + 1), exact. A 3-level binary search
// over the 7 thresholds takes 3 float compares and 4 selects per element (float pipe); flush-to-zero
// cannot matter: every threshold is a normal float32 and a subnormal |x| is below all of them.
// NaN: every "!(|x| < T)" is true, so NaN gets code 7; +-Inf also 7.
struct MxkE2m1Thresholds {
    float t[7];     // inclusive thresholds on |x|, increasing
};

MXK_HD float mxk_bits_f32(mxk_u32 u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
#endif
}

MXK_HD mxk_u32 mxk_f32_bits(float f) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    mxk_u32 u;
    __builtin_memcpy(&u, &f, 4);
    return u;
#endif
}

// Single IEEE operations, never contracted into others (device: the _rn intrinsics).
#ifdef __CUDA_ARCH__
MXK_HD float mxk_fmul(float a, float b) { return __fmul_rn(a, b); }
MXK_HD float mxk_fadd(float a, float b) { return __fadd_rn(a, b); }
MXK_HD float mxk_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
MXK_HD float mxk_fmin(float a, float b) { return fminf(a, b); }
MXK_HD float mxk_fabs(float a) { return fabsf(a); }
#else
MXK_HD float mxk_fmul(float a, float b) { volatile float r = a * b; return r; }
MXK_HD float mxk_fadd(float a, float b) { volatile float r = a + b; return r; }
MXK_HD float mxk_fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
MXK_HD float mxk_fmin(float a, float b) { return __builtin_fminf(a, b); }
MXK_HD float mxk_fabs(float a) { return __builtin_fabsf(a); }
#endif

// Midpoints 0.25 0.75 1.25 1.75 2.5 3.5 5 (RNE, AWAY) or grid points 0.5 1 1.5 2 3 4 6 (ZERO), as
// float32 bits, divided by 2^k. False if some threshold would not be a normal float32.
MXK_HD bool mxk_e2m1_thresholds(int k, int rnd, MxkE2m1Thresholds* th) {
    const mxk_u32 mid[7] = {0x3E800000u, 0x3F400000u, 0x3FA00000u, 0x3FE00000u,
                            0x40200000u, 0x40600000u, 0x40A00000u};
    const mxk_u32 pts[7] = {0x3F000000u, 0x3F800000u, 0x3FC00000u, 0x40000000u,
                            0x40400000u, 0x40800000u, 0x40C00000u};
    // exponent fields 125..129 (mid) and 126..129 (pts); after dividing by 2^k they must stay in 1..254
    if (125 - k < 1 || 129 - k > 254) return false;
    // strict comparisons (a tie rounds DOWN): RNE's ties at 0.25, 1.25, 2.5 and 5 go to the even
    // code below; AWAY has none; ZERO compares with the grid points themselves, inclusive.
    const mxk_u32 strict = (rnd == MXK_RND_RNE) ? 0x55u : 0u;
#pragma unroll
    for (int i = 0; i < 7; i++) {
        const mxk_u32 base = (rnd == MXK_RND_ZERO) ? pts[i] : mid[i];
        th->t[i] = mxk_bits_f32(base - ((mxk_u32)k << 23) + ((strict >> i) & 1u));
    }
    return true;
}

// Magnitude code (0..7) of |x| (ax, a float32; NaN gives 7) against inclusive thresholds.
MXK_HD mxk_u32 mxk_e2m1_mag_th(float ax, const MxkE2m1Thresholds& th) {
    const bool p2 = !(ax < th.t[3]);                              // code >= 4
    const float tm = p2 ? th.t[5] : th.t[1];
    const bool p1 = !(ax < tm);                                   // code in {2,3} or {6,7}
    const float tl = p2 ? (p1 ? th.t[6] : th.t[4]) : (p1 ? th.t[2] : th.t[0]);
    const bool p0 = !(ax < tl);
    return (p2 ? 4u : 0u) | (p1 ? 2u : 0u) | (p0 ? 1u : 0u);
}

// Is s = fl32(x * multiplier) exactly +-0 for a finite x (a = |x| bits)? True for x = 0, for the
// zero multiplier, and when |x| * 2^k <= 2^-150 (float32 rounds it to zero; 2^-150 is a tie to even).
MXK_HD bool mxk_scaled_is_zero(mxk_u32 a, int mk, int k) {
    if (a >= 0x7F800000u) return false;
    if (a == 0 || mk == MXK_MUL_ZERO) return true;
    if (mk != MXK_MUL_POW2) return false;
    int e = (int)(a >> 23);
    mxk_u32 m = a & 0x7FFFFFu;
    if (e == 0) { int lz = mxk_clz32(m) - 8; m <<= lz; e = 1 - lz; } else { m |= 0x800000u; }
    int E = e - 127 + k;                                   // |x| * 2^k = m * 2^(E - 23)
    return E < -150 || (E == -150 && m == 0x800000u);
}

// ---- one element -------------------------------------------------------------------------------------
//
// Code (sign bit | magnitude code) of element x (float32 bits) in a block with multiplier kind `mk`
// (exponent k). Follows mxfp4ref/blocks.py::quantize_blocks / encode_elements on s = fl32(x * mult):
// a NaN multiplier makes every element +NaN; a NaN x keeps its own sign; Inf * 0 is the x86 default
// NaN, which is negative (the NumPy spec runs on x86); +-Inf otherwise saturates.
MXK_HD mxk_u32 mxk_elem_code(mxk_u32 xb, int mk, int k, const MxkConv& c) {
    int sb = mxk_elem_signbit(c.elem);
    mxk_u32 sign = (xb >> 31) << sb;
    mxk_u32 a = xb & 0x7FFFFFFFu;
    mxk_u32 nanm = mxk_nan_mag(c);
    if (mk == MXK_MUL_NAN) return nanm;                            // NaN multiplier: every element +NaN
    if (a > 0x7F800000u) return nanm | sign;                       // NaN element keeps its sign
    if (c.rounding == MXK_RND_MX && mxk_scaled_is_zero(a, mk, k)) sign = 0;   // torch.sign(+-0) = 0
    if (mk == MXK_MUL_ZERO) return (a == 0x7F800000u) ? (nanm | (1u << sb)) : sign;  // Inf*0, +-0
    if (a == 0x7F800000u) return mxk_elem_maxcode(c.elem) | sign; // +-Inf saturates
    return mxk_encode_mag(a, k, mxk_elem_ebits(c.elem), mxk_elem_mbits(c.elem), c.rounding,
                          mxk_elem_maxcode(c.elem)) | sign;
}

// |x| bits for the block max: NaN keeps its (larger than Inf) bit pattern, so an unsigned max
// propagates NaN; with AmaxNaN.IGNORE a NaN counts as 0.
MXK_HD mxk_u32 mxk_amax_key(mxk_u32 xb, const MxkConv& c) {
    mxk_u32 a = xb & 0x7FFFFFFFu;
    return (c.amax_nan_ignore && a > 0x7F800000u) ? 0u : a;
}

// ---- dequantize one E2M1 code ------------------------------------------------------------------------
//
// float32 bits of E2M1 code `code` (0..15) times 2^(b-127), rounded to float32 (exact except above
// float32's range, which gives Inf); b == 0xFF gives +NaN (0x7FC00000), as
// mxfp4ref/blocks.py::dequantize_blocks does.
MXK_HD mxk_u32 mxk_e2m1_dequant_bits(mxk_u32 code, mxk_u32 b) {
    if (b == 0xFFu) return 0x7FC00000u;
    mxk_u32 sign = (code & 8u) << 28;
    mxk_u32 c = code & 7u;
    if (c == 0) return sign;
    // magnitude as 1.f * 2^(ef - 127): c = 1 -> 0.5; c >= 2 -> exponent (c >> 1) - 1, mantissa c & 1
    int ef = (c == 1u ? 126 : (int)(c >> 1) + 126) + (int)b - 127;
    mxk_u32 mant = (c >= 2u) ? ((c & 1u) << 22) : 0u;
    if (ef >= 255) return sign | 0x7F800000u;
    if (ef >= 1) return sign | ((mxk_u32)ef << 23) | mant;
    return sign | ((0x800000u | mant) >> (1 - ef));                // ef >= -1: no bits are lost
}

// ---- 8-element chunks, as the fast kernels process them ------------------------------------------------

// sum over j = 0..7 of (float32 bits of 1.5 * 2^23) << 4j, modulo 2^32.
MXK_HD mxk_u32 mxk_m0_sum() {
    mxk_u32 t = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) t += 0x4B400000u << (4 * j);
    return t;
}

// 8 consecutive elements (float32 bits, v[0] first) of a block with scale byte b -> 4 packed bytes
// (element 2i in the low nibble of byte i; byte 0 in bits 0..7). Uses the threshold encoder when the
// block allows it, else the generic one; both give the same codes (tests/test_cu_host.py checks this).
MXK_HD mxk_u32 mxk_e2m1_chunk8(const mxk_u32 v[8], mxk_u32 b, const MxkConv& c) {
    int k;
    const int mk = mxk_multiplier(b, c, &k);
    mxk_u32 word = 0;
    MxkE2m1Thresholds th;
    if (mk == MXK_MUL_POW2 && c.rounding == MXK_RND_RNE && k >= -126 && k <= 124) {
        // RNE by float rounding (FMA pipe): s = |x| * 2^k (exact, or below 2^-126 where the code is
        // 0 anyway); with M = 1.5 * 2^23 (ulp 1), fl(2s + M) = M + rne(2s), fl(s + M + 2) =
        // M + 2 + rne(s), fl(s/2 + M + 4) = M + 4 + rne(s/2): the E2M1 code of s in [0, 2), [2, 4)
        // and [4, 8); each candidate is <= the others exactly in its own range, so the code is their
        // minimum, saturated at M + 7 (fminf drops a NaN, so NaN and Inf give 7). k <= 124 keeps a
        // subnormal x (flushed to zero under -ftz) below 0.25 after scaling.
        const float P = mxk_bits_f32((mxk_u32)(k + 127) << 23);
        const float M0 = 12582912.0f;
        // word = sum_j (bits(r_j) << 4j) - sum_j (bits(M0) << 4j) = sum_j code_j << 4j (mod 2^32,
        // each code_j < 8), and the sign bits are added into bit 4j+3 separately.
        mxk_u32 sgn = 0;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float sj = mxk_fmul(mxk_fabs(mxk_bits_f32(v[j])), P);
            float r = mxk_fmin(mxk_fma(sj, 2.0f, M0), mxk_fadd(sj, M0 + 2.0f));
            r = mxk_fmin(mxk_fmin(r, mxk_fma(sj, 0.5f, M0 + 4.0f)), M0 + 7.0f);
            mxk_u32 rb = mxk_f32_bits(r);
            if (c.nan_code_torchao && (v[j] & 0x7FFFFFFFu) > 0x7F800000u) rb = 0x4B400003u;
            word += rb << (4 * j);
            sgn += (v[j] >> 31) << (4 * j + 3);
        }
        word = (word - mxk_m0_sum()) | sgn;
    } else if (mk == MXK_MUL_POW2 && c.rounding != MXK_RND_MX && mxk_e2m1_thresholds(k, c.rounding, &th)) {
        if (!c.nan_code_torchao) {                      // NaN -> 7 comes out of the search itself
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const mxk_u32 m = mxk_e2m1_mag_th(mxk_bits_f32(v[j] & 0x7FFFFFFFu), th);
                word |= (m | ((v[j] >> 28) & 8u)) << (4 * j);
            }
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const mxk_u32 a = v[j] & 0x7FFFFFFFu;
                const mxk_u32 m = (a > 0x7F800000u) ? 0x3u : mxk_e2m1_mag_th(mxk_bits_f32(a), th);
                word |= (m | ((v[j] >> 28) & 8u)) << (4 * j);
            }
        }
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) word |= mxk_elem_code(v[j], mk, k, c) << (4 * j);
    }
    return word;
}

// float32 bits of E2M1 code c (sign in bit 3) times 2^eoff, for a block whose every result is a
// normal float32 (2 <= b <= 252, eoff = b - 127): magnitude codes 2..7 have float32 bits
// (c + 252) << 22 and code 1 (0.5) has 252 << 22.
MXK_HD mxk_u32 mxk_e2m1_normal_bits(mxk_u32 c, int eoff) {
    const mxk_u32 m = c & 7u;
    const mxk_u32 mag = m ? (((m + 252u - (m == 1u)) << 22) + ((mxk_u32)eoff << 23)) : 0u;
    return mag | ((c & 8u) << 28);
}

// 4 packed bytes (8 codes) of a block with scale byte b -> 8 float32 bit patterns.
MXK_HD void mxk_e2m1_dequant_chunk8(mxk_u32 w, mxk_u32 b, mxk_u32 f[8]) {
    if (b >= 2u && b <= 252u) {
        const int eoff = (int)b - 127;
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] = mxk_e2m1_normal_bits((w >> (4 * j)) & 0xFu, eoff);
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] = mxk_e2m1_dequant_bits((w >> (4 * j)) & 0xFu, b);
    }
}

// ---- bfloat16 input, one thread per block: packed bf16x2 arithmetic -----------------------------------
//
// bf16x2 fused multiply-add (one rounding, round to nearest even) and minimum (a NaN operand yields
// the other operand). Device: the PTX instructions (sm_80+); host: an exact emulation for the tests.
#ifndef __CUDA_ARCH__
MXK_HD mxk_u32 mxk_bf16_from_f64_rne(double d) {     // host only: round a double to bfloat16 bits
    mxk_u64 u = mxk_f64_bits(d);
    mxk_u32 sign = (mxk_u32)(u >> 48) & 0x8000u;
    int e = (int)((u >> 52) & 0x7FF);
    mxk_u64 m = u & 0xFFFFFFFFFFFFFull;
    if (e == 0x7FF) return sign | 0x7F80u | (m ? 0x40u : 0u);
    if (e == 0 && m == 0) return sign;
    if (e == 0) e = 1; else m |= 1ull << 52;
    int E = e - 1023;
    int qexp = (E > -126 ? E : -126) - 7;
    int shift = qexp - (E - 52);
    mxk_u64 n;
    if (shift >= 64) {
        n = 0;
    } else {
        n = m >> shift;
        mxk_u64 rem = m & ((1ull << shift) - 1), half = 1ull << (shift - 1);
        if (rem > half || (rem == half && (n & 1))) n++;
    }
    if (E < -126) return sign | (mxk_u32)n;
    mxk_u64 bits = ((mxk_u64)(qexp + 7 + 127 - 1) << 7) + n;
    if (bits >= 0x7F80ull) return sign | 0x7F80u;
    return sign | (mxk_u32)bits;
}
MXK_HD double mxk_bf16_to_f64(mxk_u32 h) { return mxk_f32bits_to_f64(h << 16); }
#endif

MXK_HD mxk_u32 mxk_bf16x2_fma(mxk_u32 a, mxk_u32 b, mxk_u32 c) {
#ifdef __CUDA_ARCH__
    mxk_u32 d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#else
    mxk_u32 out = 0;
    for (int h = 0; h < 2; h++) {
        mxk_u32 x = (a >> (16 * h)) & 0xFFFFu, y = (b >> (16 * h)) & 0xFFFFu, z = (c >> (16 * h)) & 0xFFFFu;
        mxk_u32 r;
        if (((x & 0x7FFFu) > 0x7F80u) || ((y & 0x7FFFu) > 0x7F80u) || ((z & 0x7FFFu) > 0x7F80u)) r = 0x7FFFu;
        else r = mxk_bf16_from_f64_rne(mxk_bf16_to_f64(x) * mxk_bf16_to_f64(y) + mxk_bf16_to_f64(z));
        out |= r << (16 * h);
    }
    return out;
#endif
}

MXK_HD mxk_u32 mxk_bf16x2_min(mxk_u32 a, mxk_u32 b) {
#ifdef __CUDA_ARCH__
    mxk_u32 d;
    asm("min.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
#else
    mxk_u32 out = 0;
    for (int h = 0; h < 2; h++) {
        mxk_u32 x = (a >> (16 * h)) & 0xFFFFu, y = (b >> (16 * h)) & 0xFFFFu, r;
        bool xn = (x & 0x7FFFu) > 0x7F80u, yn = (y & 0x7FFFu) > 0x7F80u;
        if (xn && yn) r = 0x7FFFu;
        else if (xn) r = y;
        else if (yn) r = x;
        else r = (mxk_bf16_to_f64(x) <= mxk_bf16_to_f64(y)) ? x : y;
        out |= r << (16 * h);
    }
    return out;
#endif
}

// One block of 32 bfloat16 (w: 16 words, element 2i in the low half of w[i]) -> 4 words of packed
// codes (element 2i in the low nibble) and the scale byte (returned).
// Fast path (RNE, power-of-two multiplier with -126 <= k <= 124, NaN code 7): two elements per
// instruction: s = |x| * 2^k (exact, or below 2^-126 where the code is 0), then the three RNE
// candidates of mxk_e2m1_chunk8 in bfloat16 with M = 192 (ulp 1 in [128, 256)); min.bf16x2 drops a
// NaN, so NaN and Inf give 7. Everything else goes through the generic element code.
MXK_HD mxk_u32 mxk_quant_block_bf16(const mxk_u32 w[16], mxk_u32 out[4], const MxkConv& c) {
    mxk_u32 hi = 0, lo = 0;                                       // max of |x| as float32 bits
    if (!c.amax_nan_ignore) {
#pragma unroll
        for (int i = 0; i < 16; i++) {
            hi = max(hi, w[i] & 0x7FFF0000u);
            lo = max(lo, (w[i] << 16) & 0x7FFF0000u);
        }
    } else {
#pragma unroll
        for (int i = 0; i < 16; i++) {
            hi = max(hi, mxk_amax_key(w[i] & 0xFFFF0000u, c));
            lo = max(lo, mxk_amax_key(w[i] << 16, c));
        }
    }
    const mxk_u32 b = mxk_scale_byte(max(hi, lo), c);
    int k;
    const int mk = mxk_multiplier(b, c, &k);
    // NaN elements reach this path only when amax ignores NaN (with AmaxNaN.PROPAGATE a NaN makes the
    // scale non-finite); the torchao NaN code (3) is then the one thing the fast path cannot produce.
    const bool nan_code_ok = !(c.nan_code_torchao && c.amax_nan_ignore);
    if (mk == MXK_MUL_POW2 && c.rounding == MXK_RND_RNE && nan_code_ok && k >= -126 && k <= 124) {
        const mxk_u32 P = ((mxk_u32)(k + 127) << 7) * 0x10001u;   // 2^k in both halves
#pragma unroll
        for (int q = 0; q < 4; q++) {
            mxk_u32 word = 0;
#pragma unroll
            for (int h = 0; h < 4; h++) {
                const mxk_u32 x = w[4 * q + h];
                const mxk_u32 s = mxk_bf16x2_fma(x & 0x7FFF7FFFu, P, 0x80008000u);   // * 2^k, + -0
                mxk_u32 r = mxk_bf16x2_min(mxk_bf16x2_fma(s, 0x40004000u, 0x43404340u),   // 2s + 192
                                           mxk_bf16x2_fma(s, 0x3F803F80u, 0x43424342u));  // s + 194
                r = mxk_bf16x2_min(r, mxk_bf16x2_fma(s, 0x3F003F00u, 0x43444344u));       // s/2 + 196
                r = mxk_bf16x2_min(r, 0x43474347u);                                       // 199 = 7
                const mxk_u32 t = (r - 0x43404340u) | ((x >> 12) & 0x00080008u);  // nibbles at 0, 16
                word |= ((t | (t >> 12)) & 0xFFu) << (8 * h);
            }
            out[q] = word;
        }
    } else {
#pragma unroll
        for (int q = 0; q < 4; q++) {
            mxk_u32 word = 0;
#pragma unroll
            for (int h = 0; h < 4; h++) {
                const mxk_u32 x = w[4 * q + h];
                const mxk_u32 lo_c = mxk_elem_code(x << 16, mk, k, c);
                const mxk_u32 hi_c = mxk_elem_code(x & 0xFFFF0000u, mk, k, c);
                word |= (lo_c | (hi_c << 4)) << (8 * h);
            }
            out[q] = word;
        }
    }
    return b;
}

// ---- programmatic dependent launch (sm_90 and later; no-ops before) -------------------------------
// A kernel launched with the PDL attribute (cupy_kernels/_launch.py) may start while the kernel before it
// in the stream is still running. mxk_grid_wait() returns once that kernel has completed and its writes
// are visible: before it, a kernel may read only data that no kernel still running can write (weights,
// expert_map; or what the kernel two launches back wrote, since the one before it waited for that
// kernel before releasing this one: the direct GEMM2 reads the routing ids so), and may write nothing.
// mxk_grid_release() lets the next PDL-launched kernel start once every block of this grid has called it
// or exited. Launched without the attribute, both do nothing.
__device__ __forceinline__ void mxk_grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void mxk_grid_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
