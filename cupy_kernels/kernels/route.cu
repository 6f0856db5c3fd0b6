// route.cu -- MoE routing: router logits (T, E) -> top-k weights float32 (T, k), ids int32 (T, k).
//
// Computes mxfp4ref.moe.routing.route bit for bit (spec/11-routing.md):
//   selection on the float32 logits (exact comparisons; equal logits -> lower expert id first;
//   -0.0 == 0.0), k rounds of a warp arg-max (order-preserving integer keys, redux.sync max, then
//   redux.sync min over the ids holding the max);
//   weights in float64 with the spec's order of operations: m = row max, e_i = exp(x_i - m);
//   sums strictly left to right in ascending EXPERT ID order (over the k selected, or over all E for
//   softmax without renormalization); one division; one rounding to float32 (integer RNE, so
//   -ftz=true cannot flush a subnormal weight). Sigmoid: s_i = 1 / (1 + exp(-x_i)).
//   Only exp is not IEEE-exact: CUDA's double exp and NumPy's may differ in the last float64 bit,
//   which changes the float32 weight only if it lies within ~1e-16 relative of a rounding boundary.
// Output order: order_id = 0 -> selection order (descending logit, ties by id); 1 -> ascending id.
// A non-finite logit sets bit 0 of *bad, a sigmoid renormalization over k scores that all underflow
// to 0 sets bit 1 (the launcher raises ValueError for either, as the spec does).
//
// Layout: logits C-contiguous (T, E) float32 / float16 / bfloat16 (bits); outputs C-contiguous.
// Kernel mx_route<IN, PL> (the reference; every scoring, top_k <= 32): one warp per token, lane l holds
// logits l, l+32, ... (PL per lane, E <= 32*PL), grid-stride over tokens; launch 256 threads.
// Kernel mx_route_fast<IN, K> (top_k <= K in {1, 2, 4, 8}; softmax with renormalize, topk_softmax,
// sigmoid; not softmax without renormalization): 8 lanes per token, 4 tokens per warp. Lane q reads
// logits q, q+8, ... (ascending id) and keeps its own top K (key, id) in a sorted register list (strict
// insertion: an equal key keeps the earlier, lower id); 3 butterfly rounds merge the 8 lists (bitonic
// top-K of two sorted lists under "larger key, then lower id"), so every lane of the group holds the
// token's top K. Lane q < k then computes slot q's weight in float64, the sum over the k selected
// strictly in ascending id order by shuffles, and the same rounding: the same bits as mx_route.
// Optionally it also writes align's per-row expert histogram (align.cu's count phase, fused).
// Kernel mx_route_lean<IN, PL, K> (moe_forward up to 256 tokens: softmax with renormalization, selection
// order, top_k <= K = 8): mx_route's selection and weight code for that case alone, so the same bits, and
// no non-finite check (moe_forward cannot report it without a host read); one warp per token, no
// grid-stride loop, launch 256 threads. Only the code that path runs is in it: see its comment.
#include "mx_common.cuh"

#define MXK_SCORE_SOFTMAX 0
#define MXK_SCORE_TOPK_SOFTMAX 1
#define MXK_SCORE_SIGMOID 2

__device__ __forceinline__ double mxk_shfl_f64(double v, int src) {
    long long b = __double_as_longlong(v);
    int lo = __shfl_sync(0xFFFFFFFFu, (int)(b & 0xFFFFFFFF), src);
    int hi = __shfl_sync(0xFFFFFFFFu, (int)(b >> 32), src);
    return __longlong_as_double(((long long)hi << 32) | (unsigned int)lo);
}

template <int IN>
__device__ __forceinline__ float mxk_logit(const void* p, long long i) {
    mxk_u32 b;
    if (IN == 0) b = ((const mxk_u32*)p)[i];
    else if (IN == 1) b = mxk_f16_to_f32bits(((const unsigned short*)p)[i]);
    else b = mxk_bf16_to_f32bits(((const unsigned short*)p)[i]);
    return __uint_as_float(b);
}

// Warp-wide unsigned max / min in one instruction (redux.sync, sm_80+).
__device__ __forceinline__ unsigned int mxk_redux_max(unsigned int v) {
    unsigned int r;
    asm volatile("redux.sync.max.u32 %0, %1, 0xffffffff;" : "=r"(r) : "r"(v));
    return r;
}
__device__ __forceinline__ unsigned int mxk_redux_min(unsigned int v) {
    unsigned int r;
    asm volatile("redux.sync.min.u32 %0, %1, 0xffffffff;" : "=r"(r) : "r"(v));
    return r;
}

