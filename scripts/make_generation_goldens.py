#!/usr/bin/env python3
"""Goldens for whole `generate()` runs, one file per decoding case.

transformers 4.46 still has group beam, contrastive and constrained beam search built in
(transformers 5 moved them to hub repositories), so these goldens come from it:

    PYTHONPATH=/work/tf446 /work/venv/bin/python scripts/make_generation_goldens.py

Every case runs one left-padded batch of three prompts (7, 4 and 2 random token ids in
[0, vocab-2], padded on the left with the model's eos id, attention mask given) through a
committed random-weight checkpoint of tests/fixtures/models/, eager attention, float32, eval,
with `return_dict_in_generate=True, output_scores=True, output_logits=True`.

Format (golden_format_version "1"): tests/fixtures/generation/search/<case>.safetensors with
metadata (all strings)
  golden_format_version  "1"
  transformers_version, torch_version
  model                  fixture directory name under tests/fixtures/models/
  kwargs                 JSON of the generate() kwargs exactly as passed, besides input_ids and
                         attention_mask
  description            what the case exercises, and how data-dependent values were picked
  omitted                JSON object {tensor name: why it is not stored}
and tensors
  input_ids            [B, T] i64
  attention_mask       [B, T] i64
  sequences            [B*nrs, T+new] i64
  scores               [steps, rows, V] f32  processed scores per step, as returned (-inf kept);
                                             rows = B*num_beams for beam methods
  logits               [steps, rows, V] f32  raw logits per step
  sequences_scores     [B*nrs] f32           beam methods
  beam_indices         [B*nrs, steps] i64    beam methods, as returned (-1 past a row's end) but
                                             cut to `steps` columns (transformers pads it to
                                             sequences.shape[1] with -1)
  transition_scores    [B*nrs, steps] f32    model.compute_transition_scores(sequences, scores,
                                             beam_indices, normalize_logits=False)
tests/fixtures/generation/search/index.json lists every case (model, kwargs, description,
tensors, omitted) and the reference versions, plus the cases that could not be made.
"""

import json
from pathlib import Path

import torch
import transformers
from transformers import GPT2LMHeadModel

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "fixtures" / "models"
OUT = ROOT / "tests" / "fixtures" / "generation" / "search"

PROMPT_LENS = [7, 4, 2]
NEW = 10
BEAM_NEW = 8  # beam cases store [steps, B*num_beams, V] twice: fewer steps keep the files small


class Ctx:
    """Data-dependent values, from plain greedy / plain beam-4 runs of the same prompts."""

    def __init__(self, greedy_new, beam_new, contrastive_new):
        self.g = greedy_new  # [B, NEW] tokens greedy emits
        self.b = beam_new  # [B, BEAM_NEW] tokens of the best beam-4 hypothesis
        self.c = contrastive_new  # [B, NEW] tokens of contrastive search, penalty_alpha 0.6, top_k 4


def case(model, kwargs, description, new=NEW):
    return dict(model=model, kwargs=kwargs, description=description, new=new)


def beam(kwargs, description, model="tiny", new=BEAM_NEW):
    return case(model, dict(kwargs), description, new=new)


