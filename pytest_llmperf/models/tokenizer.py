"""A synthetic full-vocabulary tokenizer: exactly ``vocab_size`` words ``t0 .. t{N-1}``, split on whitespace.

Every token id decodes to its word and re-encodes to itself, so prompt and output lengths are exact and any
id a dummy-weight model emits is printable. It lives in its own folder without ``config.json``: for
``model_type: qwen2`` transformers would otherwise pick Qwen2Tokenizer by model type and encode the
synthetic words to nothing (vLLM then says "The decoder prompt cannot be empty").
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_wordlevel_tokenizer", "token_word"]


def token_word(token_id: int) -> str:
    """The word that encodes to ``token_id``."""
    return f"t{token_id}"


def write_wordlevel_tokenizer(out_dir: Path, vocab_size: int, *, bos_token_id: int, eos_token_id: int,
                              model_max_length: int) -> Path:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``out_dir``; return ``out_dir``.

    No special tokens are added on encode (no BOS), so ``len(prompt.split())`` is the prompt's token count.

    transformers matches special tokens as substrings before the word model runs, so a special word that is the
    prefix of another word splits it (with BOS "t1", "t1234" became "t1" + unknown): each special word must be
    a prefix of no other word, which ids with the most digits guarantee. Raises ValueError otherwise.
    """
    width = len(str(vocab_size - 1))
    for name, token_id in (("bos", bos_token_id), ("eos", eos_token_id)):
        if not 0 <= token_id < vocab_size or (token_id != 0 and len(str(token_id)) < width
                                              and int(str(token_id) + "0") < vocab_size):
            raise ValueError(f"{name}_token_id {token_id}: its word {token_word(token_id)!r} is a prefix of other "
                             f"words of a {vocab_size}-word vocabulary; use an id with {width} digits")
    from tokenizers import Tokenizer, models, pre_tokenizers  # local: heavy-ish, only when materializing

    vocab = {token_word(i): i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=token_word(0)))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "bos_token": token_word(bos_token_id),
        "eos_token": token_word(eos_token_id),
        "unk_token": token_word(0),
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return out_dir