// float32 -> unsigned key with the same order (finite values; -0.0 is mapped like +0.0 so that they
// tie, as float comparison says). Key 0 is below every finite value's key.
__device__ __forceinline__ unsigned int mxk_order_key(float x) {
    unsigned int u = __float_as_uint(x);
    if (u == 0x80000000u) u = 0u;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float mxk_key_value(unsigned int key) {
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

// Sum over the k selected slots (lane j < k holds value v and expert id), in ascending id order.
__device__ __forceinline__ double mxk_sum_by_id(double v, int id, int k, int lane) {
    double acc = 0.0;
    unsigned int prev = 0xFFFFFFFFu;   // "no id yet": every id compares greater after the wrap below
    for (int r = 0; r < k; r++) {
        const bool mine = lane < k && (r == 0 || (unsigned int)id > prev);
        const unsigned int cand = mxk_redux_min(mine ? (unsigned int)id : 0xFFFFFFFFu);
        const unsigned int holder = __ballot_sync(0xFFFFFFFFu, lane < k && (unsigned int)id == cand);
        acc = acc + mxk_shfl_f64(v, __ffs(holder) - 1);
        prev = cand;
    }
    return acc;
}

// Softmax over the k selected, renormalized (also "topk_softmax"), in float64: lane j < k holds the j-th
// selected logit my_v and its id; row_max is the first selection (the largest). exp(my_v - row_max) over the
// sum of the k such terms in ascending id order. mx_route and mx_route_lean share it: the same bits.
__device__ __forceinline__ double mxk_softmax_selected(float my_v, float row_max, int my_id, int k, int lane) {
    const double e = exp((double)my_v - (double)row_max);
    return e / mxk_sum_by_id(e, my_id, k, lane);
}

// float64 -> float32, round to nearest even; the hardware conversion unless the result is (or may
// round to) a float32 subnormal, which -ftz=true could flush: then the integer conversion.
__device__ __forceinline__ float mxk_to_f32(double w) {
    if (fabs(w) < 1.1754943508222875e-38) return __uint_as_float(mxk_f64_to_f32bits_rne(w));
    return __double2float_rn(w);
}

// Selection round r: the warp's largest remaining key (ties to the lower id: two warp reductions); lane r
// keeps its value and id, and the owner lane marks it taken. key[p]: lane's element p * 32 + lane, 0 once
// taken or beyond E.
template <int PL>
__device__ __forceinline__ void mxk_select_round(unsigned int (&key)[PL], int r, int lane, float& my_v, int& my_id) {
    unsigned int bkey = 0u;   // my best remaining element (the lower p on ties)
    int bi = 0x7FFFFFFF;
#pragma unroll
    for (int p = 0; p < PL; p++) {
        if (key[p] > bkey) {
            bkey = key[p];
            bi = p * 32 + lane;
        }
    }
    const unsigned int kmax = mxk_redux_max(bkey);
    const int wi = (int)mxk_redux_min((bkey == kmax) ? (unsigned int)bi : 0xFFFFFFFFu);
#pragma unroll
    for (int p = 0; p < PL; p++)
        if (wi == p * 32 + lane) key[p] = 0u;
    if (lane == r) {
        my_v = mxk_key_value(kmax);
        my_id = wi;
    }
}

template <int IN, int PL>
__global__ void __launch_bounds__(256) mx_route(const void* __restrict__ logits, int T, int E, int k,
                                                int scoring, int renormalize, int order_id,
                                                float* __restrict__ weights, int* __restrict__ ids,
                                                int* __restrict__ bad) {
    mxk_grid_release();   // a PDL-launched consumer (the fused MoE forward) may start its launch now
    const int lane = threadIdx.x & 31;
    const int warps_per_block = blockDim.x >> 5;
    for (long long t = (long long)blockIdx.x * warps_per_block + (threadIdx.x >> 5); t < T;
         t += (long long)gridDim.x * warps_per_block) {
        const long long row = t * E;
        float v[PL];
        bool nonfinite = false;
#pragma unroll
        for (int p = 0; p < PL; p++) {
            const int e = p * 32 + lane;
            v[p] = (e < E) ? mxk_logit<IN>(logits, row + e) : 0.0f;
            if (e < E && ((__float_as_uint(v[p]) & 0x7F800000u) == 0x7F800000u)) nonfinite = true;
        }
        if (__any_sync(0xFFFFFFFFu, nonfinite)) {
            if (lane == 0) atomicOr(bad, 1);
        }
        // ---- selection: k rounds of arg-max, ties to the lower id (two warp reductions per round).
        // key[p]: order-preserving key of my element p, 0 once taken or beyond E.
        unsigned int key[PL];
#pragma unroll
        for (int p = 0; p < PL; p++) key[p] = (p * 32 + lane < E) ? mxk_order_key(v[p]) : 0u;
        float my_v = 0.0f;            // lane r holds the r-th selection
        int my_id = 0x7FFFFFFF;
        for (int r = 0; r < k; r++) mxk_select_round<PL>(key, r, lane, my_v, my_id);
        // ---- weights in float64
        const float row_max = __shfl_sync(0xFFFFFFFFu, my_v, 0);       // the first selection
        double w;
        if (scoring == MXK_SCORE_SIGMOID) {
            const double s = 1.0 / (1.0 + exp(-(double)my_v));
            if (renormalize) {
                const double den = mxk_sum_by_id(s, my_id, k, lane);
                if (den == 0.0 && lane == 0) atomicOr(bad, 2);   // all k scores underflow: the spec raises
                w = s / den;
            } else {
                w = s;
            }
        } else {
            if (scoring == MXK_SCORE_TOPK_SOFTMAX || renormalize) {
                w = mxk_softmax_selected(my_v, row_max, my_id, k, lane);
            } else {
                const double m = (double)row_max;
                const double e = exp((double)my_v - m);
                double acc = 0.0;                       // all E, ascending id, left to right
                for (int p = 0; p < PL; p++) {
                    for (int src = 0; src < 32; src++) {
                        const float x = __shfl_sync(0xFFFFFFFFu, v[p], src);
                        if (p * 32 + src < E) acc = acc + exp((double)x - m);
                    }
                }
                w = e / acc;
            }
        }
        // ---- output slot
        int slot = lane;
        if (order_id) {
            slot = 0;
            for (int r = 0; r < k; r++) {
                const int o = __shfl_sync(0xFFFFFFFFu, my_id, r);
                slot += (o < my_id);
            }
        }
        if (lane < k) {
            weights[t * k + slot] = mxk_to_f32(w);
            ids[t * k + slot] = my_id;
        }
    }
}

// Kernel mx_route_lean<IN, PL, K> (moe_forward at few tokens): softmax with renormalization, selection
// order, top_k <= K, no non-finite check; one warp per token, one load round, k rounds of the same warp
// arg-max (mxk_select_round) and the same float64 weights (mxk_softmax_selected) as mx_route, so the same
// bits. Only the code that path runs is in it: mx_route measured +1.4 us at 1 token for code added but not
// run (BENCHMARKS v18), and this kernel in its place -0.3..-0.7 us (H200, v19).
template <int IN, int PL, int K>
__global__ void __launch_bounds__(256) mx_route_lean(const void* __restrict__ logits, int T, int E, int k,
                                                     float* __restrict__ weights, int* __restrict__ ids) {
    mxk_grid_release();   // a PDL-launched consumer (the fused MoE forward) may start its launch now
    const int lane = threadIdx.x & 31;
    const long long t = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (t >= T) return;
    unsigned int key[PL];
#pragma unroll
    for (int p = 0; p < PL; p++) {
        const int e = p * 32 + lane;
        key[p] = (e < E) ? mxk_order_key(mxk_logit<IN>(logits, t * E + e)) : 0u;
    }
    float my_v = 0.0f;            // lane r holds the r-th selection
    int my_id = 0x7FFFFFFF;
#pragma unroll
    for (int r = 0; r < K; r++) {
        if (r >= k) break;
        mxk_select_round<PL>(key, r, lane, my_v, my_id);
    }
    const double w = mxk_softmax_selected(my_v, __shfl_sync(0xFFFFFFFFu, my_v, 0), my_id, k, lane);
    if (lane < k) {
        weights[t * k + lane] = mxk_to_f32(w);
        ids[t * k + lane] = my_id;
    }
}

#define MXK_LEAN(IN, PL, K) \
    template __global__ void mx_route_lean<IN, PL, K>(const void*, int, int, int, float*, int*);
MXK_LEAN(0, 1, 8) MXK_LEAN(0, 2, 8) MXK_LEAN(0, 4, 8) MXK_LEAN(0, 8, 8)
MXK_LEAN(1, 1, 8) MXK_LEAN(1, 2, 8) MXK_LEAN(1, 4, 8) MXK_LEAN(1, 8, 8)
MXK_LEAN(2, 1, 8) MXK_LEAN(2, 2, 8) MXK_LEAN(2, 4, 8) MXK_LEAN(2, 8, 8)

template __global__ void mx_route<0, 1>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<0, 2>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<0, 4>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<0, 8>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<1, 1>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<1, 2>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<1, 4>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<1, 8>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<2, 1>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<2, 2>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<2, 4>(const void*, int, int, int, int, int, int, float*, int*, int*);
template __global__ void mx_route<2, 8>(const void*, int, int, int, int, int, int, float*, int*, int*);

// ==== fast path: 8 lanes per token ===================================================================
#define MXK_RG 8                         // lanes per token

// (ka, ia) is selected before (kb, ib): larger key, or the same key and the lower id.
__device__ __forceinline__ bool mxk_route_before(unsigned int ka, int ia, unsigned int kb, int ib) {
    return ka > kb || (ka == kb && ia < ib);
}

// counts != nullptr (align's count phase fused in; E ints of dynamic shared memory): row r of the
// int32 counts matrix (rows x E) = how many of tokens [r*RT, (r+1)*RT) chose each expert, RT = the
// block's tokens per pass (blockDim.x / 8); block b writes rows b, b + gridDim.x, ...
template <int IN, int K>
__global__ void __launch_bounds__(1024) mx_route_fast(const void* __restrict__ logits, int T, int E, int k,
                                                      int scoring, int renormalize, int order_id,
                                                      float* __restrict__ weights, int* __restrict__ ids,
                                                      int* __restrict__ bad, int* __restrict__ counts) {
    mxk_grid_release();   // a PDL-launched consumer (the fused MoE forward) may start its launch now
    extern __shared__ int hist[];
    const int lane = threadIdx.x & 31;
    const int q = lane & (MXK_RG - 1);            // my lane in my token's group
    const int gbase = lane - q;                   // the group's first lane
    const int tpw = 32 / MXK_RG;                  // tokens per warp
    const int rt = (blockDim.x >> 5) * tpw;       // tokens per block pass (one counts row)
    for (long long rb = (long long)blockIdx.x * rt; rb < T; rb += (long long)gridDim.x * rt) {  // block-uniform
        if (counts != nullptr) {
            for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
            __syncthreads();
        }
        const long long t = rb + (threadIdx.x >> 5) * tpw + lane / MXK_RG;
        const bool valid = t < T;
        const long long row = t * E;
        unsigned int kk[K];                       // my top K keys, descending; 0 = empty
        int ii[K];                                // their expert ids
#pragma unroll
        for (int j = 0; j < K; j++) {
            kk[j] = 0u;
            ii[j] = 0x7FFFFFFF;
        }
        bool nonfinite = false;
        const int nj = (valid && q < E) ? (E - q + MXK_RG - 1) / MXK_RG : 0;   // ids q, q+8, ... < E
        for (int j0 = 0; j0 < nj; j0 += 8) {
            float x[8];
#pragma unroll
            for (int u = 0; u < 8; u++)
                x[u] = (j0 + u < nj) ? mxk_logit<IN>(logits, row + (long long)(j0 + u) * MXK_RG + q) : 0.0f;
#pragma unroll
            for (int u = 0; u < 8; u++) {
                if (j0 + u >= nj) break;
                if ((__float_as_uint(x[u]) & 0x7F800000u) == 0x7F800000u) nonfinite = true;
                const unsigned int key = mxk_order_key(x[u]);
                const int id = (j0 + u) * MXK_RG + q;
                bool gt[K];                       // ids arrive ascending: strictly greater goes first
#pragma unroll
                for (int j = 0; j < K; j++) gt[j] = key > kk[j];
#pragma unroll
                for (int j = K - 1; j >= 1; j--) {
                    kk[j] = gt[j - 1] ? kk[j - 1] : (gt[j] ? key : kk[j]);
                    ii[j] = gt[j - 1] ? ii[j - 1] : (gt[j] ? id : ii[j]);
                }
                if (gt[0]) {
                    kk[0] = key;
                    ii[0] = id;
                }
            }
        }
        if (__any_sync(0xFFFFFFFFu, nonfinite)) {
            if (lane == 0) atomicOr(bad, 1);
        }
        // ---- merge the group's 8 sorted lists: partner's list reversed, element-wise better, then a
        // bitonic clean-up to descending order (the top K of both lists; the same on both lanes)
#pragma unroll
        for (int o = 1; o < MXK_RG; o <<= 1) {
            unsigned int pk[K];
            int pi[K];
#pragma unroll
            for (int j = 0; j < K; j++) {
                pk[j] = __shfl_xor_sync(0xFFFFFFFFu, kk[j], o);
                pi[j] = __shfl_xor_sync(0xFFFFFFFFu, ii[j], o);
            }
#pragma unroll
            for (int j = 0; j < K; j++) {
                if (!mxk_route_before(kk[j], ii[j], pk[K - 1 - j], pi[K - 1 - j])) {
                    kk[j] = pk[K - 1 - j];
                    ii[j] = pi[K - 1 - j];
                }
            }
#pragma unroll
            for (int s = K / 2; s >= 1; s >>= 1) {
#pragma unroll
                for (int j = 0; j < K; j++) {
                    if ((j & s) == 0 && mxk_route_before(kk[j + s], ii[j + s], kk[j], ii[j])) {
                        const unsigned int tk = kk[j];
                        const int ti = ii[j];
                        kk[j] = kk[j + s];
                        ii[j] = ii[j + s];
                        kk[j + s] = tk;
                        ii[j + s] = ti;
                    }
                }
            }
        }
        // ---- lane q < k: slot q of the selection; rank of each selected id among the k (id order)
        unsigned int my_key = kk[0];
        int my_id = ii[0];
        int rank[K];
#pragma unroll
        for (int j = 0; j < K; j++) {
            if (j == q) {
                my_key = kk[j];
                my_id = ii[j];
            }
            rank[j] = 0;
#pragma unroll
            for (int i = 0; i < K; i++) rank[j] += (i < k && ii[i] < ii[j]);
        }
        const double v = (double)mxk_key_value(my_key);
        double w;
        double term;                              // what is summed over the k selected
        if (scoring == MXK_SCORE_SIGMOID) {
            term = 1.0 / (1.0 + exp(-v));
        } else {
            term = exp(v - (double)mxk_key_value(kk[0]));
        }
        if (scoring == MXK_SCORE_SIGMOID && !renormalize) {
            w = term;
        } else {
            double acc = 0.0;                     // left to right in ascending id order
#pragma unroll
            for (int r = 0; r < K; r++) {
                if (r < k) {
                    int src = 0;
#pragma unroll
                    for (int j = 0; j < K; j++) src += (j < k && rank[j] == r) ? j : 0;
                    acc = acc + mxk_shfl_f64(term, gbase + src);
                }
            }
            if (scoring == MXK_SCORE_SIGMOID && acc == 0.0 && valid && q == 0) atomicOr(bad, 2);
            w = term / acc;
        }
        if (valid && q < k) {
            int slot = q;
            if (order_id) {
#pragma unroll
                for (int j = 0; j < K; j++)
                    if (j == q) slot = rank[j];
            }
            weights[t * k + slot] = mxk_to_f32(w);
            ids[t * k + slot] = my_id;
            if (counts != nullptr) atomicAdd(&hist[my_id], 1);
        }
        if (counts != nullptr) {
            __syncthreads();
            const long long crow = rb / rt;
            for (int e = threadIdx.x; e < E; e += blockDim.x) counts[crow * E + e] = hist[e];
            __syncthreads();
        }
    }
}

template __global__ void mx_route_fast<0, 1>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<0, 2>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<0, 4>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<0, 8>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<1, 1>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<1, 2>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<1, 4>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<1, 8>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<2, 1>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<2, 2>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<2, 4>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
template __global__ void mx_route_fast<2, 8>(const void*, int, int, int, int, int, int, float*, int*, int*, int*);
