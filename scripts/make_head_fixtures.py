#!/usr/bin/env python3
"""Generate the task-head fixtures (one small checkpoint per GPT-2 head class) and their goldens.

Every checkpoint is a random-weight model of one `transformers` class (GPT2Model,
GPT2DoubleHeadsModel, GPT2ForSequenceClassification, GPT2ForTokenClassification,
GPT2ForQuestionAnswering) saved with `save_pretrained` (so config.json's `architectures` names the
class), stored in float16 to keep the fixtures small and reloaded as float32 for the goldens,
which is what the Rust side does by default. Each directory also gets a 1000-token byte-level BPE
tokenizer (the 256 byte tokens, GPT-2's first 743 merges, and <|endoftext|> as bos/eos/unk/pad),
written as vocab.json + merges.txt + tokenizer_config.json, which both GPT2TokenizerFast and
`gpt2_tokenizer::Tokenizer::from_dir` load. The golden inputs are texts tokenized by transformers.

    .venv/bin/python scripts/make_head_fixtures.py

Golden file format (version 1, as scripts/make_fixtures.py): `golden/heads/<name>.safetensors`,
metadata {"golden_format_version": "1", "transformers_version", "torch_version", "model",
"architecture", "texts": JSON {case: [text, ...]}} and tensors `<case>.<field>`, computed by the
model's own forward in eager attention, without position_ids (transformers then uses 0..T even
for left padding) unless the case stores `position_ids`.
  cases: "single" (one text), "left" / "right" (a batch padded on that side with attention_mask).
  common fields: input_ids, attention_mask (i64).
  GPT2ForSequenceClassification: logits [B, num_labels] (pooled), last_non_pad_token [B] (the
    index transformers pools), labels + loss (integer labels, or floats for regression and
    multi-label); with problem_type unset also float_labels [B, num_labels] + float_loss (the
    inferred multi-label BCE); case "nopad": single with config.pad_token_id = None; case "embeds":
    the right batch through inputs_embeds (= wte(input_ids); pooled at the last position).
  GPT2ForTokenClassification: logits [B, T, num_labels], labels [B, T] (-100 at padding), loss.
  GPT2ForQuestionAnswering: start_logits, end_logits [B, T], start_positions, end_positions [B]
    (some out of range: clamped, then ignored when == T), loss.
  GPT2DoubleHeadsModel: input_ids / attention_mask [B, C, T], mc_token_ids [B, C] (absent: the
    default, the last position), mc_logits, labels [B, C, T] + loss (lm), mc_labels + mc_loss,
    logits [B, C, T, V] (only in "double-heads", case single; the rest checks the lm path through
    its loss); mc_labels / mc_loss are absent where transformers cannot compute them (no
    projection: a strided mc_logits its `.view` refuses); case "flat" (in
    double-heads-mean): input_ids [B, T] with no choices axis.
  GPT2Model: last_hidden_state [B, T, E]; its "left" case passes position_ids (stored), derived
    from the mask as generate() does, which is what Gpt2Model derives when none are given.
Values at padded query positions are compared only where a loss depends on them.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import torch
import transformers
from transformers import (
    GPT2Config,
    GPT2DoubleHeadsModel,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2Model,
    GPT2TokenizerFast,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import GOLDEN_FORMAT_VERSION, INIT_RANGE, left_pad_batch, randomize  # noqa: E402
from make_generation_goldens import save_file  # noqa: E402  (sorted header: identical bytes)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
DATA = ROOT / "crates" / "gpt2-tokenizer" / "data"

VOCAB = 1000
EOS = VOCAB - 1  # <|endoftext|>: bos, eos, unk and pad
COMMON = dict(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=2, n_head=2,
              bos_token_id=EOS, eos_token_id=EOS, initializer_range=INIT_RANGE)


def labels(*names):
    return dict(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


# name -> (class, GPT2Config overrides)
FIXTURE_MODELS = {
    "base": (GPT2Model, {}),
    "seq-cls": (GPT2ForSequenceClassification,
                dict(pad_token_id=EOS, **labels("negative", "neutral", "positive"))),
    "seq-cls-multi-label": (GPT2ForSequenceClassification,
                            dict(pad_token_id=EOS, problem_type="multi_label_classification",
                                 **labels("toxic", "obscene", "insult", "threat"))),
    "seq-cls-regression": (GPT2ForSequenceClassification,
                           dict(pad_token_id=EOS, **labels("score"))),
    "token-cls": (GPT2ForTokenClassification,
                  dict(pad_token_id=EOS, classifier_dropout=0.2,
                       **labels("O", "B-PER", "I-PER", "B-LOC", "I-LOC"))),
    "qa": (GPT2ForQuestionAnswering, dict(pad_token_id=EOS)),
    "double-heads": (GPT2DoubleHeadsModel,
                     dict(summary_type="cls_index", summary_use_proj=True,
                          summary_proj_to_labels=True, summary_activation="tanh",
                          summary_first_dropout=0.1, summary_last_dropout=0.2)),
    # transformers' "mean" / "first" / "last" index dim 1 of the [B, C, T, E] hidden states,
    # which is the choices axis: reproduced as is.
    "double-heads-mean": (GPT2DoubleHeadsModel,
                          dict(summary_type="mean", summary_use_proj=True,
                               summary_proj_to_labels=True, summary_activation=None,
                               summary_first_dropout=0.0)),
    "double-heads-first": (GPT2DoubleHeadsModel,
                           dict(summary_type="first", summary_use_proj=True,
                                summary_proj_to_labels=False, summary_activation="gelu")),
    "double-heads-last": (GPT2DoubleHeadsModel,
                          dict(summary_type="last", summary_use_proj=False)),
}

TEXTS = {
    "single": ["I loved this movie, it was great!"],
    "batch": ["I loved this movie!", "Terrible.", "It was fine, I guess, nothing more"],
    # The first row ends in a real <|endoftext|>: transformers pools the token before it.
    "batch_eos": ["What a film<|endoftext|>", "Terrible.", "It was fine, I guess, nothing more"],
}
CHOICES = {
    "single": [["The cat sat on the mat.", "The cat flew to the moon and back."]],
    "batch": [["Paris is in France.", "Paris is on Mars."],
              ["Water is wet", "Water is a kind of rock that sings"]],
}


def write_tokenizer(dest):
    """vocab.json + merges.txt cut from GPT-2's (token 256 + k is merge k's result)."""
    vocab = json.loads((DATA / "vocab.json").read_text(encoding="utf-8"))
    keep = {t: i for t, i in vocab.items() if i < EOS}
    keep["<|endoftext|>"] = EOS
    lines = (DATA / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = lines[1:1 + EOS - 256]
    for k, line in enumerate(merges):
        a, b = line.split(" ")
        assert keep[a + b] == 256 + k, line
    (dest / "vocab.json").write_text(json.dumps(keep, ensure_ascii=False), encoding="utf-8")
    (dest / "merges.txt").write_text("\n".join([lines[0]] + merges) + "\n", encoding="utf-8")
    special = "<|endoftext|>"
    (dest / "tokenizer_config.json").write_text(json.dumps(dict(
        tokenizer_class="GPT2Tokenizer", bos_token=special, eos_token=special, unk_token=special,
        pad_token=special, add_prefix_space=False, model_max_length=COMMON["n_positions"],
    ), indent=2) + "\n")
    tok = GPT2TokenizerFast.from_pretrained(str(dest))
    assert len(tok) == VOCAB and tok.pad_token_id == EOS, (len(tok), tok.pad_token_id)
    return tok


def encode(tok, texts, side):
    tok.padding_side = side
    enc = tok(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def last_non_pad_token(ids, pad):
    """GPT2ForSequenceClassification's pooling index, as its forward computes it."""
    non_pad = (ids != pad).to(torch.int32)
    return (torch.arange(ids.shape[-1], dtype=torch.int32) * non_pad).argmax(-1)


