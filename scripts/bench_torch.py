#!/usr/bin/env python3
"""The PyTorch side of `gpt2 bench`, run by it (not by hand) as a small server, so that each of its
measurements is taken right beside the same measurement of gpt2-rs: the machine's memory
bandwidth drifts by a quarter over minutes, and ratios of timings taken far apart drift with it.

    python bench_torch.py MODEL_DIR

Prints one JSON line when the model is loaded (versions, threads, import and load time), then
answers one JSON line per JSON line read on stdin:
    {"op": "prefill", "n": 512, "repeats": 5}                       -> {"s": median seconds}
Prefill is what generate() does with a prompt: one forward with the KV cache, logits of the last
position only.
    {"op": "decode", "batch": 8, "beams": 1, "sample": false, "new": 64, "repeats": 3}
                                                                    -> {"tok_s": median rate}
    {"op": "quit"}
Decoding is greedy (or with "sample": top_k 50, top_p 0.9) generate() from 16 random prompt
tokens, no eos (so exactly `new` tokens), all rows' tokens counted.
"""

import json
import statistics
import sys
import time

import torch


def main():
    model_dir = sys.argv[1]
    t0 = time.perf_counter()
    import transformers
    from transformers import GPT2LMHeadModel

    import_s = time.perf_counter() - t0
    # transformers 5 renamed from_pretrained's torch_dtype to dtype.
    major = int(transformers.__version__.split(".")[0])
    dtype_kw = {"dtype" if major >= 5 else "torch_dtype": torch.float32}
    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        model = GPT2LMHeadModel.from_pretrained(model_dir, **dtype_kw).eval()
        loads.append(time.perf_counter() - t0)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    print(json.dumps({
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "import_s": import_s,
        "load_s": statistics.median(loads),
    }), flush=True)

    def timed(fn, repeats):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    for line in sys.stdin:
        req = json.loads(line)
        with torch.inference_mode():
            if req["op"] == "prefill":
                ids = torch.randint(0, vocab, (1, req["n"]), generator=g)
                run = lambda: model(ids, use_cache=True, logits_to_keep=1)
                out = {"s": timed(run, req["repeats"])}
            elif req["op"] == "decode":
                ids = torch.randint(0, vocab, (req["batch"], 16), generator=g)
                kwargs = dict(max_new_tokens=req["new"], num_beams=req["beams"],
                              attention_mask=torch.ones_like(ids))
                if req.get("sample"):
                    kwargs.update(do_sample=True, top_k=50, top_p=0.9)
                else:
                    kwargs.update(do_sample=False)
                s = timed(lambda: model.generate(ids, **kwargs), req["repeats"])
                out = {"tok_s": req["batch"] * req["new"] / s}
            else:
                break
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
