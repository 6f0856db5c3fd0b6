// moe_fused.cu -- the fused MXFP4 MoE forward (gpt-oss layer) on tensor cores, for CuPy/NVRTC.
// Builds for sm_80 and later (mma.sync m16n8k16 bf16, cp.async; bf16x2 multiply via fma on sm_80); the
// Hopper kernels (wgmma) are real only when built for sm_90a (the loader does so on compute capability 9.0).
//
// What: out[t] = sum over token t's valid slots j of  w_tj * (W2_e . act(W13_e . x_t + b13_e) + b2_e)
//       with bf16 x, MXFP4 weights dequantized IN REGISTERS to bf16 (exactly), fp32 accumulation on the
//       tensor cores (mma.sync m16n8k16 or wgmma m64nNk16 bf16, inline PTX), fp32 bias + activation, a bf16
//       intermediate, a bf16 per-(token, slot) result and a deterministic fp32 sum over a token's slots
//       in slot order (no floating-point atomics anywhere: the same inputs give the same bits).
//
// Kernels (launched in this order by cupy_kernels/moe.py::fused_moe; no host synchronisation in between):
//   moe_sort          1 block x 1024: map ids through expert_map, count per expert, stable counting sort
//                     of the T*k slots by local expert, tile table (expert, start, count) of BT tokens.
//                     From 16384 slots the same sort runs as moe_sort_count / moe_sort_scan /
//                     moe_sort_scatter over blocks of 4096 slots.
//   moe_permute_x     (Hopper configs) x -> x with k permuted per 32-block, zero-padded to Hp.
//   moe_gemm1_<cfg>   grid (row blocks of w13, tiles): gathered x . W13^T + b13 -> activation -> bf16
//                     intermediate [sorted position, Ip]. <cfg> = decode / mid / large (mma.sync,
//                     registers), stream / streamw (weights streamed, whole x tile in smem), stream16
//                     (16-token tiles, x through a cp.async ring), tiled* (cp.async
//                     stages), hopper / hopper64 / hopper192 (wgmma; the last tile of each expert of <= 64
//                     tokens runs in hopper64 from moe_sort's small-tile list, for hopper192 the last of
//                     <= 128 tokens, or the last two of 193..256, in hopper); hopper192w / hopper128w: the
//                     same as hopper192 / hopper with each tile at the narrowest multiple of 32 tokens.
//   moe_gemm2_<cfg>   grid (row blocks of w2, tiles): intermediate . W2^T + b2, times the router weight,
//                     -> bf16 y [slot = t*k + j, H].
//   moe_gemm{1,2}_direct, _direct4 (1-2 tokens, configs `direct`: 3 blocks per SM, `direct4`: 4, on
//                     request): no moe_sort; grid (row blocks, slots), each block maps its slot's id itself
//                     (GEMM1 writes local_ids for moe_combine); GEMM2 issues its weight copies before its
//                     wait, which from 4 slots (moe.py DIRECT_HANDOFF_MIN_SLOTS) is for its own slot's
//                     GEMM1 blocks only (per-slot counters: direct_wait_slot), else the grid wait.
//                     They apply the E8M0 scales per 32-block in fp32, not per element (the scaled domain:
//                     see moe_gemm_direct_body), with the exact dequantization as a per-warp fallback.
//   moe_combine       one thread per (token, 8 hidden): fp32 sum of the valid slots in slot order -> bf16;
//                     resets the direct GEMMs' per-slot counters when given them.
//   moe_gemm1_naive / moe_gemm2_naive: one thread per output value, scalar fp32, same rounding points;
//                     the second reference (slow, simple) that the tests compare the fast path against.
//   moe_dequant_probe: the register dequantizer on its own, for the exhaustive 16 codes x 256 scales test.
// Every kernel of the forward starts with MOE_GRID_ENTER: on sm_90 fused_moe launches all but the first
// with programmatic dependent launch (cupy_kernels/_launch.py), so each launch overlaps the tail of the
// kernel before it.
//
// Kernel weight layout (built once by fused_moe.to_device; K = reduction axis, Kp = K rounded up to 128):
//   W  [E, R/16, Kp/128, 16 (row), 4 (t), 4 (b)] uint32: word (row 16*G + row, sb, t, b) holds the 8 FP4
//      codes of k = 128*sb + 32*b + 8*t + j, j = 0..7, bits placed so that pair p = (2p, 2p+1) decodes
//      with one or two rotates and masks (fp4pair, moe.py::code_bit_positions). Padding codes are 0.
//      A 16-row group's superblock is 1 KB of contiguous memory (uint4 offset (e*R + 16*G)*Kp/32 + 64*sb
//      + 4*row + t): what a warp reads per step. (Row-major rows, read 64 bytes per row per step, capped
//      weight streaming at ~65% of the DRAM rate.)
//   S  [E, Kp/128, R] uint32: the 4 E8M0 bytes of (superblock, row), byte b for 32-block b (little
//      endian); padding bytes 127. (Rows of one superblock are contiguous: 16-byte copies of 4 rows.)
//   b  [E, R] fp32 bias in kernel row order (zeros when the layer has none).
//   w13 rows: R = 2*Ip (Ip = I rounded up to 128); 16-row tile i holds gate rows of channels 8i..8i+7
//      then the up rows of the same channels (any gate/up source layout maps to this), so one thread
//      holds gate and up of one channel in its mma accumulator (rows g and g+8).
//   w2 rows: R = H rounded up to 256 (rows >= H are zero and skipped).
//
// MMA operand mapping (m16n8k16, thread lane = 4*g + t): A = weights (16 rows x 16 k), B = activations
// (16 k x 8 tokens), C = out^T (16 rows x 8 tokens). In 32-block b, mma step s (0, 1), the logical k of
// A/B slot columns {2t, 2t+1, 2t+8, 2t+9} is 32b + 8t + 4s + {0, 1, 2, 3}: a thread's A values are the 8
// consecutive k of one packed uint32, its B values 16 consecutive bytes of an activation row.
//
// Launch shapes: see the CFG table in fused_moe.py (block = KS*RS*CS warps; KS warps split K and reduce
// through shared memory in fixed order; RS warps split rows; CS warps split the tile's tokens).

#include "mx_common.cuh"

typedef unsigned int u32;
typedef unsigned short u16;

// Every kernel of the forward starts with MOE_GRID_ENTER: wait for the kernel before it (launched with
// programmatic dependent launch it may have started early: mx_common.cuh) and let the next one start.
// Only the direct GEMM2 does work before the wait (it issues its weight copies first).
#define MOE_GRID_ENTER \
    mxk_grid_wait();   \
    mxk_grid_release();

#define ACT_SWIGLUOAI 0
#define ACT_SILU 1
#define ACT_GELU 2

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

__device__ __forceinline__ u16 f32_to_bf16(float f) {          // round to nearest even, NaN stays NaN
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

// a * b per bf16 lane, rounded to nearest even. sm_90 has mul.bf16x2; sm_80 has only fma.bf16x2, and
// fma(a, b, -0.0) is the same single rounding of the exact product (a zero product keeps its sign,
// since +0 + -0 = +0 and -0 + -0 = -0 under round-to-nearest), so both give identical bits.
__device__ __forceinline__ u32 bf16x2_mul(u32 a, u32 b) {
    u32 d;
#if __CUDA_ARCH__ >= 900
    asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
#else
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
#endif
    return d;
}

// Pair p (codes 2p, 2p+1) of a kernel-order word as bf16x2 bits of value * 2**-126: code s e e m goes to
// bf16 bits s at 15, e e m at 8..6 (0.5 becomes the bf16 subnormal 2**-127). The word's bit placement
// (cupy_kernels/moe.py::code_bit_positions, PAIR_ROTATIONS) puts each pair's sign bits a_p and its e e m
// bits b_p places below their targets (mod 32), so a pair costs one AND (p = 0), a rotate and an AND
// (p = 1) or two rotates and two ANDs (p = 2, 3): 11 integer operations per word.
__device__ __forceinline__ u32 rotl(u32 x, int n) { return __funnelshift_l(x, x, n); }
// Where a rotation wraps no kept bit it is written as a plain left shift, which the compiler issues as an
// integer multiply (FMA pipe) instead of a funnel shift (ALU pipe, half rate: the dequantization's
// bottleneck); only pair 3's e e m rotation wraps (its low code's bits come from bits 25..27).
__device__ __forceinline__ u32 fp4pair(u32 q, int p) {
    if (p == 0) return q & 0x81c081c0u;
    if (p == 1) return (q << 3) & 0x81c081c0u;                              // = rotl(q, 3) under the mask
    if (p == 2) return ((q << 1) & 0x80008000u) | ((q << 6) & 0x01c001c0u);  // = rotl(q, 1), rotl(q, 6)
    return ((q << 2) & 0x80008000u) | (rotl(q, 13) & 0x01c001c0u);
}

// 8 FP4 codes (kernel bit placement) and their E8M0 byte -> 4 bf16x2 = the 8 values, exactly.
// fp4pair gives value * 2**-126; one bf16 multiply by 2**(scale - 1) restores it when scale <= 128;
// larger scales take two exact multiplies (2**126, then 2**(scale - 127)); scale 255 is NaN.
__device__ __forceinline__ void dequant8(u32 q, u32 sbyte, u32 out[4]) {
    u32 f1, f2;
    bool fast = sbyte <= 128u;
    if (fast) {
        f1 = (sbyte + 126u) << 7;
        f1 |= f1 << 16;
        f2 = 0;
    } else {
        f1 = 0x7e807e80u;                                         // 2**126
        u32 s = (sbyte == 255u) ? 0x7fc0u : (sbyte << 7);
        f2 = s | (s << 16);
    }
#pragma unroll
    for (int p = 0; p < 4; ++p) {
        u32 r = bf16x2_mul(fp4pair(q, p), f1);
        if (!fast) r = bf16x2_mul(r, f2);
        out[p] = r;
    }
}

template <bool B>
struct BoolC {
    static constexpr bool value = B;
};

// The 8 codes of q in 32-block b of scale word sw (4 E8M0 bytes). !SLOW: every byte of the warp's
// scale words is below 128 (warp_needs_slow), so one multiply by 2**(s-1) is exact (it is up to 128):
// prmt puts byte b in both halves, one multiply-add makes (s + 126) << 7. SLOW: the general dequant8.
template <bool SLOW>
__device__ __forceinline__ void dequant_blk(u32 q, u32 sw, int b, u32 out[4]) {
    if (!SLOW) {
        const u32 f = __byte_perm(sw, 0u, 0x4040u + 0x0101u * (u32)b) * 128u + 0x3f003f00u;
#pragma unroll
        for (int p = 0; p < 4; ++p) out[p] = bf16x2_mul(fp4pair(q, p), f);
    } else {
        dequant8(q, (sw >> (8 * b)) & 0xffu, out);
    }
}

// Warp-uniform: may any lane's scale word hold a byte > 128 (the two-multiply path)? Conservative: a
// byte of exactly 128 also takes the (exact, slower) two-multiply path, so the test is one AND per word
// (ORed words fold into one LOP3) instead of a byte-wise compare. Real weights have bytes < 128.
__device__ __forceinline__ u32 big_scales(u32 sw) { return sw & 0x80808080u; }
__device__ __forceinline__ bool warp_needs_slow(u32 big) { return __any_sync(0xffffffffu, big != 0u); }

__device__ __forceinline__ void mma_bf16(float c[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The direct kernels' scaled domain (see moe_gemm_direct_body): the codes enter the mma as fp4pair's
// value * 2**-126 and the activations as x * 2**112, so a 32-block's sum comes out times 2**-14, and
// 2**(s - 113) = 2**(s - 127) * 2**14 applies its scale byte s (exact: a power of two, normal for s < 128).
// Byte b of sw to bits 16..23 (prmt), then * 128 + (14 << 23): the fp32 bits of 2**(s - 113).
__device__ __forceinline__ float block_scale_f32(u32 sw, int b) {
    return __uint_as_float(__byte_perm(sw, 0u, 0x4044u | ((u32)b << 8)) * 128u + 0x07000000u);
}
constexpr u32 BF16X2_2P112 = 0x77807780u, BF16X2_2PM112 = 0x07800780u;   // 2**112, 2**-112 in both lanes
// Nonzero when a bf16 lane of v has |x| >= 2**16 (exponent field >= 143: also inf and NaN), where
// x * 2**112 would overflow: per lane, the exponent field minus 143 with bit 15 as the borrow guard.
__device__ __forceinline__ u32 x_unscalable(u32 v) {
    return (((v & 0x7f807f80u) | 0x80008000u) - 0x47804780u) & 0x80008000u;
}

// ACT >= 0 fixes the activation at compile time (act is then ignored): the Hopper epilogues choose it once
// per tile (moe_epilogue_act), so a tile runs one activation's code, not a three-way branch per element.
template <int ACT = -1>
__device__ __forceinline__ float activation(int act, float g, float u) {
    if (ACT >= 0) act = ACT;
    if (act == ACT_SWIGLUOAI) {
        g = (g > 7.0f) ? 7.0f : g;                                // min(g, limit); NaN passes through
        u = (u > 7.0f) ? 7.0f : ((u < -7.0f) ? -7.0f : u);
        return g * (1.0f / (1.0f + expf(-1.702f * g))) * (u + 1.0f);
    } else if (act == ACT_SILU) {
        return g * (1.0f / (1.0f + expf(-g))) * u;
    }
    return 0.5f * g * (1.0f + erff(g * 0.70710678118654752f)) * u;
}

// ------------------------------------------------------------------------------------------------
// Sort: slots (t*k + j) -> sorted by local expert, stable (ascending slot within an expert).
// One block of 256 threads (few slots) or 1024. Warp w owns the contiguous slot segment w (so a warp's
// slots precede warp w+1's): pass 1 counts per (warp, expert) with match_any, a scan turns the counts
// into each warp's first position per expert, pass 2 scatters (rank inside a round = lanes below with
// the same expert). No block barrier inside the passes.
// ids: [n_slots] int32 global expert ids; expert_map: [E_global] int32 global -> local or -1 (nullable).
// Outputs: sorted_slot [n_slots] (first n_valid entries used), tiles [max_tiles] int4 (expert, start,
// count, 0) of at most bt slots in expert order, meta[0] = number of tiles, meta[1] = n_valid, local_ids
// [n_slots] (-1 where dropped). split > 0: an expert's last tile of at most split slots goes to
// tiles_small [<= 2E] instead (for a narrower kernel), meta[2] = their number (0 when split == 0); where
// that remainder and the full tile before it fit two small tiles (bt < 2 * split: 192-token tiles with
// 128-token small ones), both become small tiles (split slots, then the rest), so 256 slots run as
// 2 x 128 instead of 192 + 64 in a 128-wide kernel.
#define SORT_THREADS 1024
#define SORT_MAX_E 256
#define SORT_SU 8                                 // rounds whose loads are issued together

// Warp w's contiguous segment [lo, hi) of the block's slots [lo0, hi0): whole rounds of 32 slots, the
// same split in both passes (so pass 2 visits each warp's slots in pass 1's order).
__device__ __forceinline__ void sort_segment(int lo0, int hi0, int& lo, int& hi) {
    const int warp = threadIdx.x >> 5, nwarp = blockDim.x >> 5;
    const int seg = (((hi0 - lo0 + nwarp - 1) / nwarp) + 31) & ~31;
    lo = lo0 + warp * seg;
    hi = min(hi0, lo + seg);
}

// Calls round(base, hi) for each round of 32 * SORT_SU slots of the warp's segment (sort_segment), in order:
// both passes visit the same slots in the same order.
template <class Round>
__device__ __forceinline__ void sort_rounds(int lo0, int hi0, const Round& round) {
    int lo, hi;
    sort_segment(lo0, hi0, lo, hi);
    for (int base = lo; base < hi; base += 32 * SORT_SU) round(base, hi);
}

// One round of a pass: l[u] = local id of slot base + 32u + lane, -1 at or past hi (L2 loads: written by
// this thread in pass 1, or by moe_sort_count).
__device__ __forceinline__ void sort_load_round(const int* __restrict__ local_ids, int base, int hi, int lane,
                                                int (&l)[SORT_SU]) {
#pragma unroll
    for (int u = 0; u < SORT_SU; ++u) {
        const int i = base + 32 * u + lane;
        l[u] = (i < hi) ? __ldcg(local_ids + i) : -1;
    }
}

// Pass 1 over the block's slots [lo0, hi0): warp w owns the contiguous segment w (whole rounds of 32);
// wcnt[w][e] += its slots of local expert e (wcnt zeroed by the caller). FROM_IDS: map ids through
// expert_map and write local_ids; else read local_ids (written by moe_sort_count).
template <bool FROM_IDS>
__device__ __forceinline__ void sort_count_pass(const int* __restrict__ ids, const int* __restrict__ expert_map,
                                                int* __restrict__ local_ids, int lo0, int hi0, int e_global,
                                                int e_local, int (*wcnt)[SORT_MAX_E]) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned lt_mask = (1u << lane) - 1u;
    sort_rounds(lo0, hi0, [&](int base, int hi) {
        int l[SORT_SU];
        if (FROM_IDS) {
#pragma unroll
            for (int u = 0; u < SORT_SU; ++u) {
                const int i = base + 32 * u + lane;
                const int g = (i < hi) ? ids[i] : -1;
                l[u] = (g >= 0 && g < e_global) ? g : -1;
            }
            if (expert_map) {
#pragma unroll
                for (int u = 0; u < SORT_SU; ++u) if (l[u] >= 0) l[u] = expert_map[l[u]];
            }
        } else {
            sort_load_round(local_ids, base, hi, lane, l);
        }
#pragma unroll
        for (int u = 0; u < SORT_SU; ++u) {
            const int i = base + 32 * u + lane;
            if (FROM_IDS) {
                if (l[u] >= e_local) l[u] = -1;
                if (i < hi) local_ids[i] = l[u];
            }
            const unsigned same = __match_any_sync(0xffffffffu, l[u]);
            if (l[u] >= 0 && (same & lt_mask) == 0) wcnt[warp][l[u]] += __popc(same);   // one lane per expert
            __syncwarp();
        }
    });
}

// The block's pass 1 over [lo, hi): wcnt zeroed, then counted (sort_count_pass); all threads call it
// (barriers inside). Returns, in thread e < e_local, the block's count of expert e (0 elsewhere).
template <bool FROM_IDS>
__device__ __forceinline__ int sort_block_count(const int* __restrict__ ids, const int* __restrict__ expert_map,
                                                int* __restrict__ local_ids, int lo, int hi, int e_global,
                                                int e_local, int (*wcnt)[SORT_MAX_E]) {
    const int tid = threadIdx.x, nwarp = blockDim.x >> 5;
    for (int i = tid; i < nwarp * SORT_MAX_E; i += blockDim.x) wcnt[i / SORT_MAX_E][i % SORT_MAX_E] = 0;
    __syncthreads();
    sort_count_pass<FROM_IDS>(ids, expert_map, local_ids, lo, hi, e_global, e_local, wcnt);
    __syncthreads();
    int c = 0;
    if (tid < e_local)
        for (int w = 0; w < nwarp; ++w) c += wcnt[w][tid];
    return c;
}

// Thread e < e_local: wcnt[w][e] = warp w's first position for expert e, the block's starting at p.
__device__ __forceinline__ void sort_warp_starts(int (*wcnt)[SORT_MAX_E], int e_local, int p) {
    const int tid = threadIdx.x, nwarp = blockDim.x >> 5;
    if (tid < e_local)
        for (int w = 0; w < nwarp; ++w) { const int n = wcnt[w][tid]; wcnt[w][tid] = p; p += n; }
}

// Pass 2 over the same segments: wcnt[w][e] = warp w's first position for expert e; each slot goes to
// its position (rank inside a round = lanes below with the same expert), stable.
__device__ __forceinline__ void sort_scatter_pass(const int* __restrict__ local_ids, int lo0, int hi0,
                                                  int (*wcnt)[SORT_MAX_E], int* __restrict__ sorted_slot) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned lt_mask = (1u << lane) - 1u;
    sort_rounds(lo0, hi0, [&](int base, int hi) {
        int l[SORT_SU];
        sort_load_round(local_ids, base, hi, lane, l);
#pragma unroll
        for (int u = 0; u < SORT_SU; ++u) {
            const int i = base + 32 * u + lane;
            const unsigned same = __match_any_sync(0xffffffffu, l[u]);
            int pos = 0;
            if (l[u] >= 0) pos = wcnt[warp][l[u]] + __popc(same & lt_mask);
            __syncwarp();
            if (l[u] >= 0) {
                sorted_slot[pos] = i;
                if ((same & lt_mask) == 0) wcnt[warp][l[u]] += __popc(same);
            }
            __syncwarp();
        }
    });
}

// Thread e (< SORT_MAX_E, the first 256 threads) holds expert e's count c: the tile table, and returns
// the expert's first sorted position (exclusive scan of the counts over experts). Block-wide barriers
// inside: every thread of the block calls it.
__device__ __forceinline__ int sort_tiles(int c, int e_local, int bt, int split, int4* __restrict__ tiles,
                                          int4* __restrict__ tiles_small, int* __restrict__ meta) {
    __shared__ int wsum_c[8], wsum_t[8], wsum_s[8];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int nt = 0, ns = 0, ic = 0, it = 0, is = 0, ex_c = 0;
    if (tid < SORT_MAX_E) {
        const int rem = c % bt, full = c / bt;
        if (rem > 0 && rem <= split) ns = (full >= 1 && rem + bt <= 2 * split) ? 2 : 1;   // small list
        nt = (c + bt - 1) / bt - (ns > 0) - (ns > 1);
        ic = c; it = nt; is = ns;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int yc = __shfl_up_sync(0xffffffffu, ic, o), yt = __shfl_up_sync(0xffffffffu, it, o);
            const int ys = __shfl_up_sync(0xffffffffu, is, o);
            if (lane >= o) { ic += yc; it += yt; is += ys; }
        }
        if (lane == 31) { wsum_c[warp] = ic; wsum_t[warp] = it; wsum_s[warp] = is; }
    }
    __syncthreads();
    if (tid < SORT_MAX_E) {
        int oc = 0, ot = 0, os = 0;
        for (int w = 0; w < warp; ++w) { oc += wsum_c[w]; ot += wsum_t[w]; os += wsum_s[w]; }
        ex_c = oc + ic - c;
        const int ex_t = ot + it - nt, ex_s = os + is - ns;
        if (tid < e_local) {
            for (int q = 0; q < nt; ++q) tiles[ex_t + q] = make_int4(tid, ex_c + q * bt, min(bt, c - q * bt), 0);
            const int s0 = ex_c + nt * bt;                         // the small tiles' first position
            if (ns == 1) tiles_small[ex_s] = make_int4(tid, s0, c - nt * bt, 0);
            if (ns == 2) {
                tiles_small[ex_s] = make_int4(tid, s0, split, 0);
                tiles_small[ex_s + 1] = make_int4(tid, s0 + split, c - nt * bt - split, 0);
            }
        }
        if (tid == SORT_MAX_E - 1) { meta[0] = ot + it; meta[1] = oc + ic; meta[2] = os + is; }
    }
    return ex_c;
}

