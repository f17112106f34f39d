"""Model presets: real architectures' ``config.json`` served with dummy weights and a synthetic tokenizer.

``--load-format dummy`` gives the same matmuls as real weights for dense models, with no download and no
licence; the synthetic tokenizer (:mod:`.tokenizer`) makes lengths exact. A real model directory or hub name
is used as is (``resolve_model``), with its own tokenizer and real weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pytest_llmperf.errors import UsageError
from pytest_llmperf.models.tokenizer import write_wordlevel_tokenizer

__all__ = ["PRESETS", "Preset", "ModelPaths", "materialize", "resolve_model", "default_cache_dir"]


@dataclass(frozen=True)
class Preset:
    name: str
    config_file: str
    description: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny-llama", "tiny-llama.json", "4-layer Llama (hidden 256, vocab 32000) for the CPU backend"),
        Preset("llama-3.1-8b", "llama-3.1-8b.json", "Llama-3.1-8B architecture (32 layers, GQA 32/8)"),
        Preset("deepseek-r1-distill-qwen-14b", "deepseek-r1-distill-qwen-14b.json",
               "DeepSeek-R1-Distill-Qwen-14B architecture (Qwen2, 48 layers, GQA 40/8)"),
        Preset("qwen3-30b-a3b", "qwen3-30b-a3b.json",
               "Qwen3-30B-A3B mixture-of-experts architecture (48 layers, 128 experts, 8 active; 61 GB in bf16)"),
        Preset("tiny-qwen3-moe", "tiny-qwen3-moe.json",
               "4-layer Qwen3-MoE (hidden 256, 8 experts, 2 active) for the CPU backend"),
    )
}


@dataclass(frozen=True)
class ModelPaths:
    """What to pass to vLLM: ``--model``, ``--tokenizer``, and whether weights are dummy."""

    model: str
    tokenizer: str | None
    dummy_weights: bool
    preset: str | None
    vocab_size: int | None
    max_position_embeddings: int | None


def default_cache_dir() -> Path:
    root = os.environ.get("LLMPERF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pytest-llmperf")
    return Path(root) / "models"


def _preset_config(preset: Preset) -> dict:
    text = resources.files("pytest_llmperf.models").joinpath("configs", preset.config_file).read_text()
    return json.loads(text)


def materialize(name: str, cache_dir: Path | None = None) -> ModelPaths:
    """Write the preset's model folder (config.json) and tokenizer folder once; return their paths.

    The folder name carries a hash of the config, so an edited preset never reuses a stale folder.
    Writes go to a temporary folder renamed into place, so concurrent sessions never see half a folder.
    """
    if name not in PRESETS:
        raise UsageError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    config = _preset_config(PRESETS[name])
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    root = (cache_dir or default_cache_dir()) / f"{name}-{digest}"
    model_dir, tok_dir = root / "model", root / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        (tmp / "model").mkdir(parents=True, exist_ok=True)
        (tmp / "model" / "config.json").write_text(json.dumps(config, indent=1))
        eos = config["eos_token_id"]
        write_wordlevel_tokenizer(
            tmp / "tokenizer", config["vocab_size"], bos_token_id=config["bos_token_id"],
            eos_token_id=eos[0] if isinstance(eos, list) else eos,
            model_max_length=config["max_position_embeddings"])
        try:
            os.replace(tmp, root)
        except OSError:  # another process won the race: its folder is complete
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return ModelPaths(str(model_dir), str(tok_dir), True, name, config["vocab_size"],
                      config["max_position_embeddings"])


#: a Hugging Face hub name (``org/name``): served from the local HF cache (engines run with HF_HUB_OFFLINE=1)
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(model: str, tokenizer: str | None = None, cache_dir: Path | None = None) -> ModelPaths:
    """A preset name is materialized; anything else is a real model path or hub name, used as is."""
    if model in PRESETS:
        paths = materialize(model, cache_dir)
        return paths if tokenizer is None else ModelPaths(paths.model, tokenizer, True, model,
                                                          paths.vocab_size, paths.max_position_embeddings)
    if os.sep in model and not Path(model).exists() and not _HUB_NAME.match(model):
        raise UsageError(f"model path {model!r} does not exist (and is not a preset: {', '.join(sorted(PRESETS))})")
    return ModelPaths(model, tokenizer, False, None, None, None)
