// Host-side harness: the integer-exact helpers of cupy_kernels/kernels/mx_common.cuh compiled for
// the CPU (nvcc -shared), so tests/test_cu_host.py can compare them with the NumPy spec on machines
// without a GPU. The loops below are the naive kernels' loops; the "fast" variants run the fast
// kernels' per-chunk functions (mxk_e2m1_chunk8, mxk_e2m1_dequant_chunk8) on the same data.
#include "mx_common.cuh"

extern "C" {

// xbits: float32 bits (rows, K); codes: one code per element (rows, K); scales (rows, K / bs).
void h_quantize(const unsigned* xbits, long long rows, long long K, int bs, int flags, int fast,
                unsigned char* codes, unsigned char* scales) {
    const MxkConv c = mxk_unpack_conv(flags);
    const long long nblk = K / bs;
    for (long long r = 0; r < rows; r++) {
        for (long long blk = 0; blk < nblk; blk++) {
            const unsigned* x = xbits + r * K + blk * bs;
            unsigned char* out = codes + r * K + blk * bs;
            mxk_u32 amax = 0;
            for (int j = 0; j < bs; j++) {
                mxk_u32 key = mxk_amax_key(x[j], c);
                amax = key > amax ? key : amax;
            }
            const mxk_u32 b = mxk_scale_byte(amax, c);
            scales[r * nblk + blk] = (unsigned char)b;
            if (fast && c.elem == MXK_ELEM_E2M1 && bs % 8 == 0) {
                for (int j = 0; j < bs; j += 8) {
                    mxk_u32 w = mxk_e2m1_chunk8(x + j, b, c);
                    for (int t = 0; t < 8; t++) out[j + t] = (unsigned char)((w >> (4 * t)) & 0xFu);
                }
            } else {
                int k;
                const int mk = mxk_multiplier(b, c, &k);
                for (int j = 0; j < bs; j++) out[j] = (unsigned char)mxk_elem_code(x[j], mk, k, c);
            }
        }
    }
}

// bfloat16 bits (nblocks * 32) -> packed bytes (nblocks * 16) and scales, through the one-thread-per-
// block bf16x2 function of the fast bfloat16 kernel.
void h_quantize_bf16_blocks(const unsigned short* x, long long nblocks, int flags, unsigned char* packed,
                            unsigned char* scales) {
    const MxkConv c = mxk_unpack_conv(flags);
    for (long long blk = 0; blk < nblocks; blk++) {
        mxk_u32 w[16], out[4];
        for (int i = 0; i < 16; i++) w[i] = x[blk * 32 + 2 * i] | ((mxk_u32)x[blk * 32 + 2 * i + 1] << 16);
        scales[blk] = (unsigned char)mxk_quant_block_bf16(w, out, c);
        for (int q = 0; q < 4; q++)
            for (int j = 0; j < 4; j++) packed[blk * 16 + 4 * q + j] = (unsigned char)(out[q] >> (8 * j));
    }
}

// codes: one E2M1 code per element (rows, K); out: float32 bits (rows, K).
void h_dequant_e2m1(const unsigned char* codes, const unsigned char* scales, long long rows,
                    long long K, int bs, int fast, unsigned* out) {
    const long long nblk = K / bs;
    for (long long r = 0; r < rows; r++) {
        for (long long l = 0; l < K; l += (fast ? 8 : 1)) {
            const mxk_u32 b = scales[r * nblk + l / bs];
            if (fast) {
                mxk_u32 w = 0;
                for (int t = 0; t < 8; t++) w |= (mxk_u32)codes[r * K + l + t] << (4 * t);
                mxk_e2m1_dequant_chunk8(w, b, out + r * K + l);
            } else {
                out[r * K + l] = mxk_e2m1_dequant_bits(codes[r * K + l], b);
            }
        }
    }
}

// amax: float32 bits (n,) -> E8M0 bytes under the conventions in flags.
void h_scale_bytes(const unsigned* amax, long long n, int flags, unsigned char* out) {
    const MxkConv c = mxk_unpack_conv(flags);
    for (long long i = 0; i < n; i++) out[i] = (unsigned char)mxk_scale_byte(amax[i], c);
}

void h_f16_to_f32(const unsigned short* h, long long n, unsigned* out) {
    for (long long i = 0; i < n; i++) out[i] = mxk_f16_to_f32bits(h[i]);
}

void h_f64_to_f32(const double* d, long long n, unsigned* out) {
    for (long long i = 0; i < n; i++) out[i] = mxk_f64_to_f32bits_rne(d[i]);
}

}  // extern "C"