def seq_cls_goldens(model, tok, g):
    cfg = model.config
    nl = cfg.num_labels
    out, texts = {}, {}
    regression = nl == 1
    multi = cfg.problem_type == "multi_label_classification"

    def make_labels(b):
        if regression:
            return torch.randn(b, generator=g)
        if multi:
            return torch.randint(0, 2, (b, nl), generator=g).float()
        return torch.randint(0, nl, (b,), generator=g)

    def run(case, ids, mask, **extra):
        lab = make_labels(ids.shape[0])
        with torch.no_grad():
            res = model(input_ids=ids, attention_mask=mask, labels=lab, **extra)
        out[f"{case}.input_ids"], out[f"{case}.attention_mask"] = ids, mask
        out[f"{case}.logits"] = res.logits.float()
        out[f"{case}.labels"] = lab
        out[f"{case}.loss"] = res.loss.reshape(1).float()
        if cfg.pad_token_id is not None:
            out[f"{case}.last_non_pad_token"] = last_non_pad_token(ids, cfg.pad_token_id).long()
        if not regression and not multi:
            # problem_type is unset: float labels make it multi-label (BCE). transformers stores
            # the inferred problem_type on the config, so reset it between calls.
            model.config.problem_type = None
            fl = torch.randint(0, 2, (ids.shape[0], nl), generator=g).float()
            with torch.no_grad():
                res = model(input_ids=ids, attention_mask=mask, labels=fl)
            out[f"{case}.float_labels"] = fl
            out[f"{case}.float_loss"] = res.loss.reshape(1).float()
            model.config.problem_type = None

    texts["single"] = TEXTS["single"]
    run("single", *encode(tok, TEXTS["single"], "right"))
    texts["left"] = TEXTS["batch"]
    run("left", *encode(tok, TEXTS["batch"], "left"))
    texts["right"] = TEXTS["batch_eos"]
    ids, mask = encode(tok, TEXTS["batch_eos"], "right")
    run("right", ids, mask)

    # inputs_embeds: padding cannot be seen, the last position is pooled.
    with torch.no_grad():
        res = model(inputs_embeds=model.transformer.wte(ids), attention_mask=mask)
    out["embeds.input_ids"], out["embeds.attention_mask"] = ids, mask
    out["embeds.logits"] = res.logits.float()

    # No pad_token_id: a single row is pooled at its last position.
    pad = model.config.pad_token_id
    model.config.pad_token_id = None
    texts["nopad"] = TEXTS["single"]
    run("nopad", *encode(tok, TEXTS["single"], "right"))
    try:
        ids2, mask2 = encode(tok, TEXTS["batch"], "right")
        model(input_ids=ids2, attention_mask=mask2)
        raise AssertionError("transformers accepted a batch without pad_token_id")
    except ValueError as e:
        assert "padding token" in str(e), e
    model.config.pad_token_id = pad
    return out, texts


