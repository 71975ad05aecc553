#!/usr/bin/env python3
"""Goldens for the pipelines and the perplexity recipe: what transformers' `pipeline(...)` returns
on the committed fixture checkpoints, as JSON.

    .venv/bin/python scripts/make_pipeline_goldens.py             # transformers 5.x: every task
                                                                  # but question-answering
    PYTHONPATH=/work/tf446 .venv/bin/python scripts/make_pipeline_goldens.py --qa
                                                                  # transformers 4.46: question-
                                                                  # answering (5 dropped it)

Every model is loaded in float32 (`dtype=torch.float32`; the fixtures may store float16 and
transformers 5 would otherwise compute in it). Fixtures without tokenizer files (gpt2-vocab) get
GPT-2's tokenizer from the files vendored in crates/gpt2-tokenizer/data, as the Rust side's
built-in tokenizer.

Format (golden_format_version "1"): tests/fixtures/pipelines/<case>.json, one object:
  golden_format_version, transformers_version, torch_version
  task        transformers' task name ("perplexity" for the documented recipe)
  model       fixture directory name under tests/fixtures/models/
  inputs      the list of inputs passed (strings)
  kwargs      the call's keyword arguments, as passed
  output      the pipeline's return value for `inputs` (a list with one entry per input), or
              for perplexity {"perplexity", "nll", "tokens"}
"""

import json
import math
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import GPT2LMHeadModel, GPT2TokenizerFast, pipeline

GOLDEN_FORMAT_VERSION = "1"
ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "fixtures" / "models"
OUT = ROOT / "tests" / "fixtures" / "pipelines"
VENDORED = ROOT / "crates" / "gpt2-tokenizer" / "data"

PROMPTS = ["Hello, I'm a language model,", "The capital of France is", "Once upon a time"]

TEXT = (
    "The tower is 324 metres (1,063 ft) tall, about the same height as an 81-storey building, "
    "and the tallest structure in Paris. Its base is square, measuring 125 metres (410 ft) on "
    "each side. During its construction, the Eiffel Tower surpassed the Washington Monument to "
    "become the tallest man-made structure in the world, a title it held for 41 years until the "
    "Chrysler Building in New York City was finished in 1930.\n\n"
    "It was the first structure to reach a height of 300 metres. Due to the addition of a "
    "broadcasting aerial at the top of the tower in 1957, it is now taller than the Chrysler "
    "Building by 5.2 metres (17 ft). Excluding transmitters, the Eiffel Tower is the second "
    "tallest free-standing structure in France after the Millau Viaduct."
)


def tokenizer_for(name):
    d = MODELS / name
    if (d / "tokenizer.json").exists() or (d / "vocab.json").exists():
        return GPT2TokenizerFast.from_pretrained(d)
    # from_pretrained on a copy: transformers 5's GPT2TokenizerFast(vocab_file=..., merges_file=...)
    # silently builds an empty vocabulary.
    tmp = Path(tempfile.mkdtemp())
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(VENDORED / f, tmp)
    tok = GPT2TokenizerFast.from_pretrained(tmp)
    assert tok("Hello world")["input_ids"] == [15496, 995], "the GPT-2 tokenizer did not load"
    return tok


def write(case, task, model, inputs, kwargs, output):
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {
        "golden_format_version": GOLDEN_FORMAT_VERSION,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "task": task,
        "model": model,
        "inputs": inputs,
        "kwargs": kwargs,
        "output": output,
    }
    (OUT / f"{case}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print("wrote", case)


def to_plain(x):
    """Tensors and numpy values as JSON-ready Python."""
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, dict):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    return x


def text_generation():
    name = "gpt2-vocab"
    pipe = pipeline("text-generation", model=str(MODELS / name), tokenizer=tokenizer_for(name),
                    dtype=torch.float32)
    cases = {
        "textgen-greedy": dict(do_sample=False, max_new_tokens=8),
        "textgen-new-text": dict(do_sample=False, max_new_tokens=6, return_full_text=False),
        "textgen-beams": dict(do_sample=False, max_new_tokens=6, num_beams=3, num_return_sequences=2),
        "textgen-tensors": dict(do_sample=False, max_new_tokens=4, return_tensors=True),
        "textgen-prefix": dict(do_sample=False, max_new_tokens=5, prefix="In short: "),
        "textgen-max-length": dict(do_sample=False, max_length=12),
        "textgen-truncation": dict(do_sample=False, max_new_tokens=5, truncation=True, max_length=4),
        "textgen-penalties": dict(do_sample=False, max_new_tokens=10, repetition_penalty=1.5,
                                  no_repeat_ngram_size=2),
        "textgen-stop": dict(do_sample=False, max_new_tokens=10, stop_sequence=" hire"),
        "textgen-sample-topk1": dict(do_sample=True, top_k=1, max_new_tokens=5),
    }
    for case, kwargs in cases.items():
        out = pipe(PROMPTS, **kwargs)
        write(case, "text-generation", name, PROMPTS, kwargs, to_plain(out))