# kwargs values may be callables of Ctx; they are resolved before the run and stored resolved.
CASES = {
    # 1. greedy
    "greedy": case("tiny", {}, "plain greedy"),
    "greedy_inverse_layer_idx": case("inverse-layer-idx", {}, "plain greedy on a vocab-500, 3-layer checkpoint"),
    "greedy_gpt2_vocab": case("gpt2-vocab", {}, "greedy on the real-vocabulary checkpoint (sequences and "
                                                "transition scores only: scores are 50257 wide)"),
    # 2. beam search over num_beams / length_penalty / early_stopping / num_return_sequences
    "beam2": beam(dict(num_beams=2), "beam search, defaults (length_penalty 1, early_stopping False)"),
    "beam2_nrs2_lp0_early": beam(dict(num_beams=2, num_return_sequences=2, length_penalty=0.0, early_stopping=True),
                                 "two beams, both returned, length_penalty 0, early_stopping True"),
    "beam4_nrs4": beam(dict(num_beams=4, num_return_sequences=4), "every beam returned"),
    "beam4_eos_lp1_false": beam(dict(num_beams=4, num_return_sequences=2, eos_token_id=lambda c: int(c.b[0, 2])),
                                "eos = the token the best beam-4 hypothesis of row 0 emits at step 2, so hypotheses "
                                "finish early; early_stopping False heuristic"),
    "beam4_eos_lp2_true": beam(dict(num_beams=4, num_return_sequences=2, length_penalty=2.0, early_stopping=True,
                                    eos_token_id=lambda c: int(c.b[0, 2])),
                               "as beam4_eos_lp1_false, length_penalty 2, early_stopping True"),
    "beam4_eos_lp2_never": beam(dict(num_beams=4, length_penalty=2.0, early_stopping="never",
                                     eos_token_id=lambda c: int(c.b[0, 2])),
                                "length_penalty 2 with early_stopping never: the bound uses max_length"),
    "beam4_eos_lp0_never": beam(dict(num_beams=4, num_return_sequences=4, length_penalty=0.0, early_stopping="never",
                                     eos_token_id=lambda c: int(c.b[0, 2])),
                                "length_penalty 0, never, all four returned"),
    "beam4_eos_lpneg_false": beam(dict(num_beams=4, num_return_sequences=2, length_penalty=-1.0,
                                       eos_token_id=lambda c: int(c.b[0, 2])),
                                  "negative length_penalty favours short hypotheses"),
    "beam4_eos_lpneg_never": beam(dict(num_beams=4, length_penalty=-1.0, early_stopping="never",
                                       eos_token_id=lambda c: int(c.b[0, 2])),
                                  "negative length_penalty, never: the bound uses cur_len"),
    "beam4_several_eos": beam(dict(num_beams=4, num_return_sequences=2,
                                   eos_token_id=lambda c: [int(c.b[0, 2]), int(c.b[1, 3])]),
                              "two eos ids (beam-4's step-2 token of row 0, its step-3 token of row 1); finalize "
                              "appends eos_token_id[0] to a finished hypothesis whichever eos it produced"),
    "beam3_gpt2_vocab": beam(dict(num_beams=3, num_return_sequences=2), "beams on the real-vocabulary checkpoint "
                                                                       "(no scores / logits stored)", "gpt2-vocab"),
    # 3. diverse (group) beam search
    "group_beam": beam(dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0), "diverse beam search, 2 groups"),
    "group_beam4_nrs2": beam(dict(num_beams=4, num_beam_groups=4, diversity_penalty=1.0, num_return_sequences=2),
                             "four groups of one beam, two returned"),
    # 4. contrastive search
    "contrastive": case("tiny", dict(penalty_alpha=0.6, top_k=4), "contrastive search"),
    "contrastive_a03_k6": case("tiny", dict(penalty_alpha=0.3, top_k=6), "contrastive search, other alpha / k"),
    "contrastive_eos": case("tiny", dict(penalty_alpha=0.6, top_k=4, eos_token_id=lambda c: int(c.c[1, 3])),
                            "contrastive, eos = the token plain contrastive emits at step 3 of row 1: that row "
                            "finishes and is padded with pad_token_id"),
    "contrastive_gpt2_vocab": case("gpt2-vocab", dict(penalty_alpha=0.3, top_k=6),
                                   "contrastive on the real-vocabulary checkpoint (no scores / logits stored)"),
    # 5. constrained beam search
    "constrained_one_token": beam(dict(num_beams=4, force_words_ids=[[17]]), "force one one-token word", new=NEW),
    "constrained_phrase": beam(dict(num_beams=4, force_words_ids=[[41, 42, 43]]), "force one three-token word",
                               new=NEW),
    "constrained_disjunctive": beam(dict(num_beams=4, force_words_ids=[[[5], [6, 7]]]),
                                    "one disjunctive constraint: [5] or [6, 7]", new=NEW),
    "constrained_mixed_nrs2": beam(dict(num_beams=6, num_return_sequences=2, force_words_ids=[[17], [41, 42], [[5], [6]]]),
                                   "a one-token word, a two-token word and a disjunctive constraint together, "
                                   "6 beams (with 4 no hypothesis completes all three in 10 tokens)", new=NEW),
    # transformers 4.46 itself crashes here (finalize mixes fallback hypotheses without beam_indices
    # with completed ones); kept so index.json records it under not_generated
    "constrained_mixed_beam8": beam(dict(num_beams=8, num_return_sequences=2, force_words_ids=[[17], [41, 42], [[5], [6]]]),
                                    "expected to fail in transformers 4.46", new=NEW),
    "constrained_unsatisfiable": beam(dict(num_beams=4, max_new_tokens=3, force_words_ids=[[41, 42, 43, 44]]),
                                      "a four-token word cannot fit in three new tokens: transformers falls back to "
                                      "the best unconstrained beams and returns no beam_indices", new=3),
    # 6. logits processors on greedy
    "greedy_repetition_penalty": case("tiny", dict(repetition_penalty=1.3), "repetition_penalty 1.3"),
    "greedy_no_repeat_ngram": case("tiny", dict(no_repeat_ngram_size=2), "no_repeat_ngram_size 2"),
    "greedy_bad_words": case("tiny", dict(bad_words_ids=lambda c: [[int(c.g[0, 0])], [int(c.g[1, 1]), int(c.g[1, 2])]]),
                             "bad_words_ids: greedy's first token of row 0 (single-token entry) and greedy's "
                             "steps 1-2 of row 1 (two-token entry: bans the second after the first)"),
    "greedy_min_new_tokens": case("tiny", dict(min_new_tokens=5, eos_token_id=lambda c: int(c.g[0, 2])),
                                  "eos = the token greedy emits at step 2 of row 0; min_new_tokens 5 masks it"),
    "greedy_min_length": case("tiny", dict(min_length=11, eos_token_id=lambda c: int(c.g[0, 2])),
                              "min_length 11 (prompt T=7 included) with eos = greedy's step-2 token of row 0"),
    "greedy_eos_rows_finish": case("tiny", dict(eos_token_id=lambda c: int(c.g[0, 2])),
                                   "eos = greedy's step-2 token of row 0: rows finish at different steps and "
                                   "finished rows are filled with pad_token_id"),
    "greedy_several_eos": case("tiny", dict(eos_token_id=lambda c: [int(c.g[0, 2]), int(c.g[1, 4])]),
                               "two eos ids (greedy's step-2 token of row 0, step-4 token of row 1)"),
    "greedy_sequence_bias": case("tiny", dict(sequence_bias=lambda c: [[[int(c.g[0, 0])], -5.0],
                                                                       [[int(c.g[1, 0]), int(c.g[1, 1])], -3.0],
                                                                       [[7], 1.0]]),
                                 "sequence_bias: a one-token and a two-token negative bias on greedy's picks, "
                                 "a positive one (+1) on token 7"),
    "greedy_suppress": case("tiny", dict(suppress_tokens=lambda c: [int(c.g[0, 1]), int(c.g[2, 3])],
                                         begin_suppress_tokens=lambda c: [int(c.g[0, 0]), int(c.g[1, 0])]),
                            "suppress_tokens (greedy's later picks) and begin_suppress_tokens (greedy's first "
                            "picks; applies at the first generated step only)"),
    "greedy_forced_eos": case("tiny", dict(forced_eos_token_id=lambda c: int(c.g[0, 2]),
                                           eos_token_id=lambda c: int(c.g[0, 2])),
                              "forced_eos_token_id forces eos at the last step (max_length - 1)"),
    "greedy_exp_decay": case("tiny", dict(exponential_decay_length_penalty=(2, 1.5), eos_token_id=lambda c: int(c.g[1, 5])),
                             "exponential_decay_length_penalty (start 2 new tokens, factor 1.5) raising eos = "
                             "greedy's step-5 token of row 1"),
    "greedy_processors_all": case("tiny", dict(repetition_penalty=1.2, no_repeat_ngram_size=3, bad_words_ids=[[3], [8, 9]],
                                               sequence_bias=[[[11], 1.0]], suppress_tokens=[4],
                                               begin_suppress_tokens=[12], min_new_tokens=3,
                                               eos_token_id=lambda c: int(c.g[0, 2]), renormalize_logits=True),
                                  "many processors at once, order as transformers applies them, renormalized"),
    # 7. lengths, renormalize
    "greedy_max_length": case("tiny", dict(max_length=15, max_new_tokens=None), "max_length 15 instead of "
                                                                                "max_new_tokens (T=7, 8 new)"),
    "beam4_renormalize": beam(dict(num_beams=4, repetition_penalty=1.3, renormalize_logits=True),
                              "beam search with repetition_penalty, renormalize_logits"),
    "beam4_max_length_min_length": beam(dict(num_beams=4, max_length=14, max_new_tokens=None, min_length=12,
                                             eos_token_id=lambda c: int(c.b[0, 2])),
                                        "beam search bounded by max_length 14 with min_length 12"),
    # sampling that does not depend on the RNG
    "sample_top_k_1": case("tiny", dict(do_sample=True, top_k=1), "multinomial sampling with top_k=1 (one finite "
                                                                   "score per row, so the draw is RNG-independent)"),
    "sample_top_k_1_warpers": case("tiny", dict(do_sample=True, temperature=0.7, top_k=1, top_p=0.9,
                                                repetition_penalty=1.3),
                                   "sampling with temperature, top_k=1, top_p and repetition_penalty: processors "
                                   "then warpers in transformers' order, RNG-independent"),
    "beam_sample_top_k_2": beam(dict(num_beams=2, do_sample=True, top_k=2),
                                "beam sampling, 2 beams, top_k=2: beam sample draws 2*num_beams=4 candidates "
                                "without replacement from the flattened [num_beams*V] softmax; with top_k=2 and "
                                "both beams alive exactly 4 candidates have nonzero probability, so all are taken "
                                "and sorted by score; at step 1 only beam 0 is alive (the others start at -1e9) and "
                                "its 2 candidates fill the 2 beams. So the result is RNG-independent. (top_k=1 is "
                                "not: the second beam would then be filled from zero-probability draws, whose "
                                "choice is torch's implementation detail.)"),
}