extern "C" __global__ void __launch_bounds__(SORT_THREADS, 1)
moe_sort(const int* __restrict__ ids, const int* __restrict__ expert_map, int n_slots, int e_global,
         int e_local, int bt, int split, int* __restrict__ sorted_slot, int4* __restrict__ tiles,
         int4* __restrict__ tiles_small, int* __restrict__ meta, int* __restrict__ local_ids) {
    MOE_GRID_ENTER
    __shared__ int wcnt[32][SORT_MAX_E];          // pass 1: counts; then each warp's next position
    const int c = sort_block_count<true>(ids, expert_map, local_ids, 0, n_slots, e_global, e_local, wcnt);
    sort_warp_starts(wcnt, e_local, sort_tiles(c, e_local, bt, split, tiles, tiles_small, meta));
    __syncthreads();
    sort_scatter_pass(local_ids, 0, n_slots, wcnt, sorted_slot);
}

// The same sort in three launches for many slots (fused_moe uses them from SORT_MULTI_MIN slots): block b
// of moe_sort_count / moe_sort_scatter owns slots [b * chunk, (b + 1) * chunk) (blocks in slot order, warps
// in slot order inside a block, so the order stays stable). counts [blocks][SORT_MAX_E]: moe_sort_count
// writes block b's count of each expert, moe_sort_scan turns them into block b's first position of each
// expert (and writes the tiles and meta exactly as moe_sort), moe_sort_scatter places the slots.
extern "C" __global__ void __launch_bounds__(SORT_THREADS, 1)
moe_sort_count(const int* __restrict__ ids, const int* __restrict__ expert_map, int n_slots, int e_global,
               int e_local, int chunk, int* __restrict__ local_ids, int* __restrict__ counts) {
    MOE_GRID_ENTER
    __shared__ int wcnt[32][SORT_MAX_E];
    const int lo = blockIdx.x * chunk, hi = min(n_slots, lo + chunk);
    const int c = sort_block_count<true>(ids, expert_map, local_ids, lo, hi, e_global, e_local, wcnt);
    if (threadIdx.x < SORT_MAX_E) counts[blockIdx.x * SORT_MAX_E + threadIdx.x] = c;
}

extern "C" __global__ void __launch_bounds__(SORT_MAX_E, 1)
moe_sort_scan(int n_blocks, int e_local, int bt, int split, int* __restrict__ counts, int4* __restrict__ tiles,
              int4* __restrict__ tiles_small, int* __restrict__ meta) {
    MOE_GRID_ENTER
    const int tid = threadIdx.x;
    int c = 0;
    if (tid < e_local)
        for (int b = 0; b < n_blocks; ++b) c += __ldcg(counts + b * SORT_MAX_E + tid);
    int p = sort_tiles(c, e_local, bt, split, tiles, tiles_small, meta);
    if (tid < e_local)                            // block b's first position for expert tid
        for (int b = 0; b < n_blocks; ++b) {
            const int n = __ldcg(counts + b * SORT_MAX_E + tid);
            counts[b * SORT_MAX_E + tid] = p;
            p += n;
        }
}

extern "C" __global__ void __launch_bounds__(SORT_THREADS, 1)
moe_sort_scatter(int n_slots, int e_local, int chunk, const int* __restrict__ local_ids,
                 const int* __restrict__ counts, int* __restrict__ sorted_slot) {
    MOE_GRID_ENTER
    __shared__ int wcnt[32][SORT_MAX_E];
    const int lo = blockIdx.x * chunk, hi = min(n_slots, lo + chunk);
    sort_block_count<false>(nullptr, nullptr, const_cast<int*>(local_ids), lo, hi, 0, e_local, wcnt);
    const int tid = threadIdx.x;
    sort_warp_starts(wcnt, e_local, tid < e_local ? __ldcg(counts + blockIdx.x * SORT_MAX_E + tid) : 0);
    __syncthreads();
    sort_scatter_pass(local_ids, lo, hi, wcnt, sorted_slot);
}

// ------------------------------------------------------------------------------------------------
// The tensor-core GEMM with fused gather / epilogue.
// GATED (GEMM1): X = x [T, ldx] (token = slot / top_k), out = intermediate [sorted pos, ldo],
//                rows = w13 kernel rows, epilogue act(gate + b, up + b) [* gamma on input] -> bf16.
// !GATED (GEMM2): X = intermediate [pos, ldx], out = y [slot, ldo], epilogue (acc + b) [* gamma] -> bf16.
// gamma = bf16(topk_weights[slot]) as triton_kernels' make_routing_data (spec Pipeline.BF16).
struct GemmArgs {
    const uint4* W;          // [E, R, Kp/32] uint4
    const u32* S;            // [E, R, Kp/128] uint32 (4 scale bytes)
    const float* bias;       // [E, R]
    const u16* X;
    const int* sorted_slot;
    const int4* tiles;
    const int* meta;
    const float* topk_w;     // [n_slots]
    u16* out;
    int ldx, ldo;
    int rows_p;              // R
    int rows_real;           // rows holding real data (skip tiles at or beyond)
    int out_rows;            // GEMM2: H (rows >= H not written)
    int kp;                  // Kp
    int kblocks;             // real K / 32
    int top_k;
    int act;
    int weight_on_input;     // 1: gamma multiplies GEMM1's activation output, not GEMM2's row
};

// Column of logical k in the Hopper path's activation layout (defined with that path, below).
__device__ __forceinline__ int kperm(int k);

// Tile column c -> (slot, gamma = bf16(router weight) as triton_kernels' make_routing_data, spec
// Pipeline.BF16). GlobalCols reads them through L2 (ld.global.cg): moe_sort and routing wrote them earlier
// in the same forward, and under PDL this kernel may already run while they finish, so the condition of
// the non-coherent path (read-only for the kernel's whole lifetime) does not hold. The Hopper kernels stage
// them in shared memory (SmemCols).
struct GlobalCols {
    const int* sorted_slot;                  // + tile start
    const float* topk_w;
    __device__ __forceinline__ void get(int c, int& slot, float& gamma) const {
        slot = __ldcg(sorted_slot + c);
        gamma = bf16_to_f32(f32_to_bf16(__ldcg(topk_w + slot)));
    }
};

// An activation load of the register-tile kernels: GEMM1 reads x (written before the forward began: the
// non-coherent path), GEMM2 the intermediate that GEMM1 wrote just before it (L2, as GlobalCols).
template <bool GATED>
__device__ __forceinline__ uint4 ld_act(const uint4* p) {
    if (GATED) return __ldg(p);
    return __ldcg(p);
}
struct SmemCols {
    const int* slot_of;
    const float* gamma_of;
    __device__ __forceinline__ void get(int c, int& slot, float& gamma) const { slot = slot_of[c]; gamma = gamma_of[c]; }
};

// Epilogue: the thread holds rows (g, g+8) x tokens (2t, 2t+1) of each (m, n) accumulator tile.
// PERM (GEMM1 only): write the intermediate in the Hopper path's permuted column order.
// The thread's bias values (rows row0 + 16m + g and + 8): loaded once.
template <int MT>
__device__ __forceinline__ void load_bias(const GemmArgs& A, int expert, int row0, int g, float (&blo)[MT],
                                          float (&bhi)[MT]) {
    const float* bias = A.bias + (long)expert * A.rows_p;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
        blo[m] = __ldg(bias + row0 + 16 * m + g);
        bhi[m] = __ldg(bias + row0 + 16 * m + g + 8);
    }
}

