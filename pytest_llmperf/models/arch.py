"""Architecture arithmetic for decoder models (Llama, Qwen2, Mistral families, and Qwen3-MoE / Mixtral-style
mixtures of experts), from a ``config.json``.

Used by the report's roofline line: at batch 1 every decode step reads every weight it uses once, so
``active_weight_bytes / memory_bandwidth`` is a floor on TPOT (the KV cache, a few hundred MB at these lengths,
is left out and named as such). A dense model uses every weight; a mixture of experts uses, per layer, its
attention, its router and ``num_experts_per_tok`` of its ``num_experts`` experts. Pure functions; counts follow
the Hugging Face modelling code: q/k/v/o projections (with the q/k/v biases of Qwen2), gated MLP or gated
experts of ``moe_intermediate_size`` (gate, up, down), two RMSNorms per layer, the final norm, the embedding
and, unless tied, the LM head.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ArchFacts", "arch_facts", "preset_arch", "DTYPE_BYTES"]

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4, "fp8": 1}


@dataclass(frozen=True)
class ArchFacts:
    """What the roofline and the communication model need to know about a model."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    params: int
    #: parameters one token reads at batch 1 (a dense model: all of them)
    active_params: int = 0
    #: experts per MoE layer (1: dense)
    experts: int = 1

    def weight_bytes(self, dtype: str = "bfloat16") -> int:
        return self.params * _dtype_bytes(dtype)

    def active_weight_bytes(self, dtype: str = "bfloat16") -> int:
        """The weights one decode step of one sequence reads: all of a dense model's, the routed experts' of a MoE."""
        return (self.active_params or self.params) * _dtype_bytes(dtype)

    def tp_problem(self, tp: int) -> str | None:
        """Why vLLM cannot split this model ``tp`` ways (its attention heads must divide evenly; KV heads divide or
        are replicated), or None when it can."""
        def splits(t: int) -> bool:
            return self.heads % t == 0 and (self.kv_heads % t == 0 or t % self.kv_heads == 0)

        if tp <= 1 or splits(tp):
            return None
        fits = [t for t in range(2, 17) if splits(t)]
        return (f"TP={tp} does not split the model's {self.heads} attention heads / {self.kv_heads} KV heads evenly "
                f"(vLLM refuses it); TP sizes that do: {', '.join(map(str, fits)) or 'none up to 16'}")

    def kv_bytes_per_token(self, dtype: str = "bfloat16") -> int:
        """Keys and values of one token over all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[dtype]


def _dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}: one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def arch_facts(config: Mapping[str, Any]) -> ArchFacts:
    """Parameter counts and shapes of a decoder (dense or mixture of experts) from its ``config.json`` mapping."""
    try:
        h, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
        inter, heads, vocab = int(config["intermediate_size"]), int(config["num_attention_heads"]), int(config["vocab_size"])
    except KeyError as exc:
        raise ValueError(f"config.json lacks {exc.args[0]!r}: not a dense decoder config") from None
    kv = int(config.get("num_key_value_heads", heads))
    head_dim = int(config.get("head_dim") or h // heads)
    bias = config.get("model_type") == "qwen2"  # Qwen2 has biases on q, k and v
    attn = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h
    if bias:
        attn += heads * head_dim + 2 * kv * head_dim
    experts = int(config.get("num_experts") or config.get("num_local_experts") or 1)
    if experts > 1:
        try:
            routed = int(config["num_experts_per_tok"])
        except KeyError:
            raise ValueError("config.json has experts but no 'num_experts_per_tok'") from None
        expert = 3 * h * int(config.get("moe_intermediate_size") or inter)
        if config.get("mlp_only_layers") or int(config.get("decoder_sparse_step") or 1) != 1:
            raise ValueError("MoE configs with dense layers in between (mlp_only_layers, decoder_sparse_step) are "
                             "not counted here")
        mlp, mlp_active = h * experts + experts * expert, h * experts + routed * expert  # router + experts
    else:
        mlp = mlp_active = 3 * h * inter
    embed = vocab * h
    head = 0 if config.get("tie_word_embeddings", False) else vocab * h
    rest = h + embed + head
    params = layers * (attn + mlp + 2 * h) + rest
    active = layers * (attn + mlp_active + 2 * h) + rest
    return ArchFacts(layers, h, inter, heads, kv, head_dim, vocab, params, active, experts)


@functools.cache  # read once: collection asks it for every TP test
def preset_arch(name: str) -> ArchFacts:
    """The facts of a preset by name (see :mod:`pytest_llmperf.models.presets`)."""
    from importlib import resources

    from pytest_llmperf.models.presets import PRESETS

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}")
    text = resources.files("pytest_llmperf.models").joinpath("configs", PRESETS[name].config_file).read_text()
    return arch_facts(json.loads(text))
