"""Goldens for the logits processors and warpers (crates/gpt2/src/generation/processors.rs).

Runs transformers' own classes of generation/logits_process.py on fixed random logits, and the
whole `_get_logits_processor` pipeline for a few GenerationConfigs, and writes inputs and outputs
to tests/fixtures/generation/processors.safetensors. The metadata holds `golden_format_version`,
`transformers_version` and `cases`: a JSON list, one entry per output tensor, saying how it was
made (processor class and arguments, or generation config, prompt_len and max_length).

    PYTHONPATH=/work/tf446 /work/venv/bin/python scripts/make_processor_goldens.py
"""

import json
import math
import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, LogitsProcessorList
from transformers.generation import logits_process as lp

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "generation", "processors.safetensors")


def logits_small():
    """4 x 64: exact ties (inside and at the top-k / top-p cut), large values, one -inf."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, generator=g) * 3.0
    x[0, 10] = x[0, 20] = x[0, 30] = x[0].max().item()  # a three-way tie at the top
    x[1, 5] = x[1, 6] = x[1, 7] = 2.5  # ties in the middle
    x[1, 8] = x[1, 9] = -2.5
    x[2, 0] = 40.0  # one dominant token
    x[2, 1] = -60.0
    x[2, 2] = 35.0
    x[3, 3] = float("-inf")  # already filtered
    x[3, 4] = x[3, 5] = 7.0
    return x


def logits_large():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1000, generator=g) * 2.0
    x[0, :50] = 1.25  # a plateau of ties
    x[1, 999] = 25.0
    x[2, 500] = x[2, 501] = 9.0
    return x


def ids_small():
    return torch.tensor(
        [
            [0, 0, 5, 7, 5, 7, 9, 5, 7, 3],  # left padding with 0, repeated bigram 5 7
            [1, 2, 3, 1, 2, 3, 1, 2, 40, 63],
            [10, 10, 10, 10, 10, 11, 12, 10, 10, 10],
            [63, 62, 61, 60, 63, 62, 4, 5, 6, 63],
        ]
    )


def ids_large():
    return torch.tensor(
        [
            [50, 51, 52, 50, 51, 999, 7, 50, 51, 3, 50, 51],
            [0, 0, 0, 100, 200, 300, 100, 200, 300, 100, 200, 12],
            [999, 998, 999, 998, 999, 998, 1, 2, 3, 4, 999, 998],
        ]
    )


def with_stable_sort(f):
    sort, argsort = torch.sort, torch.argsort
    torch.sort = lambda *a, **k: sort(*a, **k, stable=True)
    torch.argsort = lambda *a, **k: argsort(*a, **k, stable=True)
    try:
        return f()
    finally:
        torch.sort, torch.argsort = sort, argsort


def main():
    tensors = {
        "logits_small": logits_small(),
        "logits_large": logits_large(),
        "ids_small": ids_small(),
        "ids_large": ids_large(),
    }
    cases = []

    def run(name, proc, args, logits="logits_small", ids="ids_small", ids_len=None):
        """ids_len: use only the first ids_len tokens of each row (length-dependent processors)."""
        cls = getattr(lp, proc)
        p = cls(**args)
        input_ids = tensors[ids] if ids_len is None else tensors[ids][:, :ids_len]
        out = p(input_ids, tensors[logits].clone())
        # torch.sort(stable=False) on CPU splits exact ties in an order of its own (not index
        # order); the Rust side sorts stably. Where that decides which tied token a cut keeps,
        # the golden is transformers' own code run with stable sorts, and the case says so.
        stable = with_stable_sort(lambda: cls(**args)(input_ids, tensors[logits].clone()))
        tie_order = "torch"
        if not torch.equal(out.isinf(), stable.isinf()):
            out, tie_order = stable, "stable"
        key = f"out_{len(cases):03d}"
        tensors[key] = out.contiguous()
        cases.append(
            {"name": name, "kind": "processor", "processor": proc, "args": args, "logits": logits, "ids": ids,
             "ids_len": ids_len if ids_len is not None else tensors[ids].shape[1], "output": key,
             "tie_order": tie_order}
        )

    lg, ids = "logits_small", "ids_small"
    for t in [0.7, 1.3]:
        run(f"temperature {t}", "TemperatureLogitsWarper", {"temperature": t}, lg, ids)
    for k, m in [(1, 1), (3, 1), (5, 8), (50, 1)]:
        run(f"top_k {k} keep {m}", "TopKLogitsWarper", {"top_k": k, "min_tokens_to_keep": m}, lg, ids)
    for p_, m in [(0.9, 1), (0.5, 1), (0.3, 3), (0.05, 1)]:
        run(f"top_p {p_} keep {m}", "TopPLogitsWarper", {"top_p": p_, "min_tokens_to_keep": m}, lg, ids)
    for p_, m in [(0.1, 1), (0.5, 2), (0.01, 1)]:
        run(f"min_p {p_} keep {m}", "MinPLogitsWarper", {"min_p": p_, "min_tokens_to_keep": m}, lg, ids)
    for p_, m in [(0.9, 1), (0.5, 1), (0.2, 3)]:
        run(f"typical {p_} keep {m}", "TypicalLogitsWarper", {"mass": p_, "min_tokens_to_keep": m}, lg, ids)
    for e, m in [(0.01, 1), (0.05, 3), (0.0003, 1)]:
        run(f"epsilon {e} keep {m}", "EpsilonLogitsWarper", {"epsilon": e, "min_tokens_to_keep": m}, lg, ids)
    for e, m in [(0.01, 1), (0.2, 3), (0.0009, 1)]:
        run(f"eta {e} keep {m}", "EtaLogitsWarper", {"epsilon": e, "min_tokens_to_keep": m}, lg, ids)
    for pen in [1.3, 0.8]:
        run(f"repetition {pen}", "RepetitionPenaltyLogitsProcessor", {"penalty": pen}, lg, ids)
    for n in [1, 2, 3, 4]:
        run(f"no_repeat_ngram {n}", "NoRepeatNGramLogitsProcessor", {"ngram_size": n}, lg, ids)
    run("renormalize", "LogitNormalization", {}, lg, ids)

    # Vocab 1000 (a plateau of 50 ties, a dominant token): one setting per warper, to keep the
    # fixture small.
    lg, ids = "logits_large", "ids_large"
    run("large top_k 50", "TopKLogitsWarper", {"top_k": 50, "min_tokens_to_keep": 1}, lg, ids)
    run("large top_p 0.9", "TopPLogitsWarper", {"top_p": 0.9, "min_tokens_to_keep": 1}, lg, ids)
    run("large min_p 0.1 keep 2", "MinPLogitsWarper", {"min_p": 0.1, "min_tokens_to_keep": 2}, lg, ids)
    run("large typical 0.9", "TypicalLogitsWarper", {"mass": 0.9, "min_tokens_to_keep": 1}, lg, ids)
    run("large epsilon 0.0003", "EpsilonLogitsWarper", {"epsilon": 0.0003, "min_tokens_to_keep": 1}, lg, ids)
    run("large eta 0.0009", "EtaLogitsWarper", {"epsilon": 0.0009, "min_tokens_to_keep": 1}, lg, ids)
    run("large repetition 1.3", "RepetitionPenaltyLogitsProcessor", {"penalty": 1.3}, lg, ids)
    run("large no_repeat_ngram 2", "NoRepeatNGramLogitsProcessor", {"ngram_size": 2}, lg, ids)

    small = ("logits_small", "ids_small")
    run("no_repeat_ngram 12 (longer than rows)", "NoRepeatNGramLogitsProcessor", {"ngram_size": 12}, *small)
    # Bad words: single tokens (one equal to eos, which is dropped), multi-token prefixes that
    # match some rows only, a sequence longer than the rows.
    bw = [[1], [63], [5, 7, 3, 9], [7, 3, 2], [2, 40, 63, 11], [10, 10, 12], [3, 5], list(range(1, 13))]
    run("bad_words with eos", "NoBadWordsLogitsProcessor", {"bad_words_ids": bw, "eos_token_id": 63}, *small)
    run("bad_words without eos", "NoBadWordsLogitsProcessor", {"bad_words_ids": bw, "eos_token_id": None}, *small)
    run("bad_words eos list", "NoBadWordsLogitsProcessor", {"bad_words_ids": bw, "eos_token_id": [1, 63]}, *small)
    sb = [[[4], 2.5], [[5], -1.5], [[7, 3, 20], 4.0], [[3, 20], 1.0], [[40, 63, 20], -3.0], [[10, 10, 10, 11], 0.5],
          [[10, 10, 11], 2.0], [[5], 0.75], [[10, 11], 1.0], [list(range(1, 13)) + [11], 9.0]]
    run("sequence_bias", "SequenceBiasLogitsProcessor", {"sequence_bias": sb}, *small)
    run("suppress", "SuppressTokensLogitsProcessor", {"suppress_tokens": [0, 5, 63, 10]}, *small)
    for bi in [10, 9]:
        run(f"suppress at begin {bi}", "SuppressTokensAtBeginLogitsProcessor",
            {"begin_suppress_tokens": [2, 3, 30], "begin_index": bi}, *small)
    for n in [1, 2]:
        run(f"forced bos at len {n}", "ForcedBOSTokenLogitsProcessor", {"bos_token_id": 7}, *small, ids_len=n)
    for ml in [11, 12]:
        run(f"forced eos max_length {ml}", "ForcedEOSTokenLogitsProcessor",
            {"max_length": ml, "eos_token_id": [3, 63]}, *small)
    for ml in [10, 11]:
        run(f"min_length {ml}", "MinLengthLogitsProcessor", {"min_length": ml, "eos_token_id": [63, 4]}, *small)
    for skip, mn in [(8, 2), (8, 3)]:
        run(f"min_new_tokens skip {skip} min {mn}", "MinNewTokensLengthLogitsProcessor",
            {"prompt_length_to_skip": skip, "min_new_tokens": mn, "eos_token_id": 3}, *small)
    for start, factor, seq in [(2, 1.5, 5), (0, 1.1, 5), (5, 2.0, 5), (1, 0.5, 5)]:
        run(f"exp decay ({start}, {factor}) prompt {seq}", "ExponentialDecayLengthPenalty",
            {"exponential_decay_length_penalty": [start, factor], "eos_token_id": [3, 7, 20],
             "input_ids_seq_length": seq}, *small)

    # InfNanRemove on logits with NaN and +-inf.
    x = logits_small()
    x[0, 0] = float("nan")
    x[1, 1] = float("inf")
    x[2, 2] = float("-inf")
    tensors["logits_invalid"] = x
    run("inf nan remove", "InfNanRemoveLogitsProcessor", {}, "logits_invalid", "ids_small")

    # Whole pipelines: _get_logits_processor for a config, applied at one step.
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=1000, n_positions=64))

    def pipeline(name, cfg, prompt_len, max_new, logits="logits_large", ids="ids_large", ids_len=None):
        gc = GenerationConfig(**cfg)
        ids_t = tensors[ids] if ids_len is None else tensors[ids][:, :ids_len]
        model._prepare_special_tokens(gc, kwargs_has_attention_mask=True, device="cpu")
        gc.max_length = prompt_len + max_new
        procs = model._get_logits_processor(
            generation_config=gc, input_ids_seq_length=prompt_len, encoder_input_ids=ids_t,
            prefix_allowed_tokens_fn=None, logits_processor=LogitsProcessorList(), device="cpu",
        )
        out = procs(ids_t, tensors[logits].clone())
        key = f"out_{len(cases):03d}"
        tensors[key] = out.contiguous()
        cases.append(
            {"name": name, "kind": "pipeline", "config": cfg, "prompt_len": prompt_len,
             "max_length": prompt_len + max_new, "logits": logits, "ids": ids,
             "ids_len": ids_t.shape[1], "processors": [type(p).__name__ for p in procs], "output": key}
        )

    greedy = {"eos_token_id": 998, "repetition_penalty": 1.2, "no_repeat_ngram_size": 2,
              "bad_words_ids": [[12], [50, 51, 7], [200, 300]], "min_new_tokens": 3}
    pipeline("greedy processors, min_new_tokens active", greedy, 10, 8)
    pipeline("greedy processors, min_new_tokens passed", greedy, 8, 8)
    pipeline("greedy min_length + forced eos + suppress", {
        "eos_token_id": [998, 999], "min_length": 20, "forced_eos_token_id": [999, 3],
        "suppress_tokens": [1, 2], "begin_suppress_tokens": [50, 51], "sequence_bias": [[[51, 999], -2.0], [[16], 3.0]],
    }, 12, 1)
    sampling = {"do_sample": True, "temperature": 0.8, "top_k": 40, "top_p": 0.9, "typical_p": 0.95,
                "eos_token_id": 998}
    pipeline("sampling temperature top_k top_p typical", sampling, 12, 5)
    pipeline("sampling min_p epsilon eta", {"do_sample": True, "top_k": 0, "min_p": 0.05, "epsilon_cutoff": 0.0005,
                                             "eta_cutoff": 0.001, "eos_token_id": 998}, 12, 5)
    pipeline("beam sampling keeps two", {"do_sample": True, "num_beams": 4, "top_k": 1, "top_p": 0.05,
                                         "eos_token_id": 998}, 12, 5)
    pipeline("beam sampling, two eos ids keep three", {"do_sample": True, "num_beams": 2, "top_k": 1,
                                                       "eos_token_id": [998, 999]}, 12, 5)
    pipeline("beam sampling without eos keeps two", {"do_sample": True, "num_beams": 3, "top_k": 1,
                                                     "eos_token_id": None}, 12, 5)
    pipeline("greedy ignores warpers, renormalize", {"temperature": 0.5, "top_k": 3, "renormalize_logits": True,
                                                     "repetition_penalty": 0.9, "eos_token_id": 998}, 12, 5)
    pipeline("sampling renormalize, remove invalid, exp decay", {
        "do_sample": True, "temperature": 1.5, "top_k": 20, "renormalize_logits": True, "remove_invalid_values": True,
        "exponential_decay_length_penalty": [2, 1.3], "eos_token_id": [998, 5], "forced_bos_token_id": 7,
    }, 8, 10)

    one_token = {"forced_bos_token_id": 7, "begin_suppress_tokens": [3, 20], "eos_token_id": 63}
    for n in [1, 2]:
        pipeline(f"one-token prompt: forced bos moves begin suppress, at length {n}", one_token, 1, 5,
                 "logits_small", "ids_small", ids_len=n)
    pipeline("beam greedy with warper settings and min_length", {"num_beams": 3, "top_k": 2, "min_length": 11,
                                                                 "eos_token_id": [63, 3]}, 10, 5,
             "logits_small", "ids_small")

    meta = {
        "golden_format_version": "1",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "cases": json.dumps(cases),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT, metadata=meta)
    print(f"{len(cases)} cases -> {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