def feature_extraction():
    name = "gpt2-vocab"
    pipe = pipeline("feature-extraction", model=str(MODELS / name), tokenizer=tokenizer_for(name),
                    dtype=torch.float32)
    inputs = ["Hello world", "A longer sentence, with punctuation!"]
    write("features", "feature-extraction", name, inputs, {}, to_plain(pipe(inputs)))


def perplexity():
    """The sliding-window recipe from transformers' docs ("Perplexity of fixed-length models")."""
    name = "gpt2-vocab"
    model = GPT2LMHeadModel.from_pretrained(MODELS / name, dtype=torch.float32).eval()
    tok = tokenizer_for(name)
    encodings = tok(TEXT, return_tensors="pt")
    for case, stride in (("perplexity-stride-32", 32), ("perplexity-stride-128", 128)):
        max_length = model.config.n_positions
        seq_len = encodings.input_ids.size(1)
        nll_sum = 0.0
        n_tokens = 0
        prev_end_loc = 0
        for begin_loc in range(0, seq_len, stride):
            end_loc = min(begin_loc + max_length, seq_len)
            trg_len = end_loc - prev_end_loc
            input_ids = encodings.input_ids[:, begin_loc:end_loc]
            target_ids = input_ids.clone()
            target_ids[:, :-trg_len] = -100
            with torch.no_grad():
                outputs = model(input_ids, labels=target_ids)
                neg_log_likelihood = outputs.loss
            num_valid_tokens = (target_ids != -100).sum().item()
            batch_size = target_ids.size(0)
            num_loss_tokens = num_valid_tokens - batch_size
            nll_sum += neg_log_likelihood * num_loss_tokens
            n_tokens += num_loss_tokens
            prev_end_loc = end_loc
            if end_loc == seq_len:
                break
        avg_nll = nll_sum / n_tokens
        ppl = torch.exp(avg_nll)
        write(case, "perplexity", name, [TEXT], {"stride": stride, "max_length": max_length},
              {"perplexity": ppl.item(), "nll": avg_nll.item(), "tokens": seq_len})
        assert math.isfinite(ppl.item())


CLASSIFY = ["I loved this film, truly wonderful.", "Terrible service and cold food.", "It was fine.",
            "Paris is lovely in spring"]


def text_classification():
    for name, cases in (
        ("seq-cls", {
            "cls-default": {},
            "cls-top2": {"top_k": 2},
            "cls-all": {"top_k": None},
            "cls-sigmoid": {"function_to_apply": "sigmoid", "top_k": None},
            "cls-none": {"function_to_apply": "none"},
        }),
        ("seq-cls-multi-label", {"cls-multi-label": {"top_k": None}}),
        ("seq-cls-regression", {"cls-regression": {}}),
    ):
        pipe = pipeline("text-classification", model=str(MODELS / name), dtype=torch.float32)
        for case, kwargs in cases.items():
            out = pipe(CLASSIFY, **kwargs)
            write(case, "text-classification", name, CLASSIFY, kwargs, to_plain(out))


NER = ["John Smith lives in Paris, near Lake Geneva.", "Visiting café Müller in Zürich",
       "no entities here, probably"]


def token_classification():
    name = "token-cls"
    pipe = pipeline("token-classification", model=str(MODELS / name), dtype=torch.float32)
    for case, kwargs in {
        "ner-none": {},
        "ner-keep-o": {"ignore_labels": []},
        "ner-simple": {"aggregation_strategy": "simple"},
        "ner-first": {"aggregation_strategy": "first"},
        "ner-max": {"aggregation_strategy": "max"},
        "ner-average": {"aggregation_strategy": "average", "ignore_labels": []},
    }.items():
        out = pipe(NER, **kwargs)
        write(case, "token-classification", name, NER, kwargs, to_plain(out))


QA_CONTEXT = ("The Eiffel Tower is a wrought-iron lattice tower in Paris. It is named after the engineer "
              "Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.")
QA_QUESTIONS = ["Who designed the tower?", "Where is it?"]


def question_answering():
    name = "qa"
    pipe = pipeline("question-answering", model=str(MODELS / name), torch_dtype=torch.float32)
    for case, kwargs in {
        "qa-default": {},
        "qa-top3": {"top_k": 3},
        "qa-impossible": {"handle_impossible_answer": True, "top_k": 2},
        "qa-unaligned": {"align_to_words": False, "max_answer_len": 4},
        "qa-windows": {"max_seq_len": 24, "doc_stride": 8, "top_k": 2},
    }.items():
        out = [pipe(question=q, context=QA_CONTEXT, **kwargs) for q in QA_QUESTIONS]
        write(case, "question-answering", name, [[q, QA_CONTEXT] for q in QA_QUESTIONS], kwargs,
              to_plain(out))


if __name__ == "__main__":
    import sys

    if "--qa" in sys.argv:
        question_answering()
    else:
        text_generation()
        feature_extraction()
        perplexity()
        text_classification()
        token_classification()
