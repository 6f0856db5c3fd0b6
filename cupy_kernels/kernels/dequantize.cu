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
//   mx_dequantize_fast<OUT>   last axis, bs == 32: a thread owns 8 consecutive elements (reads one
//                             4-byte word of codes and its block's scale byte, writes one 16-byte
//                             vector of bfloat16 or two of float32); a warp reads 128 contiguous
//                             bytes and writes 512 / 1024. UNROLL chunks per thread at stride
//                             blockDim.x, loads first. Launch: 256 threads, grid-stride.
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
    const long long step = (long long)blockDim.x * MXK_D_UNROLL;
    for (long long base = (long long)blockIdx.x * step; base < nchunks; base += (long long)gridDim.x * step) {
        mxk_u32 w[MXK_D_UNROLL], b[MXK_D_UNROLL];
#pragma unroll
        for (int u = 0; u < MXK_D_UNROLL; u++) {
            const long long ch = base + (long long)u * blockDim.x + threadIdx.x;
            w[u] = ch < nchunks ? ((const mxk_u32*)codes)[ch] : 0u;
            b[u] = ch < nchunks ? scales[ch >> 2] : 127u;
        }
#pragma unroll
        for (int u = 0; u < MXK_D_UNROLL; u++) {
            const long long ch = base + (long long)u * blockDim.x + threadIdx.x;
            if (ch >= nchunks) continue;
            mxk_u32 f[8];
            mxk_e2m1_dequant_chunk8(w[u], b[u], f);
            if (OUT == MXK_OUT_F32) {
                uint4* p = (uint4*)out + 2 * ch;
                p[0] = make_uint4(f[0], f[1], f[2], f[3]);
                p[1] = make_uint4(f[4], f[5], f[6], f[7]);
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
