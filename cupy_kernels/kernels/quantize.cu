// quantize.cu -- MX block quantization: float32 / float16 / bfloat16 -> E8M0 scales + element codes.
//
// Computes mxfp4ref.quantize (E2M1 elements, two codes per byte, element 2i in the LOW nibble) and
// mxfp4ref.quantize_mxfp8 (E4M3 / E5M2 elements, one code per byte), byte for byte, for every
// convention a QuantConfig can express; `flags` carries the QuantConfig (cupy_kernels/_conventions.py,
// decoded by mxk_unpack_conv). All arithmetic is on bit patterns (mx_common.cuh), so -ftz=true and
// the device/host difference cannot change a byte.
//
// Layout. The input is viewed as (outer, L, inner), L the quantized axis, C-contiguous. A block is
// `bs` consecutive elements along L. Outputs, also C-contiguous:
//   codes  (outer, L/2, inner) uint8 for E2M1 (packed pairs along L), (outer, L, inner) for FP8
//   scales (outer, L/bs, inner) uint8
//
// Kernels (IN: 0 float32, 1 float16, 2 bfloat16 -- the input's bit width; ELEM: MXK_ELEM_*):
//   mx_quantize_naive<IN>        any axis, any block size: one thread per block (grid-stride over
//                                (outer, block, inner), inner fastest so neighbouring threads read
//                                neighbouring addresses). Also the second reference for the fast one.
//   mx_quantize_fast<IN, ELEM>   last axis (inner == 1), bs == 32, 16-byte aligned input: each thread
//                                owns 8 consecutive elements (one 16-byte load for 16-bit inputs, two
//                                for float32), 4 lanes share a block (amax by 2 xor-shuffles), lane
//                                stores its 4 packed bytes (E2M1) or 8 codes (FP8), so a warp reads
//                                512 / 1024 contiguous bytes and writes 128 / 256. Each thread
//                                loads U chunks at stride blockDim.x (raw, 128 bytes per thread in
//                                flight), then does the math. Launch: 256 threads, grid =
//                                ceil(nchunks / (256 * U)) (capped; the loop is grid-stride).
#include "mx_common.cuh"

#define MXK_IN_F32 0
#define MXK_IN_F16 1
#define MXK_IN_BF16 2

template <int IN>
__device__ __forceinline__ mxk_u32 mxk_load_f32bits(const void* x, long long i) {
    if (IN == MXK_IN_F32) return ((const mxk_u32*)x)[i];
    if (IN == MXK_IN_F16) return mxk_f16_to_f32bits(((const unsigned short*)x)[i]);
    return mxk_bf16_to_f32bits(((const unsigned short*)x)[i]);
}

// ---- naive: one thread per block, any axis --------------------------------------------------------

template <int IN>
__global__ void mx_quantize_naive(const void* __restrict__ x, unsigned char* __restrict__ codes,
                                  unsigned char* __restrict__ scales, long long outer, long long L,
                                  long long inner, int bs, int flags) {
    const MxkConv c = mxk_unpack_conv(flags);
    const long long nblk = L / bs;
    const long long total = outer * nblk * inner;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long i = t % inner;
        const long long r = t / inner;
        const long long blk = r % nblk;
        const long long o = r / nblk;
        const long long first = (o * L + blk * bs) * inner + i;     // element (o, blk*bs, i)
        mxk_u32 amax = 0;
        for (int j = 0; j < bs; j++) {
            mxk_u32 key = mxk_amax_key(mxk_load_f32bits<IN>(x, first + (long long)j * inner), c);
            amax = key > amax ? key : amax;
        }
        const mxk_u32 b = mxk_scale_byte(amax, c);
        int k;
        const int mk = mxk_multiplier(b, c, &k);
        if (c.elem == MXK_ELEM_E2M1) {
            const long long first_byte = (o * (L / 2) + blk * (bs / 2)) * inner + i;
            for (int j = 0; j < bs; j += 2) {
                mxk_u32 lo = mxk_elem_code(mxk_load_f32bits<IN>(x, first + (long long)j * inner), mk, k, c);
                mxk_u32 hi = mxk_elem_code(mxk_load_f32bits<IN>(x, first + (long long)(j + 1) * inner), mk, k, c);
                codes[first_byte + (long long)(j / 2) * inner] = (unsigned char)(lo | (hi << 4));
            }
        } else {
            for (int j = 0; j < bs; j++) {
                codes[first + (long long)j * inner] =
                    (unsigned char)mxk_elem_code(mxk_load_f32bits<IN>(x, first + (long long)j * inner), mk, k, c);
            }
        }
        scales[(o * nblk + blk) * inner + i] = (unsigned char)b;
    }
}