// The epilogue's rounding points (spec 12, the bf16 pipeline), for moe_epilogue and the direct kernels
// alike. GEMM1: the activation of the biased gate and up sums, times the router weight gamma when it is
// applied on the input, rounded to bf16. GEMM2: the biased sum times gemm2_scale (gamma, or 1 when gamma
// was applied on the input), rounded to bf16.
template <int ACT = -1>
__device__ __forceinline__ u16 gemm1_out(const GemmArgs& A, float gate, float up, float gamma) {
    float v = activation<ACT>(A.act, gate, up);
    if (A.weight_on_input) v *= gamma;                    // gamma scales the activation output
    return f32_to_bf16(v);
}
__device__ __forceinline__ float gemm2_scale(const GemmArgs& A, float gamma) {
    return A.weight_on_input ? 1.0f : gamma;
}
__device__ __forceinline__ u16 gemm2_out(float sum, float scale) { return f32_to_bf16(sum * scale); }

template <int MT, int NT, bool GATED, bool PERM = false, class Cols, int ACT = -1>
__device__ __forceinline__ void moe_epilogue(const GemmArgs& A, float (&acc)[MT][NT][4], const float (&blo)[MT],
                                             const float (&bhi)[MT], int start, int count, int row0, int col0,
                                             int g, int t, const Cols& cols) {
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int c = col0 + n * 8 + 2 * t + j;
            if (c >= count) continue;
            const int pos = start + c;
            int slot;
            float wgt;
            cols.get(c, slot, wgt);
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                const int r = row0 + 16 * m + g;
                float lo = acc[m][n][j], hi = acc[m][n][2 + j];
                if (GATED) {
                    const u16 v = gemm1_out<ACT>(A, lo + blo[m], hi + bhi[m], wgt);
                    const int ch = (row0 + 16 * m) / 2 + g;
                    A.out[(long)pos * A.ldo + (PERM ? kperm(ch) : ch)] = v;
                } else {
                    const float w = gemm2_scale(A, wgt);
                    if (r < A.out_rows) A.out[(long)slot * A.ldo + r] = gemm2_out(lo + blo[m], w);
                    if (r + 8 < A.out_rows) A.out[(long)slot * A.ldo + r + 8] = gemm2_out(hi + bhi[m], w);
                }
            }
        }
}

template <int MT, int NT, bool GATED, bool PERM = false, class Cols>
__device__ __forceinline__ void moe_epilogue(const GemmArgs& A, float (&acc)[MT][NT][4], int expert, int start,
                                             int count, int row0, int col0, int g, int t, const Cols& cols) {
    float blo[MT], bhi[MT];
    load_bias<MT>(A, expert, row0, g, blo, bhi);
    moe_epilogue<MT, NT, GATED, PERM>(A, acc, blo, bhi, start, count, row0, col0, g, t, cols);
}

// The same with GEMM1's activation chosen once per tile (A.act is uniform): each branch is one
// activation's epilogue. The Hopper kernels' epilogues are fully unrolled: at 192 tokens the one that
// branched three ways per element was ~6600 instructions (~100 KB); the swigluoai branch is ~2600 (sm_90a
// SASS of hopper192's GEMM1). With the branch hoisted their GEMM1 ran 1.3% (hopper192) and 4% (hopper192w)
// faster, and hopper192w's GEMM1 stalls more on instruction fetch than hopper192's (BENCHMARKS.md v25).
template <int MT, int NT, bool GATED, bool PERM, class Cols>
__device__ __forceinline__ void moe_epilogue_act(const GemmArgs& A, float (&acc)[MT][NT][4], int expert, int start,
                                                 int count, int row0, int col0, int g, int t, const Cols& cols) {
    float blo[MT], bhi[MT];
    load_bias<MT>(A, expert, row0, g, blo, bhi);
    if constexpr (!GATED)                                          // GEMM2: no activation
        moe_epilogue<MT, NT, GATED, PERM>(A, acc, blo, bhi, start, count, row0, col0, g, t, cols);
    else if (A.act == ACT_SWIGLUOAI)
        moe_epilogue<MT, NT, GATED, PERM, Cols, ACT_SWIGLUOAI>(A, acc, blo, bhi, start, count, row0, col0, g, t, cols);
    else if (A.act == ACT_SILU)
        moe_epilogue<MT, NT, GATED, PERM, Cols, ACT_SILU>(A, acc, blo, bhi, start, count, row0, col0, g, t, cols);
    else
        moe_epilogue<MT, NT, GATED, PERM, Cols, ACT_GELU>(A, acc, blo, bhi, start, count, row0, col0, g, t, cols);
}

template <int MT, int NT, bool GATED>
__device__ __forceinline__ void moe_epilogue(const GemmArgs& A, float (&acc)[MT][NT][4], int expert, int start,
                                             int count, int row0, int col0, int g, int t) {
    moe_epilogue<MT, NT, GATED>(A, acc, expert, start, count, row0, col0, g, t,
                                GlobalCols{A.sorted_slot + start, A.topk_w});
}

template <int MT, int NT, int KS, int RS, int CS, bool GATED>
__device__ __forceinline__ void moe_gemm_body(const GemmArgs& A) {
    constexpr int NW = KS * RS * CS;
    constexpr bool XPRE = (NT <= 2);          // few tokens: prefetch the activations with the weights
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int ks = warp % KS, rs = (warp / KS) % RS, cs = warp / (KS * RS);
    const int tile = blockIdx.y;
    if (tile >= A.meta[0]) return;
    const int4 tl = A.tiles[tile];
    const int expert = tl.x, start = tl.y, count = tl.z;
    const int row0 = blockIdx.x * (16 * MT * RS) + rs * 16 * MT;
    const int col0 = cs * 8 * NT;

    // activation rows feeding this thread's B fragments (token column g of each n-tile)
    const uint4* xrow[NT];
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        int c = col0 + n * 8 + g;
        xrow[n] = nullptr;
        if (c < count) {
            int pos = start + c;
            long r = GATED ? (long)(A.sorted_slot[pos] / A.top_k) : (long)pos;
            xrow[n] = reinterpret_cast<const uint4*>(A.X + r * A.ldx) + t;
        }
    }
    const int kw = A.kp >> 5;                 // uint4 per row
    const int nsb_all = A.kp >> 7;
    const uint4* wrow[MT][2];
    const u32* srow[MT][2];
    bool mvalid[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
        mvalid[m] = (row0 + 16 * m) < A.rows_real;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = row0 + 16 * m + 8 * h + g;
            wrow[m][h] = A.W + ((long)expert * A.rows_p + row0 + 16 * m) * kw + (8 * h + g) * 4 + t;
            srow[m][h] = A.S + (long)expert * nsb_all * A.rows_p + r;     // + sb * rows_p
        }
    }
    constexpr bool DUAL = MT * NT <= 4;       // second accumulator for mma step 1: two dependency chains
    float acc[MT][NT][4], acc2[DUAL ? MT : 1][DUAL ? NT : 1][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[m][n][i] = 0.0f;
#pragma unroll
    for (int m = 0; m < (DUAL ? MT : 1); ++m)
#pragma unroll
        for (int n = 0; n < (DUAL ? NT : 1); ++n)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc2[m][n][i] = 0.0f;

    const int nsb = (A.kblocks + 3) >> 2;     // superblocks holding real data
    const int sb0 = (ks * nsb) / KS, sb1 = ((ks + 1) * nsb) / KS;

    uint4 wv[MT][2];
    u32 sv[MT][2];
    uint4 xb[XPRE ? NT * 4 : 1];
    auto load_w = [&](int sb, uint4 (&w)[MT][2], u32 (&s)[MT][2], uint4 (&xx)[XPRE ? NT * 4 : 1]) {
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                if (mvalid[m] && sb < sb1) {
                    w[m][h] = __ldg(wrow[m][h] + sb * 64);
                    s[m][h] = __ldg(srow[m][h] + (long)sb * A.rows_p);
                } else {
                    w[m][h] = make_uint4(0, 0, 0, 0);
                    s[m][h] = 0x7f7f7f7fu;
                }
            }
        if (XPRE) {
#pragma unroll
            for (int n = 0; n < NT; ++n)
#pragma unroll
                for (int b = 0; b < 4; ++b) {
                    const int blk = sb * 4 + b;
                    xx[n * 4 + b] = (xrow[n] && sb < sb1 && blk < A.kblocks) ? ld_act<GATED>(xrow[n] + blk * 4)
                                                                            : make_uint4(0, 0, 0, 0);
                }
        }
    };
    if (sb0 < sb1) load_w(sb0, wv, sv, xb);
    for (int sb = sb0; sb < sb1; ++sb) {
        uint4 wn[MT][2];
        u32 sn[MT][2];
        uint4 xn[XPRE ? NT * 4 : 1];
        load_w(sb + 1, wn, sn, xn);           // prefetch the next superblock
        u32 big = 0;
#pragma unroll
        for (int m = 0; m < MT; ++m) big |= big_scales(sv[m][0]) | big_scales(sv[m][1]);
        auto step = [&](auto slow) {
    #pragma unroll
            for (int b = 0; b < 4; ++b) {
                const int blk = sb * 4 + b;
                if (blk >= A.kblocks) break;
                uint4 xv[NT];
    #pragma unroll
                for (int n = 0; n < NT; ++n)
                    xv[n] = XPRE ? xb[n * 4 + b] : (xrow[n] ? ld_act<GATED>(xrow[n] + blk * 4) : make_uint4(0, 0, 0, 0));
                u32 a[MT][2][4];
    #pragma unroll
                for (int m = 0; m < MT; ++m)
    #pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        u32 q = (b == 0) ? wv[m][h].x : (b == 1) ? wv[m][h].y : (b == 2) ? wv[m][h].z : wv[m][h].w;
                        dequant_blk<decltype(slow)::value>(q, sv[m][h], b, a[m][h]);
                    }
    #pragma unroll
                for (int m = 0; m < MT; ++m) {                        // step 0 for every tile, then step 1
                    if (!mvalid[m]) continue;
    #pragma unroll
                    for (int n = 0; n < NT; ++n)
                        mma_bf16(acc[m][n], a[m][0][0], a[m][1][0], a[m][0][1], a[m][1][1], xv[n].x, xv[n].y);
                }
    #pragma unroll
                for (int m = 0; m < MT; ++m) {
                    if (!mvalid[m]) continue;
    #pragma unroll
                    for (int n = 0; n < NT; ++n)
                        mma_bf16(DUAL ? acc2[DUAL ? m : 0][DUAL ? n : 0] : acc[m][n], a[m][0][2], a[m][1][2], a[m][0][3],
                                 a[m][1][3], xv[n].z, xv[n].w);
                }
            }
        };
        if (warp_needs_slow(big)) step(BoolC<true>()); else step(BoolC<false>());
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int h = 0; h < 2; ++h) { wv[m][h] = wn[m][h]; sv[m][h] = sn[m][h]; }
        if (XPRE) {
#pragma unroll
            for (int i = 0; i < (XPRE ? NT * 4 : 1); ++i) xb[i] = xn[i];
        }
    }

    if (DUAL) {                               // fold the step-1 chain into the step-0 chain
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int n = 0; n < NT; ++n)
#pragma unroll
                for (int i = 0; i < 4; ++i) acc[m][n][i] += acc2[DUAL ? m : 0][DUAL ? n : 0][i];
    }
    if (KS > 1) {                             // split-K: fixed-order reduction through shared memory
        __shared__ float red[NW][32][MT * NT * 4];
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int n = 0; n < NT; ++n)
#pragma unroll
                for (int i = 0; i < 4; ++i) red[warp][lane][(m * NT + n) * 4 + i] = acc[m][n][i];
        __syncthreads();
        if (ks != 0) return;
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int n = 0; n < NT; ++n)
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    float s = 0.0f;
                    for (int k2 = 0; k2 < KS; ++k2) s += red[warp + k2][lane][(m * NT + n) * 4 + i];
                    acc[m][n][i] = s;
                }
    }

    moe_epilogue<MT, NT, GATED>(A, acc, expert, start, count, row0, col0, g, t);
}

#define GEMM_PARAMS                                                                                     \
    const uint4* W, const u32* S, const float* bias, const u16* X, const int* sorted_slot,              \
        const int4* tiles, const int* meta, const float* topk_w, u16* out, int ldx, int ldo, int rows_p,  \
        int rows_real, int out_rows, int kp, int kblocks, int top_k, int act, int weight_on_input
#define GEMM_ARGS_INIT                                                                                  \
    GemmArgs A{W, S, bias, X, sorted_slot, tiles, meta, topk_w, out, ldx, ldo, rows_p, rows_real,       \
               out_rows, kp, kblocks, top_k, act, weight_on_input};

// name, MT, NT, KS, RS, CS, MINB (block rows = 16*MT*RS, block tokens = 8*NT*CS, threads = 32*KS*RS*CS,
// at least MINB blocks resident per SM)
#define DEFINE_GEMM(name, MT, NT, KS, RS, CS, MINB)                                                     \
    extern "C" __global__ void __launch_bounds__(32 * KS * RS * CS, MINB)                               \
        moe_gemm1_##name(GEMM_PARAMS) {                                                                 \
        MOE_GRID_ENTER GEMM_ARGS_INIT moe_gemm_body<MT, NT, KS, RS, CS, true>(A);                       \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * KS * RS * CS, MINB)                               \
        moe_gemm2_##name(GEMM_PARAMS) {                                                                 \
        MOE_GRID_ENTER GEMM_ARGS_INIT moe_gemm_body<MT, NT, KS, RS, CS, false>(A);                      \
    }

DEFINE_GEMM(decode, 2, 1, 4, 1, 1, 4)  // 32 rows x 8 tokens, 4 warps split K, 4 blocks per SM: weight streaming
DEFINE_GEMM(mid, 2, 4, 4, 1, 1, 1)     // 32 rows x 32 tokens, 4 warps split K
DEFINE_GEMM(large, 2, 8, 1, 4, 1, 1)      // 128 rows x 64 tokens, 4 warps

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async16s(u32 saddr, const void* gmem, int src_bytes) {   // shared address
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(saddr), "l"(gmem), "r"(src_bytes));
}
// An L2 cache policy that evicts the lines it brings in first (createpolicy, sm_80+), and a 16-byte copy
// under such a policy: for weights that one forward reads exactly once (the direct kernels), so that they
// do not push out of L2 what the forward reads again (see issue() in moe_gemm_direct_body).
__device__ __forceinline__ unsigned long long l2_evict_first_policy() {
    unsigned long long p;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    return p;
}
__device__ __forceinline__ void cp_async16s_evict_first(u32 saddr, const void* gmem, unsigned long long pol) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(saddr), "l"(gmem), "l"(pol));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

