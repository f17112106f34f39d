"""Real workloads: prompts from a JSONL file, from a ShareGPT conversation file, or synthetic prompts whose
lengths follow a distribution. Each gives a :class:`Dataset` of
:class:`~pytest_llmperf.load.prompts.DatasetPrompt` that ``run_load(prompts=dataset.prompts)`` sends in order.

Spec strings (``--llmperf-dataset`` / ``llmperf run --dataset``), parsed by :func:`load_dataset`:

- ``jsonl:PATH`` -- one JSON object per line: ``{"prompt": "...", "output_len": 128}``; ``output_len`` (alias
  ``max_tokens``) is optional (the workload's output length is used when it is missing).
- ``sharegpt:PATH`` -- the ShareGPT format (a JSON array, or JSONL, of ``{"conversations": [{"from": "human",
  "value": ...}, {"from": "gpt", "value": ...}, ...]}``; ``role``/``content`` keys are accepted too). As
  vLLM's ``ShareGPTDataset``: the first human turn is the prompt and the reply that follows sets the output length.
  Without a tokenizer both are whitespace word counts scaled by :data:`TOKENS_PER_WORD` (an approximation; the
  server's ``usage.prompt_tokens`` is what gets recorded). Entries with fewer than 2 turns are skipped, as are
  prompts or replies under 4 tokens (vLLM's ``is_valid_sequence`` minimum).
- ``dist:IN[,OUT]`` -- synthetic ``t<id>`` prompts (exact lengths on the synthetic tokenizer) with lengths drawn
  from a :class:`LengthDistribution`: ``fixed:N``, ``uniform:LOW:HIGH``, ``normal:MEAN:STD``,
  ``lognormal:MU:SIGMA`` (of the natural log), ``lognormal-mean:MEAN:SIGMA``, or ``sharegpt-in`` /
  ``sharegpt-out``.

The ``sharegpt-in``/``sharegpt-out`` presets are lognormal. Their means are the ones published for ShareGPT in
the vLLM paper: Kwon et al., "Efficient Memory Management for Large Language Model Serving with PagedAttention",
SOSP 2023 (arXiv:2309.06180), section 6.1 / Figure 11: mean input 161.31 and mean output 337.99 tokens
(:data:`SHAREGPT_MEAN_INPUT_TOKENS`, :data:`SHAREGPT_MEAN_OUTPUT_TOKENS`). The paper gives no spread, so
the log-std :data:`SHAREGPT_LOG_SIGMA` is our assumption, not a fit; fit your own with
:func:`fit_lognormal` over a local ShareGPT file (``dist:fit=PATH``) for a fitted shape. The means were
taken from the paper as cited; they were not re-measured here.

Bad input is a one-line :class:`~pytest_llmperf.errors.UsageError` naming the cause: a missing or empty
file, a malformed line (its number), an entry without a prompt, and (:func:`check_fits`) a prompt whose
tokens plus its output length exceed the server's ``max_model_len``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_llmperf.errors import UsageError
from pytest_llmperf.load.prompts import DatasetPrompt, synthetic_prompt

__all__ = ["Dataset", "LengthDistribution", "load_dataset", "load_jsonl", "load_sharegpt", "synthetic_dataset",
           "parse_distribution", "fit_lognormal", "check_fits", "TOKENS_PER_WORD", "SHAREGPT_MEAN_INPUT_TOKENS",
           "SHAREGPT_MEAN_OUTPUT_TOKENS", "SHAREGPT_LOG_SIGMA"]

#: Tokens per whitespace word assumed when no tokenizer is given (English BPE text; an approximation).
TOKENS_PER_WORD = 1.3
#: ShareGPT mean prompt length in tokens (Kwon et al., SOSP 2023, section 6.1 / Fig. 11).
SHAREGPT_MEAN_INPUT_TOKENS = 161.31
#: ShareGPT mean output length in tokens (same source).
SHAREGPT_MEAN_OUTPUT_TOKENS = 337.99
#: Log-std of the ShareGPT presets: an assumption (the source publishes means only).
SHAREGPT_LOG_SIGMA = 1.0
#: vLLM's ShareGPT filter: shorter prompts or replies are skipped.
MIN_SEQUENCE_TOKENS = 4

CountFn = Callable[[str], int]


@dataclass(frozen=True)
class Dataset:
    """Prompts to send, in order, and an identity for results (``name``: kind and file; ``digest``: sha256 of the
    file, or of the spec for synthetic sets). ``prompts`` never contain credentials."""

    name: str
    digest: str
    prompts: tuple[DatasetPrompt, ...]

    def to_dict(self) -> dict[str, Any]:
        """Identity for the workload dict: ``{"dataset": name, "dataset_sha256": digest[:16], "dataset_size": n}``."""
        return {"dataset": self.name, "dataset_sha256": self.digest[:16], "dataset_size": len(self.prompts)}


def _word_tokens(text: str) -> int:
    return max(1, int(round(len(text.split()) * TOKENS_PER_WORD)))


def _read(path: str | Path, kind: str) -> tuple[Path, bytes]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{kind} dataset file {str(p)!r} does not exist")
    raw = p.read_bytes()
    if not raw.strip():
        raise UsageError(f"{kind} dataset file {str(p)!r} is empty")
    return p, raw


def _positive_int(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}: {key!r} must be an integer >= 1, got {value!r}")
    return value


def load_jsonl(path: str | Path) -> Dataset:
    """``{"prompt": str, "output_len": int?}`` per line (blank lines skipped); errors name the line."""
    p, raw = _read(path, "JSONL")
    prompts: list[DatasetPrompt] = []
    for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p.name} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{where}: expected a JSON object with a 'prompt', got {type(obj).__name__}")
        text = obj.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"{where}: missing or empty 'prompt' (a non-empty string)")
        out = obj.get("output_len", obj.get("max_tokens"))
        out_len = None if out is None else _positive_int(out, where, "output_len")
        prompts.append(DatasetPrompt(text, out_len, f"{p.name}:{lineno}"))
    if not prompts:
        raise UsageError(f"JSONL dataset file {str(p)!r} has no prompt")
    return Dataset(f"jsonl:{p.name}", hashlib.sha256(raw).hexdigest(), tuple(prompts))


def _turns(entry: Any) -> list[tuple[str, str]] | None:
    conv = entry.get("conversations", entry.get("messages")) if isinstance(entry, dict) else None
    if not isinstance(conv, list):
        return None
    out = []
    for turn in conv:
        if not isinstance(turn, dict):
            return None
        who = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        if not isinstance(who, str) or not isinstance(text, str):
            return None
        out.append((who.lower(), text))
    return out


def load_sharegpt(path: str | Path, *, count_tokens: CountFn | None = None) -> Dataset:
    """First human turn -> prompt, the reply after it -> output length (``count_tokens`` or words x 1.3)."""
    p, raw = _read(path, "ShareGPT")
    count = count_tokens or _word_tokens
    text = raw.decode("utf-8", errors="replace")
    entries: list[tuple[str, Any]] = []
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{p.name} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        entries = [(f"{p.name} entry {i}", e) for i, e in enumerate(data)]
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append((f"{p.name} line {lineno}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{p.name} line {lineno}: not valid JSON ({exc.msg})") from None
    prompts: list[DatasetPrompt] = []
    for where, entry in entries:
        turns = _turns(entry)
        if turns is None:
            raise UsageError(f"{where}: not a ShareGPT conversation (expected 'conversations': a list of "
                             f"{{'from', 'value'}} turns)")
        human = next((i for i, (who, _) in enumerate(turns) if who in ("human", "user")), None)
        if human is None or human + 1 >= len(turns):
            continue  # vLLM skips conversations with fewer than 2 turns
        prompt, reply = turns[human][1], turns[human + 1][1]
        out_len = count(reply)
        if count(prompt) < MIN_SEQUENCE_TOKENS or out_len < MIN_SEQUENCE_TOKENS:
            continue
        prompts.append(DatasetPrompt(prompt, int(out_len), where))
    if not prompts:
        raise UsageError(f"ShareGPT dataset file {str(p)!r} has no usable conversation (a human turn followed by a "
                         f"reply, each of at least {MIN_SEQUENCE_TOKENS} tokens)")
    return Dataset(f"sharegpt:{p.name}", hashlib.sha256(raw).hexdigest(), tuple(prompts))


@dataclass(frozen=True)
class LengthDistribution:
    """A token-length distribution: ``kind`` in fixed, uniform, normal, lognormal; draws are rounded and
    clipped to ``[1, max_tokens]``. Parameters: fixed ``a``=N; uniform ``a``..``b``; normal mean ``a``, std ``b``;
    lognormal ``a``=mu, ``b``=sigma of the natural log."""

    kind: str
    a: float
    b: float = 0.0
    max_tokens: int = 1 << 20

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "uniform", "normal", "lognormal"):
            raise UsageError(f"unknown length distribution {self.kind!r}: use fixed, uniform, normal or lognormal")
        if not (math.isfinite(self.a) and math.isfinite(self.b)):
            raise UsageError(f"{self.kind} length distribution parameters must be finite, got {self.a}, {self.b}")
        if self.kind == "fixed" and self.a < 1:
            raise UsageError(f"fixed length must be >= 1 token, got {self.a:g}")
        if self.kind == "uniform" and not 1 <= self.a <= self.b:
            raise UsageError(f"uniform lengths need 1 <= low <= high, got {self.a:g}:{self.b:g}")
        if self.kind == "normal" and (self.a < 1 or self.b < 0):
            raise UsageError(f"normal lengths need mean >= 1 and std >= 0, got {self.a:g}:{self.b:g}")
        if self.kind == "lognormal" and self.b < 0:
            raise UsageError(f"lognormal sigma must be >= 0, got {self.b:g}")

    @property
    def mean_tokens(self) -> float:
        """The mean before rounding and clipping."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "normal":
            return self.a
        return math.exp(self.a + self.b**2 / 2)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` lengths (int64, each in ``[1, max_tokens]``) drawn from ``rng``."""
        if self.kind == "fixed":
            raw = np.full(n, self.a)
        elif self.kind == "uniform":
            raw = rng.integers(int(self.a), int(self.b) + 1, size=n).astype(np.float64)
        elif self.kind == "normal":
            raw = rng.normal(self.a, self.b, size=n)
        else:
            raw = rng.lognormal(self.a, self.b, size=n)
        return np.clip(np.rint(raw), 1, self.max_tokens).astype(np.int64)


def fit_lognormal(lengths: Sequence[int] | np.ndarray) -> LengthDistribution:
    """Maximum-likelihood lognormal of positive lengths: mu and sigma of their natural logs."""
    x = np.asarray(lengths, dtype=np.float64)
    x = x[x > 0]
    if x.size < 2:
        raise UsageError(f"fitting a lognormal needs at least 2 positive lengths, got {x.size}")
    logs = np.log(x)
    return LengthDistribution("lognormal", float(logs.mean()), float(logs.std()))


def _lognormal_with_mean(mean: float, sigma: float) -> LengthDistribution:
    if mean < 1:
        raise UsageError(f"lognormal mean must be >= 1 token, got {mean:g}")
    return LengthDistribution("lognormal", math.log(mean) - sigma**2 / 2, sigma)


def parse_distribution(text: str) -> LengthDistribution:
    """``fixed:N``, ``uniform:LOW:HIGH``, ``normal:MEAN:STD``, ``lognormal:MU:SIGMA``, ``lognormal-mean:MEAN:SIGMA``,
    ``sharegpt-in``, ``sharegpt-out``; a bare integer is fixed."""
    parts = text.strip().split(":")
    kind, args = parts[0].lower(), parts[1:]
    try:
        if len(parts) == 1 and kind.isdigit():
            return LengthDistribution("fixed", float(kind))
        if kind == "sharegpt-in" and not args:
            return _lognormal_with_mean(SHAREGPT_MEAN_INPUT_TOKENS, SHAREGPT_LOG_SIGMA)
        if kind == "sharegpt-out" and not args:
            return _lognormal_with_mean(SHAREGPT_MEAN_OUTPUT_TOKENS, SHAREGPT_LOG_SIGMA)
        nums = [float(a) for a in args]
    except ValueError:
        nums = []
        args = ["?"]
    want = {"fixed": 1, "uniform": 2, "normal": 2, "lognormal": 2, "lognormal-mean": 2}
    if kind not in want or len(nums) != want[kind] or len(args) != want[kind]:
        raise UsageError(f"length distribution {text!r} not understood: use fixed:N, uniform:LOW:HIGH, "
                         f"normal:MEAN:STD, lognormal:MU:SIGMA, lognormal-mean:MEAN:SIGMA, sharegpt-in or sharegpt-out")
    if kind == "lognormal-mean":
        return _lognormal_with_mean(nums[0], nums[1])
    return LengthDistribution(kind, nums[0], nums[1] if len(nums) > 1 else 0.0)


def synthetic_dataset(input_dist: LengthDistribution, output_dist: LengthDistribution, n: int, seed: int = 0, *,
                      vocab_size: int = 32000, name: str = "dist") -> Dataset:
    """``n`` synthetic ``t<id>`` prompts (exact token counts on the synthetic tokenizer) with lengths drawn
    from the distributions, from a generator seeded by ``seed`` (the same seed gives the same set)."""
    if n < 1:
        raise UsageError(f"a synthetic dataset needs n >= 1 prompts, got {n}")
    rng = np.random.default_rng(seed)
    ins, outs = input_dist.sample(rng, n), output_dist.sample(rng, n)
    prompts = tuple(DatasetPrompt(synthetic_prompt(int(i), rng, vocab_size=vocab_size), int(o), f"{name}[{k}]",
                                  prompt_tokens=int(i)) for k, (i, o) in enumerate(zip(ins, outs, strict=True)))
    return Dataset(name, hashlib.sha256(f"{name}|{n}|{seed}|{vocab_size}".encode()).hexdigest(), prompts)


def _dist_dataset(body: str, n: int, seed: int, vocab_size: int) -> Dataset:
    if body.startswith("fit="):
        lengths = load_sharegpt(body[len("fit="):])
        fitted_in = fit_lognormal([p.approx_tokens for p in lengths.prompts])
        fitted_out = fit_lognormal([p.output_len or 1 for p in lengths.prompts])
        return synthetic_dataset(fitted_in, fitted_out, n, seed, vocab_size=vocab_size,
                                 name=f"dist:fit={Path(body[4:]).name}")
    head, _, tail = body.partition(",")
    in_dist = parse_distribution(head)
    out_dist = parse_distribution(tail) if tail else None
    if out_dist is None:
        raise UsageError(f"dataset 'dist:{body}' needs an output distribution too: dist:IN,OUT "
                         f"(e.g. dist:sharegpt-in,sharegpt-out)")
    return synthetic_dataset(in_dist, out_dist, n, seed, vocab_size=vocab_size, name=f"dist:{body}")


def load_dataset(spec: str, *, n: int = 256, seed: int = 0, vocab_size: int = 32000,
                 count_tokens: CountFn | None = None) -> Dataset:
    """Parse a dataset spec (module docstring); ``n``/``seed``/``vocab_size`` apply to ``dist:`` sets only."""
    kind, sep, body = spec.partition(":")
    if not sep or not body:
        raise UsageError(f"dataset {spec!r} not understood: use jsonl:PATH, sharegpt:PATH or dist:IN,OUT")
    if kind == "jsonl":
        return load_jsonl(body)
    if kind == "sharegpt":
        return load_sharegpt(body, count_tokens=count_tokens)
    if kind == "dist":
        return _dist_dataset(body, n, seed, vocab_size)
    raise UsageError(f"unknown dataset kind {kind!r} in {spec!r}: use jsonl:PATH, sharegpt:PATH or dist:IN,OUT")


def check_fits(dataset: Dataset, max_model_len: int | None, default_output_len: int, *,
               count_tokens: CountFn | None = None) -> None:
    """Raise UsageError naming the first prompt whose tokens plus output length exceed ``max_model_len``
    (vLLM answers such a request with HTTP 400). Without ``count_tokens`` the count is the exact synthetic count
    or words x 1.3 (an estimate); ``max_model_len=None`` (unknown) checks nothing."""
    if max_model_len is None:
        return
    for item in dataset.prompts:
        n_prompt = item.prompt_tokens if item.prompt_tokens is not None else \
            (count_tokens(item.prompt) if count_tokens else _word_tokens(item.prompt))
        n_out = item.output_len if item.output_len is not None else default_output_len
        if n_prompt + n_out > max_model_len:
            approx = "" if item.prompt_tokens is not None or count_tokens else "~"
            raise UsageError(f"{item.source or dataset.name}: prompt of {approx}{n_prompt} tokens + {n_out} output "
                             f"tokens exceeds the server's max_model_len {max_model_len}; drop or shorten it")
