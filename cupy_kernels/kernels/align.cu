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

// Exclusive scan of the padded counts over experts, by one whole warp (lane = its lane index):
// off[e] = sum over e' < e of round_up(tot[e'], bs) for e < E; returns the sum over all E experts (the
// total, on every lane). Experts are taken 32 at a time, one per lane, with a shuffle scan per group.
__device__ __forceinline__ int mxk_padded_offsets_warp(const int* tot, int* off, int E, int bs, int lane) {
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
    return carry;
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
        const int sum = mxk_padded_offsets_warp(tot, off, E, bs, lane);
        if (lane == 0) s_total = sum;
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

// ==== fast path: two kernels over many blocks ========================================================
//
// mx_align_count<IDT>:   block b counts the ids of its segment [b*seg, (b+1)*seg) into counts[b][e]
//                        (shared-memory atomics; any order, it is a count).
// (cooperative launch: mx_align_scatter does the counting itself, then a grid barrier, so one kernel)
// mx_align_scatter<IDT>: every block reads the whole counts matrix (nrows x E ints, from L2; row r counts
//                        ids [r*seg/rpb, (r+1)*seg/rpb), block b's segment is rows [b*rpb, (b+1)*rpb))
//                        by column sums to get each expert's total, its padded start off_e, and the ids
//                        of expert e in earlier blocks; splits its segment over its W warps (per-warp counts by atomics, then a
//                        prefix over warps), and each warp walks its chunks in order: lanes with the same
//                        expert are found with log2(E) ballots (no __match_any_sync, which is slow), a
//                        lane's position is the group cursor plus its rank among lower lanes of the group.
//                        Block 0 also writes the padding sentinels, expert_ids and the total.
// Order inside an expert: block, then warp, then chunk, then lane = ascending flat index, as in the spec.

// This block's histogram of its segment [blockIdx.x*seg, +seg) of topk_ids into counts[blockIdx.x][*]
// (hist: E ints of shared memory); out-of-range ids set *bad. Used by both count paths.
template <int IDT>
__device__ __forceinline__ void mxk_block_histogram(const void* __restrict__ topk_ids, long long numel, int E,
                                                    long long seg, int* hist, int* __restrict__ counts,
                                                    int* __restrict__ bad) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
    __syncthreads();
    const long long begin = (long long)blockIdx.x * seg;
    const long long end = begin + seg < numel ? begin + seg : numel;
    bool out_of_range = false;
    for (long long f0 = begin + threadIdx.x; f0 < end; f0 += (long long)blockDim.x * MXK_A_UNROLL) {
        int ev[MXK_A_UNROLL];
#pragma unroll
        for (int u = 0; u < MXK_A_UNROLL; u++) {
            const long long f = f0 + (long long)u * blockDim.x;
            ev[u] = (f < end) ? mxk_load_id<IDT>(topk_ids, f) : 0;
        }
#pragma unroll
        for (int u = 0; u < MXK_A_UNROLL; u++) {
            if (f0 + (long long)u * blockDim.x >= end) continue;
            if (ev[u] < 0 || ev[u] >= E) out_of_range = true;
            else atomicAdd(&hist[ev[u]], 1);
        }
    }
    if (out_of_range) atomicOr(bad, 1);
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) counts[(long long)blockIdx.x * E + e] = hist[e];
}

template <int IDT>
__global__ void __launch_bounds__(1024) mx_align_count(const void* __restrict__ topk_ids, long long numel,
                                                      int E, long long seg, int* __restrict__ counts,
                                                      int* __restrict__ bad) {
    extern __shared__ int hist[];
    mxk_block_histogram<IDT>(topk_ids, numel, E, seg, hist, counts, bad);
}

// Lanes of this warp whose e equals mine (e >= 0), from one ballot per bit of e.
__device__ __forceinline__ unsigned int mxk_ballot_match(int e, int nbits) {
    unsigned int peers = __ballot_sync(0xFFFFFFFFu, e >= 0);
    for (int b = 0; b < nbits; b++) {
        const bool bit = (e >> b) & 1;
        const unsigned int ones = __ballot_sync(0xFFFFFFFFu, bit);
        peers &= bit ? ones : ~ones;
    }
    return peers;
}

