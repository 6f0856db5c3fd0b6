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
//                             512 contiguous bytes. U chunks per thread at stride blockDim.x (bfloat16
//                             2, float32 8), loads first. Launch: 256 threads, grid-stride over chunks.
//                             bfloat16 chunks are decoded by byte permutes (mxk_bf16_dequant_chunk8)
//                             and stored with st.global.cs (streaming: the output is not read again
//                             by this kernel, so L2 may evict it first).
//
// Measured (8192x8192 -> bfloat16, fraction of the device copy bandwidth of the same run): the v1 decode
// (8 float32 bit patterns per chunk, ~10 integer instructions per element, U = 4) 84.6-84.9% on an H200
// and 90.0-90.2% on an H100; the permute decode (~3 per element) 87.1-88.2% on the H200 (U = 4 or 2);
// permute decode, U = 1, streaming stores: 91.3-91.6% on the H100 (4096x8192: 85% -> 91-92%) but 82% on
// the H200. Same-run sweep on an H200 (8192x8192 / 4096x8192 / 184320x2880): U=1 .cs 82 / 86 / 89%,
// U=1 plain 82 / 75 / 89%, U=2 plain 86.5 / 79 / 94%, U=2 .cs (this kernel) 87.2 / 86.1 / 95.0%, U=4
// plain 85 / 77.5 / 93%.
// Threads that each read 8 or 16 code bytes and write 2 or 4 adjacent 16-byte vectors were ~2x slower
// (a warp's store then covers every other 16 bytes of 1 KiB instead of 512 contiguous bytes); a
// persistent grid (one wave of resident blocks) and 1024-thread blocks were 4-6 points slower.
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

// Byte permute: byte i of the result is byte (s >> 4i) & 7 of the 8-byte pair {b, a} (a = bytes 0..3)
// (selector nibbles below 8 only: bit 3 of a nibble would select sign replication).
__device__ __forceinline__ mxk_u32 mxk_prmt(mxk_u32 a, mxk_u32 b, mxk_u32 s) {
    mxk_u32 d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(s));
    return d;
}

// 4 packed bytes (8 codes, element 2i in the low nibble of byte i) of a block with scale byte b ->
// 4 words of bfloat16 pairs (element 2k in the low half of o[k]); the same bits as the top halves of
// mxk_e2m1_dequant_chunk8's float32 patterns.
// For 2 <= b <= 252 every result is a normal number (0.5 * 2^-125 .. 6 * 2^125), so: magnitude codes
// 0..7 -> bfloat16 bits 0x0000 0x3F00 0x3F80 0x3FC0 0x4000 0x4040 0x4080 0x40C0 (0, 0.5, .., 6), looked
// up high byte and low byte separately with one byte permute per 4 codes each; the pair times
// 2^(b-127) (bfloat16 bits b << 7) by one bf16x2 fma with addend -0, exact (2 significant bits, normal
// result; 0 * s + -0 = +0); then the code's sign bit ORed into bit 15 / 31. Other b: the generic path.
__device__ __forceinline__ void mxk_bf16_dequant_chunk8(mxk_u32 w, mxk_u32 b, mxk_u32 o[4]) {
    if (b >= 2u && b <= 252u) {
        const mxk_u32 sel = w & 0x77777777u;               // magnitude codes as permute selectors
        const mxk_u32 scale2 = (b << 7) | (b << 23);       // bfloat16 pair (2^(b-127), 2^(b-127))
        const mxk_u32 sgn_hi = w & 0x88888888u;            // bit 7 of byte k: sign of element 2k+1
        const mxk_u32 sgn_lo = sgn_hi << 4;                // bit 7 of byte k: sign of element 2k
#pragma unroll
        for (int h = 0; h < 2; h++) {                       // elements 4h .. 4h+3
            const mxk_u32 s4 = sel >> (16 * h);
            const mxk_u32 hi = mxk_prmt(0x3F3F3F00u, 0x40404040u, s4);   // high bytes, codes 0..7
            const mxk_u32 lo = mxk_prmt(0xC0800000u, 0xC0804000u, s4);   // low bytes
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int k = 2 * h + i;
                const mxk_u32 mag = mxk_prmt(lo, hi, i == 0 ? 0x5140u : 0x7362u);   // lo, hi, lo, hi
                const mxk_u32 val = mxk_bf16x2_fma(mag, scale2, 0x80008000u);
                // byte 1 <- byte k of sgn_lo, byte 3 <- byte k of sgn_hi; keep bits 15 and 31
                const mxk_u32 sgn = mxk_prmt(sgn_lo, sgn_hi, (mxk_u32)(k | (k << 4) | (k << 8) | ((4 + k) << 12)));
                o[k] = val | (sgn & 0x80008000u);
            }
        }
    } else {
        mxk_u32 f[8];
        mxk_e2m1_dequant_chunk8(w, b, f);
#pragma unroll
        for (int k = 0; k < 4; k++) o[k] = (f[2 * k] >> 16) | (f[2 * k + 1] & 0xFFFF0000u);
    }
}

// 16-byte store marked evict-first (streaming) in L2.
__device__ __forceinline__ void mxk_store_cs(void* p, mxk_u32 x, mxk_u32 y, mxk_u32 z, mxk_u32 w) {
    asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(x), "r"(y), "r"(z), "r"(w)
                 : "memory");
}

#define MXK_D_UNROLL_BF16 2
#define MXK_D_UNROLL_F32 8

template <int OUT>
__global__ void __launch_bounds__(256) mx_dequantize_fast(const unsigned char* __restrict__ codes,
                                                          const unsigned char* __restrict__ scales,
                                                          void* __restrict__ out, long long nchunks) {
    // a chunk is 8 elements (4 code bytes -> 16 bytes of bfloat16) or, for float32, 4 elements
    // (2 code bytes -> 16 bytes of float32): every store is one 16-byte vector, contiguous across the warp
    constexpr int CH = (OUT == MXK_OUT_F32) ? 4 : 8;
    constexpr int U = (OUT == MXK_OUT_F32) ? MXK_D_UNROLL_F32 : MXK_D_UNROLL_BF16;
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
            if (OUT == MXK_OUT_F32) {
                mxk_u32 f[8];
                mxk_e2m1_dequant_chunk8(w[u], b[u], f);
                ((uint4*)out)[ch] = make_uint4(f[0], f[1], f[2], f[3]);
            } else {
                mxk_u32 o[4];
                mxk_bf16_dequant_chunk8(w[u], b[u], o);
                mxk_store_cs((uint4*)out + ch, o[0], o[1], o[2], o[3]);
            }
        }
    }
}

template __global__ void mx_dequantize_naive<MXK_OUT_F32>(const unsigned char*, const unsigned char*, void*, long long, long long, long long, int);
template __global__ void mx_dequantize_naive<MXK_OUT_BF16>(const unsigned char*, const unsigned char*, void*, long long, long long, long long, int);
template __global__ void mx_dequantize_fast<MXK_OUT_F32>(const unsigned char*, const unsigned char*, void*, long long);
template __global__ void mx_dequantize_fast<MXK_OUT_BF16>(const unsigned char*, const unsigned char*, void*, long long);
