"""align_block_size: vLLM's moe_align_block_size contract, against a plain-loop oracle."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mxfp4ref.moe.align import align_block_size, max_num_tokens_padded
from mxfp4ref.moe.routing import make_expert_map


def oracle(topk_ids, block_size, num_experts, expert_map=None):
    """Independent oracle written as plain Python loops over experts and tokens."""
    flat = [int(v) for v in topk_ids.reshape(-1)]
    numel = len(flat)
    size = numel + num_experts * (block_size - 1)
    if numel < num_experts:
        size = min(size, numel * block_size)
    sorted_ids, expert_ids = [], []
    for e in range(num_experts):
        mine = [i for i, v in enumerate(flat) if v == e]
        if not mine:
            continue
        while len(mine) % block_size:
            mine.append(numel)
        sorted_ids += mine
        expert_ids += [e] * (len(mine) // block_size)
    post = len(sorted_ids)
    sorted_ids += [numel] * (size - post)
    expert_ids += [0] * (-(-size // block_size) - len(expert_ids))
    if expert_map is not None:
        expert_ids = [int(expert_map[e]) for e in expert_ids]
    return sorted_ids, expert_ids, post


def test_vllm_docstring_example():
    # vLLM's docstring example (its ids reach 4, so num_experts must be 5 there)
    topk_ids = np.array([[2, 3, 4], [1, 2, 4], [1, 3, 4], [1, 2, 3]], np.int32)
    s, e, n = align_block_size(topk_ids, 4, 5)
    assert s[:16].tolist() == [3, 6, 9, 12, 0, 4, 10, 12, 1, 7, 11, 12, 2, 5, 8, 12]
    assert e[:4].tolist() == [1, 2, 3, 4] and n.tolist() == [16]
    assert s.size == 12 + 5 * 3 and (s[16:] == 12).all()
    assert s.dtype == e.dtype == n.dtype == np.int32


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), st.integers(1, 4), st.integers(1, 20), st.sampled_from([1, 2, 4, 16, 64]),
       st.integers(0, 2**32 - 1), st.booleans())
def test_matches_oracle(T, k, E, block, seed, with_map):
    k = min(k, E)
    rng = np.random.default_rng(seed)
    topk_ids = np.stack([rng.permutation(E)[:k] for _ in range(T)]).astype(np.int32)
    emap = make_expert_map(E, min(2, E), 0, "round_robin") if with_map else None
    s, e, n = align_block_size(topk_ids, block, E, emap)
    rs, re, rn = oracle(topk_ids, block, E, emap)
    assert s.tolist() == rs and e.tolist() == re and n.tolist() == [rn]
    assert s.size == max_num_tokens_padded(T * k, block, E)


def test_expert_map_marks_remote_blocks():
    topk_ids = np.array([[0, 3], [1, 3], [2, 0]], np.int32)
    emap = make_expert_map(4, 2, 1)                 # rank 1 owns experts 2, 3
    s, e, n = align_block_size(topk_ids, 2, 4, emap)
    # experts 0 (2 tokens), 1 (1 -> 2), 2 (1 -> 2), 3 (2): blocks 0,1,2,3 -> local -1,-1,0,1; rest expert 0 -> -1
    assert e[:4].tolist() == [-1, -1, 0, 1] and (e[4:] == -1).all() and n.tolist() == [8]


def test_pad_sorted_ids_rounds_the_length():
    s, e, _ = align_block_size(np.zeros((5, 1), np.int32), 4, 3, pad_sorted_ids=True)
    assert s.size == 16 and e.size == 4                 # 5 + 3*(4-1) = 14 -> round_up(14, 4) = 16
    s, e, _ = align_block_size(np.zeros((5, 1), np.int32), 4, 3)
    assert s.size == 14 and e.size == 4                 # ceil(14 / 4) = 4 blocks


def test_few_tokens_shrink_the_buffer():
    # numel (2) < num_experts (8): at most 2 non-empty experts -> numel * block_size entries
    s, e, n = align_block_size(np.array([[7, 3]], np.int32), 16, 8)
    assert s.size == 32 and e.tolist() == [3, 7] and n.tolist() == [32]


@pytest.mark.parametrize("ids,exc,match", [
    (np.array([[0, 4]], np.int32), ValueError, r"topk_ids: expected global expert ids in \[0, 4\), got 4"),
    (np.array([[0, -1]], np.int32), ValueError, "got -1"),
    (np.array([[0, 1]], np.float32), TypeError, "topk_ids: expected dtype int32 or int64"),
    (np.array([0, 1], np.int32), ValueError, "topk_ids: expected shape"),
])
def test_bad_input(ids, exc, match):
    with pytest.raises(exc, match=match):
        align_block_size(ids, 4, 4)


def test_bad_sizes_and_map():
    ids = np.zeros((1, 1), np.int32)
    with pytest.raises(ValueError, match="block_size"):
        align_block_size(ids, 0, 4)
    with pytest.raises(ValueError, match=r"expert_map: expected shape \(4,\)"):
        align_block_size(ids, 4, 4, np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="expert_map"):
        align_block_size(ids, 4, 4, np.zeros(4, np.int64))
