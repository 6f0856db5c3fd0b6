"""mxfp4ref.layouts: round trips, the permutation cache, padding checks, errors."""
import numpy as np
import pytest

from mxfp4ref.layouts import (BACKENDS, PAD, PERMUTE_CACHE, KernelWeights, clear_permute_cache,
                              from_kernel_layout, get_plan, to_kernel_layout)
from mxfp4ref.layouts import triton_hopper
from mxfp4ref.moe.weights import MoEWeights

FIELDS = ("w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale", "w13_bias", "w2_bias")


def random_weights(E, H, I, seed=0, bias=True, gate_up="interleaved"):
    r = np.random.default_rng(seed)
    u = lambda *s: r.integers(0, 256, s, dtype=np.uint8)
    # bf16-exact biases (gpt-oss stores bf16; backends keeping bf16 biases need them exact)
    b = lambda *s: (r.integers(-128, 128, s) / 16).astype(np.float32) if bias else None
    return MoEWeights(u(E, 2 * I, H // 2), u(E, 2 * I, H // 32), u(E, H, I // 2), u(E, H, I // 32),
                      b(E, 2 * I), b(E, H), gate_up)


def assert_same(a: MoEWeights, b: MoEWeights):
    assert a.gate_up == b.gate_up
    for n in FIELDS:
        x, y = getattr(a, n), getattr(b, n)
        assert (x is None) == (y is None), n
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, n
            assert x.tobytes() == y.tobytes(), n


def shapes_for(backend):
    """Odd tiny shapes each backend accepts (plus its own padding)."""
    mod = BACKENDS[backend]
    return getattr(mod, "TEST_SHAPES", [(1, 32, 32), (3, 96, 64), (2, 160, 224), (1, 64, 32)])


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_round_trip_tiny_and_odd_shapes(backend):
    for i, (E, H, I) in enumerate(shapes_for(backend)):
        for gate_up in ("interleaved", "concatenated"):
            w = random_weights(E, H, I, seed=i, gate_up=gate_up)
            kw = to_kernel_layout(w, backend)
            assert isinstance(kw, KernelWeights) and kw.backend == backend
            assert_same(from_kernel_layout(kw), w)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_round_trip_without_bias(backend):
    E, H, I = shapes_for(backend)[0]
    w = random_weights(E, H, I, bias=False)
    kw = to_kernel_layout(w, backend)
    assert kw.w13_bias is None and kw.w2_bias is None
    assert_same(from_kernel_layout(kw), w)


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_round_trip_gpt_oss_shape(backend):
    """H = I = 2880 (not a multiple of 128 or 256; 90 scale groups, not a multiple of 4), E = 2;
    backends that cannot take 2880 get vLLM's padded 3072 (see spec/10 padding)."""
    H, I = getattr(BACKENDS[backend], "GPT_OSS_SHAPE", (2880, 2880))
    w = random_weights(2, H, I, seed=7)
    assert_same(from_kernel_layout(to_kernel_layout(w, backend)), w)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_index_maps_are_permutations_plus_padding(backend):
    _, H, I = shapes_for(backend)[1]
    E = 1                                                               # maps are per expert
    sizes = {"w13_weight": E * 2 * I * H // 2, "w13_weight_scale": E * 2 * I * H // 32,
             "w2_weight": E * H * I // 2, "w2_weight_scale": E * H * I // 32,
             "w13_bias": E * 2 * I, "w2_bias": E * H}
    for name, p in get_plan(backend, H, I).items():
        real = np.sort(p.idx[p.idx != PAD])
        n = sizes[name] * (2 if p.unit == "code" else 1)
        assert np.array_equal(real, np.arange(n)), name


def test_permutation_cache_is_built_once_per_backend_and_shape():
    clear_permute_cache()
    w = random_weights(2, 96, 64)
    to_kernel_layout(w, "triton-hopper")
    keys = set(PERMUTE_CACHE)
    assert keys and all(k[0] == "triton-hopper" for k in keys)
    first = {k: PERMUTE_CACHE[k] for k in keys}
    to_kernel_layout(random_weights(2, 96, 64, seed=3), "triton-hopper")
    assert set(PERMUTE_CACHE) == keys and all(PERMUTE_CACHE[k] is first[k] for k in keys)
    to_kernel_layout(random_weights(5, 96, 64), "triton-hopper")      # more experts: same maps
    assert set(PERMUTE_CACHE) == keys
    to_kernel_layout(random_weights(2, 160, 64), "triton-hopper")     # a new shape adds entries
    assert len(PERMUTE_CACHE) > len(keys)
    with pytest.raises(ValueError):
        next(iter(first.values()))[...] = 0                             # cached maps are read-only


def test_twiddle_is_a_bijection_on_every_single_bit_and_random_words():
    bytes_ = np.zeros((32, 4), np.uint8)
    for bit in range(32):
        bytes_[bit, bit // 8] = 1 << (bit % 8)
    out = triton_hopper.twiddle(bytes_.reshape(1, -1)).reshape(32, 4).view("<u4").reshape(32)
    assert sorted(int(x).bit_length() - 1 for x in out) == list(range(32))   # each bit to a distinct bit
    r = np.random.default_rng(0).integers(0, 256, (5, 64), dtype=np.uint8)
    assert np.array_equal(triton_hopper.untwiddle(triton_hopper.twiddle(r)), r)


def test_twiddle_tables_equal_a_bit_by_bit_definition():
    """Oracle: move every bit of every code by DEST, one at a time (the definition, slowly)."""
    r = np.random.default_rng(1).integers(0, 256, (200, 4), dtype=np.uint8)
    want = np.zeros(200, np.uint32)
    for half in (0, 1):
        for slot in range(4):
            code = (r[:, slot].astype(np.uint32) >> (4 * half)) & 0xF
            for bit in range(4):
                want |= ((code >> bit) & 1) << (triton_hopper.DEST[slot][bit] + 16 * half)
    got = triton_hopper.twiddle(r.reshape(1, -1)).view("<u4").reshape(200)
    assert np.array_equal(got, want)


def test_twiddle_places_fp4_bits_next_to_bf16_exponent():
    # a word whose first byte holds code 0b1111 in its low nibble: sign at bit 15, e/m at bits 8..6
    b = np.array([[0x0F, 0, 0, 0]], np.uint8)
    word = int(triton_hopper.twiddle(b).view("<u4")[0, 0])
    assert word == (1 << 15) | (0b111 << 6)


def test_unknown_backend_is_a_clear_error():
    w = random_weights(1, 32, 32)
    with pytest.raises(ValueError, match="backend: unknown value 'hopper'.*expected one of"):
        to_kernel_layout(w, "hopper")
    with pytest.raises(TypeError, match="backend: expected a str"):
        to_kernel_layout(w, 3)
    with pytest.raises(TypeError, match="weights: expected a MoEWeights"):
        to_kernel_layout({"w13_weight": 1}, "strided")


def test_nonzero_padding_is_rejected():
    kw = to_kernel_layout(random_weights(1, 32, 32), "triton-hopper")
    buf = kw.w2_weight_scale.copy()
    idx = get_plan("triton-hopper", 32, 32)["w2_weight_scale"].idx
    buf[idx == PAD] = 0
    buf.reshape(-1)[np.flatnonzero(idx == PAD)[0]] = 0xFF          # a dirty padding byte (vLLM #47303)
    bad = KernelWeights(kw.backend, kw.w13_weight, kw.w13_weight_scale, kw.w2_weight, buf,
                        kw.w13_bias, kw.w2_bias, kw.source, kw.views)
    with pytest.raises(ValueError, match="w2_weight_scale: padding byte .* expected 0"):
        from_kernel_layout(bad)


def test_wrong_buffer_shape_is_rejected():
    kw = to_kernel_layout(random_weights(1, 32, 32), "strided")
    bad = KernelWeights(kw.backend, kw.w13_weight[:, :-1], kw.w13_weight_scale, kw.w2_weight,
                        kw.w2_weight_scale, kw.w13_bias, kw.w2_bias, kw.source, kw.views)
    with pytest.raises(ValueError, match="w13_weight: expected shape"):
        from_kernel_layout(bad)


def test_marlin_scale_decode_rule_diverges_from_ocp_at_bytes_0_and_255():
    from mxfp4ref.layouts.marlin import kernel_scale_value
    b = np.arange(256, dtype=np.uint8)
    v = kernel_scale_value(b)
    assert v[0] == 0.0                                      # OCP: 2**-127
    assert np.isposinf(v[255])                              # OCP: NaN
    assert np.array_equal(v[1:255], np.ldexp(np.float32(1), np.arange(1, 255) - 127).astype(np.float32))


@pytest.mark.parametrize("backend,H,I,match", [
    ("flashinfer-trtllm", 2880, 2944, "hidden_size H .* multiple of 128, got 2880; pad"),
    ("flashinfer-trtllm", 3072, 2880, "intermediate_size I .* multiple of 128, got 2880"),
    ("flashinfer-cutlass-sm90", 2880, 2944, "hidden_size H .* multiple of 128, got 2880"),
    ("marlin", 96, 64, "hidden_size H .* multiple of 64, got 96"),
])
def test_shapes_a_backend_cannot_take_name_the_constraint(backend, H, I, match):
    with pytest.raises(ValueError, match=f"{backend}: {match}"):
        to_kernel_layout(random_weights(1, H, I, bias=False), backend)


@pytest.mark.parametrize("backend", ["flashinfer-cutlass-sm90", "marlin"])
def test_bf16_bias_backends_refuse_inexact_biases(backend):
    E, H, I = BACKENDS[backend].TEST_SHAPES[0]
    w = random_weights(E, H, I)
    bias = w.w2_bias.copy()
    bias[0, 0] = np.float32(1 + 2 ** -10)                    # needs 10 mantissa bits
    w = MoEWeights(w.w13_weight, w.w13_weight_scale, w.w2_weight, w.w2_weight_scale, w.w13_bias, bias)
    with pytest.raises(ValueError, match="not exactly representable in bfloat16"):
        to_kernel_layout(w, backend)


def test_explain_layout_cli_prints_offsets_read_off_the_index_map(capsys):
    from mxfp4ref.cli import main
    assert main(["explain-layout", "flashinfer-trtllm", "--tensor", "w2_bias", "--cols", "6"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].split() == ["0", "0", "8", "16", "24", "1", "9"]   # row 0: shuffle of 32


def test_offset_map_agrees_with_to_kernel_layout():
    """Put a distinct value in every logical byte; the buffer holds it where offset_map says."""
    from mxfp4ref.layouts.explain import offset_map
    for backend in ("strided", "triton-blackwell", "flashinfer-trtllm"):
        H, I = (128, 128) if backend.startswith("flashinfer") else (64, 32)
        w = random_weights(1, H, I)
        kw = to_kernel_layout(w, backend)
        where = offset_map(backend, "w13_weight_scale", H, I)
        assert np.array_equal(kw.w13_weight_scale.reshape(-1)[where], w.w13_weight_scale[0])


# ---- the closed-form rules written in the module docstrings / spec/30, checked element by element ----
def _offsets(backend, tensor, H, I):
    from mxfp4ref.layouts.explain import offset_map
    return offset_map(backend, tensor, H, I)


def test_triton_hopper_value_formula():
    H, I = 128, 64                                   # N = 2I = 128 rows, K/2 = 64 bytes (pads nothing)
    where = _offsets("triton-hopper", "w13_weight", H, I)
    row_len = 4 * 64                                 # 4 * Kbp
    for m in range(2 * I):
        for kb in range(H // 2):
            r0, w0, t0, s0 = m // 16, (m % 16) // 8, (m % 8) // 2, m % 2
            r1, kt, w1, t1 = kb // 32, (kb % 32) // 8, (kb % 8) // 4, kb % 4
            row, col = 4 * r0 + t0, 128 * r1 + 64 * s0 + 16 * t1 + 4 * kt + 2 * w1 + w0
            assert where[m, kb] == row * row_len + col


def test_triton_hopper_scale_formula_with_k_group_padding():
    H, I = 96, 160                                   # w2: N = 96 rows, G = 5 groups -> padded to 8
    where = _offsets("triton-hopper", "w2_weight_scale", H, I)
    Gp = 8
    for m in range(H):
        for g in range(I // 32):
            a, b, w, c, d = m // 256, (m % 256) // 128, (m % 128) // 16, (m % 16) // 8, m % 8
            k, f = g // 2, g % 2
            assert where[m, g] == (8 * a + w) * 32 * Gp + 64 * k + 32 * b + 4 * d + 2 * f + c


@pytest.mark.parametrize("backend,H,I", [("triton-blackwell", 96, 320), ("flashinfer-trtllm", 256, 256)])
def test_128x4_scale_tile_formula(backend, H, I):
    where = _offsets(backend, "w2_weight_scale", H, I)      # N = H rows, G = I/32 groups
    G = I // 32
    Gp = -(-G // 8) * 8 if backend == "triton-blackwell" else G
    rows = np.arange(H)
    if backend == "flashinfer-trtllm":                       # row shuffle first: row r moves to p
        p = np.empty(H, np.int64)
        p[np.arange(H) // 32 * 32 + (np.arange(H) % 8) * 4 + (np.arange(H) % 32) // 8] = np.arange(H)
        rows = p
    for m in range(H):
        q = rows[m]
        for g in range(G):
            want = ((q // 128) * (Gp // 4) + g // 4) * 512 + 16 * (q % 32) + 4 * ((q % 128) // 32) + g % 4
            assert where[m, g] == want, (m, g)


def test_trtllm_w13_rows_pair_swap_then_shuffle():
    where = _offsets("flashinfer-trtllm", "w13_bias", 128, 128)   # a bias shows the row order alone
    for r in range(256):
        s = r ^ 1                                                 # gate j <-> up j
        assert where[r] == s // 32 * 32 + (s % 4) * 8 + (s % 32) // 4


def test_cutlass_sm90_scale_fold_formula():
    H, I = 256, 128
    where = _offsets("flashinfer-cutlass-sm90", "w13_weight_scale", H, I)   # rows [up; gate]
    G = H // 32
    for r in range(2 * I):
        new = r // 2 + (0 if r % 2 else I)                        # up j -> j, gate j -> I + j
        for g in range(G):
            m64, q, f, b, t = new // 64, (new % 64) // 16, new % 16, g // 4, g % 4
            assert where[r, g] == ((m64 * (G // 4) + b) * 16 + f) * 16 + 4 * q + t


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_round_trip_property(backend):
    """hypothesis: any bytes, any accepted shape, either gate/up layout, with or without bias."""
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies
    shapes = shapes_for(backend)

    @hyp.settings(max_examples=15, deadline=None)
    @hyp.given(shape=st.sampled_from(shapes), seed=st.integers(0, 2**32 - 1),
               gate_up=st.sampled_from(["interleaved", "concatenated"]), bias=st.booleans())
    def run(shape, seed, gate_up, bias):
        w = random_weights(*shape, seed=seed, bias=bias, gate_up=gate_up)
        assert_same(from_kernel_layout(to_kernel_layout(w, backend)), w)

    run()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_wrong_buffer_dtype_or_shape_is_rejected_for_every_tensor(backend):
    E, H, I = shapes_for(backend)[0]
    kw = to_kernel_layout(random_weights(E, H, I), backend)
    for name, buf in kw.tensors().items():
        for bad, err in ((buf.reshape(-1), ValueError), (buf.view(np.uint8) if buf.dtype != np.uint8
                                                          else buf.astype(np.int16), (TypeError, ValueError))):
            fields = {n: (bad if n == name else a) for n, a in kw.tensors().items()}
            fields = {n: fields.get(n) for n in FIELDS}
            with pytest.raises(err, match=name):
                from_kernel_layout(KernelWeights(kw.backend, **fields, source=kw.source, views=kw.views))
