#!/usr/bin/env python3
"""The PyTorch side of `gpt2 bench`: load time and prefill time of transformers' GPT2LMHeadModel
on the same checkpoint, printed as one JSON object. Run by `gpt2 bench`, not by hand."""

import json
import statistics
import sys
import time

import torch


def main():
    model_dir, prefill_lens, repeats = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
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
        for n in prefill_lens:
            ids = torch.randint(0, vocab, (1, n), generator=g)
            model(ids)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(ids)
                times.append(time.perf_counter() - t0)
            prefill[str(n)] = statistics.median(times)
    print(json.dumps({
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "import_s": import_s,
        "load_s": load_s,
        "prefill_s": prefill,
    }))


if __name__ == "__main__":
    main()