def token_cls_goldens(model, tok, g):
    nl = model.config.num_labels
    out, texts = {}, {}
    for case, key, side in [("single", "single", "right"), ("left", "batch", "left"),
                            ("right", "batch", "right")]:
        ids, mask = encode(tok, TEXTS[key], side)
        lab = torch.randint(0, nl, ids.shape, generator=g).masked_fill(mask == 0, -100)
        lab[0, 1] = -100
        with torch.no_grad():
            res = model(input_ids=ids, attention_mask=mask, labels=lab)
        texts[case] = TEXTS[key]
        out.update({f"{case}.input_ids": ids, f"{case}.attention_mask": mask,
                    f"{case}.labels": lab, f"{case}.logits": res.logits.float(),
                    f"{case}.loss": res.loss.reshape(1).float()})
    return out, texts


def qa_goldens(model, tok, g):
    out, texts = {}, {}
    for case, key, side in [("single", "single", "right"), ("left", "batch", "left"),
                            ("right", "batch", "right")]:
        ids, mask = encode(tok, TEXTS[key], side)
        b, t = ids.shape
        start = torch.randint(0, t, (b,), generator=g)
        end = torch.randint(0, t, (b,), generator=g)
        if b > 1:
            end[1] = t + 5     # clamped to T, then ignored
            start[-1] = -3     # clamped to 0, counted
        with torch.no_grad():
            res = model(input_ids=ids, attention_mask=mask, start_positions=start,
                        end_positions=end)
        texts[case] = TEXTS[key]
        out.update({f"{case}.input_ids": ids, f"{case}.attention_mask": mask,
                    f"{case}.start_positions": start, f"{case}.end_positions": end,
                    f"{case}.start_logits": res.start_logits.float(),
                    f"{case}.end_logits": res.end_logits.float(),
                    f"{case}.loss": res.loss.reshape(1).float()})
    return out, texts