// ------------------------------------------------------------------------------------------------
// Direct variant for 1-2 tokens (at most 8 slots): no sort, one block row per slot (blockIdx.y), tile =
// that slot alone (expert read from topk_ids through expert_map here; GEMM1 also writes local_ids for
// moe_combine). Each of the KS warps owns a K range of the block's 32 rows and issues the cp.async copies
// of ALL of it at once (up to MAXSB superblocks: 2 KB of weights + 128 bytes of scales each, one commit
// group per superblock) into its own shared memory, then computes superblock i as soon as group i has
// landed: every weight byte of the layer is in flight at once, not one or two superblocks per warp. The
// slot's activation row is staged once per block. Fixed-order split-K reduction through shared memory.
// The weight and scale copies are evict-first in L2 (read once per forward; see issue()).
// The E8M0 scales are applied per 32-block in fp32 (the scaled domain, see the compute loop): no
// per-element bf16 multiply, except on the exact fallback path (scale bytes >= 128, |x| >= 2**16).
// Padded K is at most KS * MAXSB * 128 (3072; fused_moe checks it, the kernel traps beyond it).
// Dynamic smem (moe.py direct_smem): 64 * kblocks (the row) + nsb * 2176 + KS * 128 + 256 bytes, nsb =
// ceil(kblocks / 4): the warps' superblock slots packed back to back (warp w's first at its first
// superblock sb0), the split-K sums (32 floats a warp: the block has one output column, see the
// reduction), then 256 bytes of zeros (the mma's unused B columns). At K = 2880 that is 57088 bytes, so
// 4 blocks (direct4: 32 warps, 64 registers a thread) fit an SM's 228 KB, where unpacked slots and a
// separate 8 KB reduction buffer allowed 3.
// A GEMM2 block of a dropped slot waits for GEMM1 before it exits (see there).
struct DirectArgs {
    GemmArgs A;              // X: GEMM1 x [T, ldx], GEMM2 the intermediate [n_slots, ldx]; no sort outputs
    const int* ids;          // [n_slots] global expert ids
    const int* expert_map;   // nullable
    int* local_ids;          // GEMM1 writes it (block x == 0) for moe_combine
    int n_slots, e_global, e_local;
    int* done;               // nullable: [n_slots] GEMM1 blocks finished per slot (see moe_gemm2_direct)
    int done_target;         // GEMM1's row blocks per slot
};

// The local expert of a slot (-1: dropped), as moe_sort maps it. L2 loads: in a GEMM2 launched early
// (PDL) nothing may come from an L1 line cached before routing wrote the ids.
__device__ __forceinline__ int direct_local_expert(const DirectArgs& D, int slot) {
    const int gid = __ldcg(D.ids + slot);
    int expert = (gid >= 0 && gid < D.e_global) ? gid : -1;
    if (expert >= 0 && D.expert_map) expert = __ldcg(D.expert_map + expert);
    return expert < D.e_local ? expert : -1;
}

// cp.async.wait_group with a run-time count 0..7 (folds to one instruction when n is a constant).
__device__ __forceinline__ void cp_async_wait_n(int n) {
    switch (n) {
        case 0: cp_async_wait<0>(); break;
        case 1: cp_async_wait<1>(); break;
        case 2: cp_async_wait<2>(); break;
        case 3: cp_async_wait<3>(); break;
        case 4: cp_async_wait<4>(); break;
        case 5: cp_async_wait<5>(); break;
        case 6: cp_async_wait<6>(); break;
        default: cp_async_wait<7>(); break;
    }
}

// GEMM2's wait for its input. done == nullptr: the grid wait (GEMM1 complete). Else only its own slot's
// GEMM1 blocks: thread 0 spins until all done_target of them have counted themselves (each with one
// release add after its intermediate stores), then the block barrier passes that on; so a GEMM2 block of
// a slot whose GEMM1 blocks all ran in an early wave starts while GEMM1's later waves still run. Deadlock-free:
// a PDL-launched GEMM2 starts only once every GEMM1 block has started (so none waits for a free SM), and a
// plain launch only after GEMM1 completed. moe_combine resets the counters for the next forward.
__device__ __forceinline__ void direct_wait_slot(const DirectArgs& D) {
    if (D.done == nullptr) {
        MOE_GRID_ENTER
        return;
    }
    if (threadIdx.x == 0) {
        const int* c = D.done + blockIdx.y;
        int v;
        while (true) {
            asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(c) : "memory");
            if (v >= D.done_target) break;
            __nanosleep(64);
        }
    }
    __syncthreads();
    mxk_grid_release();
}

// Block (row block blockIdx.x, slot blockIdx.y). GEMM2 (GATED false) issues its weight copies, then calls
// wait_input() (all threads) before it reads the intermediate: the grid wait of a PDL launch.
template <int KS, int MAXSB, bool GATED, class Wait>
__device__ __forceinline__ void moe_gemm_direct_body(const DirectArgs& D, const Wait& wait_input) {
    static_assert(MAXSB >= 1 && MAXSB <= 7, "cp_async_wait_n counts up to 7 (MAXSB groups + the row)");
    extern __shared__ __align__(16) unsigned char smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int rowblk = blockIdx.x, slot = blockIdx.y;
    if (slot >= D.n_slots) return;
    const int expert = direct_local_expert(D, slot);      // GEMM2: before its wait (ids are final by then)
    if (GATED && rowblk == 0 && tid == 0) D.local_ids[slot] = expert;
    if (expert < 0) {
        // A dropped slot's GEMM2 block still waits for GEMM1 before it exits: moe_combine, released by
        // GEMM2's completion, reads local_ids, which GEMM1 wrote; when every slot is dropped, or in counter
        // mode (dropped slots count no GEMM1 block), nothing else would order that write before the read.
        if (!GATED) mxk_grid_wait();
        return;
    }
    const int row0 = rowblk * 32;
    const int kw = D.A.kp >> 5, nsb_all = D.A.kp >> 7;
    const int nsb = (D.A.kblocks + 3) >> 2;
    const int sb0 = (warp * nsb) / KS, sb1 = ((warp + 1) * nsb) / KS;
    if (sb1 - sb0 > MAXSB) __trap();      // K > KS * MAXSB superblocks: fused_moe rejects it (DIRECT_MAX_K)
    // Both 16-row groups are always copied and computed: a group at or past rows_real (the second of the
    // last row block when the row count is 16 mod 32) lies in the layout's padding rows (R is a multiple of
    // 256), and its sums are dropped before the epilogue. No per-step test, so no branch and warp
    // re-convergence before every mma (H200, T=1 ids path: 28.8 -> 27.3 us; BENCHMARKS v14).
    const uint4* wg[2];
    const u32* sg[2];
#pragma unroll
    for (int m = 0; m < 2; ++m) {
        wg[m] = D.A.W + ((long)expert * D.A.rows_p + row0 + 16 * m) * kw;   // + 64 * sb: the group's 1 KB
        sg[m] = D.A.S + (long)expert * nsb_all * D.A.rows_p + row0 + 16 * m;  // + sb * rows_p: 64 bytes
    }
    u16* xsm = reinterpret_cast<u16*>(smem);                        // [32 * kblocks]
    unsigned char* const slots = smem + 64 * D.A.kblocks;          // [nsb][2 KB w | 128 B s], then [KS][32] sums
    unsigned char* wsm = slots + sb0 * 2176;                        // this warp's [sb1 - sb0][2176]
    const u32 wsm_s = (u32)__cvta_generic_to_shared(wsm);
    auto stage_row = [&]() {                                        // the activation row: one group
        const long xr = GATED ? (long)(slot / D.A.top_k) : (long)slot;
        for (int c = tid; c < D.A.kblocks * 4; c += 32 * KS) cp_async16(xsm + 8 * c, D.A.X + xr * D.A.ldx + 8 * c, 16);
        cp_async_commit();
    };
    // The weight and scale copies are marked evict-first in L2. At 1 token the forward streams 53 MB of
    // weights (120b), more than the 50 MB L2; with normal priority they can evict the small data that
    // every forward reads again on its critical path (the logits, the ids, the activation row, biases,
    // kernel code). That is the presumed cause of the gain, which was measured but not profiled per item:
    // H200, same call, routed / ids path (us): 120b T=1 27.7-28.2 -> 26.8-26.9 / 25.5-25.7 -> 24.8-25.1,
    // T=2 44.2-45.3 -> 42.7-43.0, 20b T=1 27.6-27.7 -> 26.5-26.8; output hashes equal (BENCHMARKS v18).
    auto issue = [&]() {                                            // this warp's superblocks sb0 .. sb1-1
        const unsigned long long pol = l2_evict_first_policy();
#pragma unroll
        for (int i = 0; i < MAXSB; ++i) {
            const int sb = sb0 + i;
            if (sb < sb1) {
                const u32 st = wsm_s + i * 2176;
#pragma unroll
                for (int m = 0; m < 2; ++m) {
                    cp_async16s_evict_first(st + m * 1024 + 16 * lane, wg[m] + sb * 64 + lane, pol);
                    cp_async16s_evict_first(st + m * 1024 + 16 * (lane + 32), wg[m] + sb * 64 + lane + 32, pol);
                }
                const bool sm = lane >= 4;                          // lanes 0-3: scales of group 0, 4-7: group 1
                if (lane < 8)
                    cp_async16s_evict_first(st + 2048 + 16 * lane, (sm ? sg[1] : sg[0]) + (long)sb * D.A.rows_p + 4 * (lane & 3), pol);
            }
            cp_async_commit();                                      // empty groups keep the count uniform
        }
    };
    float* red = reinterpret_cast<float*>(slots + nsb * 2176);       // [KS][32] split-K sums
    uint4* const zsm = reinterpret_cast<uint4*>(red + 32 * KS);     // [16] zeros
    if (tid < 16) zsm[tid] = make_uint4(0u, 0u, 0u, 0u);
    if (GATED) {                                                    // row (group 0), then the weights
        stage_row();
        issue();
        cp_async_wait<MAXSB>();                                     // this thread's part of the row landed
    } else {                                                        // weights first: GEMM1 may still run
        issue();
        wait_input();                                               // GEMM1 done: the intermediate is final
        stage_row();
        cp_async_wait<0>();                                         // the row (and the weights) landed
    }
    __syncthreads();                                                // ... everyone's part
    // The warp's K range of the row times 2**112, in place (exact), unless one of its values is out of
    // range (|x| >= 2**16, inf, NaN): then the warp keeps the row as it is and takes the exact path.
    // Only this warp reads this range, so a warp barrier suffices.
    bool xbad;
    {
        constexpr int J = (MAXSB * 16 + 31) / 32;                   // 16-byte chunks per lane
        const int c1 = min(sb1 * 16, D.A.kblocks * 4);
        uint4 v[J];
        u32 bad = 0;
#pragma unroll
        for (int j = 0; j < J; ++j) {
            const int c = sb0 * 16 + lane + 32 * j;
            if (c < c1) {
                v[j] = *reinterpret_cast<const uint4*>(xsm + 8 * c);
                bad |= x_unscalable(v[j].x) | x_unscalable(v[j].y) | x_unscalable(v[j].z) | x_unscalable(v[j].w);
            }
        }
        xbad = __any_sync(0xffffffffu, bad != 0u);
        if (!xbad) {
#pragma unroll
            for (int j = 0; j < J; ++j) {
                const int c = sb0 * 16 + lane + 32 * j;
                if (c < c1)
                    *reinterpret_cast<uint4*>(xsm + 8 * c) =
                        make_uint4(bf16x2_mul(v[j].x, BF16X2_2P112), bf16x2_mul(v[j].y, BF16X2_2P112),
                                   bf16x2_mul(v[j].z, BF16X2_2P112), bf16x2_mul(v[j].w, BF16X2_2P112));
            }
        }
        __syncwarp();
    }
    // The epilogue's operands, loaded now (warp 0). Lane (g, t) finishes value t of its row pair: 16-row
    // group m = t / 2, row g (t even) or g + 8 (t odd); GATED, the even lane takes the odd one's sum.
    float elo = 0.0f, ehi = 0.0f, gamma = 0.0f;
    if (warp == 0) {
        const float* bias = D.A.bias + (long)expert * D.A.rows_p + row0 + 16 * (t >> 1) + g;
        elo = __ldg(bias);
        ehi = __ldg(bias + 8);
        gamma = __ldcg(D.A.topk_w + slot);              // rounded to bf16 in the epilogue (see there)
    }
    // The scaled domain. Per 32-block, the mma chain sums the codes as bf16 bit patterns (fp4pair: value *
    // 2**-126, exact; 0.5 is a bf16 subnormal, which the tensor cores take as such) times the row * 2**112,
    // so C = the block's exact products * 2**-14 summed in fp32, and acc += C * 2**(s - 113) applies the
    // block's scale exactly (a power of two): the products of the spec's dequantized bf16 weights, summed
    // per 32-block, then over blocks (an fp32 order the spec's error bound allows: spec 12.4). No
    // per-element multiply: ~220 instead of ~294 instructions a superblock (sm_90a SASS, BENCHMARKS v21).
    // Underflow: a product or 32-block sum below 2**-126 here is below 2**(s - 239) <= 2**-112 in the
    // layer (s < 128); 3072 of them stay below the spec's 2**-100 floor.
    // Both 16-row groups share one C: group 0's B has the row in columns 0-3 (lanes g < 4; lanes g >= 4
    // read the zeros) and group 1's in columns 4-7, so lane (g, t) finds rows g and g + 8 of group t / 2
    // in C[0] and C[2] and keeps value t: row 16 (t / 2) + 8 (t % 2) + g, whose scale word it loads.
    // Exact path (a scale byte >= 128 in the warp's superblock, or xbad): dequant_blk's exact bf16
    // weights and the unscaled row (times 2**-112 again, exact, unless xbad), acc += C.
    float acc = 0.0f;
    const int own_scale = 2048 + 4 * (16 * (t >> 1) + 8 * (t & 1) + g);
    const u16* const xz = reinterpret_cast<const u16*>(zsm) + 8 * t;
#pragma unroll
    for (int i = 0; i < MAXSB; ++i) {
        cp_async_wait_n(MAXSB - 1 - i);                         // a constant once the loop is unrolled
        __syncwarp();
        const int sb = sb0 + i;
        if (sb >= sb1) break;
        const unsigned char* st = wsm + i * 2176;
        uint4 wv[2][2];
#pragma unroll
        for (int m = 0; m < 2; ++m)
#pragma unroll
            for (int h = 0; h < 2; ++h)
                wv[m][h] = *reinterpret_cast<const uint4*>(st + m * 1024 + 16 * ((8 * h + g) * 4 + t));
        const u32 sw = *reinterpret_cast<const u32*>(st + own_scale);
        const u16* const xr = xsm + sb * 128 + 8 * t;               // 32-block b at + 32 b
        const u16* const xb0 = (g < 4) ? xr : xz;                   // group 0's B column g
        const u16* const xb1 = (g < 4) ? xz : xr;                   // group 1's
        // full: all 4 blocks of the superblock hold data (every superblock but maybe the last): no bound check
        auto step = [&](auto exact, auto full) {
            constexpr bool EXACT = decltype(exact)::value;
            u32 sv[2][2];
            if (EXACT) {
#pragma unroll
                for (int m = 0; m < 2; ++m)
#pragma unroll
                    for (int h = 0; h < 2; ++h)
                        sv[m][h] = *reinterpret_cast<const u32*>(st + 2048 + 4 * (16 * m + 8 * h + g));
            }
#pragma unroll
            for (int b = 0; b < 4; ++b) {
                const int blk = sb * 4 + b;
                if (!decltype(full)::value && blk >= D.A.kblocks) break;
                uint4 xv[2] = {*reinterpret_cast<const uint4*>(xb0 + 32 * b),
                               *reinterpret_cast<const uint4*>(xb1 + 32 * b)};
                if (EXACT && !xbad) {
#pragma unroll
                    for (int m = 0; m < 2; ++m)
                        xv[m] = make_uint4(bf16x2_mul(xv[m].x, BF16X2_2PM112), bf16x2_mul(xv[m].y, BF16X2_2PM112),
                                           bf16x2_mul(xv[m].z, BF16X2_2PM112), bf16x2_mul(xv[m].w, BF16X2_2PM112));
                }
                float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};                // this 32-block's chain alone
#pragma unroll
                for (int m = 0; m < 2; ++m) {
                    u32 a0[4], a1[4];                               // rows g, g + 8 of group m
                    const u32 q0 = (b == 0) ? wv[m][0].x : (b == 1) ? wv[m][0].y : (b == 2) ? wv[m][0].z : wv[m][0].w;
                    const u32 q1 = (b == 0) ? wv[m][1].x : (b == 1) ? wv[m][1].y : (b == 2) ? wv[m][1].z : wv[m][1].w;
                    if (EXACT) {
                        dequant_blk<true>(q0, sv[m][0], b, a0);
                        dequant_blk<true>(q1, sv[m][1], b, a1);
                    } else {
#pragma unroll
                        for (int p = 0; p < 4; ++p) {
                            a0[p] = fp4pair(q0, p);
                            a1[p] = fp4pair(q1, p);
                        }
                    }
                    mma_bf16(c, a0[0], a1[0], a0[1], a1[1], xv[m].x, xv[m].y);
                    mma_bf16(c, a0[2], a1[2], a0[3], a1[3], xv[m].z, xv[m].w);
                }
                const float v = (t & 1) ? c[2] : c[0];
                acc = EXACT ? acc + v : fmaf(v, block_scale_f32(sw, b), acc);
            }
        };
        const bool exact = xbad || warp_needs_slow(big_scales(sw));   // the warp's 32 words cover all 32 rows
        if (sb * 4 + 4 <= D.A.kblocks) {
            if (exact) step(BoolC<true>(), BoolC<true>()); else step(BoolC<false>(), BoolC<true>());
        } else {
            if (exact) step(BoolC<true>(), BoolC<false>()); else step(BoolC<false>(), BoolC<false>());
        }
    }
    // Split-K: each warp leaves its 32 values (lane l: value l, above) behind the slots, one barrier, and
    // lane l of warp 0 adds value l of the KS warps in warp order and finishes it. (Before v17 every lane
    // stored and warp 0 summed all 8 accumulator values of each lane: 64 shared loads a lane and a second
    // barrier; H200, 1 token, same call: 120b ids path 26.2 -> 25.2 us, routed 29.0 -> 27.9; BENCHMARKS v17.)
    cp_async_wait<0>();
    red[32 * warp + lane] = acc;
    __syncthreads();
    if (warp == 0) {
        // gamma is rounded only here: rounded right after its load, it made warp 0 wait for that L2 round trip
        // before its first superblock, which in GEMM2 (whose weights have landed by then) delayed the block
        // (H200, same process: moe_forward at 1 token -0.2 to -0.3 us, 2 tokens equal; BENCHMARKS v22)
        gamma = bf16_to_f32(f32_to_bf16(gamma));
        float s = 0.0f;
#pragma unroll
        for (int k2 = 0; k2 < KS; ++k2) s += red[32 * k2 + lane];
        const int em = t >> 1, erow = row0 + 16 * em + g;
        s = (row0 + 16 * em < D.A.rows_real) ? s : 0.0f;   // a padding group: as if not computed
        if (GATED) {
            const float hi = __shfl_down_sync(0xffffffffu, s, 1);      // row g + 8: the odd lane's
            if ((t & 1) == 0)
                D.A.out[(long)slot * D.A.ldo + (row0 + 16 * em) / 2 + g] = gemm1_out(D.A, s + elo, hi + ehi, gamma);
        } else {
            const int r = erow + 8 * (t & 1);
            const float w = gemm2_scale(D.A, gamma);
            if (r < D.A.out_rows) D.A.out[(long)slot * D.A.ldo + r] = gemm2_out((t & 1) ? s + ehi : s + elo, w);
        }
        if (GATED && D.done) {                      // this block's intermediate rows are written: count it
            __syncwarp();                           // the warp's stores, then one release add (as a semaphore)
            if (lane == 0) asm volatile("red.release.gpu.global.add.s32 [%0], 1;" ::"l"(D.done + slot) : "memory");
        }
    }
}