// ---- fast: last axis, block 32, 8 elements per thread ----------------------------------------------

// Raw 16 bytes per chunk for 16-bit inputs (8 elements), 32 bytes for float32; unpacked to float32
// bits only when the chunk is processed, so the loads in flight cost 4 (8) registers per chunk.
template <int IN>
struct MxkRaw {
    uint4 q[IN == MXK_IN_F32 ? 2 : 1];
};

template <int IN>
__device__ __forceinline__ void mxk_load_raw(const void* __restrict__ x, long long chunk, MxkRaw<IN>& r) {
    if (IN == MXK_IN_F32) {
        const uint4* p = (const uint4*)x + 2 * chunk;
        r.q[0] = p[0];
        r.q[IN == MXK_IN_F32 ? 1 : 0] = p[1];
    } else {
        r.q[0] = ((const uint4*)x)[chunk];
    }
}

template <int IN>
__device__ __forceinline__ void mxk_unpack8(const MxkRaw<IN>& r, mxk_u32 v[8]) {
    if (IN == MXK_IN_F32) {
        const uint4 a = r.q[0], b = r.q[IN == MXK_IN_F32 ? 1 : 0];
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
        const mxk_u32 w[4] = {r.q[0].x, r.q[0].y, r.q[0].z, r.q[0].w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (IN == MXK_IN_BF16) {
                v[2 * j] = mxk_bf16_to_f32bits(w[j] & 0xFFFFu);
                v[2 * j + 1] = mxk_bf16_to_f32bits(w[j] >> 16);
            } else {
                v[2 * j] = mxk_f16_to_f32bits(w[j] & 0xFFFFu);
                v[2 * j + 1] = mxk_f16_to_f32bits(w[j] >> 16);
            }
        }
    }
}

template <int IN, int ELEM>
__global__ void __launch_bounds__(256, 3) mx_quantize_fast(const void* __restrict__ x,
                                                        unsigned char* __restrict__ codes,
                                                        unsigned char* __restrict__ scales,
                                                        long long nchunks, int flags) {
    MxkConv c = mxk_unpack_conv(flags);
    c.elem = ELEM;                                   // a compile-time constant from here on
    // chunks in flight per thread: 32 raw bytes x 4 for float32, 16 x 8 for 16-bit inputs (the same
    // registers, twice the bytes); FP8 codes take the generic encoder (more registers): half of that
    constexpr int U = (ELEM == MXK_ELEM_E2M1) ? (IN == MXK_IN_F32 ? 4 : 8) : (IN == MXK_IN_F32 ? 2 : 4);
    const long long step = (long long)blockDim.x * U;
    for (long long base = (long long)blockIdx.x * step; base < nchunks; base += (long long)gridDim.x * step) {
        MxkRaw<IN> raw[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const long long ch = base + (long long)u * blockDim.x + threadIdx.x;
            if (ch < nchunks) {
                mxk_load_raw<IN>(x, ch, raw[u]);
            } else {
#pragma unroll
                for (int j = 0; j < (IN == MXK_IN_F32 ? 2 : 1); j++) raw[u].q[j] = make_uint4(0, 0, 0, 0);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const long long ch = base + (long long)u * blockDim.x + threadIdx.x;
            mxk_u32 v[8];
            mxk_unpack8<IN>(raw[u], v);
            mxk_u32 amax = 0;
            if (!c.amax_nan_ignore) {                // NaN's bits exceed Inf's: an unsigned max propagates it
#pragma unroll
                for (int j = 0; j < 8; j++) amax = max(amax, v[j] & 0x7FFFFFFFu);
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++) amax = max(amax, mxk_amax_key(v[j], c));
            }
            // the 4 lanes of a block are 4 consecutive lanes (chunk indices 4m .. 4m+3)
            mxk_u32 o1 = __shfl_xor_sync(0xFFFFFFFFu, amax, 1);
            amax = o1 > amax ? o1 : amax;
            mxk_u32 o2 = __shfl_xor_sync(0xFFFFFFFFu, amax, 2);
            amax = o2 > amax ? o2 : amax;
            if (ch >= nchunks) continue;             // after the shuffles: whole groups skip together
            const mxk_u32 b = mxk_scale_byte(amax, c);
            if (ELEM == MXK_ELEM_E2M1) {
                const mxk_u32 word = mxk_e2m1_chunk8(v, b, c);
                ((mxk_u32*)codes)[ch] = word;
            } else {
                int k;
                const int mk = mxk_multiplier(b, c, &k);
                mxk_u32 w0 = 0, w1 = 0;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    w0 |= mxk_elem_code(v[j], mk, k, c) << (8 * j);
                    w1 |= mxk_elem_code(v[j + 4], mk, k, c) << (8 * j);
                }
                ((uint2*)codes)[ch] = make_uint2(w0, w1);
            }
            if ((threadIdx.x & 3) == 0) scales[ch >> 2] = (unsigned char)b;
        }
    }
}

