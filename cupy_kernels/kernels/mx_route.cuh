// mx_route.cuh -- device helpers of the MoE routing (route.cu): order-preserving float keys, the warp
// arg-max round, the float64 sum in ascending expert-id order and the float64 -> float32 rounding.
// The rules they implement are in route.cu's header (spec/11-routing.md).
#pragma once
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

// float64 -> float32, round to nearest even; the hardware conversion unless the result is (or may
// round to) a float32 subnormal, which -ftz=true could flush: then the integer conversion.
__device__ __forceinline__ float mxk_to_f32(double w) {
    if (fabs(w) < 1.1754943508222875e-38) return __uint_as_float(mxk_f64_to_f32bits_rne(w));
    return __double2float_rn(w);
}

// One round of the warp arg-max over keys key[p] of elements p * 32 + lane (0 = taken or absent): returns
// the largest key, sets wi to the lowest id holding it, and clears that element (two warp reductions).
template <int PL>
__device__ __forceinline__ unsigned int mxk_select_round(unsigned int (&key)[PL], int lane, int& wi) {
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
    wi = (int)mxk_redux_min((bkey == kmax) ? (unsigned int)bi : 0xFFFFFFFFu);
#pragma unroll
    for (int p = 0; p < PL; p++)
        if (wi == p * 32 + lane) key[p] = 0u;
    return kmax;
}

// k rounds of mxk_select_round: lane r < k receives the r-th selection (its value and expert id);
// other lanes keep value 0 and id 0x7FFFFFFF.
template <int PL>
__device__ __forceinline__ void mxk_select_topk(unsigned int (&key)[PL], int k, int lane, float& my_v, int& my_id) {
    my_v = 0.0f;
    my_id = 0x7FFFFFFF;
    for (int r = 0; r < k; r++) {
        int wi;
        const unsigned int kmax = mxk_select_round<PL>(key, lane, wi);
        if (lane == r) {
            my_v = mxk_key_value(kmax);
            my_id = wi;
        }
    }
}