NOT_STORED_WIDE = "the 50257-wide vocabulary makes it too large to commit"

# Size budget (tests/fixtures/generation/search stays near 6 MB): raw logits are stored for one case
# per strategy family (they are the model's plain output, checked by the model goldens), and the
# [steps, B*num_beams, V] scores of beam methods for the cases whose per-step scores differ in kind.
# length_penalty / early_stopping / num_return_sequences / eos choice do not change how a step's
# scores are computed, only which beams survive; those cases keep sequences, sequences_scores,
# beam_indices and transition_scores (which are gathered from the scores).
LOGITS_CASES = {"greedy_processors_all", "sample_top_k_1_warpers", "beam2", "contrastive"}
BEAM_SCORES_CASES = {"beam2", "beam4_nrs4", "beam4_eos_lp1_false", "beam4_renormalize",
                     "beam4_max_length_min_length", "group_beam", "group_beam4_nrs2", "constrained_one_token",
                     "constrained_unsatisfiable", "beam_sample_top_k_2"}


def save_file(tensors, path, metadata):
    """safetensors, written with a sorted header so that regenerating gives identical bytes
    (the safetensors package orders the metadata map differently from run to run)."""
    dtypes = {torch.int64: "I64", torch.float32: "F32"}
    header, blobs, offset = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        blob = t.numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for blob in blobs:
            f.write(blob)