#define DIRECT_PARAMS                                                                                   \
    const uint4* W, const u32* S, const float* bias, const u16* X, const int* ids, const int* expert_map, \
        const float* topk_w, int* local_ids, u16* out, int ldx, int ldo, int rows_p, int rows_real,        \
        int out_rows, int kp, int kblocks, int top_k, int act, int weight_on_input, int n_slots,           \
        int e_global, int e_local, int* done, int done_target
#define DIRECT_ARGS_INIT                                                                                \
    DirectArgs D{{W, S, bias, X, nullptr, nullptr, nullptr, topk_w, out, ldx, ldo, rows_p, rows_real,     \
                  out_rows, kp, kblocks, top_k, act, weight_on_input},                                   \
                 ids, expert_map, local_ids, n_slots, e_global, e_local, done, done_target};
// name, KS (warps splitting K), MAXSB (superblocks in flight per warp), MINB
#define DEFINE_GEMM_DIRECT(name, KS, MAXSB, MINB)                                                       \
    extern "C" __global__ void __launch_bounds__(32 * KS, MINB) moe_gemm1_##name(DIRECT_PARAMS) {       \
        MOE_GRID_ENTER DIRECT_ARGS_INIT                                                                 \
        moe_gemm_direct_body<KS, MAXSB, true>(D, [] {});                                                \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * KS, MINB) moe_gemm2_##name(DIRECT_PARAMS) {       \
        DIRECT_ARGS_INIT                                                                                \
        moe_gemm_direct_body<KS, MAXSB, false>(D, [&] { direct_wait_slot(D); });                        \
    }
// 32 rows per block, 8 warps x up to 3 superblocks in flight. direct: 3 blocks per SM (80 registers);
// direct4: 4 (64 registers, 32 warps per SM), only on request (config="direct4"). H200, 120b, ids path
// against direct: v16 T=2 42.7 -> 40.5 us, T=1 25.8 -> 29.6 us (GEMM1 alone gains 16.1 -> 15.6 us, the
// layer loses it back around GEMM2); since v17's epilogue it spills 24 bytes and T=2 is slower too
// (41.1-41.6 -> 41.7-42.0), so choose_config no longer picks it (BENCHMARKS v16, v17).
DEFINE_GEMM_DIRECT(direct, 8, 3, 3)
DEFINE_GEMM_DIRECT(direct4, 8, 3, 4)

// ------------------------------------------------------------------------------------------------
// Shared by the streaming kernels (stream*, stream16): a warp's 16 weight rows over the whole K, row0 + g
// and row0 + 8 + g of one 16-row group (word t of each 64-byte row piece), streamed superblock by
// superblock, in order, into a register ring: next() loads the next superblock and advances two pointers
// (no per-superblock address arithmetic). Rows past the real rows are never loaded, and nothing is
// loaded past K: the caller starts every ring slot at zero codes with scale bytes 127 (init), and a slot
// that next() does not load is not used again, or holds those zeros (past the real rows).
struct Rows16 {
    const uint4* w;          // row row0 + g, word t of the next superblock (row row0 + 8 + g: w + 32)
    const u32* s;            // scale word of row row0 + g, next superblock (row + 8: s + 8)
    long s_step;             // rows_p: scale words per superblock
    int left;                // superblocks still to load (0 when the rows are not real)
    __device__ __forceinline__ static void init(uint4 (&wr)[2], u32 (&sc)[2]) {
        wr[0] = wr[1] = make_uint4(0, 0, 0, 0);
        sc[0] = sc[1] = 0x7f7f7f7fu;
    }
    __device__ __forceinline__ void next(uint4 (&wr)[2], u32 (&sc)[2]) {
        if (left > 0) {
            wr[0] = __ldg(w);
            wr[1] = __ldg(w + 32);
            sc[0] = __ldg(s);
            sc[1] = __ldg(s + 8);
        }
        w += 64;
        s += s_step;
        --left;
    }
};

