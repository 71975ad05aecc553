#!/usr/bin/env python3
"""Offset goldens for crates/gpt2-tokenizer: transformers' GPT2TokenizerFast with
`return_offsets_mapping=True` (character spans, what token-classification reports), on every
"default" and "prefix_space" string of tests/fixtures/tokenizer/encode_cases.json plus a few more.

    .venv/bin/python scripts/tokenizer_offsets_goldens.py

Writes tests/fixtures/tokenizer/offsets_cases.json (golden_format_version 1): cases of
{"tokenizer": "default" | "prefix_space", "text", "ids", "offsets": [[start, end], ...],
"word_ids": [pre-tokenizer piece of each token]}.
"""
import json
import shutil
import tempfile
from pathlib import Path

import transformers
from transformers import GPT2TokenizerFast

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "crates/gpt2-tokenizer/data"
OUT = ROOT / "tests/fixtures/tokenizer"

EXTRA = [
    "Hello  world, café 東京!\n ok",
    "tab\tand  many   spaces   ",
    "<|endoftext|>between<|endoftext|> special <|endoftext|>",
    "emoji 👩‍👩‍👧 and e\u0301 combining",
    "numbers 1234567 and 3.14159",
    "don't we'll they've I'M",
    "\n\n\nnew lines\r\nand CRLF",
    "",
]


def load(prefix_space):
    tmp = Path(tempfile.mkdtemp())
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(DATA / f, tmp)
    tok = GPT2TokenizerFast.from_pretrained(tmp, add_prefix_space=prefix_space)
    assert tok("Hello world")["input_ids"] == ([15496, 995] if not prefix_space else [18435, 995])
    return tok


def main():
    cases_in = json.loads((OUT / "encode_cases.json").read_text())["cases"]
    texts = {"default": [], "prefix_space": []}
    for c in cases_in:
        if c["tokenizer"] in texts and c["text"] not in texts[c["tokenizer"]]:
            texts[c["tokenizer"]].append(c["text"])
    for t in EXTRA:
        for k in texts:
            if t not in texts[k]:
                texts[k].append(t)
    cases = []
    for kind, prefix in (("default", False), ("prefix_space", True)):
        tok = load(prefix)
        for text in texts[kind]:
            enc = tok(text, return_offsets_mapping=True)
            cases.append({"tokenizer": kind, "text": text, "ids": enc["input_ids"],
                          "offsets": [list(o) for o in enc["offset_mapping"]],
                          "word_ids": enc.word_ids()})
    doc = {"golden_format_version": 1, "transformers": transformers.__version__, "cases": cases}
    (OUT / "offsets_cases.json").write_text(json.dumps(doc, ensure_ascii=False, indent=0) + "\n")
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
