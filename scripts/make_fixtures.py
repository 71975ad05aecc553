#!/usr/bin/env python3
"""Generate the model fixtures and the golden outputs the Rust parity tests compare against.

Every checkpoint is a random-weight GPT2LMHeadModel built with `transformers` and saved with
`save_pretrained`, so the Rust side loads exactly what a user's `transformers` would write. The
goldens are computed by the same `transformers` in eager attention (so attentions are returned).

    python scripts/make_fixtures.py                   # tests/fixtures/models + tests/fixtures/golden
    python scripts/make_fixtures.py --bench DIR       # gpt2-shape (124M) checkpoint, not committed
    python scripts/make_fixtures.py --bench DIR --shape gpt2-medium

Golden file format (version 1): one safetensors file per model, `golden/<name>.safetensors`,
metadata {"golden_format_version": "1", "transformers_version", "torch_version", "model"} and
tensors named `<case>.<field>`:
  case "single": one unpadded sequence; "batch": left-padded batch with derived position_ids;
  "tt": single with token_type_ids.
  fields: input_ids [B,T] i64, attention_mask [B,T] i64, position_ids [B,T] i64 (batch only),
  token_type_ids [B,T] i64 (tt only), labels [B,T] i64, loss [1] f32, logits [B,T,V] f32,
  last_hidden_state [B,T,E], hidden_states.{i} [B,T,E] for i in 0..=n_layer,
  attentions.{i} [B,H,T,T].
  case "cache": the batch prompt, prefilled through the KV cache, then `steps` tokens fed one at a
  time with the attention mask extended by one and position ids continuing per row;
  fields: input_ids [B,T0] (prompt), attention_mask [B,T0], step_ids [B,S], prefill_logits
  [B,V] (last position), step_logits [B,S,V].
Values at padded query positions are not part of the contract (transformers versions disagree
on them); tests compare rows whose attention_mask is 1.
"""

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

GOLDEN_FORMAT_VERSION = "1"
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

# name -> GPT2Config overrides. Small vocabularies keep the committed fixtures small; one model
# uses the real GPT-2 vocabulary so the CLI can run text end to end.
MODELS = {
    "tiny": dict(vocab_size=1000, n_positions=64, n_embd=32, n_layer=2, n_head=4),
    "gelu-inner": dict(
        vocab_size=1000, n_positions=64, n_embd=32, n_layer=2, n_head=2,
        activation_function="gelu", n_inner=48,
    ),
    "inverse-layer-idx": dict(
        vocab_size=500, n_positions=32, n_embd=24, n_layer=3, n_head=3,
        activation_function="relu", scale_attn_by_inverse_layer_idx=True,
    ),
    "reorder-upcast": dict(
        vocab_size=500, n_positions=32, n_embd=24, n_layer=3, n_head=2,
        activation_function="quick_gelu", reorder_and_upcast_attn=True,
        scale_attn_by_inverse_layer_idx=True,
    ),
    "odd-heads-untied": dict(
        vocab_size=700, n_positions=48, n_embd=40, n_layer=2, n_head=5,
        activation_function="silu", scale_attn_weights=False, tie_word_embeddings=False,
        layer_norm_epsilon=1e-3,
    ),
    "prelu": dict(vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=1,
                  activation_function="prelu"),
    "xielu": dict(vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                  activation_function="xielu"),
    # Real GPT-2 vocabulary, stored in float16 to stay small; goldens are computed after loading
    # it back as float32, which is what the Rust side does with --dtype f32.
    "gpt2-vocab": dict(vocab_size=50257, n_positions=128, n_embd=16, n_layer=2, n_head=2),
}

BENCH_SHAPES = {
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12),
    "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16),
    "gpt2-large": dict(n_embd=1280, n_layer=36, n_head=20),
    "gpt2-xl": dict(n_embd=1600, n_layer=48, n_head=25),
}

INIT_RANGE = 0.2  # larger than GPT-2's 0.02 so top tokens are not near-ties


