// dequantize.cu -- MXFP4 (E2M1 codes + E8M0 scales) -> float32 or bfloat16.
//
// Computes mxfp4ref.dequantize byte for byte: value = E2M1(code) * 2^(b - 127), rounded once to
// float32 (exact except past float32's range -> +-Inf; 2^-127 and 0.5 * 2^-127 are float32
// subnormals and are produced exactly, by integer construction, so -ftz=true cannot flush them);
// scale byte 0xFF -> +NaN (0x7FC00000). bfloat16 output = the top 16 bits of that float32, which is
// exact: every such value has at most 2 significant bits (the NaN becomes 0x7FC0).
//
// Layout. Packed codes viewed as (outer, L/2, inner) uint8 (element 2i in the low nibble of byte i
// along L), scales (outer, L/bs, inner) uint8, output (outer, L, inner), all C-contiguous.
//
// Kernels (OUT: 0 float32, 1 bfloat16 bits):
//   mx_dequantize_naive<OUT>  any axis, any block size: one thread per output element.
//   mx_dequantize_fast<OUT>   last axis, bs == 32: a thread owns a chunk of 8 (bfloat16) or 4
//                             (float32) consecutive elements: it reads 4 / 2 bytes of codes and the
//                             block's scale byte and writes ONE 16-byte vector, so a warp's store is
//                             512 contiguous bytes. UNROLL chunks per thread at stride blockDim.x,
//                             loads first. Launch: 256 threads, grid-stride over chunks.
#include "mx_common.cuh"

#define MXK_OUT_F32 0
#define MXK_OUT_BF16 1

template <int OUT>
__global__ void mx_dequantize_naive(const unsigned char* __restrict__ codes,
                                    const unsigned char* __restrict__ scales, void* __restrict__ out,
                                    long long outer, long long L, long long inner, int bs) {
    const long long nblk = L / bs;
    const long long total = outer * L * inner;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long i = t % inner;
        const long long r = t / inner;
        const long long l = r % L;
        const long long o = r / L;
        const mxk_u32 byte = codes[(o * (L / 2) + l / 2) * inner + i];
        const mxk_u32 code = (l & 1) ? (byte >> 4) : (byte & 0xFu);
        const mxk_u32 b = scales[(o * nblk + l / bs) * inner + i];
        const mxk_u32 bits = mxk_e2m1_dequant_bits(code, b);
        if (OUT == MXK_OUT_F32) ((mxk_u32*)out)[t] = bits;
        else ((unsigned short*)out)[t] = (unsigned short)(bits >> 16);
    }
}

#define MXK_D_UNROLL 4

template <int OUT>
__global__ void __launch_bounds__(256) mx_dequantize_fast(const unsigned char* __restrict__ codes,
                                                          const unsigned char* __restrict__ scales,
                                                          void* __restrict__ out, long long nchunks) {
    // a chunk is 8 elements (4 code bytes -> 16 bytes of bfloat16) or, for float32, 4 elements
    // (2 code bytes -> 16 bytes of float32): every store is one 16-byte vector, contiguous across the warp
    constexpr int CH = (OUT == MXK_OUT_F32) ? 4 : 8;
    constexpr int U = (OUT == MXK_OUT_F32) ? 2 * MXK_D_UNROLL : MXK_D_UNROLL;
    const long long step = (long long)blockDim.x * U;
    for (long long base = (long long)blockIdx.x * step; base < nchunks; base += (long long)gridDim.x * step) {
        mxk_u32 w[U], b[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const long long ch = base + (long long)u * blockDim.x + threadIdx.x;
            if (ch < nchunks) {
                w[u] = (CH == 8) ? ((const mxk_u32*)codes)[ch] : ((const unsigned short*)codes)[ch];
                b[u] = scales[ch / (32 / CH)];
            } else {
                w[u] = 0u;
                b[u] = 127u;
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const long long ch = base + (long long)u * blockDim.x + threadIdx.x;
            if (ch >= nchunks) continue;
            mxk_u32 f[8];
            mxk_e2m1_dequant_chunk8(w[u], b[u], f);
            if (OUT == MXK_OUT_F32) {
                ((uint4*)out)[ch] = make_uint4(f[0], f[1], f[2], f[3]);
            } else {
                ((uint4*)out)[ch] = make_uint4((f[0] >> 16) | (f[1] & 0xFFFF0000u),
                                               (f[2] >> 16) | (f[3] & 0xFFFF0000u),
                                               (f[4] >> 16) | (f[5] & 0xFFFF0000u),
                                               (f[6] >> 16) | (f[7] & 0xFFFF0000u));
            }
        }
    }
}

template __global__ void mx_dequantize_naive<MXK_OUT_F32>(const unsigned char*, const unsigned char*, void*, long long, long long, long long, int);
template __global__ void mx_dequantize_naive<MXK_OUT_BF16>(const unsigned char*, const unsigned char*, void*, long long, long long, long long, int);
template __global__ void mx_dequantize_fast<MXK_OUT_F32>(const unsigned char*, const unsigned char*, void*, long long);
template __global__ void mx_dequantize_fast<MXK_OUT_BF16>(const unsigned char*, const unsigned char*, void*, long long);
