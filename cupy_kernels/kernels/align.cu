// align.cu -- vLLM's moe_align_block_size contract: sort (token, slot) pairs by expert, pad each
// expert's run to a multiple of block_size.
//
// Computes mxfp4ref.moe.align.align_block_size bit for bit (spec/11-routing.md, "Block alignment"):
//   flat index f = t*k + slot of topk_ids (numel entries, global expert ids in [0, E))
//   sorted_token_ids (S,)   expert 0's flat indices in ASCENDING f, padded with the sentinel numel to
//                           a block multiple, then expert 1's, ...; the tail [total, S) = sentinel
//   expert_ids (ceil(S/bs),) the expert of each block (expert_map[e] if a map is given); blocks past
//                           the total hold expert 0 (expert_map[0] with a map), as the spec leaves them
//   num_tokens_post_padded (1,) = total = sum_e round_up(count_e, bs)
// An id outside [0, E) sets *bad (the launcher raises ValueError, as the spec does).
//
// Kernel mx_align<IDT> (IDT 0: int32 ids, 1: int64 ids): ONE thread block of W warps, W*E ints of
// dynamic shared memory. Warp w owns a contiguous segment of the flat ids (a multiple of 32 long).
//   pass 1: per 32-id chunk, __match_any_sync groups equal ids; the group's first lane adds the
//           group size to cnt[w][e];
//   scan:   thread e turns cnt[.][e] into per-warp cursors (off_e + ids of expert e in earlier
//           warps), warp 0 scans round_up(count_e, bs) over experts (off_e, total);
//   fill:   thread e writes its padding sentinels and its expert_ids blocks; all threads the tail;
//   pass 2: the same chunks again; a lane's position is its group's cursor plus its rank in the
//           group (lanes below it with the same id), then the group's first lane advances the cursor.
// Order inside an expert = warp order, then chunk order, then lane order = ascending f.
#include "mx_common.cuh"

#define MXK_A_UNROLL 8

template <int IDT>
__device__ __forceinline__ int mxk_load_id(const void* ids, long long i) {
    if (IDT == 0) return ((const int*)ids)[i];
    long long v = ((const long long*)ids)[i];
    return (v < -1 || v > 0x7FFFFFFE) ? 0x7FFFFFFF : (int)v;      // out of range stays out of range
}

