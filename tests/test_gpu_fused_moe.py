"""cupy_kernels.fused_moe against the spec (mxfp4ref.moe.forward / error_bound).

CPU tests (always run): the kernel weight layout decodes back to the spec's dequantized rows.
GPU tests (@pytest.mark.gpu): the register dequantizer exhaustively (16 codes x 256 scale bytes,
bit-exact), the layer within mxfp4ref.moe.error_bound for the tiny config and gpt-oss shapes (for large
token counts the reference is computed on a random subset of tokens, exactly: tokens are independent),
both gate/up layouts, padded weights, adversarial routing, expert maps with -1, router weight on input,
poisoned buffers, bit-identical repeats, the naive kernels, CUDA-graph replay.
"""
from __future__ import annotations

import types

import ml_dtypes
import numpy as np
import pytest

from cupy_kernels import moe as fm
from mxfp4ref.moe.error_bound import check_within_bound, error_bound
from mxfp4ref.moe.padding import pad_hidden_states, pad_weights
from mxfp4ref.moe.random_weights import random_moe_weights
from mxfp4ref.moe.routing import make_expert_map, route
from mxfp4ref.moe.weights import MoEWeights

BF16 = ml_dtypes.bfloat16
E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float32)


# --------------------------------------------------------------------------------------------------
# CPU: the kernel layout (numpy path of the same conversion code)
# --------------------------------------------------------------------------------------------------
def rotl32(x, n):
    x = np.asarray(x, np.uint32)
    return x if n == 0 else (x << np.uint32(n)) | (x >> np.uint32(32 - n))


def pair_bf16x2(words, p):
    """The kernels' decode of code pair p (moe_fused.cu::fp4pair), in numpy: bf16x2 bits of value * 2**-126."""
    a, b = fm.PAIR_ROTATIONS[p]
    return (rotl32(words, a) & np.uint32(0x80008000)) | (rotl32(words, b) & np.uint32(0x01C001C0))


def test_choose_config_sends_direct_only_where_it_is_tested():
    assert fm.choose_config(4, 128) == "direct"                      # 120b, 1 token
    assert fm.choose_config(8, 128) == "direct"                      # 120b, 2 tokens
    assert fm.choose_config(8, 32) == "direct"                       # 20b, 2 tokens (BENCHMARKS v19)
    assert fm.choose_config(8, 16) == "decode"                       # fewer experts per slot: not measured
    assert fm.choose_config(4, 128, k_padded=fm.DIRECT_MAX_K) == "direct"
    assert fm.choose_config(4, 128, k_padded=fm.DIRECT_MAX_K + 128) == "decode"
    assert fm.choose_config(12, 128) == "stream16"
    assert fm.choose_config(2048, 128, hopper=True) == "stream16"    # 120b, 512 tokens: 16 per expert
    assert fm.choose_config(4096, 128, hopper=True) == "hopper128w"  # 120b, 1024 tokens: 32 per expert
    assert fm.choose_config(8192, 128, hopper=True) == "hopper128w"  # 120b, 2048 tokens: 64 per expert
    assert fm.choose_config(1024, 32, hopper=True) == "hopper128w"   # 20b, 256 tokens: 32 per expert
    assert fm.choose_config(16384, 128, hopper=True) == "hopper192w"  # 120b, 4096 tokens: 128 per expert
    assert fm.choose_config(4096, 32, hopper=True) == "hopper192w"    # 20b, 1024 tokens: 128 per expert
    assert fm.choose_config(16384, 32, hopper=True) == "hopper192"    # 20b, 4096 tokens: 512 per expert


def test_tile_width_kernels_match_their_cuda_definitions():
    """moe.TILE_WIDTHS against moe_fused.cu's DEFINE_GEMM_HOPPER_WIDTHS lines (warpgroups, narrowest and widest
    width), and what moe.py derives from it: CONFIGS' rows, tokens and threads, and the widths argument (the
    values the GPU tests of this kernel ran with)."""
    import re
    from cupy_kernels._loader import kernel_source
    defined = {m[0]: tuple(int(v) for v in m[1:]) for m in
               re.findall(r"^DEFINE_GEMM_HOPPER_WIDTHS\((\w+), (\d+), (\d+), (\d+)\)", kernel_source("moe_fused.cu"),
                          re.M)}
    assert defined == fm.TILE_WIDTHS
    for name, (nwg, _, widest) in defined.items():
        assert fm.CONFIGS[name][:3] == (64 * nwg, widest, 128 * nwg)
    assert fm.KERNEL_WIDTHS == {"hopper192w": 0b110000, "hopper128w": 0b001111}


def test_as_one_launch_runs_the_entries_in_order_each_time():
    """fused_moe's three-kernel sort is one launch entry (moe_sort_scan works in place, so it reruns
    correctly only after moe_sort_count): the grouped thunk runs its entries in order, every time."""
    ran = []
    entries = [(name, lambda name=name: ran.append(name)) for name in ("count", "scan", "scatter")]
    name, run = fm.as_one_launch("moe_sort (count, scan, scatter)", entries)
    run()
    run()
    assert name == "moe_sort (count, scan, scatter)"
    assert ran == ["count", "scan", "scatter"] * 2


def test_lean_routing_applies_only_where_the_one_warp_kernel_runs():
    """lean_applies: softmax with renormalization in selection order, top_k <= 8, <= 256 tokens."""
    from cupy_kernels import routing
    assert routing.lean_applies(1, 4, 0, True, False) and routing.lean_applies(256, 8, 0, True, False)
    for args in [(257, 4, 0, True, False), (1, 9, 0, True, False), (1, 4, 1, True, False),
                 (1, 4, 2, True, False), (1, 4, 0, False, False), (1, 4, 0, True, True)]:
        assert not routing.lean_applies(*args), args


