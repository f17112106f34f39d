"""Prompts to send: synthetic ones of exact token length, or a user-supplied list.

Synthetic prompts target the project's synthetic tokenizer: a WordLevel tokenizer whose vocabulary is exactly
the words ``t0`` .. ``t{V-1}``, splitting on whitespace and adding no special tokens. A prompt of ``L`` tokens
is therefore ``L`` words ``t<id>`` joined by single spaces, and the engine counts exactly ``L`` prompt tokens.
Ids are drawn from the run's seeded generator in ``[100, min(V, 30000))`` (the low ids are left to special
tokens). User-supplied prompts (for real tokenizers) are used in order, cycling; their ``prompt_len`` is then
only the whitespace word count, an approximation of the real token count (``approx_prompt_len=True``): the
recorded count is the server's ``usage.prompt_tokens`` (the client records it from the stream). A prompt may be a
:class:`DatasetPrompt` (what :mod:`pytest_llmperf.load.datasets` loads): its ``output_len``, when set, replaces
the workload's sampled output length for that request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union, TYPE_CHECKING


from pytest_llmperf.errors import UsageError

if TYPE_CHECKING:
    from pytest_llmperf.load.workload import Workload
    import numpy as np

__all__ = ["SampleRequest", "DatasetPrompt", "PromptLike", "synthetic_prompt", "build_requests", "LOW_TOKEN_ID",
           "HIGH_TOKEN_ID_CAP"]

#: Lowest synthetic token id used; ids below are left for special tokens.
LOW_TOKEN_ID = 100
#: Ids are drawn below ``min(vocab_size, HIGH_TOKEN_ID_CAP)``.
HIGH_TOKEN_ID_CAP = 30000


@dataclass(frozen=True)
class SampleRequest:
    """One request to send. ``request_id`` is unique within a run."""

    request_id: str
    prompt: str
    prompt_len: int
    output_len: int
    approx_prompt_len: bool = False


@dataclass(frozen=True)
class DatasetPrompt:
    """One prompt of a dataset: its text, the output length to ask for (None: the workload's), and where it came
    from (``source``, e.g. ``data.jsonl:7``, named in errors). ``prompt_tokens`` is a known exact count (synthetic
    prompts), else None (the word count stands in until the server's usage reports the real count)."""

    prompt: str
    output_len: int | None = None
    source: str = ""
    prompt_tokens: int | None = None

    @property
    def approx_tokens(self) -> int:
        """``prompt_tokens`` when known, else the whitespace word count (an approximation)."""
        return self.prompt_tokens if self.prompt_tokens is not None else len(self.prompt.split())


#: What ``build_requests(prompts=...)`` takes: plain strings or dataset items.
PromptLike = Union[str, DatasetPrompt]


def _id_range(vocab_size: int) -> tuple[int, int]:
    high = min(int(vocab_size), HIGH_TOKEN_ID_CAP)
    if high <= LOW_TOKEN_ID:
        raise UsageError(f"synthetic vocab_size must exceed {LOW_TOKEN_ID}, got {vocab_size}")
    return LOW_TOKEN_ID, high


def synthetic_prompt(n_tokens: int, rng: np.random.Generator, *, vocab_size: int = 32000) -> str:
    """``n_tokens`` words ``t<id>`` joined by single spaces, ids drawn from ``rng``."""
    low, high = _id_range(vocab_size)
    ids = rng.integers(low, high, size=int(n_tokens))
    return " ".join(f"t{i}" for i in ids.tolist())


def _request_ids(workload: Workload) -> list[str]:
    warm = [f"warmup-{i}" for i in range(int(workload.warmup_requests))]
    return warm + [f"req-{i}" for i in range(int(workload.num_requests))]


def build_requests(
    workload: Workload,
    rng: np.random.Generator,
    *,
    vocab_size: int = 32000,
    prompts: Sequence[PromptLike] | None = None,
) -> list[SampleRequest]:
    """Warmup requests first (ids ``warmup-i``), then measured ones (``req-i``); ``workload.total_requests``.

    Draw order from ``rng`` is fixed (input lengths, output lengths, token ids), so the same seed and workload
    give the same requests whatever the arrival settings.
    """
    n = workload.total_requests
    ids = _request_ids(workload)
    input_lens = workload.input_spec.sample(rng, n)
    output_lens = workload.output_spec.sample(rng, n)
    if prompts is not None:
        if len(prompts) == 0:
            raise UsageError("the user-supplied prompt list is empty")
        out = []
        for i in range(n):
            item = prompts[i % len(prompts)]
            if isinstance(item, DatasetPrompt):
                out_len = int(item.output_len) if item.output_len is not None else int(output_lens[i])
                out.append(SampleRequest(ids[i], item.prompt, item.approx_tokens, out_len,
                                         approx_prompt_len=item.prompt_tokens is None))
            elif isinstance(item, str):
                out.append(SampleRequest(ids[i], item, len(item.split()), int(output_lens[i]), approx_prompt_len=True))
            else:
                raise UsageError(f"prompts[{i % len(prompts)}] must be a string or a DatasetPrompt, "
                                 f"got {type(item).__name__}")
        return out
    low, high = _id_range(vocab_size)
    all_ids = rng.integers(low, high, size=int(input_lens.sum())).tolist()
    words = [f"t{i}" for i in all_ids]
    out, pos = [], 0
    for i in range(n):
        length = int(input_lens[i])
        out.append(SampleRequest(ids[i], " ".join(words[pos:pos + length]), length, int(output_lens[i])))
        pos += length
    return out