template <int IDT>
__global__ void mx_align(const void* __restrict__ topk_ids, long long numel, int E, int bs,
                         const int* __restrict__ expert_map, int has_map, long long S,
                         long long nblocks, int* __restrict__ sorted_ids, int* __restrict__ expert_ids,
                         int* __restrict__ num_post_padded, int* __restrict__ bad) {
    extern __shared__ int smem[];
    const int W = blockDim.x >> 5;
    int* cnt = smem;                       // [W][E]: counts, then write cursors
    int* off = smem + W * E;               // [E]: first position of expert e
    int* tot = off + E;                    // [E]: number of ids of expert e
    __shared__ int s_total;
    const int lane = threadIdx.x & 31;
    const int w = threadIdx.x >> 5;
    const unsigned int lt_mask = (1u << lane) - 1u;

    for (int i = threadIdx.x; i < W * E; i += blockDim.x) cnt[i] = 0;
    __syncthreads();

    const long long seg = ((numel + W - 1) / W + 31) / 32 * 32;
    const long long begin = (long long)w * seg;
    const long long end = begin + seg < numel ? begin + seg : numel;

    // ---- pass 1: counts per (warp, expert). Ids are loaded MXK_A_UNROLL chunks at a time so that
    // several global loads are in flight per warp (a single block has few warps to hide latency).
    bool out_of_range = false;
    for (long long base0 = begin; base0 < end; base0 += 32 * MXK_A_UNROLL) {
        int ev[MXK_A_UNROLL];
#pragma unroll
        for (int u = 0; u < MXK_A_UNROLL; u++) {
            const long long f = base0 + 32 * u + lane;
            ev[u] = (f < end) ? mxk_load_id<IDT>(topk_ids, f) : -1;
            if (f < end && (ev[u] < 0 || ev[u] >= E)) {
                out_of_range = true;
                ev[u] = -1;
            }
        }
#pragma unroll
        for (int u = 0; u < MXK_A_UNROLL; u++) {
            const int e = ev[u];
            const unsigned int peers = __match_any_sync(0xFFFFFFFFu, e);
            if (e >= 0 && (peers & lt_mask) == 0) cnt[w * E + e] += __popc(peers);
        }
    }
    if (__any_sync(0xFFFFFFFFu, out_of_range) && lane == 0) atomicOr(bad, 1);
    __syncthreads();

    // ---- per-expert totals and per-warp cursors (relative to the expert's start)
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int run = 0;
        for (int v = 0; v < W; v++) {
            const int c = cnt[v * E + e];
            cnt[v * E + e] = run;
            run += c;
        }
        tot[e] = run;
    }
    __syncthreads();
    // ---- exclusive scan of the padded counts over experts (warp 0)
    if (w == 0) {
        int carry = 0;
        for (int e0 = 0; e0 < E; e0 += 32) {
            const int e = e0 + lane;
            const int padded = (e < E) ? (tot[e] + bs - 1) / bs * bs : 0;
            int incl = padded;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int y = __shfl_up_sync(0xFFFFFFFFu, incl, o);
                if (lane >= o) incl += y;
            }
            if (e < E) off[e] = carry + incl - padded;
            carry += __shfl_sync(0xFFFFFFFFu, incl, 31);
        }
        if (lane == 0) s_total = carry;
    }
    __syncthreads();
    const int total = s_total;

    // ---- padding sentinels, expert_ids of used blocks, cursors made absolute
    const int sentinel = (int)numel;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        const int o = off[e];
        const int n = tot[e];
        const int padded = (n + bs - 1) / bs * bs;
        for (int p = o + n; p < o + padded; p++) sorted_ids[p] = sentinel;
        const int mapped = has_map ? expert_map[e] : e;
        for (int blk = o / bs; blk < (o + padded) / bs; blk++) expert_ids[blk] = mapped;
        for (int v = 0; v < W; v++) cnt[v * E + e] += o;
    }
    for (long long p = total + threadIdx.x; p < S; p += blockDim.x) sorted_ids[p] = sentinel;
    const int unused = has_map ? expert_map[0] : 0;
    for (long long blk = total / bs + threadIdx.x; blk < nblocks; blk += blockDim.x) expert_ids[blk] = unused;
    if (threadIdx.x == 0) num_post_padded[0] = total;
    __syncthreads();

    // ---- pass 2: scatter flat indices (same chunks, same order)
    for (long long base0 = begin; base0 < end; base0 += 32 * MXK_A_UNROLL) {
        int ev[MXK_A_UNROLL];
#pragma unroll
        for (int u = 0; u < MXK_A_UNROLL; u++) {
            const long long f = base0 + 32 * u + lane;
            ev[u] = (f < end) ? mxk_load_id<IDT>(topk_ids, f) : -1;
            if (ev[u] < 0 || ev[u] >= E) ev[u] = -1;
        }
#pragma unroll
        for (int u = 0; u < MXK_A_UNROLL; u++) {
            const long long f = base0 + 32 * u + lane;
            const int e = ev[u];
            const unsigned int peers = __match_any_sync(0xFFFFFFFFu, e);
            const int leader = __ffs(peers) - 1;
            int cursor = 0;
            if (e >= 0 && lane == leader) cursor = cnt[w * E + e];
            cursor = __shfl_sync(0xFFFFFFFFu, cursor, leader);
            if (e >= 0) {
                sorted_ids[cursor + __popc(peers & lt_mask)] = (int)f;
                if (lane == leader) cnt[w * E + e] = cursor + __popc(peers);
            }
            __syncwarp();
        }
    }
}

template __global__ void mx_align<0>(const void*, long long, int, int, const int*, int, long long, long long, int*, int*, int*, int*);
template __global__ void mx_align<1>(const void*, long long, int, int, const int*, int, long long, long long, int*, int*, int*, int*);
