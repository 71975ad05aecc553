#!/usr/bin/env python3
"""Goldens for whole generate() runs: transformers 4.46 (which still has group beam and
contrastive search built in) on the fixture checkpoints, one left-padded batch per case.

    PYTHONPATH=/path/to/transformers-4.46 python scripts/make_search_goldens.py

Format (version 1): tests/fixtures/generation/cases/<case>.safetensors, metadata
{"golden_format_version": "1", "transformers_version", "torch_version", "model", "kwargs" (JSON,
as passed to generate besides input_ids / attention_mask), "description"}, tensors:
input_ids [B,T] i64, attention_mask [B,T] i64, sequences [B*nrs, T+new] i64,
scores [steps, rows, V] f32 (processed, as returned), sequences_scores [B*nrs] f32 (beam methods),
transition_scores [B*nrs, steps] f32 (compute_transition_scores, normalize_logits=False).
"""

import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "generation" / "cases"

BEAM = dict(num_beams=4)

# name -> (model, kwargs, description)
CASES = {
    "greedy": ("tiny", {}, "plain greedy"),
    "greedy_gpt2_vocab": ("gpt2-vocab", {}, "greedy on the real-vocabulary model"),
    "greedy_repetition_penalty": ("tiny", dict(repetition_penalty=1.3), "repetition penalty"),
    "greedy_no_repeat_ngram": ("tiny", dict(no_repeat_ngram_size=2), "no_repeat_ngram_size"),
    "greedy_bad_words": ("tiny", dict(bad_words_ids="FIRST_TWO_GREEDY"), "bad_words_ids: the tokens greedy picks"),
    "greedy_min_new_tokens": ("tiny", dict(min_new_tokens=6, eos_token_id="GREEDY_STEP_2"),
                              "eos = the token greedy emits at step 2; min_new_tokens keeps it out"),
    "greedy_eos_early": ("tiny", dict(eos_token_id="GREEDY_STEP_2"), "rows finish at different steps; pad fills"),
    "greedy_several_eos": ("tiny", dict(eos_token_id="GREEDY_STEPS_2_3"), "two eos ids"),
    "greedy_sequence_bias": ("tiny", dict(sequence_bias="BIAS"), "sequence_bias"),
    "greedy_suppress": ("tiny", dict(suppress_tokens="FIRST_TWO_GREEDY", begin_suppress_tokens=[5, 6]), "suppress tokens"),
    "greedy_max_length": ("tiny", dict(max_length=14, max_new_tokens=None), "max_length instead of max_new_tokens"),
    "sample_top_k_1": ("tiny", dict(do_sample=True, top_k=1), "sampling with top_k=1 is deterministic"),
    "beam2": ("tiny", dict(num_beams=2), "beam search"),
    "beam4_lp0": ("tiny", dict(BEAM, length_penalty=0.0), "length_penalty 0"),
    "beam4_lp2_early": ("tiny", dict(BEAM, length_penalty=2.0, early_stopping=True), "early_stopping true"),
    "beam4_lpneg_never": ("tiny", dict(BEAM, length_penalty=-1.0, early_stopping="never"), "early_stopping never"),
    "beam4_nrs4": ("tiny", dict(BEAM, num_return_sequences=4), "every beam returned"),
    "beam4_eos": ("tiny", dict(BEAM, num_return_sequences=2, eos_token_id="GREEDY_STEP_2"),
                  "beams finish early (eos) and get padded"),
    "beam4_eos_never": ("tiny", dict(BEAM, early_stopping="never", eos_token_id="GREEDY_STEP_2"), "never + eos"),
    "beam4_renormalize": ("tiny", dict(BEAM, renormalize_logits=True, repetition_penalty=1.2), "renormalize"),
    "group_beam": ("tiny", dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0), "diverse beam search"),
    "group_beam4": ("tiny", dict(num_beams=4, num_beam_groups=4, diversity_penalty=0.5, num_return_sequences=2),
                    "four groups"),
    "contrastive": ("tiny", dict(penalty_alpha=0.6, top_k=4), "contrastive search"),
    "contrastive_gpt2_vocab": ("gpt2-vocab", dict(penalty_alpha=0.3, top_k=6), "contrastive, real vocabulary"),
    "beam_gpt2_vocab": ("gpt2-vocab", dict(num_beams=3, num_return_sequences=2), "beams, real vocabulary"),
}