// One superblock (first 32-block blk0) of those rows times NT groups of 8 activation columns, B fragments
// at x + n * xn + 32 * b for block b: each block's weights are dequantized once and feed 2 * NT mma (k16
// steps 0 / 1 into acc / acc2, two dependency chains). FULL: all 4 blocks hold data (no bound check);
// SLOW: the two-multiply dequantization (warp_needs_slow).
template <bool SLOW, bool FULL, int NT>
__device__ __forceinline__ void rows16_superblock(const uint4& wa, const uint4& wb, u32 sa, u32 sc, int blk0,
                                                  int kblocks, const u16* x, int xn, float (&acc)[NT][4],
                                                  float (&acc2)[NT][4]) {
#pragma unroll
    for (int b = 0; b < 4; ++b) {
        if (!FULL && blk0 + b >= kblocks) break;
        u32 a0[4], a1[4];
        dequant_blk<SLOW>((b == 0) ? wa.x : (b == 1) ? wa.y : (b == 2) ? wa.z : wa.w, sa, b, a0);
        dequant_blk<SLOW>((b == 0) ? wb.x : (b == 1) ? wb.y : (b == 2) ? wb.z : wb.w, sc, b, a1);
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            const uint4 xv = *reinterpret_cast<const uint4*>(x + n * xn + b * 32);
            mma_bf16(acc[n], a0[0], a1[0], a0[1], a1[1], xv.x, xv.y);
            mma_bf16(acc2[n], a0[2], a1[2], a0[3], a1[3], xv.z, xv.w);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Streaming variant for few tokens per expert (decode): each warp owns 16 weight rows over the whole K
// and keeps D superblocks of weight loads in flight in a register ring; the tile's <= 8 activation rows
// are staged once into shared memory (cp.async, zero-filled), row stride Kp + 32 elements (64 mod 128
// bytes: conflict-free 16-byte B-fragment loads). No split-K, no reduction: one wave at 1 token.
template <int D, int NWARP, bool GATED>
__device__ __forceinline__ void moe_gemm_stream_body(const GemmArgs& A) {
    extern __shared__ __align__(16) unsigned char smem[];         // [8][kp + 32] bf16
    u16* xsm = reinterpret_cast<u16*>(smem);
    const int xrow_len = A.kp + 32;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int tile = blockIdx.y;
    if (tile >= A.meta[0]) return;
    const int4 tl = A.tiles[tile];
    const int expert = tl.x, start = tl.y, count = tl.z;
    const int row0 = (blockIdx.x * NWARP + warp) * 16;
    const int kw = A.kp >> 5, nsb_all = A.kp >> 7;
    const int nsb = (A.kblocks + 3) >> 2;
    Rows16 rows{A.W + ((long)expert * A.rows_p + row0) * kw + g * 4 + t,           // row row0 + g
                A.S + (long)expert * nsb_all * A.rows_p + row0 + g, A.rows_p, row0 < A.rows_real ? nsb : 0};
    uint4 wr[D][2];
    u32 sr[D][2];
#pragma unroll
    for (int i = 0; i < D; ++i) {                                 // weights first: they need only the expert
        Rows16::init(wr[i], sr[i]);
        rows.next(wr[i], sr[i]);
    }
    // stage the tile's activation rows (8 rows; missing rows and blocks past K are zero-filled)
    const int chunks = A.kp >> 3;                                 // 16-byte chunks per row
    for (int i = tid; i < 8 * chunks; i += 32 * NWARP) {
        const int c = i / chunks, ch = i - c * chunks;
        bool ok = c < count && (ch >> 2) < A.kblocks;
        const u16* src = A.X;
        if (ok) {
            const int pos = start + c;
            const long r = GATED ? (long)(A.sorted_slot[pos] / A.top_k) : (long)pos;
            src = A.X + r * A.ldx + ch * 8;
        }
        cp_async16(xsm + c * xrow_len + ch * 8, src, ok ? 16 : 0);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    float acc[1][1][4] = {{{0.0f, 0.0f, 0.0f, 0.0f}}};
    float acc2[1][4] = {{0.0f, 0.0f, 0.0f, 0.0f}};               // mma step 1: a second dependency chain
    const u16* xb = xsm + g * xrow_len + 8 * t;
    for (int sb0 = 0; sb0 < nsb; sb0 += D) {
#pragma unroll
        for (int i = 0; i < D; ++i) {
            const int sb = sb0 + i;
            if (sb < nsb) {
                const uint4 wa = wr[i][0], wb = wr[i][1];
                const u32 sa = sr[i][0], sc = sr[i][1];
                if (warp_needs_slow(big_scales(sa) | big_scales(sc)))
                    rows16_superblock<true, false, 1>(wa, wb, sa, sc, sb * 4, A.kblocks, xb + sb * 128, 0, acc[0], acc2);
                else
                    rows16_superblock<false, false, 1>(wa, wb, sa, sc, sb * 4, A.kblocks, xb + sb * 128, 0, acc[0], acc2);
                rows.next(wr[i], sr[i]);                          // superblock sb + D
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[0][0][i] += acc2[0][i];
    moe_epilogue<1, 1, GATED>(A, acc, expert, start, count, row0, 0, g, t);
}

// name, D, NWARP, MINB (block rows = 16*NWARP, 8 tokens; dynamic smem = 8 * (Kp + 32) * 2 bytes; at least
// MINB blocks resident per SM)
#define DEFINE_GEMM_STREAM(name, D, NWARP, MINB)                                                        \
    extern "C" __global__ void __launch_bounds__(32 * NWARP, MINB) moe_gemm1_##name(GEMM_PARAMS) {      \
        MOE_GRID_ENTER GEMM_ARGS_INIT moe_gemm_stream_body<D, NWARP, true>(A);                          \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * NWARP, MINB) moe_gemm2_##name(GEMM_PARAMS) {      \
        MOE_GRID_ENTER GEMM_ARGS_INIT moe_gemm_stream_body<D, NWARP, false>(A);                         \
    }

// ------------------------------------------------------------------------------------------------
// Streaming variant with 16-token tiles (few tokens per expert, up to 16): each warp owns 16 weight rows
// over the whole K with D superblocks of weight loads in flight in a register ring (as above), and each
// dequantized A fragment feeds one mma per 8 tokens of the tile (NT = 1 when the tile has <= 8 tokens,
// else 2), so an expert with up to 16 tokens has its weights read and dequantized once. The tile's
// activations flow through a ring of ST shared-memory stages, one superblock (128 k) each, filled by
// cp.async ST-1 superblocks ahead (one 16-byte copy per thread per stage at 256 threads); only the tile's
// `count` rows and the K blocks holding data are copied: mma column n reads only activation row n, so the
// other rows are never used (their columns are not written) and blocks past K are skipped.
// Stage layout: 16 rows x XS16 bf16 (320 bytes = 64 mod 128: a quarter warp's 16-byte B-fragment loads
// of rows g and g+1 fall in distinct banks).
#define XS16 160

template <int NT, int D, int NWARP, int ST, bool GATED>
__device__ __forceinline__ void moe_gemm_stream16_loop(const GemmArgs& A, int expert, int start, int count,
                                                       int row0, const uint4* w0, const u32* s0, u16* xsm) {
    const int tid = threadIdx.x, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int nsb = (A.kblocks + 3) >> 2;
    Rows16 rows{w0, s0, A.rows_p, row0 < A.rows_real ? nsb : 0};
    uint4 wr[D][2];
    u32 sr[D][2];
#pragma unroll
    for (int i = 0; i < D; ++i) {                                 // weights first: they need only the expert
        Rows16::init(wr[i], sr[i]);
        rows.next(wr[i], sr[i]);
    }
    // this thread's activation copies: chunk ch = i % 16 (8 k) of tile row c = i / 16, for every stage;
    // the chunk lies in K block sb * 4 + ch / 4, so it holds data for superblocks sb < sb_end (0 for rows
    // past the tile's count: never copied, their columns are not written)
    constexpr int NCOPY = (16 * 16) / (32 * NWARP);               // copies per thread per stage
    constexpr u32 STAGE = 2 * 16 * XS16;                          // bytes per stage
    const u16* src[NCOPY];
    u32 dst[NCOPY];                                               // shared address in stage 0
    int sb_end[NCOPY];
    const u32 xsm_s = (u32)__cvta_generic_to_shared(xsm);
#pragma unroll
    for (int j = 0; j < NCOPY; ++j) {
        const int i = tid + j * 32 * NWARP, c = i >> 4;
        src[j] = A.X;
        dst[j] = xsm_s + 2 * (c * XS16 + (i & 15) * 8);
        sb_end[j] = 0;
        if (c < count) {
            const long r = GATED ? (long)(A.sorted_slot[start + c] / A.top_k) : (long)(start + c);
            src[j] = A.X + r * A.ldx + (i & 15) * 8;
            sb_end[j] = (A.kblocks - ((i & 15) >> 2) + 3) >> 2;
        }
    }
    auto copy_stage = [&](int sb, u32 off) {                      // superblock sb into the stage at byte off
#pragma unroll
        for (int j = 0; j < NCOPY; ++j)
            if (sb < sb_end[j]) cp_async16s(dst[j] + off, src[j] + sb * 128, 16);
        cp_async_commit();                                        // always: uniform group counting
    };
#pragma unroll
    for (int s = 0; s < ST - 1; ++s) copy_stage(s, s * STAGE);
    float acc[NT][4], acc2[NT][4];                                // mma steps 0 / 1: two dependency chains
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[n][i] = acc2[n][i] = 0.0f;
    const u16* xb = xsm + g * XS16 + 8 * t;
    u32 xoff = 0;                                                 // byte offset of stage sb % ST
    for (int sb0 = 0; sb0 < nsb; sb0 += D) {
#pragma unroll
        for (int i = 0; i < D; ++i) {
            const int sb = sb0 + i;
            if (sb < nsb) {
                cp_async_wait<ST - 2>();                          // stage sb has landed (this thread's copies)
                __syncthreads();                                  // ... everyone's; stage sb-1 is free again
                copy_stage(sb + ST - 1, xoff == 0 ? (ST - 1) * STAGE : xoff - STAGE);
                const u16* xs = xb + xoff / 2;
                xoff = xoff == (ST - 1) * STAGE ? 0 : xoff + STAGE;
                const uint4 wa = wr[i][0], wb = wr[i][1];
                const u32 sa = sr[i][0], sc = sr[i][1];
                // full: all 4 blocks of the superblock hold data (every superblock but maybe the last), so
                // the per-block bound check (integer-pipe work in the hot loop) is compiled out
                const bool slow = warp_needs_slow(big_scales(sa) | big_scales(sc));
                const int blk0 = sb * 4, kb = A.kblocks, xn = 8 * XS16;
                if (blk0 + 4 <= kb) {
                    if (slow) rows16_superblock<true, true, NT>(wa, wb, sa, sc, blk0, kb, xs, xn, acc, acc2);
                    else rows16_superblock<false, true, NT>(wa, wb, sa, sc, blk0, kb, xs, xn, acc, acc2);
                } else {
                    if (slow) rows16_superblock<true, false, NT>(wa, wb, sa, sc, blk0, kb, xs, xn, acc, acc2);
                    else rows16_superblock<false, false, NT>(wa, wb, sa, sc, blk0, kb, xs, xn, acc, acc2);
                }
                rows.next(wr[i], sr[i]);                          // superblock sb + D
            }
        }
    }
    cp_async_wait<0>();                                           // no copy outlives the block
    float out[1][NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) out[0][n][i] = acc[n][i] + acc2[n][i];
    moe_epilogue<1, NT, GATED>(A, out, expert, start, count, row0, 0, g, t);
}

template <int D, int NWARP, int ST, bool GATED>
__device__ __forceinline__ void moe_gemm_stream16_body(const GemmArgs& A) {
    extern __shared__ __align__(16) unsigned char smem[];         // [ST][16][XS16] bf16
    u16* xsm = reinterpret_cast<u16*>(smem);
    const int tile = blockIdx.y;
    if (tile >= A.meta[0]) return;
    const int4 tl = A.tiles[tile];
    const int expert = tl.x, start = tl.y, count = tl.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = (blockIdx.x * NWARP + warp) * 16;
    const int kw = A.kp >> 5, nsb_all = A.kp >> 7;
    const uint4* w0 = A.W + ((long)expert * A.rows_p + row0) * kw + lane;   // row row0 + lane/4, word lane%4
    const u32* s0 = A.S + (long)expert * nsb_all * A.rows_p + row0 + (lane >> 2);
    if (count <= 8) moe_gemm_stream16_loop<1, D, NWARP, ST, GATED>(A, expert, start, count, row0, w0, s0, xsm);
    else moe_gemm_stream16_loop<2, D, NWARP, ST, GATED>(A, expert, start, count, row0, w0, s0, xsm);
}

// name, D, NWARP, ST, MINB (block rows = 16*NWARP, 16 tokens; dynamic smem = ST * 16 * XS16 * 2 bytes)
#define DEFINE_GEMM_STREAM16(name, D, NWARP, ST, MINB)                                                  \
    extern "C" __global__ void __launch_bounds__(32 * NWARP, MINB) moe_gemm1_##name(GEMM_PARAMS) {      \
        MOE_GRID_ENTER GEMM_ARGS_INIT moe_gemm_stream16_body<D, NWARP, ST, true>(A);                    \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * NWARP, MINB) moe_gemm2_##name(GEMM_PARAMS) {      \
        MOE_GRID_ENTER GEMM_ARGS_INIT moe_gemm_stream16_body<D, NWARP, ST, false>(A);                   \
    }

// ------------------------------------------------------------------------------------------------
// Tiled variant for many tokens per expert: the tile's activation rows are gathered into shared memory
// (and the block's weight rows and scales) by cp.async (ST superblocks of 128 k in flight, zero-filled past the tile / past K), weights
// still stream from global memory straight into registers (16-byte loads, one superblock prefetched).
// Row stride 320 B (= 64 mod 128): a quarter warp's 16-byte B-fragment loads hit 8 distinct bank groups.
#define XS_ROW 160

template <int MT, int NT, int RS, int CS, int ST, bool GATED>
__device__ __forceinline__ void moe_gemm_tiled_body(const GemmArgs& A) {
    constexpr int NTHR = 32 * RS * CS, BT = 8 * NT * CS, BR = 16 * MT * RS;
    constexpr int XS_BYTES = BT * XS_ROW * 2, WS_BYTES = BR * 64, STAGE = XS_BYTES + WS_BYTES + BR * 4;
    extern __shared__ __align__(16) unsigned char smem[];         // ST stages x {x tile, w tile, scales}
    __shared__ long s_row[BT];                                    // element offset of each row in X, -1
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int rs = warp % RS, cs = warp / RS;
    const int tile = blockIdx.y;
    if (tile >= A.meta[0]) return;
    const int4 tl = A.tiles[tile];
    const int expert = tl.x, start = tl.y, count = tl.z;
    for (int c = tid; c < BT; c += NTHR) {
        long r = -1;
        if (c < count) {
            const int pos = start + c;
            r = (GATED ? (long)(A.sorted_slot[pos] / A.top_k) : (long)pos) * A.ldx;
        }
        s_row[c] = r;
    }
    __syncthreads();
    const int rowblk = blockIdx.x * BR;
    const int wr0 = rs * 16 * MT;                                  // this warp's first row in the tile
    const int col0 = cs * 8 * NT;
    const int kw = A.kp >> 5, nsb_all = A.kp >> 7;
    const uint4* Wb = A.W + ((long)expert * A.rows_p + rowblk) * kw;
    const u32* Sb = A.S + (long)expert * nsb_all * A.rows_p + rowblk;
    float acc[MT][NT][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[m][n][i] = 0.0f;
    const int nsb = (A.kblocks + 3) >> 2;
    auto issue = [&](int sb) {
        if (sb < nsb) {
            unsigned char* st = smem + (sb % ST) * STAGE;
            u16* xd = reinterpret_cast<u16*>(st);
            for (int i = tid; i < BT * 16; i += NTHR) {
                const int c = i >> 4, ch = i & 15;                   // row, 16-byte chunk of the superblock
                const long r = s_row[c];
                const bool ok = r >= 0 && (sb * 4 + (ch >> 2)) < A.kblocks;
                cp_async16(xd + c * XS_ROW + ch * 8, ok ? A.X + r + sb * 128 + ch * 8 : A.X, ok ? 16 : 0);
            }
            uint4* wd = reinterpret_cast<uint4*>(st + XS_BYTES);
            for (int i = tid; i < BR * 4; i += NTHR) {
                const bool ok = rowblk + (i >> 2) < A.rows_real;
                cp_async16(wd + i, ok ? Wb + (long)(i >> 6) * 16 * kw + sb * 64 + (i & 63) : A.W, ok ? 16 : 0);
            }
            u32* sd = reinterpret_cast<u32*>(st + XS_BYTES + WS_BYTES);
            for (int i = tid; i < BR / 4; i += NTHR)
                cp_async16(sd + 4 * i, Sb + (long)sb * A.rows_p + 4 * i, 16);
        }
        cp_async_commit();                                        // empty groups keep the count uniform
    };
#pragma unroll
    for (int s = 0; s < ST - 1; ++s) issue(s);
    for (int sb = 0; sb < nsb; ++sb) {
        cp_async_wait<ST - 2>();
        __syncthreads();                                          // stage sb landed; stage sb-1 is free
        issue(sb + ST - 1);
        const unsigned char* st = smem + (sb % ST) * STAGE;
        const u16* xst = reinterpret_cast<const u16*>(st) + (col0 + g) * XS_ROW + 8 * t;
        const uint4* wst = reinterpret_cast<const uint4*>(st + XS_BYTES);
        const u32* sst = reinterpret_cast<const u32*>(st + XS_BYTES + WS_BYTES);
        uint4 wv[MT][2];
        u32 sv[MT][2];
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = wr0 + 16 * m + 8 * h + g;
                wv[m][h] = wst[r * 4 + t];
                sv[m][h] = sst[r];
            }
        u32 big = 0;
#pragma unroll
        for (int m = 0; m < MT; ++m) big |= big_scales(sv[m][0]) | big_scales(sv[m][1]);
        auto step = [&](auto slow) {
    #pragma unroll
            for (int b = 0; b < 4; ++b) {
                if (sb * 4 + b >= A.kblocks) break;
                u32 a[MT][2][4];
    #pragma unroll
                for (int m = 0; m < MT; ++m)
    #pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        u32 q = (b == 0) ? wv[m][h].x : (b == 1) ? wv[m][h].y : (b == 2) ? wv[m][h].z : wv[m][h].w;
                        dequant_blk<decltype(slow)::value>(q, sv[m][h], b, a[m][h]);
                    }
                uint4 xv[NT];
    #pragma unroll
                for (int n = 0; n < NT; ++n) xv[n] = *reinterpret_cast<const uint4*>(xst + n * 8 * XS_ROW + 32 * b);
    #pragma unroll
                for (int n = 0; n < NT; ++n)                          // step 0 for every tile, then step 1
    #pragma unroll
                    for (int m = 0; m < MT; ++m)
                        mma_bf16(acc[m][n], a[m][0][0], a[m][1][0], a[m][0][1], a[m][1][1], xv[n].x, xv[n].y);
    #pragma unroll
                for (int n = 0; n < NT; ++n)
    #pragma unroll
                    for (int m = 0; m < MT; ++m)
                        mma_bf16(acc[m][n], a[m][0][2], a[m][1][2], a[m][0][3], a[m][1][3], xv[n].z, xv[n].w);
            }
        };
        if (warp_needs_slow(big)) step(BoolC<true>()); else step(BoolC<false>());
    }
    cp_async_wait<0>();
    moe_epilogue<MT, NT, GATED>(A, acc, expert, start, count, rowblk + wr0, col0, g, t);
}

// name, MT, NT, RS, CS, ST (block rows BR = 16*MT*RS, tokens BT = 8*NT*CS, threads 32*RS*CS, ST stages;
// dynamic smem = ST * (BT * 320 + BR * 68) bytes)
#define DEFINE_GEMM_TILED(name, MT, NT, RS, CS, ST)                                                     \
    extern "C" __global__ void __launch_bounds__(32 * RS * CS, 1) moe_gemm1_##name(GEMM_PARAMS) {       \
        MOE_GRID_ENTER GEMM_ARGS_INIT moe_gemm_tiled_body<MT, NT, RS, CS, ST, true>(A);                 \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * RS * CS, 1) moe_gemm2_##name(GEMM_PARAMS) {       \
        MOE_GRID_ENTER GEMM_ARGS_INIT moe_gemm_tiled_body<MT, NT, RS, CS, ST, false>(A);                \
    }

DEFINE_GEMM_STREAM(stream, 4, 4, 1)      // 64 rows x 8 tokens, 4 warps, 4 superblocks in flight
DEFINE_GEMM_STREAM(streamw, 4, 8, 3)     // 128 rows x 8 tokens, 8 warps, 4 superblocks in flight, 3 blocks per SM
// 128 rows x 16 tokens, 8 warps, 2 superblocks of weights in flight, 3 x-stages, 3 blocks per SM. (D = 3
// spilled 8 bytes at the 85-register bound and was 1-5% slower; D = 4 or 2 blocks per SM: 10-20% slower;
// 2, 4 or 6 x-stages: 0-5% slower; 4 warps, 6 blocks per SM: 0-4% slower. BENCHMARKS.md v10.)
DEFINE_GEMM_STREAM16(stream16, 2, 8, 3, 3)
DEFINE_GEMM_TILED(tiled, 2, 8, 4, 2, 4)      // 128 rows x 128 tokens, 8 warps: 194 KB smem
DEFINE_GEMM_TILED(tiled256, 4, 8, 4, 2, 3)   // 256 rows x 128 tokens, 8 warps: 171 KB smem
DEFINE_GEMM_TILED(tiled64, 2, 4, 4, 2, 4)    // 128 rows x 64 tokens, 8 warps: 114 KB smem
DEFINE_GEMM_TILED(tiled32, 2, 2, 4, 2, 4)    // 128 rows x 32 tokens, 8 warps: 74 KB smem

