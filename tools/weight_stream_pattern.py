"""Why the fused-MoE weight words are grouped per 16 rows (spec/30-layouts.md 30.9, step 3): streams
gpt-oss-120b's GEMM1 weights (128 experts x 5760 rows x 1472 bytes) the way the streaming kernels do
(each warp owns 16 rows, two 16-byte loads per thread per 128-k superblock, a ring of 3 superblocks in
registers, 24 warps per SM) from two layouts and prints the read bandwidth of each:

    python3 tools/weight_stream_pattern.py

rowmajor: rows contiguous, so a warp's step reads 64-byte pieces of 16 rows 1472 bytes apart;
grouped:  the 16 rows' pieces of one superblock contiguous (1 KB per warp step).
`filler` adds dependent integer work per superblock (the dequantization's place) to show the pattern,
not the arithmetic, sets the rate. Measured on an H200: 2.7 TB/s vs 4.3 TB/s at every filler."""
import cupy as cp, numpy as np
src = r'''
extern "C" __global__ void __launch_bounds__(256, 3) ld(const uint4* __restrict__ W, int kw, int nsb, int grouped, int filler, unsigned* out) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const long row0 = ((long)blockIdx.x * 8 + warp) * 16;
    const uint4 *p0, *p1; long step;
    if (grouped) { p0 = W + row0 * kw + g * 4 + t; p1 = p0 + 32; step = 64; }
    else { p0 = W + (row0 + g) * kw + t; p1 = p0 + 8 * (long)kw; step = 4; }
    uint4 r[3][2];
    #pragma unroll
    for (int i = 0; i < 3; ++i) { r[i][0] = __ldg(p0 + i * step); r[i][1] = __ldg(p1 + i * step); }
    unsigned acc = 0;
    for (int s0 = 0; s0 < nsb; s0 += 3) {
        #pragma unroll
        for (int i = 0; i < 3; ++i) {
            const int sb = s0 + i;
            if (sb < nsb) {
                unsigned v = r[i][0].x ^ r[i][0].y ^ r[i][0].z ^ r[i][0].w ^ r[i][1].x ^ r[i][1].y ^ r[i][1].z ^ r[i][1].w;
                for (int f = 0; f < filler; ++f) v = v * 1664525u + 1013904223u;
                acc += v;
                if (sb + 3 < nsb) { r[i][0] = __ldg(p0 + (sb + 3) * step); r[i][1] = __ldg(p1 + (sb + 3) * step); }
            }
        }
    }
    if (acc == 0x12345678u) out[0] = acc;
}'''
k = cp.RawKernel(src, "ld")
E, R, kw = 128, 5760, 92           # 120b GEMM1 shape: rows x 92 uint4 (Kp = 2944)
W = cp.zeros(E * R * kw * 4, cp.uint32)
out = cp.zeros(1, cp.uint32)
nb = E * R // 128
for filler in (0, 16, 48):
    for grouped in (0, 1):
        f = lambda: k((nb,), (256,), (W, np.int32(kw), np.int32(23), np.int32(grouped), np.int32(filler), out))
        for _ in range(3): f()
        e0, e1 = cp.cuda.Event(), cp.cuda.Event(); ts = []
        for _ in range(10):
            e0.record(); f(); e1.record(); e1.synchronize(); ts.append(cp.cuda.get_elapsed_time(e0, e1))
        ms = float(np.median(ts))
        print(f"filler {filler:3d} {'grouped ' if grouped else 'rowmajor'}: {ms*1e3:8.1f} us  {W.nbytes / ms / 1e6:7.0f} GB/s", flush=True)
