"""Every preset's synthetic tokenizer encodes a prompt of N words to exactly N tokens, as vLLM loads it
(transformers' AutoTokenizer), over the whole id range the load layer draws from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_llmperf.load.prompts import synthetic_prompt
from pytest_llmperf.models.presets import PRESETS, materialize
from pytest_llmperf.models.tokenizer import write_wordlevel_tokenizer


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_prompt_lengths_are_exact_through_transformers(preset: str, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    paths = materialize(preset, tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(paths.tokenizer)
    rng = np.random.default_rng(0)
    for n_tokens in (1, 32, 257):
        prompt = synthetic_prompt(n_tokens, rng, vocab_size=paths.vocab_size)
        ids = tokenizer(prompt)["input_ids"]
        assert len(ids) == n_tokens, (preset, prompt[:80], tokenizer.convert_ids_to_tokens(ids[:8]))
        assert tokenizer.decode(ids).split() == prompt.split()


def test_special_words_that_prefix_other_words_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prefix of other words"):
        write_wordlevel_tokenizer(tmp_path, 32000, bos_token_id=1, eos_token_id=2, model_max_length=64)


def test_hub_names_are_served_from_the_cache_and_missing_paths_are_refused():
    from pytest_llmperf.errors import UsageError
    from pytest_llmperf.models.presets import resolve_model

    paths = resolve_model("meta-llama/Llama-3.1-8B")
    assert (paths.model, paths.dummy_weights, paths.preset) == ("meta-llama/Llama-3.1-8B", False, None)
    for missing in ("/no/such/model", "./relative/model", "a/b/c"):
        with pytest.raises(UsageError, match="does not exist"):
            resolve_model(missing)