// ------------------------------------------------------------------------------------------------
// Hopper path (sm_90a: wgmma): many tokens per expert. Built only when NVRTC targets sm_90a (the loader
// adds -arch=sm_90a on compute capability 9.0); elsewhere the kernels below are empty and
// moe_hopper_built reports 0, so fused_moe never picks them.
//
// Operands: A = the block's weight rows, dequantized in registers to bf16 exactly as above (each warp of
// a warpgroup owns 16 rows; the register fragment of wgmma's A is mma.sync's m16n8k16 A fragment), B =
// the tile's BN activation rows in shared memory, read by wgmma through a descriptor, C = out^T in
// registers (64 rows x BN tokens per warpgroup, fp32). NWG warpgroups split the block's 64*NWG rows.
// hopper192: 3 warpgroups x m64n192 (168 registers a thread), so each dequantized weight feeds 192 tokens
// instead of 128 (a third less dequantization per flop); 192 rows also divide 2880 and 5760 exactly. Its
// 3 stages (61 KB each) leave one superblock of lead.
//
// Activation layout: wgmma reads B's k in natural order, but a thread's A registers hold the weight codes
// in the order of the kernel weight words (8 consecutive k per word). So the activations are stored with
// the k of each 32-block permuted to match (moe_permute_x for x, GEMM1's epilogue for the intermediate):
// logical k = 8t + 4s + 2h + e (t = 0..3 word/lane, s = mma step, h = register half, e = element) sits
// at column 16s + 2t + 8h + e. Zero padding to Kp is kept.
//
// Shared memory per stage (ST stages, cp.async; x rows past the tile are not copied, weight rows past the
// real rows are zero-filled):
//   x: two slabs (k 0..63, 64..127 of the superblock) of BN rows x 128 bytes, 128-byte swizzle (16-byte
//      chunk c of row r at chunk c ^ (r % 8)), the layout a K-major wgmma descriptor with SBO 1024 reads;
//   w: BR rows x 64 bytes (the row's 4 uint4 = 16 words of the superblock); s: BR scale words.
// Pipeline: stage sb+ST-2 is loaded while sb is computed; per 32-block one commit group of two wgmma
// (k16 steps 0, 1); wait_group 1 before each dequant keeps one group in flight, and guarantees that
// stage sb-2 is no longer read when the block barrier of iteration sb lets it be overwritten.

__device__ __forceinline__ int kperm(int k) {
    const int j = k & 31;
    return (k & ~31) | (((j >> 2) & 1) << 4) | ((j >> 3) << 1) | (((j >> 1) & 1) << 3) | (j & 1);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MOE_HOPPER 1
#else
#define MOE_HOPPER 0
#endif

extern "C" __global__ void moe_hopper_built(int* flag) { *flag = MOE_HOPPER; }

// x [T, H] bf16 -> xp [T, Hp] bf16, columns permuted per 32-block as above, zeros past H (H % 32 == 0).
// One thread per 16-byte chunk, so a warp loads and stores 512 contiguous bytes. In element pairs the
// permutation of a 32-block is a 4 x 4 transpose of its chunks (pair j of chunk q goes to pair q of chunk
// j), so the four lanes of a block exchange their words with four shuffles.
__device__ __forceinline__ u32 pick4(u32 a, u32 b, u32 c, u32 d, int i) {
    return i == 0 ? a : i == 1 ? b : i == 2 ? c : d;
}
extern "C" __global__ void moe_permute_x(const u16* __restrict__ x, int n_rows, int h, int hp, u16* __restrict__ xp) {
    MOE_GRID_ENTER
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    const int nc = hp >> 3;                                       // chunks per row, a multiple of 4
    const long r = i / nc;
    const int c = (int)(i - r * nc), q = c & 3, lane = threadIdx.x & 31;
    const bool live = r < n_rows;                                 // the same for the 4 lanes of a block
    uint4 v = make_uint4(0, 0, 0, 0);
    if (live && c * 8 < h) v = *reinterpret_cast<const uint4*>(x + r * h + c * 8);
    u32 o0 = 0, o1 = 0, o2 = 0, o3 = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {                                 // lane q gets pair q of chunk (q + k) % 4
        const int j = (q + k) & 3;
        const u32 got = __shfl_sync(0xffffffffu, pick4(v.x, v.y, v.z, v.w, (q - k) & 3), (lane & ~3) | j);
        o0 = j == 0 ? got : o0;
        o1 = j == 1 ? got : o1;
        o2 = j == 2 ? got : o2;
        o3 = j == 3 ? got : o3;
    }
    if (live) *reinterpret_cast<uint4*>(xp + r * hp + c * 8) = make_uint4(o0, o1, o2, o3);
}

#if MOE_HOPPER
// The accumulator operands of the wgmma wrappers below, 16 at a time: "+f"(d[i .. i+15]) and their names.
#define WG_F4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define WG_F16(i) WG_F4(i), WG_F4(i + 4), WG_F4(i + 8), WG_F4(i + 12)
#define WG_R0_15 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define WG_R16_31 ", %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define WG_R32_47 ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
#define WG_R48_63 ", %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define WG_R64_79 ", %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79"
#define WG_R80_95 ", %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"

// D[64 x N] += A[64 x 16] (registers, bf16) * B[16 x N] (shared memory, bf16, K-major descriptor); d = the
// thread's N/2 fp32 accumulators (constant indices only, so they stay in registers). Operands: the N/2
// accumulators, then a0..a3, the descriptor and the scale-d predicate (1: accumulate).
__device__ __forceinline__ void wgmma_n32(float* d, u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {" WG_R0_15 "}, "
        "{%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}"
        : WG_F16(0)
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "r"(1));
}

__device__ __forceinline__ void wgmma_n64(float* d, u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {" WG_R0_15 WG_R16_31 "}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}"
        : WG_F16(0), WG_F16(16)
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "r"(1));
}

__device__ __forceinline__ void wgmma_n96(float* d, u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %53, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 {" WG_R0_15 WG_R16_31 WG_R32_47 "}, "
        "{%48, %49, %50, %51}, %52, p, 1, 1, 0;\n}"
        : WG_F16(0), WG_F16(16), WG_F16(32)
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "r"(1));
}

__device__ __forceinline__ void wgmma_n128(float* d, u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" WG_R0_15 WG_R16_31 WG_R32_47 WG_R48_63 "}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}"
        : WG_F16(0), WG_F16(16), WG_F16(32), WG_F16(48)
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "r"(1));
}

__device__ __forceinline__ void wgmma_n160(float* d, u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %85, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n160k16.f32.bf16.bf16 {" WG_R0_15 WG_R16_31 WG_R32_47 WG_R48_63 WG_R64_79 "}, "
        "{%80, %81, %82, %83}, %84, p, 1, 1, 0;\n}"
        : WG_F16(0), WG_F16(16), WG_F16(32), WG_F16(48), WG_F16(64)
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "r"(1));
}

__device__ __forceinline__ void wgmma_n192(float* d, u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long desc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %101, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 {" WG_R0_15 WG_R16_31 WG_R32_47 WG_R48_63 WG_R64_79 WG_R80_95 "}, "
        "{%96, %97, %98, %99}, %100, p, 1, 1, 0;\n}"
        : WG_F16(0), WG_F16(16), WG_F16(32), WG_F16(48), WG_F16(64), WG_F16(80)
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "r"(1));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// K-major operand, 128-byte swizzle: rows of 128 bytes, 8-row atoms 1024 bytes apart (SBO); the leading
// offset is unused for this mode (encoded 1).
__device__ __forceinline__ unsigned long long wgmma_desc(u32 saddr) {
    return (unsigned long long)((saddr & 0x3FFFFu) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) |
           (1ull << 62);
}

// N = the instruction's token count (BN). (Issuing the n64 form for tiles of <= 64 tokens in the 128-token
// configs made ptxas serialize every wgmma for lack of registers: measured 5% slower at 16384 tokens.)
template <int N>
__device__ __forceinline__ void wgmma_n(float* d, u32 a0, u32 a1, u32 a2, u32 a3, unsigned long long desc) {
    static_assert(N % 32 == 0 && N >= 32 && N <= 192, "wgmma N");
    if constexpr (N == 192) wgmma_n192(d, a0, a1, a2, a3, desc);
    else if constexpr (N == 160) wgmma_n160(d, a0, a1, a2, a3, desc);
    else if constexpr (N == 128) wgmma_n128(d, a0, a1, a2, a3, desc);
    else if constexpr (N == 96) wgmma_n96(d, a0, a1, a2, a3, desc);
    else if constexpr (N == 64) wgmma_n64(d, a0, a1, a2, a3, desc);
    else wgmma_n32(d, a0, a1, a2, a3, desc);
}
#endif

template <int NWG, int BN, int ST>
struct HopperShape {
    static constexpr int BR = 64 * NWG, NTHR = 128 * NWG;
    static constexpr int XS = BN * 256, WS = BR * 64, SS = BR * 4;
    static constexpr int STAGE = (XS + WS + SS + 1023) / 1024 * 1024;
    // rows per copy round, x copies per thread: whole rounds, an even number (the last rounds may be
    // partial or empty: 128 or 64 tokens over 3 warpgroups)
    static constexpr int XROWS = NTHR / 16, XJ = ((BN + XROWS - 1) / XROWS + 1) / 2 * 2;
    static constexpr int SMEM = ST * STAGE + XJ * XROWS * 4 + BN * 8 + 1024;   // + row offsets, slots, gammas + slack
};

// One tile (expert, start, count <= BN) of the block's 64*NWG rows (blockIdx.x).
template <int NWG, int BN, int ST, bool GATED>
__device__ __forceinline__ void moe_gemm_hopper_tile(const GemmArgs& A, const int expert, const int start,
                                                     const int count) {
#if MOE_HOPPER
    using S = HopperShape<NWG, BN, ST>;
    constexpr int BR = S::BR, NTHR = S::NTHR, XS = S::XS, WS = S::WS, STAGE = S::STAGE, NT = BN / 8;
    constexpr int XJ = S::XJ, XROWS = S::XROWS;                   // x copies per thread, rows per copy round
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char* smem = smem_raw + ((1024 - ((u32)__cvta_generic_to_shared(smem_raw) & 1023)) & 1023);
    // byte offset in X of each tile row (elements < 2**31: checked by the launcher), 0 past the tile
    // (not copied); stored so that the XJ rows one thread copies are adjacent (see issue)
    u32* s_row = reinterpret_cast<u32*>(smem + ST * STAGE);
    int* s_slot = reinterpret_cast<int*>(s_row + XJ * XROWS);     // slot of each tile column
    float* s_gamma = reinterpret_cast<float*>(s_slot + BN);         // its bf16-rounded router weight
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3, wg = warp >> 2, wq = warp & 3;
    for (int c = tid; c < XJ * XROWS; c += NTHR) {                // rows past BN (a partial last round): 0
        u32 r = 0;
        if (c < count) {
            const int pos = start + c;
            const int slot = A.sorted_slot[pos];
            r = 2u * (u32)((GATED ? slot / A.top_k : pos) * A.ldx);
            s_slot[c] = slot;
            s_gamma[c] = bf16_to_f32(f32_to_bf16(A.topk_w[slot]));
        }
        s_row[(c % XROWS) * XJ + c / XROWS] = r;                  // row c = c % XROWS + XROWS * j
    }
    __syncthreads();
    const int rowblk = blockIdx.x * BR;
    const bool wg_valid = rowblk + 64 * wg < A.rows_real;         // warpgroup-uniform
    const int kw = A.kp >> 5, nsb_all = A.kp >> 7;
    const uint4* Wb = A.W + ((long)expert * A.rows_p + rowblk) * kw;
    const u32* Sb = A.S + (long)expert * nsb_all * A.rows_p + rowblk;
    const int nsb = (A.kblocks + 3) >> 2;
    const u32 smem_base = (u32)__cvta_generic_to_shared(smem);
    // A thread's copies are the same every superblock: x chunk ch = tid % 16 of rows tid/16 + j*NTHR/16
    // (NTHR/16 is a multiple of 8, so the swizzle term is the same for every j; the XJ row offsets are
    // one vector load from s_row), weight chunk tid % 4 of rows tid/4 + j*NTHR/4 (offsets computed once
    // here). The x chunks of the tile's rows (j < x_rows) are copied whole, also past K (the padding of
    // X's rows, kp >= 128 * nsb elements): blocks past K are never multiplied. Rows past the tile are not
    // copied: their stage rows hold stale data, which only reaches their own columns (wgmma's columns
    // are independent), and those are not written.
    constexpr int WJ = BR * 4 / NTHR;
    static_assert(BR * 4 % NTHR == 0 && XROWS % 8 == 0 && XJ % 2 == 0, "copy split");
    const int xch = tid & 15;
    const u32 xdst = (xch >> 3) * (BN * 128) + (tid >> 4) * 128 + (((xch & 7) ^ ((tid >> 4) & 7)) << 4);
    const u32* my_rows = s_row + (tid >> 4) * XJ;
    // rows j < x_rows of this thread are tile rows (XJ: all, in a full tile whose rows fill whole rounds)
    const int x_rows = count >= XJ * XROWS ? XJ
                     : count > (tid >> 4) ? (count - (tid >> 4) + XROWS - 1) / XROWS : 0;
    int wsrc[WJ];                             // uint4 offset from Wb, -1 past the real rows
#pragma unroll
    for (int j = 0; j < WJ; ++j) {
        const int r = (tid >> 2) + j * (NTHR / 4);
        wsrc[j] = rowblk + r < A.rows_real ? (r >> 4) * 16 * kw + (r & 15) * 4 + (tid & 3) : -1;
    }
    auto issue = [&](int sb, int stg) {                           // superblock sb into stage stg
        if (sb < nsb) {
            const u32 st = smem_base + stg * STAGE;
            // chunk xch of superblock sb of X's row 0; + the row's offset
            const unsigned char* xb = reinterpret_cast<const unsigned char*>(A.X) + sb * 256 + xch * 16;
            u32 off[XJ];
            if constexpr (XJ % 4 != 0) {
#pragma unroll
                for (int j = 0; j < XJ; j += 2) {
                    const uint2 v = *reinterpret_cast<const uint2*>(my_rows + j);
                    off[j] = v.x;
                    off[j + 1] = v.y;
                }
            } else {
#pragma unroll
                for (int j = 0; j < XJ; j += 4) {
                    const uint4 v = *reinterpret_cast<const uint4*>(my_rows + j);
                    off[j] = v.x;
                    off[j + 1] = v.y;
                    off[j + 2] = v.z;
                    off[j + 3] = v.w;
                }
            }
            if (x_rows == XJ) {                                   // every row of a full tile: no predicates
#pragma unroll
                for (int j = 0; j < XJ; ++j) cp_async16s(st + xdst + j * XROWS * 128, xb + off[j], 16);
            } else {
#pragma unroll
                for (int j = 0; j < XJ; ++j)
                    if (j < x_rows) cp_async16s(st + xdst + j * XROWS * 128, xb + off[j], 16);
            }
#pragma unroll
            for (int j = 0; j < WJ; ++j)
                cp_async16s(st + XS + 16 * (tid + j * NTHR), wsrc[j] >= 0 ? Wb + wsrc[j] + sb * 64 : A.W,
                            wsrc[j] >= 0 ? 16 : 0);
            if (tid < BR / 4) cp_async16s(st + XS + WS + 16 * tid, Sb + (long)sb * A.rows_p + 4 * tid, 16);
        }
        cp_async_commit();                                        // empty groups keep the count uniform
    };
    // LEAD = ST - 2 superblocks are loaded ahead: the load of sb + LEAD is issued at the top of iteration
    // sb, into the stage last read by superblock sb - 2, which every warpgroup has finished (see the
    // wait_group note above). (Two blocks per SM with two stages and the load issued mid-iteration, and
    // 256-token tiles with two warpgroups, were measured slower: BENCHMARKS.md.)
    constexpr int LEAD = ST - 2;
    static_assert(ST >= 3, "stages");
    float d[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) d[i] = 0.0f;
#pragma unroll
    for (int s = 0; s < LEAD; ++s) issue(s, s);
    const int r0 = 64 * wg + 16 * wq + g;                         // this thread's rows r0, r0 + 8 in the block
    int stage = 0;                                                // sb % ST
    for (int sb = 0; sb < nsb; ++sb) {
        cp_async_wait<LEAD - 1>();
        fence_proxy_async();                                      // cp.async writes -> wgmma's async proxy
        __syncthreads();                                          // stage sb landed
        issue(sb + LEAD, stage + LEAD < ST ? stage + LEAD : stage + LEAD - ST);
        if (wg_valid) {
            const unsigned char* st = smem + stage * STAGE;
            const uint4 w0 = reinterpret_cast<const uint4*>(st + XS)[r0 * 4 + t];
            const uint4 w1 = reinterpret_cast<const uint4*>(st + XS)[(r0 + 8) * 4 + t];
            const u32 s0 = reinterpret_cast<const u32*>(st + XS + WS)[r0];
            const u32 s1 = reinterpret_cast<const u32*>(st + XS + WS)[r0 + 8];
            const bool slow = warp_needs_slow(big_scales(s0) | big_scales(s1));
            // 128-token tiles with 4 warpgroups are at the 128-register cap: holding the 64-bit stage
            // descriptor there spills, so that kernel recomputes it per 32-block (BENCHMARKS.md v9).
            constexpr bool DESC0 = !(NWG == 4 && BN == 128);
            const u32 xa = smem_base + stage * STAGE;
            const unsigned long long desc0 = DESC0 ? wgmma_desc(xa) : 0ull;
            const int blocks_left = A.kblocks - sb * 4;
#pragma unroll
            for (int b = 0; b < 4; ++b) {
                if (b >= blocks_left) break;
                const u32 q0 = (b == 0) ? w0.x : (b == 1) ? w0.y : (b == 2) ? w0.z : w0.w;
                const u32 q1 = (b == 0) ? w1.x : (b == 1) ? w1.y : (b == 2) ? w1.z : w1.w;
                u32 a0[4], a1[4];
                wgmma_wait<1>();                                  // the group of block b-2 is done
                if (slow) { dequant_blk<true>(q0, s0, b, a0); dequant_blk<true>(q1, s1, b, a1); }
                else { dequant_blk<false>(q0, s0, b, a0); dequant_blk<false>(q1, s1, b, a1); }
                wgmma_fence();
                // slab b/2, 64 bytes on for odd b (the descriptor's start address is in 16-byte units)
                const int off = (b >> 1) * (BN * 128) + (b & 1) * 64;       // a constant once unrolled
                const unsigned long long desc = DESC0 ? desc0 + (off >> 4) : wgmma_desc(xa + off);
                wgmma_n<BN>(d, a0[0], a1[0], a0[1], a1[1], desc);            // k16 step 0
                wgmma_n<BN>(d, a0[2], a1[2], a0[3], a1[3], desc + 2);        // step 1: 32 bytes on
                wgmma_commit();
            }
        }
        if (++stage == ST) stage = 0;
    }
    wgmma_wait<0>();
    cp_async_wait<0>();
    if (!wg_valid) return;
    float acc[1][NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[0][n][i] = d[4 * n + i];
    moe_epilogue_act<1, NT, GATED, GATED>(A, acc, expert, start, count, rowblk + 64 * wg + 16 * wq, 0, g, t,
                                          SmemCols{s_slot, s_gamma});
#endif
}

// Block (row block blockIdx.x, tile blockIdx.y of the tile list).
template <int NWG, int BN, int ST, bool GATED>
__device__ __forceinline__ void moe_gemm_hopper_body(const GemmArgs& A) {
    const int tile = blockIdx.y;
    if (tile >= A.meta[0]) return;
    const int4 tl = A.tiles[tile];
    moe_gemm_hopper_tile<NWG, BN, ST, GATED>(A, tl.x, tl.y, tl.z);
}

#define DEFINE_GEMM_HOPPER(name, NWG, BN, ST)                                                           \
    extern "C" __global__ void __launch_bounds__(128 * NWG, 1) moe_gemm1_##name(GEMM_PARAMS) {          \
        MOE_GRID_ENTER GEMM_ARGS_INIT moe_gemm_hopper_body<NWG, BN, ST, true>(A);                       \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(128 * NWG, 1) moe_gemm2_##name(GEMM_PARAMS) {          \
        MOE_GRID_ENTER GEMM_ARGS_INIT moe_gemm_hopper_body<NWG, BN, ST, false>(A);                      \
    }

