#!/usr/bin/env python3
"""The PyTorch side of `gpt2 bench`: load time and prefill time of transformers' GPT2LMHeadModel
on the same checkpoint, printed as one JSON object. Run by `gpt2 bench`, not by hand."""

import json
import statistics
import sys
import time

import torch


def decode_rates(model, vocab, new_tokens, repeats, g):
    """Tokens per second of generate(): batch-1 greedy, batch-8 greedy (all rows' tokens), beam 4."""
    # No eos, so every run produces exactly new_tokens tokens.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    out = {}
    for name, batch, beams in (("greedy_b1", 1, 1), ("greedy_b8", 8, 1), ("beam4_b1", 1, 4)):
        ids = torch.randint(0, vocab, (batch, 16), generator=g)
        kwargs = dict(max_new_tokens=new_tokens, do_sample=False, num_beams=beams, attention_mask=torch.ones_like(ids))
        model.generate(ids, **kwargs)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.generate(ids, **kwargs)
            times.append(time.perf_counter() - t0)
        out[name] = batch * new_tokens / statistics.median(times)
    return out


def main():
    model_dir, prefill_lens, repeats = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
    new_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    t0 = time.perf_counter()
    from transformers import GPT2LMHeadModel

    import_s = time.perf_counter() - t0
    import transformers

    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32).eval()
        loads.append(time.perf_counter() - t0)
    load_s = statistics.median(loads)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prefill = {}
    with torch.inference_mode():
        for n in [n for n in prefill_lens if n > 0]:
            ids = torch.randint(0, vocab, (1, n), generator=g)
            model(ids)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(ids)
                times.append(time.perf_counter() - t0)
            prefill[str(n)] = statistics.median(times)
        decode = decode_rates(model, vocab, new_tokens, repeats, g) if new_tokens else {}
    print(json.dumps({
        "decode_tok_s": decode,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "import_s": import_s,
        "load_s": load_s,
        "prefill_s": prefill,
    }))


if __name__ == "__main__":
    main()
