#!/usr/bin/env python3
"""Encoding throughput of gpt2-tokenizer against tiktoken and HF tokenizers, same text, same run.

    /work/venv/bin/python scripts/tokenizer_bench.py

Corpora (one JSON string per line, written to a temporary directory):
  english   real English prose: the documentation topics of Python's pydoc_data (the text of
            `help('TOPIC')`), one document per topic, about 0.75 MB
  mixed     the generated multilingual exactness corpus (5.4 MB: prose, code, German, CJK, emoji,
            whitespace runs, numbers in many scripts, random Unicode)

"single" is one thread encoding documents one after another (tiktoken `encode_ordinary`, HF
`Tokenizer.encode`, ours `encode`); "batch" uses every core (tiktoken `encode_ordinary_batch`, HF
`encode_batch_fast`, ours `encode_batch`). Ours and HF split out `<|endoftext|>`; tiktoken's
ordinary calls skip that (its `encode` with allowed_special is slower). MB/s are best of
several runs. All three are checked to give the same ids first.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "crates/gpt2-tokenizer/data"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_goldens import tiktoken_gpt2  # noqa: E402


def write_jsonl(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line]


def best_mb_s(nbytes, fn, min_s=0.5, repeats=5):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        runs = 0
        while True:
            fn()
            runs += 1
            if time.perf_counter() - start >= min_s:
                break
        best = min(best, (time.perf_counter() - start) / runs)
    return nbytes / best / 1e6


def main():
    from pydoc_data.topics import topics

    tmp = Path(tempfile.mkdtemp())
    english = tmp / "english.jsonl"
    write_jsonl(english, list(topics.values()))
    mixed = tmp / "mixed.jsonl"
    subprocess.run(["cargo", "run", "--release", "-q", "-p", "gpt2-tokenizer", "--example", "dump_corpus", "--",
                    str(mixed)], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "gpt2-tokenizer", "--benches"], cwd=ROOT, check=True)
    out = subprocess.run(["cargo", "bench", "-q", "-p", "gpt2-tokenizer", "--bench", "encode", "--", str(english),
                          str(mixed)], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    ours = {Path(r["corpus"]).stem: r for r in map(json.loads, out.strip().splitlines())}

    enc = tiktoken_gpt2()
    from transformers import GPT2TokenizerFast
    hf = GPT2TokenizerFast.from_pretrained(DATA).backend_tokenizer
    threads = os.cpu_count()
    rows = []
    for name, path in [("english", english), ("mixed", mixed)]:
        docs = read_jsonl(path)
        nbytes = sum(len(d.encode("utf-8")) for d in docs)
        tk_ids = enc.encode_batch(docs, allowed_special="all")
        hf_ids = [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
        assert tk_ids == hf_ids, f"{name}: tiktoken and HF tokenizers disagree"
        assert sum(map(len, tk_ids)) == ours[name]["tokens"], f"{name}: token counts differ from ours"

        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        hf_single = best_mb_s(nbytes, lambda: [hf.encode(d, add_special_tokens=False) for d in docs])
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        batch_fn = getattr(hf, "encode_batch_fast", hf.encode_batch)
        hf_batch = best_mb_s(nbytes, lambda: batch_fn(docs, add_special_tokens=False))
        tk_single = best_mb_s(nbytes, lambda: [enc.encode_ordinary(d) for d in docs])
        tk_batch = best_mb_s(nbytes, lambda: enc.encode_ordinary_batch(docs, num_threads=threads))
        rows.append((name, nbytes, ours[name]["single_mb_s"], ours[name]["batch_mb_s"], tk_single, tk_batch,
                     hf_single, hf_batch))

    print(f"threads: {threads}; MB/s, best of 5 runs; ratios are ours / theirs")
    print(f"{'corpus':8} {'MB':>5} | {'ours 1t':>8} {'tiktoken':>8} {'HF':>7} | {'ours Nt':>8} {'tiktoken':>8} "
          f"{'HF':>7} | {'vs tiktoken 1t/Nt':>17} {'vs HF 1t/Nt':>12}")
    for name, nbytes, o1, on, t1, tn, h1, hn in rows:
        print(f"{name:8} {nbytes / 1e6:5.2f} | {o1:8.1f} {t1:8.1f} {h1:7.1f} | {on:8.1f} {tn:8.1f} {hn:7.1f} | "
              f"{o1 / t1:7.1f}x /{on / tn:5.1f}x {o1 / h1:5.1f}x /{on / hn:4.1f}x")


if __name__ == "__main__":
    main()