def double_heads_goldens(name, model, tok, g):
    out, texts = {}, {}
    keep_logits = name == "double-heads"
    cases = [("single", "single", "right", True), ("left", "batch", "left", False),
             ("right", "batch", "right", True)]
    for case, key, side, give_cls in cases:
        choices = CHOICES[key]
        b, c = len(choices), len(choices[0])
        flat_ids, flat_mask = encode(tok, [s for row in choices for s in row], side)
        ids, mask = flat_ids.view(b, c, -1), flat_mask.view(b, c, -1)
        kwargs = dict(input_ids=ids, attention_mask=mask)
        if give_cls:
            # The last real token of each choice (the classification token).
            kwargs["mc_token_ids"] = mask.sum(-1) - 1 if side == "right" else None
        lab = ids.masked_fill(mask == 0, -100)
        with torch.no_grad():
            probe = model(**kwargs)
        mc_labels = torch.randint(0, probe.mc_logits.shape[-1], probe.mc_logits.shape[:-1],
                                  generator=g)
        # Without a projection mc_logits is a strided view that transformers' `.view` refuses:
        # no mc loss there (the Rust side computes one; nothing to compare it with).
        with_mc = probe.mc_logits.is_contiguous()
        with torch.no_grad():
            res = model(**kwargs, labels=lab, mc_labels=mc_labels if with_mc else None)
        texts[case] = [s for row in choices for s in row]
        out.update({f"{case}.input_ids": ids, f"{case}.attention_mask": mask,
                    f"{case}.labels": lab, f"{case}.loss": res.loss.reshape(1).float(),
                    f"{case}.mc_logits": res.mc_logits.float()})
        if with_mc:
            out[f"{case}.mc_labels"] = mc_labels
            out[f"{case}.mc_loss"] = res.mc_loss.reshape(1).float()
        if kwargs.get("mc_token_ids") is not None:
            out[f"{case}.mc_token_ids"] = kwargs["mc_token_ids"]
        if keep_logits and case == "single":
            out[f"{case}.logits"] = res.logits.float()
    if model.config.summary_type == "mean":
        # No choices axis: [B, T] input, "mean" then averages over the tokens.
        ids, mask = encode(tok, TEXTS["batch"], "right")
        with torch.no_grad():
            res = model(input_ids=ids, attention_mask=mask)
        texts["flat"] = TEXTS["batch"]
        out.update({"flat.input_ids": ids, "flat.attention_mask": mask,
                    "flat.mc_logits": res.mc_logits.float()})
    return out, texts


def base_goldens(model, tok, g):
    out, texts = {}, {}
    for case, key, side in [("single", "single", "right"), ("left", "batch", "left"),
                            ("right", "batch", "right")]:
        ids, mask = encode(tok, TEXTS[key], side)
        kwargs = dict(input_ids=ids, attention_mask=mask)
        if side == "left":
            _, _, pos = left_pad_batch([r[m == 1].tolist() for r, m in zip(ids, mask)], EOS)
            kwargs["position_ids"] = pos
            out[f"{case}.position_ids"] = pos
        with torch.no_grad():
            res = model(**kwargs)
        texts[case] = TEXTS[key]
        out.update({f"{case}.input_ids": ids, f"{case}.attention_mask": mask,
                    f"{case}.last_hidden_state": res.last_hidden_state.float()})
    return out, texts


def save_golden(name, arch, tensors, texts):
    path = FIXTURES / "golden" / "heads" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "golden_format_version": GOLDEN_FORMAT_VERSION,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "model": name,
        "architecture": arch,
        "texts": json.dumps(texts, ensure_ascii=False, sort_keys=True),
    }
    save_file({k: v.clone() for k, v in tensors.items()}, path, meta)


def make(name, cls, overrides, seed):
    torch.manual_seed(seed)
    model = cls(GPT2Config(**COMMON, **overrides)).eval()
    randomize(model, seed)
    out_dir = FIXTURES / "models" / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.half().save_pretrained(out_dir)
    arch = json.loads((out_dir / "config.json").read_text())["architectures"]
    assert arch == [cls.__name__], arch
    tok = write_tokenizer(out_dir)
    model = cls.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(seed + 1)
    if cls is GPT2ForSequenceClassification:
        tensors, texts = seq_cls_goldens(model, tok, g)
    elif cls is GPT2ForTokenClassification:
        tensors, texts = token_cls_goldens(model, tok, g)
    elif cls is GPT2ForQuestionAnswering:
        tensors, texts = qa_goldens(model, tok, g)
    elif cls is GPT2DoubleHeadsModel:
        tensors, texts = double_heads_goldens(name, model, tok, g)
    else:
        tensors, texts = base_goldens(model, tok, g)
    save_golden(name, cls.__name__, tensors, texts)
    size = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"{name}: {cls.__name__}, {size / 1e3:.0f} kB checkpoint + tokenizer")


def main():
    torch.set_num_threads(os.cpu_count() or 1)
    for seed, (name, (cls, overrides)) in enumerate(sorted(FIXTURE_MODELS.items())):
        make(name, cls, overrides, 3000 + seed)


if __name__ == "__main__":
    main()