// ---- fast bfloat16 -> MXFP4: one thread per block, bf16x2 arithmetic --------------------------------
//
// mx_quantize_bf16: last axis, bs == 32, bfloat16, E2M1, 16-byte aligned. A thread owns whole blocks:
// it loads the block's 64 bytes (4 x 16-byte loads; neighbouring lanes' loads share L1 lines), computes
// amax and the scale once (no shuffles), encodes two elements per instruction
// (mxk_quant_block_bf16) and stores 16 bytes of codes and its scale byte (a warp stores 512 and 32
// contiguous bytes). U blocks per thread are loaded before any math. Launch: 256 threads,
// grid = ceil(nblocks / (256 * U)), grid-stride.
#define MXK_QB_UNROLL 2

__global__ void __launch_bounds__(256) mx_quantize_bf16(const void* __restrict__ x,
                                                        unsigned char* __restrict__ codes,
                                                        unsigned char* __restrict__ scales,
                                                        long long nblocks, int flags) {
    MxkConv c = mxk_unpack_conv(flags);
    c.elem = MXK_ELEM_E2M1;
    const long long step = (long long)blockDim.x * MXK_QB_UNROLL;
    for (long long base = (long long)blockIdx.x * step; base < nblocks; base += (long long)gridDim.x * step) {
        uint4 raw[MXK_QB_UNROLL][4];
#pragma unroll
        for (int u = 0; u < MXK_QB_UNROLL; u++) {
            const long long blk = base + (long long)u * blockDim.x + threadIdx.x;
#pragma unroll
            for (int j = 0; j < 4; j++)
                raw[u][j] = (blk < nblocks) ? ((const uint4*)x)[4 * blk + j] : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < MXK_QB_UNROLL; u++) {
            const long long blk = base + (long long)u * blockDim.x + threadIdx.x;
            if (blk >= nblocks) continue;
            mxk_u32 w[16], out[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                w[4 * j] = raw[u][j].x;
                w[4 * j + 1] = raw[u][j].y;
                w[4 * j + 2] = raw[u][j].z;
                w[4 * j + 3] = raw[u][j].w;
            }
            const mxk_u32 b = mxk_quant_block_bf16(w, out, c);
            ((uint4*)codes)[blk] = make_uint4(out[0], out[1], out[2], out[3]);
            scales[blk] = (unsigned char)b;
        }
    }
}

// Explicit instantiations: the loader asks for these names (name expressions), and the CPU compile
// test sees every variant.
template __global__ void mx_quantize_naive<MXK_IN_F32>(const void*, unsigned char*, unsigned char*, long long, long long, long long, int, int);
template __global__ void mx_quantize_naive<MXK_IN_F16>(const void*, unsigned char*, unsigned char*, long long, long long, long long, int, int);
template __global__ void mx_quantize_naive<MXK_IN_BF16>(const void*, unsigned char*, unsigned char*, long long, long long, long long, int, int);
template __global__ void mx_quantize_fast<MXK_IN_F32, MXK_ELEM_E2M1>(const void*, unsigned char*, unsigned char*, long long, int);
template __global__ void mx_quantize_fast<MXK_IN_F16, MXK_ELEM_E2M1>(const void*, unsigned char*, unsigned char*, long long, int);
template __global__ void mx_quantize_fast<MXK_IN_BF16, MXK_ELEM_E2M1>(const void*, unsigned char*, unsigned char*, long long, int);
template __global__ void mx_quantize_fast<MXK_IN_F32, MXK_ELEM_E4M3>(const void*, unsigned char*, unsigned char*, long long, int);
template __global__ void mx_quantize_fast<MXK_IN_F16, MXK_ELEM_E4M3>(const void*, unsigned char*, unsigned char*, long long, int);
template __global__ void mx_quantize_fast<MXK_IN_BF16, MXK_ELEM_E4M3>(const void*, unsigned char*, unsigned char*, long long, int);
template __global__ void mx_quantize_fast<MXK_IN_F32, MXK_ELEM_E5M2>(const void*, unsigned char*, unsigned char*, long long, int);
template __global__ void mx_quantize_fast<MXK_IN_F16, MXK_ELEM_E5M2>(const void*, unsigned char*, unsigned char*, long long, int);
template __global__ void mx_quantize_fast<MXK_IN_BF16, MXK_ELEM_E5M2>(const void*, unsigned char*, unsigned char*, long long, int);