def randomize(model, seed):
    """Give every parameter a random value, biases and layer norms included, so a test that
    forgot a bias or an epsilon fails. `transformers`' own init leaves biases at zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif name.endswith("act.weight"):  # prelu slope
                p.copy_(torch.tensor([0.3]))
            elif "act.alpha" in name:  # xielu
                p.copy_((0.2 * torch.randn(p.shape, generator=g)).to(p.dtype))
            else:
                p.copy_(INIT_RANGE * torch.randn(p.shape, generator=g))


def make_config(overrides):
    cfg = dict(initializer_range=INIT_RANGE)
    cfg.update(overrides)
    v = cfg["vocab_size"]
    if v < 50257:
        cfg.update(bos_token_id=v - 1, eos_token_id=v - 1)
    return GPT2Config(**cfg)


def left_pad_batch(seqs, pad_id):
    """Left-pad like a tokenizer with padding_side='left'; position ids as generate() derives them."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, t - len(s):] = torch.tensor(s)
        mask[i, t - len(s):] = 1
    pos = mask.cumsum(-1) - 1
    pos.masked_fill_(mask == 0, 1)
    return ids, mask, pos


def run_case(model, out, case, input_ids, attention_mask=None, position_ids=None,
             token_type_ids=None, labels=None):
    kwargs = dict(input_ids=input_ids, output_hidden_states=True, output_attentions=True,
                  use_cache=False)
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    if labels is not None:
        kwargs["labels"] = labels
    with torch.no_grad():
        res = model(**kwargs)
        base = model.transformer(**{k: v for k, v in kwargs.items() if k != "labels"})
    n_layer = model.config.n_layer
    assert len(res.hidden_states) == n_layer + 1
    assert len(res.attentions) == n_layer
    # transformers' convention: the last hidden state is after ln_f.
    assert torch.equal(res.hidden_states[-1], base.last_hidden_state)

    out[f"{case}.input_ids"] = input_ids
    out[f"{case}.attention_mask"] = (
        attention_mask if attention_mask is not None else torch.ones_like(input_ids))
    if position_ids is not None:
        out[f"{case}.position_ids"] = position_ids
    if token_type_ids is not None:
        out[f"{case}.token_type_ids"] = token_type_ids
    if labels is not None:
        out[f"{case}.labels"] = labels
        out[f"{case}.loss"] = res.loss.reshape(1).float()
    out[f"{case}.logits"] = res.logits.float()
    out[f"{case}.last_hidden_state"] = base.last_hidden_state.float()
    for i, h in enumerate(res.hidden_states):
        out[f"{case}.hidden_states.{i}"] = h.float()
    for i, a in enumerate(res.attentions):
        out[f"{case}.attentions.{i}"] = a.float()


def run_cache_case(model, out, ids, mask, pos, steps, g):
    """Prefill the left-padded prompt, then feed `steps` random tokens one at a time."""
    vocab = model.config.vocab_size
    b = ids.shape[0]
    step_ids = torch.randint(0, vocab - 1, (b, steps), generator=g)
    step_logits = []
    with torch.no_grad():
        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        past = res.past_key_values
        prefill = res.logits[:, -1, :].float()
        cur_mask, cur_pos = mask, pos[:, -1:]
        for s in range(steps):
            cur_mask = torch.cat([cur_mask, torch.ones((b, 1), dtype=torch.long)], dim=1)
            cur_pos = cur_pos + 1
            res = model(input_ids=step_ids[:, s:s + 1], attention_mask=cur_mask,
                        position_ids=cur_pos, past_key_values=past, use_cache=True)
            past = res.past_key_values
            step_logits.append(res.logits[:, -1, :].float())
    out["cache.input_ids"] = ids
    out["cache.attention_mask"] = mask
    out["cache.step_ids"] = step_ids
    out["cache.prefill_logits"] = prefill
    out["cache.step_logits"] = torch.stack(step_logits, dim=1)


# Texts for the real-vocabulary model, so the CLI's text path is checked end to end.
GPT2_VOCAB_TEXTS = ["Hello world, this is GPT-2 in Rust.", "The quick brown fox", "Hi"]