// Grid-wide barrier for a cooperative launch (all blocks resident): arrival counter bar[0] and
// generation bar[1], both left ready for the next launch (bar starts zeroed, allocated once).
__device__ __forceinline__ void mxk_grid_barrier(unsigned int* bar) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned int* vbar = bar;
        const unsigned int gen = vbar[1];
        __threadfence();
        if (atomicAdd(&bar[0], 1u) == gridDim.x - 1) {
            bar[0] = 0u;
            __threadfence();
            atomicAdd(&bar[1], 1u);
        } else {
            while (vbar[1] == gen) {
            }
        }
        __threadfence();
    }
    __syncthreads();
}

template <int IDT>
__global__ void __launch_bounds__(1024) mx_align_scatter(const void* __restrict__ topk_ids, long long numel,
                                                        int E, int bs, long long seg, int nrows, int rpb,
                                                        int* __restrict__ counts,
                                                        const int* __restrict__ expert_map, int has_map,
                                                        long long S, long long nblocks, int nbits,
                                                        int* __restrict__ sorted_ids, int* __restrict__ expert_ids,
                                                        int* __restrict__ num_post_padded,
                                                        unsigned int* __restrict__ barrier, int* __restrict__ bad) {
    extern __shared__ int smem[];
    const int W = blockDim.x >> 5;
    int* tot = smem;                   // [E] ids of expert e in all blocks
    int* pre = tot + E;                // [E] ids of expert e in blocks before this one
    int* off = pre + E;                // [E] first position of expert e
    int* cur = off + E;                // [W][E] per-warp counts, then write cursors
    __shared__ int s_total;
    const int lane = threadIdx.x & 31;
    const int w = threadIdx.x >> 5;
    const unsigned int lt_mask = (1u << lane) - 1u;

    if (barrier != nullptr) {
        // fused: mx_align_count's work (into off[] as scratch), then wait for every block's counts
        mxk_block_histogram<IDT>(topk_ids, numel, E, seg, off, counts, bad);
        __threadfence();
        mxk_grid_barrier(barrier);
    }

    for (int i = threadIdx.x; i < (2 + W) * E; i += blockDim.x) (i < 2 * E ? smem[i] : cur[i - 2 * E]) = 0;
    __syncthreads();
    // the whole counts matrix (nrows rows, rpb of them per block): column sums, thread c sums column
    // c % E over rows c / E, + G, + 2G, ... (G = groups of E threads), 4 independent loads at a time,
    // then one shared atomic per (thread, column) for the total and for the rows before this block
    {
        const int G = blockDim.x >= E ? blockDim.x / E : 1;
        const int row0 = (int)blockIdx.x * rpb;
        for (int c = threadIdx.x; c < G * E; c += blockDim.x) {
            const int e = c % E;
            int all = 0, before = 0;
            for (int r0 = c / E; r0 < nrows; r0 += 4 * G) {
                int cv[4];
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const int r = r0 + u * G;
                    cv[u] = (r < nrows) ? ((volatile const int*)counts)[(long long)r * E + e] : 0;  // (fused: other blocks' writes)
                }
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    all += cv[u];
                    if (r0 + u * G < row0) before += cv[u];
                }
            }
            if (all) atomicAdd(&tot[e], all);
            if (before) atomicAdd(&pre[e], before);
        }
    }
    // this block's segment, split over its warps in contiguous multiples of 32
    const long long begin = (long long)blockIdx.x * seg;
    const long long end = begin + seg < numel ? begin + seg : numel;
    const long long wseg = ((seg + W - 1) / W + 31) / 32 * 32;
    const long long wbegin = begin + (long long)w * wseg;
    const long long wend = wbegin + wseg < end ? wbegin + wseg : end;
    for (long long f0 = wbegin + lane; f0 < wend; f0 += 32 * MXK_A_UNROLL) {
        int ev[MXK_A_UNROLL];
#pragma unroll
        for (int u = 0; u < MXK_A_UNROLL; u++) {
            const long long f = f0 + 32 * u;
            ev[u] = (f < wend) ? mxk_load_id<IDT>(topk_ids, f) : -1;
        }
#pragma unroll
        for (int u = 0; u < MXK_A_UNROLL; u++)
            if (ev[u] >= 0 && ev[u] < E) atomicAdd(&cur[w * E + ev[u]], 1);
    }
    __syncthreads();
    if (w == 0) {                                        // exclusive scan of padded totals
        const int sum = mxk_padded_offsets_warp(tot, off, E, bs, lane);
        if (lane == 0) s_total = sum;
    }
    __syncthreads();
    const int total = s_total;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {  // per-warp cursors
        int run = off[e] + pre[e];
        for (int v = 0; v < W; v++) {
            const int c = cur[v * E + e];
            cur[v * E + e] = run;
            run += c;
        }
    }
    // sentinels, expert_ids and the total, spread over the whole grid (every block knows off/tot)
    {
        const int sentinel = (int)numel;
        const long long gtid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        const long long gstride = (long long)gridDim.x * blockDim.x;
        for (long long i = gtid; i < (long long)E * bs; i += gstride) {     // padding: (expert, slot)
            const int e = (int)(i / bs), j = (int)(i % bs);
            const int n = tot[e];
            const int padded = (n + bs - 1) / bs * bs;
            if (j < padded - n) sorted_ids[off[e] + n + j] = sentinel;
        }
        for (long long p = total + gtid; p < S; p += gstride) sorted_ids[p] = sentinel;   // tail
        const int unused = has_map ? expert_map[0] : 0;
        for (long long blk = gtid; blk < nblocks; blk += gstride) {          // expert of each block
            const long long pos = blk * bs;
            int value = unused;
            if (pos < total) {
                int lo = 0, hi = E - 1;                  // last expert with off[e] <= pos (and tot > 0)
                while (lo < hi) {
                    const int mid = (lo + hi + 1) >> 1;
                    if (off[mid] <= pos) lo = mid; else hi = mid - 1;
                }
                while (lo > 0 && tot[lo] == 0) lo--;     // empty experts share their successor's off
                value = has_map ? expert_map[lo] : lo;
            }
            expert_ids[blk] = value;
        }
        if (gtid == 0) num_post_padded[0] = total;
    }
    __syncthreads();
    for (long long base0 = wbegin; base0 < wend; base0 += 32 * MXK_A_UNROLL) {
        int ev[MXK_A_UNROLL];
#pragma unroll
        for (int u = 0; u < MXK_A_UNROLL; u++) {
            const long long f = base0 + 32 * u + lane;
            ev[u] = (f < wend) ? mxk_load_id<IDT>(topk_ids, f) : -1;
        }
#pragma unroll
        for (int u = 0; u < MXK_A_UNROLL; u++) {
            if (base0 + 32 * u >= wend) break;              // warp-uniform: no empty chunks
            const long long f = base0 + 32 * u + lane;
            const int e = (ev[u] < E) ? ev[u] : -1;
            const unsigned int peers = mxk_ballot_match(e, nbits);
            const int leader = peers ? __ffs(peers) - 1 : lane;
            int cursor = 0;
            if (e >= 0 && lane == leader) cursor = cur[w * E + e];
            cursor = __shfl_sync(0xFFFFFFFFu, cursor, leader);
            if (e >= 0) {
                sorted_ids[cursor + __popc(peers & lt_mask)] = (int)f;
                if (lane == leader) cur[w * E + e] = cursor + __popc(peers);
            }
            __syncwarp();
        }
    }
}

template __global__ void mx_align_count<0>(const void*, long long, int, long long, int*, int*);
template __global__ void mx_align_count<1>(const void*, long long, int, long long, int*, int*);
template __global__ void mx_align_scatter<0>(const void*, long long, int, int, long long, int, int, int*, const int*, int, long long, long long, int, int*, int*, int*, unsigned int*, int*);
template __global__ void mx_align_scatter<1>(const void*, long long, int, int, long long, int, int, int*, const int*, int, long long, long long, int, int*, int*, int*, unsigned int*, int*);