def prompts(vocab, eos):
    g = torch.Generator().manual_seed(11)
    lens = [7, 4, 2]
    t = max(lens)
    ids = torch.full((3, t), eos, dtype=torch.long)
    mask = torch.zeros((3, t), dtype=torch.long)
    for i, n in enumerate(lens):
        ids[i, t - n:] = torch.randint(0, vocab - 1, (n,), generator=g)
        mask[i, t - n:] = 1
    return ids, mask


def resolve(kwargs, greedy_new):
    """Fill in the placeholders that depend on what plain greedy produces."""
    out = {}
    for k, v in kwargs.items():
        if v == "FIRST_TWO_GREEDY":
            v = [[int(greedy_new[0, 0])], [int(greedy_new[1, 0])]] if k == "bad_words_ids" else \
                [int(greedy_new[0, 0]), int(greedy_new[1, 0])]
        elif v == "GREEDY_STEP_2":
            v = int(greedy_new[0, 2])
        elif v == "GREEDY_STEPS_2_3":
            v = [int(greedy_new[0, 2]), int(greedy_new[1, 3])]
        elif v == "BIAS":
            v = [[[int(greedy_new[0, 0])], -5.0], [[int(greedy_new[1, 0]), int(greedy_new[1, 1])], -3.0], [[7], 4.0]]
        out[k] = v
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    models = {}
    index = {}
    for name, (model_name, kwargs, desc) in CASES.items():
        if model_name not in models:
            m = GPT2LMHeadModel.from_pretrained(ROOT / "tests/fixtures/models" / model_name,
                                                attn_implementation="eager").eval()
            models[model_name] = m
        m = models[model_name]
        vocab, eos = m.config.vocab_size, m.config.eos_token_id
        ids, mask = prompts(vocab, eos)
        with torch.no_grad():
            base = m.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=eos)
        greedy_new = base[:, ids.shape[1]:]
        kw = dict(max_new_tokens=10, pad_token_id=eos, return_dict_in_generate=True, output_scores=True)
        kw.update(resolve(kwargs, greedy_new))
        kw = {k: v for k, v in kw.items() if v is not None}
        torch.manual_seed(0)
        with torch.no_grad():
            out = m.generate(ids, attention_mask=mask, **kw)
        tensors = {
            "input_ids": ids,
            "attention_mask": mask,
            "sequences": out.sequences,
            "scores": torch.stack([s.float() for s in out.scores]),
        }
        beam_indices = getattr(out, "beam_indices", None)
        if getattr(out, "sequences_scores", None) is not None:
            tensors["sequences_scores"] = out.sequences_scores.float()
        if kw.get("num_beam_groups", 1) == 1:
            # transformers' beam_indices for group beam search point into the wrong group, so
            # its transition scores there are not a contract.
            tensors["transition_scores"] = m.compute_transition_scores(
                out.sequences, out.scores, beam_indices, normalize_logits=False).float()
        if model_name == "gpt2-vocab":
            del tensors["scores"]  # 50257-wide per step: too large to commit
        meta = {
            "golden_format_version": "1",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "model": model_name,
            "kwargs": json.dumps(kw),
            "description": desc,
        }
        save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(OUT / f"{name}.safetensors"),
                  metadata=meta)
        index[name] = {"model": model_name, "kwargs": kw, "description": desc,
                       "tensors": sorted(tensors)}
        new = out.sequences[:, ids.shape[1]:].tolist()
        print(f"{name}: {new[0]}")
    (OUT / "index.json").write_text(json.dumps({"golden_format_version": "1",
                                                "transformers_version": transformers.__version__,
                                                "cases": index}, indent=1) + "\n")


if __name__ == "__main__":
    main()