def goldens_for(name, model, seed):
    g = torch.Generator().manual_seed(seed + 1)
    cfg = model.config
    vocab, eos = cfg.vocab_size, cfg.eos_token_id
    out = {}
    if vocab == 50257:
        # Logits over the full vocabulary are large: text cases only, no tt / cache cases.
        from transformers import GPT2TokenizerFast

        tok = GPT2TokenizerFast.from_pretrained(ROOT / "crates/gpt2-tokenizer/data")
        seqs = [tok(t)["input_ids"] for t in GPT2_VOCAB_TEXTS]
        single = torch.tensor([seqs[0]])
        run_case(model, out, "single", single, labels=single.clone())
        ids, mask, pos = left_pad_batch(seqs[1:], eos)
        labels = ids.masked_fill(mask == 0, -100)
        run_case(model, out, "batch", ids, attention_mask=mask, position_ids=pos, labels=labels)
        return out

    t = min(12, cfg.n_positions)
    single = torch.randint(0, vocab - 1, (1, t), generator=g)
    labels = single.clone()
    labels[0, 3] = -100
    run_case(model, out, "single", single, labels=labels)

    lengths = [t, 7, 3]
    seqs = [torch.randint(0, vocab - 1, (n,), generator=g).tolist() for n in lengths]
    ids, mask, pos = left_pad_batch(seqs, eos)
    labels = ids.masked_fill(mask == 0, -100)
    run_case(model, out, "batch", ids, attention_mask=mask, position_ids=pos, labels=labels)

    tt = torch.randint(0, vocab - 1, (1, t), generator=g)
    run_case(model, out, "tt", single, token_type_ids=tt)

    run_cache_case(model, out, ids, mask, pos, steps=4, g=g)
    return out


def save_golden(name, tensors):
    path = FIXTURES / "golden" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "golden_format_version": GOLDEN_FORMAT_VERSION,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "model": name,
    }
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def save_inspect(name, model):
    """What `gpt2 inspect` must print: PyTorch's module tree, the state_dict names and shapes in
    order, and the parameter count (tied lm_head counted once, as model.num_parameters())."""
    info = {
        "golden_format_version": GOLDEN_FORMAT_VERSION,
        "module": repr(model),
        "state_dict": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        "num_parameters": model.num_parameters(),
        "tied": model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(),
    }
    path = FIXTURES / "golden" / f"{name}.inspect.json"
    path.write_text(json.dumps(info, indent=1) + "\n")


def build(name, overrides, seed):
    torch.manual_seed(seed)
    cfg = make_config(overrides)
    model = GPT2LMHeadModel(cfg).eval()
    randomize(model, seed)
    return model


def make_all():
    for seed, (name, overrides) in enumerate(sorted(MODELS.items())):
        model = build(name, overrides, 1000 + seed)
        out_dir = FIXTURES / "models" / name
        if out_dir.exists():
            shutil.rmtree(out_dir)
        if name == "gpt2-vocab":
            model.half().save_pretrained(out_dir)
            model = GPT2LMHeadModel.from_pretrained(out_dir, dtype=torch.float32,
                                                    attn_implementation="eager").eval()
        else:
            model.save_pretrained(out_dir)
            model = GPT2LMHeadModel.from_pretrained(out_dir, attn_implementation="eager").eval()
        save_golden(name, goldens_for(name, model, 1000 + seed))
        save_inspect(name, model)
        size = sum(f.stat().st_size for f in out_dir.iterdir())
        print(f"{name}: {size / 1e6:.2f} MB checkpoint")
    make_activation_golden()


def make_activation_golden():
    """Every activation transformers accepts for GPT-2, on a range of inputs (the parameterised
    prelu / xielu ones are covered by their model fixtures)."""
    from transformers.activations import ACT2FN

    x = torch.cat([torch.linspace(-12, 12, 481), torch.randn(200, generator=torch.Generator().manual_seed(7)) * 3])
    out = {"x": x}
    for name in sorted(ACT2FN.keys()):
        if name in ("prelu", "xielu"):
            continue
        with torch.no_grad():
            out[name] = ACT2FN[name](x.clone()).float()
    path = FIXTURES / "golden" / "activations.safetensors"
    save_file(out, str(path), metadata={"golden_format_version": GOLDEN_FORMAT_VERSION,
                                        "transformers_version": transformers.__version__,
                                        "torch_version": torch.__version__})


def make_bench(dest, shape):
    """A randomly initialised checkpoint of a real GPT-2 shape (transformers' own init)."""
    cfg = GPT2Config(**BENCH_SHAPES[shape])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(dest)
    shutil.copy(ROOT / "crates/gpt2-tokenizer/data/vocab.json", Path(dest) / "vocab.json")
    shutil.copy(ROOT / "crates/gpt2-tokenizer/data/merges.txt", Path(dest) / "merges.txt")
    print(f"wrote {shape}-shaped checkpoint to {dest}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", metavar="DIR", help="write a benchmark-size checkpoint to DIR")
    ap.add_argument("--shape", default="gpt2", choices=sorted(BENCH_SHAPES))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.bench:
        make_bench(args.bench, args.shape)
    else:
        make_all()


if __name__ == "__main__":
    main()