// name, NWG, BN, ST (block rows 64*NWG, tokens BN, threads 128*NWG, ST stages; dynamic smem
// HopperShape::SMEM bytes; one block per SM)
DEFINE_GEMM_HOPPER(hopper, 4, 128, 4)      // 256 rows x 128 tokens, 4 warpgroups: 198 KB smem
DEFINE_GEMM_HOPPER(hopper64, 4, 64, 4)     // 256 rows x 64 tokens: 134 KB smem
DEFINE_GEMM_HOPPER(hopper192, 3, 192, 3)   // 192 rows x 192 tokens, 3 warpgroups (168 registers), 3 stages: 186 KB

// Tile widths: one tile at the narrowest width BN (a multiple of 32, WMIN..WMAX) that holds its tokens
// and that `widths` allows (bit j: width 32 * (j + 1); WMAX always, bits below WMIN ignored: a tile that
// fits a narrower width runs at WMIN), so the tensor cores do at most 31 columns of padding work where every
// width is allowed. Only the bodies of widths WMIN..WMAX are compiled. Widths <= 128 take 4 stages, 160 and
// 192 take 3: each fits the shared memory of the widest. (Measured faster than hopper192 where most tiles
// are partial, slower where most are full: GEMM1's 192-token body runs 3.7% slower here than in hopper192,
// with the same main loop; moe.py choose_config, BENCHMARKS.md v24-v25.)
template <int NWG, int WMIN, int WMAX, bool GATED>
__device__ __forceinline__ void moe_gemm_hopper_widths(const GemmArgs& A, const int4 tl, const int widths) {
    static_assert(WMIN % 32 == 0 && WMAX % 32 == 0 && 32 <= WMIN && WMIN <= WMAX && WMAX <= 192, "widths");
    const int n = tl.z;
    int w = WMAX;
#pragma unroll
    for (int j = WMAX / 32 - 2; j >= WMIN / 32 - 1; --j)
        if (((widths >> j) & 1) && n <= 32 * (j + 1)) w = 32 * (j + 1);
    // w is one of the compiled widths; the narrowest body is taken unconditionally
    if constexpr (WMIN <= 192 && 192 <= WMAX) if (w == 192 || WMIN == 192)
        return moe_gemm_hopper_tile<NWG, 192, 3, GATED>(A, tl.x, tl.y, n);
    if constexpr (WMIN <= 160 && 160 <= WMAX) if (w == 160 || WMIN == 160)
        return moe_gemm_hopper_tile<NWG, 160, 3, GATED>(A, tl.x, tl.y, n);
    if constexpr (WMIN <= 128 && 128 <= WMAX) if (w == 128 || WMIN == 128)
        return moe_gemm_hopper_tile<NWG, 128, 4, GATED>(A, tl.x, tl.y, n);
    if constexpr (WMIN <= 96 && 96 <= WMAX) if (w == 96 || WMIN == 96)
        return moe_gemm_hopper_tile<NWG, 96, 4, GATED>(A, tl.x, tl.y, n);
    if constexpr (WMIN <= 64 && 64 <= WMAX) if (w == 64 || WMIN == 64)
        return moe_gemm_hopper_tile<NWG, 64, 4, GATED>(A, tl.x, tl.y, n);
    if constexpr (WMIN == 32) moe_gemm_hopper_tile<NWG, 32, 4, GATED>(A, tl.x, tl.y, n);
}

// hopper192w / hopper128w: hopper192 and hopper (block y runs tiles[y], y < meta[0]) with tile widths: 3
// warpgroups at 160 or 192 tokens (moe_sort sends it tiles of 129-192), 4 warpgroups at 32-128.
#define DEFINE_GEMM_HOPPER_WIDTHS(name, NWG, WMIN, WMAX)                                                \
    extern "C" __global__ void __launch_bounds__(128 * NWG, 1) moe_gemm1_##name(GEMM_PARAMS, int widths) { \
        MOE_GRID_ENTER GEMM_ARGS_INIT if ((int)blockIdx.y < A.meta[0])                                  \
            moe_gemm_hopper_widths<NWG, WMIN, WMAX, true>(A, A.tiles[blockIdx.y], widths);             \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(128 * NWG, 1) moe_gemm2_##name(GEMM_PARAMS, int widths) { \
        MOE_GRID_ENTER GEMM_ARGS_INIT if ((int)blockIdx.y < A.meta[0])                                  \
            moe_gemm_hopper_widths<NWG, WMIN, WMAX, false>(A, A.tiles[blockIdx.y], widths);            \
    }
DEFINE_GEMM_HOPPER_WIDTHS(hopper192w, 3, 160, 192)
DEFINE_GEMM_HOPPER_WIDTHS(hopper128w, 4, 32, 128)

// ------------------------------------------------------------------------------------------------
// 16 bytes from global memory through L2 only (an asm statement: the compiler does not move it under the
// caller's condition).
__device__ __forceinline__ uint4 ld_cg_v4(const void* p) {
    uint4 v;
    asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

// Combine: out[t, h] = bf16( sum_{j < k, slot valid} float(y[t*k + j, h]) ), slot order, fp32.
extern "C" __global__ void moe_combine(const u16* __restrict__ y, const int* __restrict__ local_ids,
                                       int n_tokens, int top_k, int hidden, u16* __restrict__ out,
                                       int* __restrict__ done) {
    MOE_GRID_ENTER
    if (done != nullptr && blockIdx.x == 0)            // the direct GEMMs' per-slot counters, for the next forward
        for (int i = threadIdx.x; i < n_tokens * top_k; i += blockDim.x) done[i] = 0;
    const int h8 = hidden >> 3;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n_tokens * h8) return;
    const int tkn = (int)(i / h8), c = (int)(i % h8);
    float s[8];
#pragma unroll
    for (int q = 0; q < 8; ++q) s[q] = 0.0f;
#pragma unroll 4
    for (int j = 0; j < top_k; ++j) {
        // the row is loaded whether or not the slot is valid (a dropped slot's row is in bounds and unused,
        // and adding +0.0 leaves a sum that starts at +0.0 unchanged): both loads are in flight together
        const int slot = tkn * top_k + j;
        const uint4 v = ld_cg_v4(y + (long)slot * hidden + 8 * c);
        const bool valid = local_ids[slot] >= 0;
        u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            s[2 * q] += valid ? __uint_as_float(w[q] << 16) : 0.0f;
            s[2 * q + 1] += valid ? __uint_as_float(w[q] & 0xffff0000u) : 0.0f;
        }
    }
    u32 o[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) o[q] = (u32)f32_to_bf16(s[2 * q]) | ((u32)f32_to_bf16(s[2 * q + 1]) << 16);
    *reinterpret_cast<uint4*>(out + (long)tkn * hidden + 8 * c) = make_uint4(o[0], o[1], o[2], o[3]);
}

// ------------------------------------------------------------------------------------------------
// Naive second reference: one thread per output value, scalar fp32 sums, weights decoded from the
// ORIGINAL vLLM layout (packed [E, N, K/2], scales [E, N, K/32]) with the format's table, so that it
// shares nothing with the fast path but the rounding points.
__device__ __forceinline__ float naive_w(const unsigned char* w, const unsigned char* s, long row, int k, int kdim) {
    const float lut[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    unsigned char byte = w[row * (kdim / 2) + k / 2];
    int code = (k & 1) ? (byte >> 4) : (byte & 15);
    float v = lut[code & 7];
    if (code & 8) v = -v;
    int sb = s[row * (kdim / 32) + k / 32];
    if (sb == 255) return __uint_as_float(0x7fc00000u);
    return v * __uint_as_float(sb == 0 ? 0x00400000u : ((u32)sb << 23));   // exact; x0.5 of 2^-127 fine
}

// inter[slot, i] for every slot (t*k + j) with a valid local expert; gate/up rows by gate_idx/up_idx.
extern "C" __global__ void moe_gemm1_naive(const unsigned char* w13, const unsigned char* s13, const float* b13,
                                           const u16* x, const int* local_ids, const float* topk_w, int n_slots,
                                           int top_k, int hidden, int inter, const int* gate_idx,
                                           const int* up_idx, int act, int weight_on_input, u16* out) {
    MOE_GRID_ENTER
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n_slots * inter) return;
    const int slot = (int)(i / inter), ch = (int)(i % inter);
    const int e = local_ids[slot];
    if (e < 0) return;
    const u16* xr = x + (long)(slot / top_k) * hidden;
    const long rg = (long)e * 2 * inter + gate_idx[ch], ru = (long)e * 2 * inter + up_idx[ch];
    float g = 0.0f, u = 0.0f;
    for (int k = 0; k < hidden; ++k) {
        float xv = bf16_to_f32(xr[k]);
        g = fmaf(xv, naive_w(w13, s13, rg, k, hidden), g);
        u = fmaf(xv, naive_w(w13, s13, ru, k, hidden), u);
    }
    if (b13) { g += b13[rg]; u += b13[ru]; }
    float v = activation(act, g, u);
    if (weight_on_input) v *= bf16_to_f32(f32_to_bf16(topk_w[slot]));
    out[(long)slot * inter + ch] = f32_to_bf16(v);
}

extern "C" __global__ void moe_gemm2_naive(const unsigned char* w2, const unsigned char* s2, const float* b2,
                                           const u16* inter_act, const int* local_ids, const float* topk_w,
                                           int n_slots, int hidden, int inter, int weight_on_input, u16* y) {
    MOE_GRID_ENTER
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n_slots * hidden) return;
    const int slot = (int)(i / hidden), h = (int)(i % hidden);
    const int e = local_ids[slot];
    if (e < 0) return;
    const long r = (long)e * hidden + h;
    float acc = 0.0f;
    for (int k = 0; k < inter; ++k)
        acc = fmaf(bf16_to_f32(inter_act[(long)slot * inter + k]), naive_w(w2, s2, r, k, inter), acc);
    if (b2) acc += b2[r];
    if (!weight_on_input) acc *= bf16_to_f32(f32_to_bf16(topk_w[slot]));
    y[(long)slot * hidden + h] = f32_to_bf16(acc);
}

// ------------------------------------------------------------------------------------------------
// Probe: the register dequantizer alone (general=1: the two-multiply path, 0: the one-multiply path, exact
// for scale bytes <= 128; the kernels take it when every scale byte of the warp is below 128). codes_word[i] is a kernel-order uint32 of
// 8 codes, sbyte[i] its scale byte; out[8*i + j] = bf16 bits of code j (logical order) times 2**(sbyte - 127).
extern "C" __global__ void moe_dequant_probe(const u32* codes_word, const u32* sbyte, int n, int general, u16* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    u32 r[4];
    if (general) dequant_blk<true>(codes_word[i], sbyte[i], 0, r);     // any scale byte
    else dequant_blk<false>(codes_word[i], sbyte[i], 0, r);            // exact for scale bytes <= 128
#pragma unroll
    for (int p = 0; p < 4; ++p) {
        out[8 * i + 2 * p] = (u16)(r[p] & 0xffffu);
        out[8 * i + 2 * p + 1] = (u16)(r[p] >> 16);
    }
}