def prompts(vocab, pad):
    g = torch.Generator().manual_seed(11)
    t = max(PROMPT_LENS)
    ids = torch.full((len(PROMPT_LENS), t), pad, dtype=torch.long)
    mask = torch.zeros((len(PROMPT_LENS), t), dtype=torch.long)
    for i, n in enumerate(PROMPT_LENS):
        ids[i, t - n:] = torch.randint(0, vocab - 1, (n,), generator=g)
        mask[i, t - n:] = 1
    return ids, mask


def resolve(kwargs, ctx):
    return {k: (v(ctx) if callable(v) else v) for k, v in kwargs.items()}


def run(model, ids, mask, kw):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, **kw)


def checks(name, spec, kw, out, tensors, ids, plain):
    """Sanity checks that the case means what it says; returns notes for the description."""
    notes = []
    t = ids.shape[1]
    is_beam = "sequences_scores" in tensors
    if "transition_scores" in tensors and is_beam:
        # sequences_scores = sum of chosen log-probs / generated_len ** length_penalty
        lp = kw.get("length_penalty", 1.0)
        ts = tensors["transition_scores"]
        bi = tensors["beam_indices"]
        steps = (bi >= 0).sum(-1)
        summed = torch.where(bi >= 0, ts, torch.zeros_like(ts)).sum(-1)
        want = summed / steps.float() ** lp
        if not torch.allclose(want, tensors["sequences_scores"], atol=1e-4):
            notes.append("NOTE: sum(transition_scores)/len**lp does not equal sequences_scores here")
            print(f"  {name}: transition/sequence score mismatch {want} vs {tensors['sequences_scores']}")
    if plain is not None and not name.startswith(("greedy_gpt2", "greedy_inverse")) and name != "greedy":
        same = out.sequences.shape == plain.shape and bool((out.sequences == plain).all())
        if same:
            notes.append(f"NOTE: output equals the plain {'beam' if is_beam else 'greedy'} run of the same prompts")
            print(f"  {name}: SAME as plain run")
    return notes


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.safetensors"):
        old.unlink()
    models, ctxs, plains = {}, {}, {}
    index = {}
    failed = {}
    for name, spec in CASES.items():
        model_name = spec["model"]
        if model_name not in models:
            m = GPT2LMHeadModel.from_pretrained(MODELS / model_name, attn_implementation="eager",
                                                torch_dtype=torch.float32).eval()
            vocab, eos = m.config.vocab_size, m.config.eos_token_id
            ids, mask = prompts(vocab, eos)
            g = run(m, ids, mask, dict(max_new_tokens=NEW, do_sample=False, pad_token_id=eos))
            b = run(m, ids, mask, dict(max_new_tokens=BEAM_NEW, num_beams=4, do_sample=False, pad_token_id=eos))
            c = run(m, ids, mask, dict(max_new_tokens=NEW, penalty_alpha=0.6, top_k=4, pad_token_id=eos))
            models[model_name] = (m, ids, mask, eos)
            ctxs[model_name] = Ctx(g[:, ids.shape[1]:], b[:, ids.shape[1]:], c[:, ids.shape[1]:])
            plains[model_name] = {NEW: g, BEAM_NEW: b}
            print(f"[{model_name}] greedy new tokens {g[:, ids.shape[1]:].tolist()}")
            print(f"[{model_name}] beam-4 new tokens {b[:, ids.shape[1]:].tolist()}")
        m, ids, mask, eos = models[model_name]
        kw = dict(max_new_tokens=spec["new"], pad_token_id=eos, return_dict_in_generate=True, output_scores=True,
                  output_logits=True)
        if not spec["kwargs"].get("do_sample"):
            kw["do_sample"] = False
        kw.update(resolve(spec["kwargs"], ctxs[model_name]))
        kw = {k: v for k, v in kw.items() if v is not None}
        try:
            out = run(m, ids, mask, kw)
        except Exception as e:  # recorded in the index: which configurations transformers itself cannot run
            failed[name] = {"model": model_name, "kwargs": kw, "error": f"{type(e).__name__}: {e}"}
            print(f"{name}: FAILED {type(e).__name__}: {e}")
            continue
        scores = torch.stack([s.float() for s in out.scores])
        logits = torch.stack([s.float() for s in out.logits])
        tensors = {"input_ids": ids, "attention_mask": mask, "sequences": out.sequences,
                   "scores": scores, "logits": logits}
        omitted = {}
        beam_indices = getattr(out, "beam_indices", None)
        if getattr(out, "sequences_scores", None) is not None:
            tensors["sequences_scores"] = out.sequences_scores.float()
        if beam_indices is not None:
            # transformers returns [B*nrs, sequences.shape[1]] filled with -1 past each row's steps;
            # the columns past the last step are all -1, so store [B*nrs, steps]
            assert bool((beam_indices[:, len(out.scores):] == -1).all())
            tensors["beam_indices"] = beam_indices[:, :len(out.scores)]
        if kw.get("num_beams", 1) > 1 and beam_indices is None:
            omitted["beam_indices"] = omitted["transition_scores"] = "transformers returned no beam_indices"
        else:
            tensors["transition_scores"] = m.compute_transition_scores(
                out.sequences, out.scores, beam_indices, normalize_logits=False).float()
        if torch.equal(scores, logits):
            del tensors["logits"]
            omitted["logits"] = "identical to scores (no processor changes the raw logits)"
        if "logits" in tensors and name not in LOGITS_CASES:
            del tensors["logits"]
            omitted["logits"] = "size budget: raw logits are stored for one case per strategy family"
        if kw.get("num_beams", 1) > 1 and name not in BEAM_SCORES_CASES and model_name != "gpt2-vocab":
            del tensors["scores"]
            omitted["scores"] = ("size budget: per-step beam scores are computed as in the stored beam cases; "
                                 "transition_scores (gathered from them) are kept")
        if model_name == "gpt2-vocab":
            del tensors["scores"]
            omitted["scores"] = NOT_STORED_WIDE
            tensors.pop("logits", None)
            omitted["logits"] = NOT_STORED_WIDE
        # the plain run to compare with: beam-4 for beam methods, greedy otherwise
        plain = plains[model_name][BEAM_NEW if kw.get("num_beams", 1) > 1 else NEW]
        desc = spec["description"]
        notes = checks(name, spec, kw, out, tensors, ids, plain)
        if "force_words_ids" in kw:
            notes.append("constrained beam search returns as `scores` the processed log-probs PLUS each beam's "
                         "running score (cumulative), unlike beam search, so its transition_scores are those "
                         "cumulative values gathered, as transformers returns them")
        if kw.get("num_beam_groups", 1) > 1:
            notes.append("beam_indices / transition_scores are as transformers 4.46 returns them: its group beam "
                         "search keeps beam_indices per group but the scorer indexes them as if flat, so they "
                         "can point at another group's history")
        desc = "; ".join([desc] + notes)
        meta = {
            "golden_format_version": "1",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "model": model_name,
            "kwargs": json.dumps(kw),
            "description": desc,
            "omitted": json.dumps(omitted),
        }
        save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(OUT / f"{name}.safetensors"),
                  metadata=meta)
        index[name] = {"model": model_name, "kwargs": kw, "description": desc, "omitted": omitted,
                       "tensors": {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in
                                   sorted(tensors.items())}}
        new = out.sequences[:, ids.shape[1]:].tolist()
        print(f"{name}: {new}")
    (OUT / "index.json").write_text(json.dumps({
        "golden_format_version": "1",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "prompt_lengths": PROMPT_LENS,
        "cases": index,
        "not_generated": failed,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
