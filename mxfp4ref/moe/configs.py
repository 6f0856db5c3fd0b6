"""Model configurations of MXFP4 MoE layers, as data.

The gpt-oss numbers are those of the released checkpoints' ``config.json`` (and gpt-oss's
``ModelConfig``): hidden_size 2880, intermediate_size 2880, experts_per_token 4, swiglu_limit 7.0,
and the fixed swiglu alpha 1.702 of ``gpt_oss/torch/model.py::swiglu``. ``tiny`` is ours: awkward
sizes (H/32 = 3 and I/32 = 5 scale blocks: odd, not multiples of 4, and below every backend's
padding multiple) so that fast tests exercise the same code paths as the real shapes.
See spec/10-moe-weights-and-padding.md.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MoEConfig:
    """One MoE layer's shape and the forward-pass constants that go with it."""

    name: str
    num_experts: int            # E
    top_k: int                  # experts per token
    hidden_size: int            # H (multiple of 32)
    intermediate_size: int      # I per expert (multiple of 32)
    num_layers: int             # MoE layers in the model (for bookkeeping; every layer has this shape)
    activation: str = "swigluoai"
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    gate_up: str = "interleaved"
    has_bias: bool = True
    scoring: str = "softmax"     # softmax over the top-k logits (gpt-oss) == softmax -> top-k -> renormalize
    renormalize: bool = True

    def __post_init__(self):
        for field in ("num_experts", "top_k", "hidden_size", "intermediate_size", "num_layers"):
            v = getattr(self, field)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MoEConfig.{field}: expected a positive int, got {v!r}")
        for field in ("hidden_size", "intermediate_size"):
            if getattr(self, field) % 32:
                raise ValueError(f"MoEConfig.{field}: expected a multiple of 32, got {getattr(self, field)}")
        if self.top_k > self.num_experts:
            raise ValueError(f"MoEConfig.top_k: expected at most num_experts={self.num_experts}, got {self.top_k}")


CONFIGS: dict[str, MoEConfig] = {
    "gpt-oss-20b": MoEConfig("gpt-oss-20b", num_experts=32, top_k=4, hidden_size=2880,
                             intermediate_size=2880, num_layers=24),
    "gpt-oss-120b": MoEConfig("gpt-oss-120b", num_experts=128, top_k=4, hidden_size=2880,
                              intermediate_size=2880, num_layers=36),
    "tiny": MoEConfig("tiny", num_experts=5, top_k=2, hidden_size=96, intermediate_size=160, num_layers=1),
}


def get_config(name: str) -> MoEConfig:
    """The configuration called ``name``; ValueError listing the known names otherwise."""
    if name not in CONFIGS:
        raise ValueError(f"config: unknown name {name!r}; expected one of {sorted(CONFIGS)}")
    return CONFIGS[name]