def test_routing_launch_sends_lean_only_where_it_applies(monkeypatch):
    """routing.launch(lean=True) launches mx_route_lean (one of the module's name expressions) with its six
    arguments where lean_applies, and mx_route with its ten everywhere else (a recorder in place of the
    kernel: no GPU needed)."""
    from cupy_kernels import routing
    calls = []
    monkeypatch.setattr(routing, "get_kernel", lambda f, name, names: (
        lambda grid, block, args: calls.append((name, name in names, grid, block, args))))
    w, i, bad = object(), object(), object()
    for T, E, k, lean, naive, want in [(1, 128, 4, True, False, "mx_route_lean<2, 4, 8>"),
                                       (256, 32, 8, True, True, "mx_route_lean<2, 1, 8>"),
                                       (1, 128, 4, False, False, "mx_route<2, 4>"),
                                       (300, 128, 4, True, True, "mx_route<2, 4>"),
                                       (1, 128, 9, True, False, "mx_route<2, 4>")]:
        x = types.SimpleNamespace(shape=(T, E))
        routing.launch(x, "bfloat16", k, 0, True, False, w, i, bad, naive=naive, lean=lean)
        name, known, grid, block, args = calls.pop()
        assert (name, known, block, grid) == (want, True, (256,), (-(-T // 8),)), (T, E, k, lean)
        assert args[0] is x and [int(a) for a in args[1:4]] == [T, E, k]
        if name.startswith("mx_route_lean"):
            assert len(args) == 6 and args[4:] == (w, i)
        else:
            assert len(args) == 10 and [int(a) for a in args[4:7]] == [0, 1, 0] and args[7:] == (w, i, bad)


def test_moe_graph_is_freed_when_dropped(monkeypatch):
    """A MoEGraph holds no reference to itself: dropping the last reference frees it (and its CUDA graph)
    at once, not when the cyclic collector next runs, which may be while other code captures a graph (a
    graph destroyed during a capture invalidates it; BENCHMARKS v23). Host only: cupy, the workspace and the
    forward are stand-ins that record the calls."""
    import gc
    import weakref

    class Stream:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            pass

        def begin_capture(self):
            pass

        def end_capture(self):
            return "graph"

    fake_cp = types.SimpleNamespace(zeros=np.zeros, uint16=np.uint16, float32=np.float32, int32=np.int32,
                                    cuda=types.SimpleNamespace(Stream=lambda non_blocking: Stream()))
    calls = []
    monkeypatch.setattr(fm, "cp", fake_cp)
    monkeypatch.setattr(fm, "_require_cupy", lambda: None)
    monkeypatch.setattr(fm, "Workspace", lambda *args: "workspace")
    monkeypatch.setattr(fm, "moe_forward", lambda *a, **kw: calls.append(("routed", kw["config"], kw["pdl"])) or "r")
    monkeypatch.setattr(fm, "fused_moe", lambda *a, **kw: calls.append(("ids", kw["config"], kw["pdl"])) or "i")
    dw = types.SimpleNamespace(hidden_size=8, num_experts=4)
    gc.disable()
    try:
        for routing in (True, False):
            g = fm.MoEGraph(dw, 2, 2, routing=routing, config="mid", pdl=True)
            assert (g.graph, g.out) == ("graph", "r" if routing else "i")
            ref = weakref.ref(g)
            del g
            assert ref() is None
    finally:
        gc.enable()
    assert calls == [("routed", "mid", True)] * 2 + [("ids", "mid", True)] * 2     # warm-up, then the capture


def test_direct_shared_memory_fits_the_configs_blocks_per_sm():
    """direct_smem is the kernels' layout (row, superblock slots, split-K sums, 256 bytes of zeros); at the
    gpt-oss K (2880, and the largest K direct accepts) direct4's 4 blocks and direct's 3 must fit an SM's
    228 KB with the 1 KB the hardware reserves per block, or the launch bounds silently lose a block per SM."""
    assert fm.direct_smem(2880 // 32) == 2880 * 2 + 23 * 2176 + 8 * 128 + 256 == 57088
    assert fm.direct_smem(2) == 64 * 2 + 2176 + 1024 + 256           # K = 64: one superblock
    sm_bytes, reserved = 228 * 1024, 1024
    assert 4 * (fm.direct_smem(2880 // 32) + reserved) <= sm_bytes
    assert 3 * (fm.direct_smem(fm.DIRECT_MAX_K // 32) + reserved) <= sm_bytes


def test_kernel_config_names_every_gemm_kernel_and_only_those():
    """kernel_config maps moe_gemm{1,2}_<cfg> back to its configuration (the direct kernels get the full
    shared-memory carveout through it) and nothing else to any configuration."""
    for cfg in fm.CONFIGS:
        assert fm.kernel_config(f"moe_gemm1_{cfg}") == cfg and fm.kernel_config(f"moe_gemm2_{cfg}") == cfg
    assert {c for c in fm.CONFIGS if fm.kernel_config(f"moe_gemm1_{c}") in fm.DIRECT_CONFIGS} == {"direct", "direct4"}
    for name in ("moe_combine", "moe_sort", "moe_gemm1_naive", "moe_gemm1_direct_x", "moe_permute_x", "direct"):
        assert fm.kernel_config(name) is None, name


def test_code_bit_placement_is_a_permutation_and_pairs_decode():
    pos = fm.code_bit_positions()
    assert sorted(pos.ravel().tolist()) == list(range(32))
    # every code in every slot: word with code c in nibble j (others random) -> pair decode gives c
    rng = np.random.default_rng(7)
    for j in range(8):
        for c in range(16):
            nib = rng.integers(0, 2**32, 64, dtype=np.uint64).astype(np.uint32)
            nib = (nib & ~np.uint32(0xF << (4 * j))) | np.uint32(c << (4 * j))
            bits = (pair_bf16x2(fm._bit_permute(nib), j // 2) >> np.uint32(16 * (j % 2))) & np.uint32(0xFFFF)
            assert (bits == np.uint32(((c >> 3) << 15) | ((c & 7) << 6))).all(), (j, c)


def decode_kernel_layout(words, scales, K):
    """Inverse of fm.kernel_layout for checking: (E, R/16, Kp/128, 16, 16) words + (E, Kp/128, R) scales
    -> (E, R, K)."""
    E, G, nsb = words.shape[:3]
    R, kp = 16 * G, 128 * nsb
    scales = np.ascontiguousarray(scales.transpose(0, 2, 1)).view(np.uint8)       # (E, R, Kp/32)
    w = words.reshape(E, G, nsb, 16, 4, 4).transpose(0, 1, 3, 2, 4, 5).reshape(E, R, nsb, 4, 4)  # (sb, t, b)
    codes = np.zeros((E, R, kp // 128, 4, 4, 8), np.uint8)         # (sb, t, b, j)
    for p in range(4):
        for half in (0, 1):
            bits = (pair_bf16x2(w, p) >> np.uint32(16 * half)) & np.uint32(0xFFFF)   # s at 15, e e m at 8..6
            codes[..., 2 * p + half] = ((bits >> np.uint32(12)) & np.uint32(8)) | ((bits >> np.uint32(6)) & np.uint32(7))
    codes = codes.transpose(0, 1, 2, 4, 3, 5).reshape(E, R, kp)   # k = 128 sb + 32 b + 8 t + j
    scale = np.ldexp(1.0, scales.astype(np.int64) - 127)
    vals = E2M1[codes] * np.repeat(scale, 32, axis=-1)
    return vals[..., :K]


@pytest.mark.parametrize("gate_up", ["interleaved", "concatenated"])
def test_kernel_layout_decodes_to_spec_rows(gate_up):
    w = random_moe_weights(2, 160, 96, seed=3, gate_up=gate_up)    # H=160 (pads to 256), I=96 (to 128)
    E, H, I = 2, 160, 96
    Hp, Ip = 256, 128
    src = fm.w13_row_sources(I, gate_up, 2 * Ip)
    words, scales = fm.kernel_layout(w.w13_weight, w.w13_weight_scale, src, Hp)
    assert words.dtype == np.uint32 and words.shape == (E, 2 * Ip // 16, Hp // 128, 16, 16)
    got = decode_kernel_layout(words, scales, H)
    gate_idx, up_idx = w.gate_up_indices()
    for e in range(E):
        ref = w.w13_dequantized(e)
        for r in range(2 * Ip):
            ch, is_up = (r // 16) * 8 + r % 8, (r % 16) >= 8
            want = np.zeros(H, np.float32) if ch >= I else ref[(up_idx if is_up else gate_idx)[ch]]
            np.testing.assert_array_equal(got[e, r], want)
    # the padding past K decodes to exact zeros
    full = decode_kernel_layout(words, scales, Hp)
    assert not full[..., H:].any()


def test_w2_layout_rows_and_tail():
    w = random_moe_weights(1, 96, 160, seed=4)
    src = np.where(np.arange(256) < 96, np.arange(256), -1)
    words, scales = fm.kernel_layout(w.w2_weight, w.w2_weight_scale, src, 256)
    got = decode_kernel_layout(words, scales, 160)
    np.testing.assert_array_equal(got[0, :96], w.w2_dequantized(0))
    assert not got[0, 96:].any()


def test_row_sources_reject_unknown_layout():
    with pytest.raises(ValueError, match="gate_up"):
        fm.w13_row_sources(32, "blocked", 64)


# --------------------------------------------------------------------------------------------------
# GPU helpers
# --------------------------------------------------------------------------------------------------
def _cp():
    import cupy
    return cupy


def bf16_bits_to_np(a):
    return _cp().asnumpy(a).view(BF16)


def random_x(rng, T, H):
    return rng.standard_normal((T, H)).astype(BF16)


def random_routing(rng, T, E, k):
    logits = rng.standard_normal((T, E)).astype(np.float32)
    return route(logits, k)


def assert_within_bound(out_bits, x, w, tw, ids, **kw):
    bound, exact = error_bound(x, w, tw, ids, return_exact=True, **kw)
    out = bf16_bits_to_np(out_bits)
    chk = check_within_bound(out, exact, bound)
    assert chk.ok, (f"{chk.num_violations} elements outside the error bound; worst ratio {chk.worst_ratio:.3g} "
                    f"at {chk.worst_indices[:3]}")
    return out, exact


def random_codes_weights(E, H, I, *, seed, gate_up="interleaved", scale_lo=118, scale_hi=123, bias=True):
    """A random layer straight from codes (fast at gpt-oss sizes): uniform codes, scale bytes in a band."""
    rng = np.random.default_rng(seed)
    u8 = lambda shape: rng.integers(0, 256, shape, dtype=np.uint8)
    sc = lambda shape: rng.integers(scale_lo, scale_hi + 1, shape, dtype=np.uint8)
    b = (lambda shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)) if bias else (lambda shape: None)
    return MoEWeights(u8((E, 2 * I, H // 2)), sc((E, 2 * I, H // 32)), u8((E, H, I // 2)), sc((E, H, I // 32)),
                      b((E, 2 * I)), b((E, H)), gate_up)


def sub_layer(w: MoEWeights, experts):
    """The layer restricted to ``experts`` (so that a reference touches only those)."""
    e = np.asarray(experts)
    take = lambda a: None if a is None else np.ascontiguousarray(a[e])
    return MoEWeights(take(w.w13_weight), take(w.w13_weight_scale), take(w.w2_weight), take(w.w2_weight_scale),
                      take(w.w13_bias), take(w.w2_bias), w.gate_up)


# --------------------------------------------------------------------------------------------------
# GPU: dequantizer, exhaustive and bit-exact
# --------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("general", [True, False])
def test_dequant_probe_all_codes_all_scales(general):
    # 256 scale bytes x 2 words covering the 16 codes (codes 0..7 then 8..15 in logical order); the
    # one-multiply path (general=False) is only taken for scale bytes <= 128, so only those are checked
    logical = np.array([list(range(8)), list(range(8, 16))], np.uint32)      # (2, 8)
    words = np.zeros(2, np.uint32)
    for j in range(8):
        words |= logical[:, j] << np.uint32(4 * j)                    # code j in nibble j
    words = fm._bit_permute(words)                                   # -> the kernel bit placement
    W = np.tile(words, 256)
    S = np.repeat(np.arange(256, dtype=np.uint32), 2)
    got = _cp().asnumpy(fm.dequant_probe(W, S, general=general)).reshape(256, 2, 8)
    codes = logical.astype(np.uint8)
    for s in range(256 if general else 129):
        scale = np.float32(np.nan) if s == 255 else np.float32(np.ldexp(1.0, s - 127))
        with np.errstate(over="ignore", invalid="ignore"):
            want = (E2M1[codes] * scale).astype(BF16).view(np.uint16)
        g = got[s]
        if s == 255:
            assert np.isnan(g.view(BF16).astype(np.float32)).all()
        else:
            np.testing.assert_array_equal(g, want, err_msg=f"scale byte {s}")


@pytest.mark.gpu
def test_large_scale_bytes_take_the_exact_path():
    """Scale bytes of 128 and above (a warp then takes the general two-multiply dequantization) and 0, 1."""
    E, H, I, k = 2, 64, 64, 2
    w = random_moe_weights(E, H, I, seed=41)
    s13 = w.w13_weight_scale.copy()
    s13[0, :5, 0] = [128, 129, 130, 0, 1]                # a warp sees bytes >= 128: two-multiply path
    w = MoEWeights(w.w13_weight, s13, w.w2_weight, w.w2_weight_scale, w.w13_bias, w.w2_bias, w.gate_up)
    rng = np.random.default_rng(42)
    x = random_x(rng, 16, H)
    tw, ids = random_routing(rng, 16, E, k)
    for cfg in ("stream", "stream16", "decode", "direct", "direct4", "tiled32"):
        out = fm.fused_moe(x, fm.to_device(w), tw, ids, config=cfg)
        assert_within_bound(out, x, w, tw, ids)


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["at 2**16", "huge and tiny", "x * 2**-60", "subnormal x", "every 7th tiny",
                                  "scale bytes 0, 1, 127"])
@pytest.mark.parametrize("T", [1, 2])
def test_direct_scaled_domain_edges(case, T):
    """The direct kernels' scaled domain (codes as value * 2**-126, the row * 2**112, each 32-block's sum
    times 2**(s - 113)) at its edges: row values at and beyond 2**16 (the warp takes the exact path),
    tiny and subnormal rows (products near the fp32 underflow), and scale bytes 0 and 1."""
    E, H, I, k = 16, 2880, 640, 4
    w = random_moe_weights(E, H, I, seed=5)
    rng = np.random.default_rng(7)
    x = random_x(rng, T, H).astype(np.float32)
    if case == "at 2**16":
        x[:, 5] = 65536.0
        x[:, 2000] = 65280.0                             # the largest bf16 below 2**16: scaled
    elif case == "huge and tiny":
        x[:, 100] = 3e30
        x[:, 7] = -1e-30
    elif case == "x * 2**-60":
        x *= 2.0 ** -60
    elif case == "subnormal x":
        x *= 2.0 ** -128
    elif case == "every 7th tiny":
        x[:, ::7] *= 2.0 ** -100
    else:
        s13 = w.w13_weight_scale.copy()
        s13[:, :, 3] = 0
        s13[:, ::3, 5] = 1
        s13[:, ::5, 8] = 127
        w = MoEWeights(w.w13_weight, s13, w.w2_weight, w.w2_weight_scale, w.w13_bias, w.w2_bias, w.gate_up)
    x = x.astype(BF16)
    tw, ids = random_routing(rng, T, E, k)
    out = fm.fused_moe(x, fm.to_device(w), tw, ids, config="direct")
    assert_within_bound(out, x, w, tw, ids)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 2])
def test_direct_scaled_domain_takes_the_half_code_as_a_subnormal(T):
    """Every weight code +-0.5: the scaled domain hands the mma bf16 subnormals (2**-127) only. A tensor
    core that flushed them would give the biases alone, far outside the bound (checked with and without
    biases)."""
    E, H, I, k = 8, 2880, 640, 4
    rng = np.random.default_rng(12)
    half = lambda shape: (rng.choice(np.array([0x11, 0x19, 0x91, 0x99], np.uint8), shape))   # codes 1 and 9
    sc = lambda shape: rng.integers(118, 124, shape, dtype=np.uint8)
    for bias in (True, False):
        b = (lambda shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)) if bias else (lambda shape: None)
        w = MoEWeights(half((E, 2 * I, H // 2)), sc((E, 2 * I, H // 32)), half((E, H, I // 2)), sc((E, H, I // 32)),
                       b((E, 2 * I)), b((E, H)), "interleaved")
        x = random_x(rng, T, H)
        tw, ids = random_routing(rng, T, E, k)
        out, exact = assert_within_bound(fm.fused_moe(x, fm.to_device(w), tw, ids, config="direct"), x, w, tw, ids)
        assert np.abs(exact).max() > 1e-3 and np.abs(out.astype(np.float64)).max() > 1e-3


# --------------------------------------------------------------------------------------------------
# GPU: the layer against the spec's error bound
# --------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("gate_up", ["interleaved", "concatenated"])
@pytest.mark.parametrize("T", [1, 2, 3, 7, 16, 64, 333])
@pytest.mark.parametrize("config", sorted(fm.CONFIGS))
def test_tiny_config_within_bound(gate_up, T, config):
    E, H, I, k = 5, 96, 160, 2
    w = random_moe_weights(E, H, I, seed=11, gate_up=gate_up)
    dw = fm.to_device(w)
    rng = np.random.default_rng(T)
    x = random_x(rng, T, H)
    tw, ids = random_routing(rng, T, E, k)
    out = fm.fused_moe(x, dw, tw, ids, config=config)
    assert out.shape == (T, H) and out.dtype == np.uint16
    assert_within_bound(out, x, w, tw, ids)


@pytest.mark.gpu
@pytest.mark.parametrize("activation", ["swigluoai", "silu", "gelu"])
@pytest.mark.parametrize("on_input", [False, True])
@pytest.mark.parametrize("config", [None, "direct", "direct4", "hopper", "hopper64", "hopper192", "hopper192w",
                                    "hopper128w"])
def test_activations_and_weight_on_input(activation, on_input, config):
    E, H, I = 4, 64, 96
    w = random_moe_weights(E, H, I, seed=5, gate_up="concatenated" if activation != "swigluoai" else "interleaved")
    dw = fm.to_device(w, keep_raw=True)
    rng = np.random.default_rng(2)
    T, k = 37, 1 if on_input else 3
    x = random_x(rng, T, H)
    tw, ids = random_routing(rng, T, E, k)
    kw = dict(activation=activation, apply_router_weight_on_input=on_input)
    if config in fm.HOPPER_CONFIGS:
        _hopper()
    out = fm.fused_moe(x, dw, tw, ids, config=config, **kw)
    assert_within_bound(out, x, w, tw, ids, **kw)
    if config is None:
        naive = fm.fused_moe(x, dw, tw, ids, impl="naive", **kw)
        assert_within_bound(naive, x, w, tw, ids, **kw)


@pytest.mark.gpu
@pytest.mark.parametrize("config", [None, "direct", "direct4", "hopper", "hopper64", "hopper192", "hopper192w",
                                    "hopper128w"])
def test_adversarial_routing_and_expert_map(config):
    if config in fm.HOPPER_CONFIGS:
        _hopper()
    E, H, I, k = 8, 96, 64, 4
    w = random_moe_weights(E, H, I, seed=8)
    dw = fm.to_device(w)
    rng = np.random.default_rng(9)
    T = 200
    x = random_x(rng, T, H)
    tw = rng.random((T, k)).astype(np.float32)
    # every slot on expert 3 (k copies of one expert per token), experts 0..2, 4..7 empty
    ids = np.full((T, k), 3, np.int32)
    assert_within_bound(fm.fused_moe(x, dw, tw, ids, config=config), x, w, tw, ids)
    # all distinct, each token on 4 different experts; dropped slots (-1) mixed in
    ids = np.stack([rng.permutation(E)[:k] for _ in range(T)]).astype(np.int32)
    ids[::7, 1] = -1
    assert_within_bound(fm.fused_moe(x, dw, tw, ids, config=config), x, w, tw, ids)
    # expert parallel: 16 global experts, this rank owns 8 (round robin), the rest -1
    G = 16
    emap = make_expert_map(G, 2, 1, "round_robin")
    gids = rng.integers(0, G, (T, k)).astype(np.int32)
    out = fm.fused_moe(x, dw, tw, gids, expert_map=emap, global_num_experts=G, config=config)
    assert_within_bound(out, x, w, tw, gids, expert_map=emap, global_num_experts=G)
    # a token with no local expert gives exact zeros
    gids[0] = [0, 2, 4, 6]                                              # all on rank 0
    out = bf16_bits_to_np(fm.fused_moe(x, dw, tw, gids, expert_map=emap, global_num_experts=G, config=config))
    assert not out[0].astype(np.float32).any()


@pytest.mark.gpu
@pytest.mark.parametrize("config,T", [(None, 50), ("hopper", 333), ("hopper64", 333), ("hopper192", 333),
                                      ("hopper192w", 333), ("hopper128w", 333)])
def test_padded_weights_match_unpadded_reference(config, T):
    if config is not None:                  # T = 333: full 128-token tiles and small ones
        _hopper()
    E, H, I, k = 4, 96, 160, 2
    w = random_moe_weights(E, H, I, seed=12)
    wp = pad_weights(w, 256, 256)                                       # vLLM-style zero padding
    rng = np.random.default_rng(13)
    x = random_x(rng, T, H)
    tw, ids = random_routing(rng, T, E, k)
    out = _cp().asnumpy(fm.fused_moe(pad_hidden_states(x, 256), fm.to_device(wp), tw, ids,
                                     config=config)).view(BF16)
    bound, exact = error_bound(x, w, tw, ids, return_exact=True)
    chk = check_within_bound(out[:, :H], exact, bound)
    assert chk.ok, f"{chk.num_violations} outside the bound, worst ratio {chk.worst_ratio:.3g}"
    assert not out[:, H:].astype(np.float32).any()                     # padded columns exactly 0


@pytest.mark.gpu
def test_poisoned_buffers_repeat_bit_identical_and_graph():
    cp = _cp()
    E, H, I, k = 6, 128, 96, 2
    w = random_moe_weights(E, H, I, seed=21)
    dw = fm.to_device(w)
    rng = np.random.default_rng(22)
    T = 96
    x = random_x(rng, T, H)
    tw, ids = random_routing(rng, T, E, k)
    ws = fm.Workspace(dw, T, k, fm.CONFIGS["mid"][1])
    for buf in (ws.inter, ws.y, ws.out):
        buf.fill(0x7FC1)                                                # NaN bits everywhere
    out1 = cp.asnumpy(fm.fused_moe(x, dw, tw, ids, config="mid", workspace=ws))
    assert np.isfinite(out1.view(BF16).astype(np.float32)).all()        # every element written
    assert_within_bound(cp.asarray(out1), x, w, tw, ids)
    for _ in range(3):
        ws.out.fill(0x7FC1)
        again = cp.asnumpy(fm.fused_moe(x, dw, tw, ids, config="mid", workspace=ws))
        np.testing.assert_array_equal(again, out1)                     # same bits every run
    g = fm.MoEGraph(dw, T, k, config="mid")
    g.x[...] = cp.asarray(x.view(np.uint16))
    g.topk_weights[...] = cp.asarray(tw)
    g.topk_ids[...] = cp.asarray(ids)
    g.out.fill(0x7FC1)
    np.testing.assert_array_equal(cp.asnumpy(g.replay()), out1)          # replay on the current stream
    g.out.fill(0x7FC1)
    cp.cuda.get_current_stream().synchronize()
    g.replay(g.stream)
    g.stream.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(g.out), out1)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 2, 3, 7, 16, 64, 333, 1024, 4096])
def test_gpt_oss_20b_shapes_within_bound(T):
    _gpt_oss_case("gpt-oss-20b", 32, T, seed=100 + T)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 2, 3, 7, 16, 64, 333, 1024, 4096])
def test_gpt_oss_120b_shapes_within_bound(T):
    _gpt_oss_case("gpt-oss-120b", 128, T, seed=200 + T, gate_up="concatenated" if T == 7 else "interleaved")


_LAYERS = {}


def _gpt_oss_case(name, E, T, *, seed, gate_up="interleaved", n_ref=3, config=None):
    H = I = 2880
    k = 4
    key = (name, gate_up)
    if key not in _LAYERS:
        _LAYERS.clear()
        w = random_codes_weights(E, H, I, seed=E, gate_up=gate_up)
        _LAYERS[key] = (w, fm.to_device(w))
    w, dw = _LAYERS[key]
    rng = np.random.default_rng(seed)
    x = random_x(rng, T, H)
    tw, ids = random_routing(rng, T, E, k)
    out = _cp().asnumpy(fm.fused_moe(x, dw, tw, ids, config=config)).view(BF16)
    assert np.isfinite(out.astype(np.float32)).all()
    rows = np.sort(rng.choice(T, size=min(T, n_ref), replace=False))    # reference on a token subset
    touched = np.unique(ids[rows])
    remap = np.full(E, -1, np.int64)
    remap[touched] = np.arange(touched.size)
    sub = sub_layer(w, touched)
    bound, exact = error_bound(x[rows], sub, tw[rows], remap[ids[rows]].astype(np.int32), return_exact=True)
    chk = check_within_bound(out[rows], exact, bound)
    assert chk.ok, f"{chk.num_violations} outside the bound, worst ratio {chk.worst_ratio:.3g}"


@pytest.mark.gpu
def test_moe_forward_routes_on_gpu_and_replays_in_a_graph():
    cp = _cp()
    E, H, I, k = 8, 96, 64, 2
    w = random_moe_weights(E, H, I, seed=31)
    dw = fm.to_device(w)
    rng = np.random.default_rng(32)
    T = 40
    x = random_x(rng, T, H)
    logits = rng.standard_normal((T, E)).astype(np.float32)
    out = cp.asnumpy(fm.moe_forward(x, cp.asarray(logits), dw, k))
    tw, ids = route(logits, k)                                          # the spec's routing
    assert_within_bound(cp.asarray(out), x, w, tw, ids)
    np.testing.assert_array_equal(out, cp.asnumpy(fm.fused_moe(x, dw, tw, ids)))   # same routing bits
    g = fm.MoEGraph(dw, T, k, routing=True)
    g.x[...] = cp.asarray(x.view(np.uint16))
    g.router_logits[...] = cp.asarray(logits)
    np.testing.assert_array_equal(cp.asnumpy(g.replay()), out)


def _pdl():
    from cupy_kernels._launch import pdl_available
    if not pdl_available():
        pytest.skip("programmatic dependent launch needs compute capability >= 9.0 and cuLaunchKernelEx")
    return _cp()


@pytest.mark.gpu
@pytest.mark.parametrize("config,T", [("direct", 1), ("direct", 2), ("direct", 3), ("direct4", 2), ("decode", 2), ("stream16", 24),
                                      ("tiled32", 64), ("hopper64", 64), ("hopper", 200), ("hopper192", 300),
                                      ("hopper192w", 300)])
def test_pdl_chain_gives_the_plain_launches_bits(config, T):
    """Programmatic dependent launches (each kernel may start before the one before it ends) change no
    bit: fused_moe and moe_forward with and without PDL, then a routed graph replayed with new router
    logits before every replay (a kernel reading routing output before its grid wait would see the
    previous replay's ids), compared with plain launches every time."""
    cp = _pdl()
    if config.startswith("hopper"):
        _hopper()
    E, H, I, k = 32, 256, 192, 4
    w = random_moe_weights(E, H, I, seed=41)
    dw = fm.to_device(w)
    rng = np.random.default_rng(42)
    x = random_x(rng, T, H)
    tw, ids = random_routing(rng, T, E, k)
    plain = cp.asnumpy(fm.fused_moe(x, dw, tw, ids, config=config, pdl=False))
    assert_within_bound(cp.asarray(plain), x, w, tw, ids)
    np.testing.assert_array_equal(cp.asnumpy(fm.fused_moe(x, dw, tw, ids, config=config, pdl=True)), plain)
    g = fm.MoEGraph(dw, T, k, routing=True, config=config, pdl=True)
    g.x[...] = cp.asarray(x.view(np.uint16))
    for rep in range(12):
        logits = rng.standard_normal((T, E)).astype(np.float32)
        if rep % 3 == 2:
            logits[:, 5] += 100.0                                       # every token on expert 5
        g.router_logits[...] = cp.asarray(logits)
        g.out.fill(0x7FC1)
        got = cp.asnumpy(g.replay())
        ref = cp.asnumpy(fm.moe_forward(x, cp.asarray(logits), dw, k, config=config, pdl=False))
        np.testing.assert_array_equal(got, ref, err_msg=f"replay {rep}")


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["direct", "direct4"])
@pytest.mark.parametrize("T", [1, 2, 3])
def test_direct_slot_handoff_gives_the_grid_wait_bits(monkeypatch, T, config):
    """The direct GEMM2 waiting only for its own slot's GEMM1 blocks (per-slot counters, used from
    DIRECT_HANDOFF_MIN_SLOTS slots under PDL; forced here at every slot count) gives the bits of the grid
    wait, with a dropped slot, repeatedly and in a graph replayed with new ids; the counters are zero
    again after every forward (moe_combine resets them)."""
    cp = _pdl()
    E, H, I, k = 32, 256, 192, 4
    w = random_moe_weights(E, H, I, seed=51)
    dw = fm.to_device(w)
    rng = np.random.default_rng(52 + T)
    x = random_x(rng, T, H)

    def grid_wait_ref(tw, ids):
        monkeypatch.setattr(fm, "DIRECT_HANDOFF_MIN_SLOTS", 10**9)
        ref = cp.asnumpy(fm.fused_moe(x, dw, tw, ids, config=config, pdl=True))
        monkeypatch.setattr(fm, "DIRECT_HANDOFF_MIN_SLOTS", 1)
        return ref

    tw, ids = random_routing(rng, T, E, k)
    ids[0, 1] = -1                                                      # a dropped slot: no counts, no wait
    ref = grid_wait_ref(tw, ids)
    assert_within_bound(cp.asarray(ref), x, w, tw, ids)
    ws = fm.Workspace(dw, T, k, fm.CONFIGS[config][1])
    for _ in range(3):
        ws.out.fill(0x7FC1)
        np.testing.assert_array_equal(cp.asnumpy(fm.fused_moe(x, dw, tw, ids, config=config, pdl=True,
                                                              workspace=ws)), ref)
        assert ws.done is not None and not cp.asnumpy(ws.done).any()
    g = fm.MoEGraph(dw, T, k, config=config, pdl=True)
    g.x[...] = cp.asarray(x.view(np.uint16))
    for rep in range(6):
        tw, ids = random_routing(rng, T, E, k)
        if rep % 2:
            ids[:, 0] = 5                                               # every token's first slot on expert 5
        g.topk_weights[...] = cp.asarray(tw)
        g.topk_ids[...] = cp.asarray(ids)
        g.out.fill(0x7FC1)
        np.testing.assert_array_equal(cp.asnumpy(g.replay()), grid_wait_ref(tw, ids), err_msg=f"replay {rep}")
        assert not cp.asnumpy(g.workspace.done).any()


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["direct", "direct4"])
@pytest.mark.parametrize("handoff", [False, True])
def test_direct_all_slots_dropped_in_a_replayed_graph(monkeypatch, config, handoff):
    """Replays alternating between routed tokens and tokens whose every slot is dropped (-1): moe_combine
    must see GEMM1's local_ids of the same replay (the dropped slots' GEMM2 blocks wait for GEMM1 before
    they exit), so an all-dropped replay gives exact zeros, not the previous replay's experts."""
    cp = _pdl()
    monkeypatch.setattr(fm, "DIRECT_HANDOFF_MIN_SLOTS", 1 if handoff else 10**9)
    E, H, I, k, T = 32, 256, 192, 4, 2 if config == "direct4" else 1
    w = random_moe_weights(E, H, I, seed=61)
    dw = fm.to_device(w)
    rng = np.random.default_rng(62)
    x = random_x(rng, T, H)
    g = fm.MoEGraph(dw, T, k, config=config, pdl=True)
    g.x[...] = cp.asarray(x.view(np.uint16))
    for rep in range(8):
        tw, ids = random_routing(rng, T, E, k)
        if rep % 2:
            ids[...] = -1
        g.topk_weights[...] = cp.asarray(tw)
        g.topk_ids[...] = cp.asarray(ids)
        g.out.fill(0x7FC1)
        got = cp.asnumpy(g.replay())
        if rep % 2:
            assert not got.view(BF16).astype(np.float32).any(), f"replay {rep}: all slots dropped, output not 0"
        else:
            np.testing.assert_array_equal(got, cp.asnumpy(fm.fused_moe(x, dw, tw, ids, config=config, pdl=False)),
                                          err_msg=f"replay {rep}")


@pytest.mark.gpu
def test_direct4_gives_the_bits_of_direct():
    """direct4 is the direct kernel compiled for 4 blocks per SM (64 registers): the same K split and
    order, so the same bits, here with K = 2880 (3 superblocks for most warps) and a dropped slot."""
    cp = _cp()
    E, H, I, k, T = 16, 2880, 640, 4, 2
    w = random_moe_weights(E, H, I, seed=71)
    dw = fm.to_device(w)
    rng = np.random.default_rng(72)
    x = random_x(rng, T, H)
    tw, ids = random_routing(rng, T, E, k)
    ids[1, 2] = -1
    a = cp.asnumpy(fm.fused_moe(x, dw, tw, ids, config="direct"))
    np.testing.assert_array_equal(cp.asnumpy(fm.fused_moe(x, dw, tw, ids, config="direct4")), a)
    assert_within_bound(cp.asarray(a), x, w, tw, ids)


# --------------------------------------------------------------------------------------------------
# GPU: the Hopper (wgmma) path
# --------------------------------------------------------------------------------------------------
def kperm_np(k):
    """Column of logical k in the Hopper path's activation layout (moe_fused.cu kperm): inside each
    32-block, k = 8t + 4s + 2h + e sits at 16s + 2t + 8h + e."""
    k = np.asarray(k)
    j = k & 31
    t, s, h, e = j >> 3, (j >> 2) & 1, (j >> 1) & 1, j & 1
    return (k & ~31) | (16 * s + 2 * t + 8 * h + e)


def test_kperm_is_a_permutation_of_each_block():
    cols = kperm_np(np.arange(96))
    for b in range(3):
        assert sorted(cols[32 * b:32 * b + 32]) == list(range(32 * b, 32 * b + 32))
    assert list(cols[:8]) == [0, 1, 8, 9, 16, 17, 24, 25]               # thread t = 0's eight k


def _hopper():
    cp = _cp()
    if not fm.hopper_available():
        if str(cp.cuda.Device().compute_capability) == "90":
            pytest.fail("compute capability 9.0 but moe_fused.cu was not built for sm_90a")
        pytest.skip("the wgmma path needs an sm_90 GPU")
    return cp


@pytest.mark.gpu
def test_permute_x_matches_numpy():
    cp = _hopper()
    T, H, Hp = 5, 96, 128
    x = np.random.default_rng(3).integers(0, 1 << 16, size=(T, H), dtype=np.uint16)
    xp = cp.full((T, Hp), 0xFFFF, cp.uint16)                              # poisoned: every column written
    fm._kernel("moe_permute_x")((1,), (256,), (cp.asarray(x), np.int32(T), np.int32(H), np.int32(Hp), xp))
    want = np.zeros((T, Hp), np.uint16)
    want[:, kperm_np(np.arange(H))] = x
    np.testing.assert_array_equal(cp.asnumpy(xp), want)


@pytest.mark.gpu
@pytest.mark.parametrize("config", sorted(fm.HOPPER_CONFIGS))
@pytest.mark.parametrize("name,E,T", [("gpt-oss-20b", 32, 1024), ("gpt-oss-120b", 128, 4096)])
def test_hopper_gpt_oss_shapes_within_bound(config, name, E, T):
    _hopper()
    _gpt_oss_case(name, E, T, seed=300 + T, config=config, n_ref=4)


def _expert_counts_case(counts, seed, gate_up):
    """A top-1 layer (H 256, I 320) whose expert e gets exactly counts[e] tokens, in random order:
    (w, dw, x, tw, ids)."""
    E, H, I, k = len(counts), 256, 320, 1
    w = random_moe_weights(E, H, I, seed=seed, gate_up=gate_up)
    rng = np.random.default_rng(seed + 1)
    ids = rng.permutation(np.repeat(np.arange(E, dtype=np.int32), counts)).reshape(-1, k)
    x = random_x(rng, ids.shape[0], H)
    tw = rng.random(ids.shape).astype(np.float32)
    return w, fm.to_device(w), x, tw, ids


def _poisoned_fused_moe(cp, dw, x, tw, ids, config, **kw):
    """fused_moe into a NaN-poisoned output buffer: (out, workspace)."""
    T, k = ids.shape
    ws = fm.Workspace(dw, T, k, fm.CONFIGS[config][1])
    ws.out = cp.full((T, dw.hidden_size), 0x7FC1, cp.uint16)
    return fm.fused_moe(x, dw, tw, ids, config=config, workspace=ws, **kw), ws


@pytest.mark.gpu
@pytest.mark.parametrize("gated_layout", ["interleaved", "concatenated"])
def test_tile_widths_give_hopper192s_bits(gated_layout):
    """hopper192w (hopper192's launches: 3 warpgroups up to 192 tokens, the small tiles in hopper128w's 4) runs
    each tile at the narrowest multiple of 32 tokens that holds it. Expert counts chosen so that every
    width runs: 20 (32), 50 (64), 88 (96, the second small tile of 600 = 192 + 192 + 128 + 88), 100, 102,
    104 and 128 (128: 230 = 128 + 102 and 424 = 192 + 128 + 104), 150 (160), 170 and 192 (192), and an
    expert with no tile. Within the bound, every element written (poisoned output), and the bits of
    hopper192 (the same k order and rounding points per output element)."""
    cp = _hopper()
    w, dw, x, tw, ids = _expert_counts_case([50, 100, 170, 230, 424, 0, 600, 20, 150], 51, gated_layout)
    got, ws = _poisoned_fused_moe(cp, dw, x, tw, ids, "hopper192w")
    sizes = sorted(int(c) for c in cp.asnumpy(ws.tiles_small)[:int(ws.meta[2]), 2])
    assert sizes == [20, 50, 88, 100, 102, 104, 128, 128, 128]
    assert sorted(int(c) for c in cp.asnumpy(ws.tiles)[:int(ws.meta[0]), 2]) == [150, 170, 192, 192, 192]
    assert_within_bound(got, x, w, tw, ids)
    want = fm.fused_moe(x, dw, tw, ids, config="hopper192")
    np.testing.assert_array_equal(cp.asnumpy(got), cp.asnumpy(want))


@pytest.mark.gpu
@pytest.mark.parametrize("activation", ["swigluoai", "silu", "gelu"])
@pytest.mark.parametrize("config", ["hopper192", "hopper192w"])
def test_wide_tiles_run_each_activation(activation, config):
    """The 160- and 192-token bodies with each activation (the Hopper epilogues choose it once per tile,
    moe_epilogue_act): experts of 150, 170 and 192 tokens (and 60, a small tile), within the bound, every
    element written (poisoned output)."""
    cp = _hopper()
    layout = "interleaved" if activation == "swigluoai" else "concatenated"
    w, dw, x, tw, ids = _expert_counts_case([150, 192, 170, 60], 53, layout)
    got, ws = _poisoned_fused_moe(cp, dw, x, tw, ids, config, activation=activation)
    assert sorted(int(c) for c in cp.asnumpy(ws.tiles)[:int(ws.meta[0]), 2]) == [150, 170, 192]
    assert_within_bound(got, x, w, tw, ids, activation=activation)


@pytest.mark.gpu
@pytest.mark.parametrize("n,E,bt,split", [(5, 5, 8, 0), (300, 32, 128, 64), (5003, 128, 64, 0),
                                          (65543, 128, 128, 64), (4096, 256, 8, 4), (20000, 32, 128, 64),
                                          (8192, 32, 192, 128), (10000, 32, 192, 128)])
@pytest.mark.parametrize("chunk", [None, 0, 1000])
def test_sort_is_a_stable_counting_sort(n, E, bt, split, chunk):
    """moe_sort against numpy: local ids (expert map, -1 and out-of-range ids dropped), slots stable-sorted by
    local expert, tiles of at most bt slots in expert order, an expert's last tile of <= split slots in
    the small-tile list instead (with the full tile before it as two small tiles where both fit: 192-slot
    tiles, 128-slot small ones), meta = (tiles, valid slots, small tiles). chunk: the launches fused_moe
    picks (None), moe_sort alone (0), or the three-kernel sort over blocks of 1000 slots."""
    cp = _cp()
    rng = np.random.default_rng(n)
    G = E + 3
    ids = rng.integers(-1, G + 2, size=n).astype(np.int32)              # -1 and ids >= G are dropped
    emap = np.arange(G, dtype=np.int32)
    emap[rng.choice(G, size=3, replace=False)] = -1
    emap[emap >= 0] = np.arange(int((emap >= 0).sum()), dtype=np.int32) % E
    max_tiles = n // bt + E + 1
    ws = types.SimpleNamespace(sorted_slot=cp.full(n, -7, cp.int32), tiles=cp.full((max_tiles, 4), -7, cp.int32),
                               tiles_small=cp.full((2 * E, 4), -7, cp.int32), meta=cp.full(3, -7, cp.int32),
                               local_ids=cp.full(n, -7, cp.int32), sort_counts=None)
    for name, grid, block, args in fm.sort_launches(cp.asarray(ids), cp.asarray(emap), n, G, E, bt, split, ws,
                                                    chunk=chunk):
        fm._kernel(name)(grid, block, args)
    sorted_slot, tiles, small, meta, local = (cp.asnumpy(a) for a in
                                              (ws.sorted_slot, ws.tiles, ws.tiles_small, ws.meta, ws.local_ids))
    want_local = np.where((ids >= 0) & (ids < G), emap[np.clip(ids, 0, G - 1)], -1)
    np.testing.assert_array_equal(local, want_local)
    valid = np.nonzero(want_local >= 0)[0]
    order = valid[np.argsort(want_local[valid], kind="stable")]
    assert meta[1] == order.size
    np.testing.assert_array_equal(sorted_slot[:order.size], order)
    counts = np.bincount(want_local[valid], minlength=E)
    big, sml = [], []
    for e, c, s0 in zip(range(E), counts, np.cumsum(counts) - counts):
        full, rem = divmod(int(c), bt)
        sizes_big, sizes_small = [bt] * full + ([rem] if rem else []), []
        if 0 < rem <= split:                            # the last tile is small ...
            sizes_big, sizes_small = [bt] * full, [rem]
            if full >= 1 and rem + bt <= 2 * split:     # ... and with the full tile before it, two small ones
                sizes_big, sizes_small = [bt] * (full - 1), [split, rem + bt - split]
        pos = int(s0)
        for lst, sizes in ((big, sizes_big), (sml, sizes_small)):
            for size in sizes:
                lst.append((e, pos, size))
                pos += size
    assert (meta[0], meta[2]) == (len(big), len(sml))
    np.testing.assert_array_equal(tiles[:meta[0], :3], np.array(big, np.int32).reshape(-1, 3))
    np.testing.assert_array_equal(small[:meta[2], :3], np.array(sml, np.int32).reshape(-1, 3))
    if split:
        assert meta[2] > 0                                              # the case is exercised
    if 2 * split > bt:                                                  # so is the two-small-tile case
        assert any(a[0] == b[0] for a, b in zip(sml, sml[1:]))
