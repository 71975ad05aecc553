#!/usr/bin/env python3
"""Goldens for crates/gpt2-tokenizer from transformers' GPT2TokenizerFast (HF `tokenizers`).

    /work/venv/bin/python scripts/tokenizer_goldens.py [--tokenizer-json PATH]

Writes tests/fixtures/tokenizer/:
  corpus_golden.txt   token count + FNV-1a-64 digest of the ids of every document of the corpus
                      that tests/common/corpus.rs generates (dumped through
                      `cargo run --example dump_corpus`), plus the full ids of a few documents
  encode_cases.json   hand-picked strings with their full ids (default, add_prefix_space=True,
                      and with extra added tokens carrying lstrip/rstrip/single_word/normalized)
  decode_cases.json   id sequences with transformers' decode (skip_special_tokens on and off, and
                      clean_up_tokenization applied), including ones that split UTF-8 characters
  tiny/               a small byte-level BPE tokenizer.json (+ vocab.json, merges.txt, and a copy
                      with "a b" string merges) saved by `tokenizers`, with its encode goldens

It also checks that tiktoken, given GPT-2's ranks built from vocab.json, agrees on the corpus,
and (with --tokenizer-json) that the full tokenizer.json gives the same ids as vocab + merges.
"""
import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tokenizers
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2TokenizerFast

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "crates/gpt2-tokenizer/data"
OUT = ROOT / "tests/fixtures/tokenizer"
GOLDEN_FORMAT_VERSION = 1
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def fnv1a64_ids(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in i.to_bytes(4, "little"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def fnv1a64_bytes(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiktoken_gpt2():
    import tiktoken

    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    vocab = json.loads((DATA / "vocab.json").read_text())
    ranks = {bytes(byte_decoder[c] for c in tok): i for tok, i in vocab.items() if tok != "<|endoftext|>"}
    return tiktoken.Encoding("gpt2-local", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def dump_corpus():
    path = Path(tempfile.mkdtemp()) / "corpus.jsonl"
    subprocess.run(["cargo", "run", "--release", "-q", "-p", "gpt2-tokenizer", "--example", "dump_corpus", "--", str(path)],
                   cwd=ROOT, check=True)
    # split("\n"), not splitlines(): serde_json leaves U+2028, U+0085 and friends unescaped.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


ENCODE_CASES = [
    "Hello world", "Today we can go to", "<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ",
    "<|endoftext|><|endoftext|>", "<|endoftext|", "it's I'm we'll they're you've he'd can't",
    "IT'S I'M WE'LL 'S 'T 'RE 'VE 'M 'LL 'D", "John’s dog’s ’s ’t", "''s '''s 's's", "x's", " 's", "!'s",
    "   leading spaces", "trailing spaces   ", "tabs\t\tand\tmore", "a\n\nb\n\n\nc", "line\r\nwindows\r\n",
    "nbsp\u00a0here \u00a0 \u00a0", "ideographic\u3000space", "line\u2028sep\u2029para", "nel\u0085x",
    "vt\x0bff\x0c", "zw\u200bsp", "bom\ufeffx", "\x1c\x1d\x1e\x1f", "0123456789", "3.14159 1,234,567",
    "٠١٢٣٤٥٦٧٨٩ ०१२३ ０１２３ ²³ ½ Ⅻ ① 𝟘", "x²+y²=z²", "Straße Größe Übung", "привет мир", "中文分词测试",
    "日本語のテキスト", "한국어 텍스트", "हिन्दी नमस्ते", "ภาษาไทย", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "👍🏽👍🏿",
    "🇩🇪🇯🇵", "e\u0301 a\u0308 Z\u0335\u030c", "\u0301start", "naïve café résumé", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐌰𐌱𐌲",
    "fn main() {\n    println!(\"hi\");\n}\n", "def f(x):\n\treturn x**2\n", "a  b   c    d", " ", "  ", "\n",
    "", "a", "!", "Ġ", "ĠĠ", "\u0100\u0143", "\x00\x01\x7f", "\ud7ff\ue000\uffff", "\U0010ffff\U000e0001",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "=" * 200, " " * 100 + "x", "🤗" * 40, "The quick brown fox jumps over the lazy dog." * 5,
]


def added_token_dict(t):
    return {"content": t.content, "single_word": t.single_word, "lstrip": t.lstrip, "rstrip": t.rstrip,
            "normalized": t.normalized, "special": t.special}


def encode_cases(tok_dir):
    default = GPT2TokenizerFast.from_pretrained(tok_dir)
    prefix = GPT2TokenizerFast.from_pretrained(tok_dir, add_prefix_space=True)
    extra = GPT2TokenizerFast.from_pretrained(tok_dir)
    extra.add_special_tokens({"additional_special_tokens": [
        AddedToken("<mask>", lstrip=True, rstrip=False, single_word=False, normalized=False, special=True),
        AddedToken("<sep>", lstrip=False, rstrip=True, special=True, normalized=False),
    ]})
    extra.add_tokens([
        AddedToken("[SW]", single_word=True, normalized=True),
        AddedToken("hello world", normalized=True),
        AddedToken("wor", normalized=False),
        "ünïcode",
        "中文x",
    ])
    texts = ENCODE_CASES + [
        "a <mask> b", "a   <mask>b", "x<sep>   y", "x <sep>\n\ny", "<mask><mask>  <sep>  <sep>x",
        "[SW] a[SW] [SW]b _[SW] ([SW])", "²[SW] ‿[SW] e\u0301[SW] Ⅻ[SW] ٣[SW] [SW]\u200d", "say hello world now", "hello worldwide", "sword world",
        "ünïcode and ünïcodes", "<|endoftext|><mask> <sep>", "a ünïcode hello world 中文x",
    ]
    cases = []
    for name, tok in [("default", default), ("add_prefix_space", prefix), ("added_tokens", extra)]:
        for text in texts:
            ids = tok.encode(text)
            cases.append({"tokenizer": name, "text": text, "ids": ids, "decoded": tok.decode(ids),
                          "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    added = [dict(id=i, **added_token_dict(t)) for i, t in sorted(extra.added_tokens_decoder.items())]
    return {"golden_format_version": GOLDEN_FORMAT_VERSION, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "added_tokens": added, "vocab_size_added": len(extra),
            "cases": cases}


def decode_cases(tok):
    rng = random.Random(1234)
    seqs = [
        [15496, 995], [15496, 995, 50256, 8888], [50256], [50256, 50256, 15496],
        tok.encode("🤗"), tok.encode("🤗")[:1], tok.encode("🤗")[1:], tok.encode("中文")[:-1],
        tok.encode("Hello , world . Is it ? Yes ! I 'm sure it 's fine , we 've done n't"),
        tok.encode("a . b ? c ! d , e ' f"), [220, 13, 220, 30], [], [198, 198, 220],
    ]
    for _ in range(40):
        seqs.append([rng.randrange(50257) for _ in range(rng.randrange(1, 30))])
    for _ in range(40):
        # Byte tokens only: lone continuation bytes, truncated and overlong sequences.
        seqs.append([rng.randrange(256) for _ in range(rng.randrange(1, 12))])
    cases = []
    for ids in seqs:
        cases.append({
            "ids": ids,
            "text": tok.decode(ids, skip_special_tokens=False),
            "text_skip_special": tok.decode(ids, skip_special_tokens=True),
            "text_clean_up": tok.clean_up_tokenization(tok.decode(ids, skip_special_tokens=False)),
        })
    return {"golden_format_version": GOLDEN_FORMAT_VERSION, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "cases": cases}


def tiny_tokenizer():
    """A 1000-token cut of GPT-2 as a tokenizers-saved tokenizer.json with flagged added tokens."""
    vocab = json.loads((DATA / "vocab.json").read_text())
    keep = {t: i for t, i in vocab.items() if i < 1000}
    merges = []
    for line in (DATA / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]:
        a, b = line.split(" ")
        if a in keep and b in keep and a + b in keep:
            merges.append((a, b))
    tk = Tokenizer(models.BPE(keep, merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    tk.add_tokens([AddedToken("<tag>", lstrip=True, rstrip=True, normalized=False)])
    out = OUT / "tiny"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tk.save(str(out / "tokenizer.json"))
    j = json.loads((out / "tokenizer.json").read_text())
    j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    (out / "tokenizer.string-merges.json").write_text(json.dumps(j, ensure_ascii=False))
    tk.model.save(str(out))  # vocab.json + merges.txt
    texts = ENCODE_CASES + ["a<tag>b", "a <tag> b", "x  <tag>\n y", "<|endoftext|> the"]
    cases = [{"text": t, "ids": tk.encode(t).ids} for t in texts]
    # from_dir follows transformers (add_prefix_space from tokenizer_config.json, default off).
    hf = GPT2TokenizerFast.from_pretrained(str(out))
    dir_cases = [{"text": t, "ids": hf.encode(t)} for t in texts]
    # vocab.json + merges.txt with a transformers tokenizer_config.json: added tokens, pad token and
    # add_prefix_space come from the config.
    conf = OUT / "tiny-config"
    if conf.exists():
        shutil.rmtree(conf)
    conf.mkdir()
    shutil.copy(out / "vocab.json", conf / "vocab.json")
    shutil.copy(out / "merges.txt", conf / "merges.txt")
    flags = dict(single_word=False, normalized=False)
    (conf / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": True,
        "added_tokens_decoder": {
            "1000": dict(content="<|endoftext|>", lstrip=False, rstrip=False, special=True, **flags),
            "1001": dict(content="<pad>", lstrip=False, rstrip=False, special=True, **flags),
            "1002": dict(content="<tag>", lstrip=True, rstrip=True, special=False, **flags),
        },
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<pad>", "tokenizer_class": "GPT2Tokenizer", "clean_up_tokenization_spaces": False,
    }, indent=2))
    hf_conf = GPT2TokenizerFast.from_pretrained(str(conf))
    conf_cases = [{"text": t, "ids": hf_conf.encode(t)} for t in texts + ["a<pad>b <pad> c"]]
    conf_ids = hf_conf.encode("a<pad>b <tag> c<|endoftext|>")
    (conf / "goldens.json").write_text(json.dumps({
        "golden_format_version": GOLDEN_FORMAT_VERSION, "transformers": transformers.__version__,
        "vocab_size": len(hf_conf), "pad_token_id": hf_conf.pad_token_id, "eos_token_id": hf_conf.eos_token_id,
        "bos_token_id": hf_conf.bos_token_id, "cases": conf_cases,
        "decode": {"ids": conf_ids, "text": hf_conf.decode(conf_ids),
                   "text_skip_special": hf_conf.decode(conf_ids, skip_special_tokens=True)},
    }, ensure_ascii=False, indent=0))
    (out / "goldens.json").write_text(json.dumps({
        "golden_format_version": GOLDEN_FORMAT_VERSION, "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__, "vocab_size": tk.get_vocab_size(with_added_tokens=True),
        "tokenizer_json": cases, "from_dir": dir_cases}, ensure_ascii=False, indent=0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-json", help="GPT-2's tokenizer.json, checked to agree with vocab + merges")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    tok = GPT2TokenizerFast.from_pretrained(DATA)
    docs = dump_corpus()
    print(f"corpus: {len(docs)} documents, {sum(len(d.encode()) for d in docs)} bytes")
    all_ids = tok(docs)["input_ids"]

    if args.tokenizer_json:
        d = Path(tempfile.mkdtemp())
        shutil.copy(args.tokenizer_json, d / "tokenizer.json")
        other = GPT2TokenizerFast.from_pretrained(d)(docs)["input_ids"]
        assert other == all_ids, "tokenizer.json and vocab.json + merges.txt disagree"
        print("tokenizer.json agrees with vocab.json + merges.txt")
    enc = tiktoken_gpt2()
    tk_ids = enc.encode_batch(docs, allowed_special="all")
    bad = [i for i, (a, b) in enumerate(zip(tk_ids, all_ids)) if a != b]
    print(f"tiktoken agrees with transformers on {len(docs) - len(bad)}/{len(docs)} documents" +
          (f" (first difference: document {bad[0]})" if bad else ""))

    lines = [
        "# Token counts and FNV-1a-64 digests (little-endian u32 ids) of GPT2TokenizerFast.encode",
        "# on the corpus of crates/gpt2-tokenizer/tests/common/corpus.rs. scripts/tokenizer_goldens.py",
        f"golden_format_version {GOLDEN_FORMAT_VERSION}",
        "corpus_version 1",
        f"transformers {transformers.__version__}",
        f"tokenizers {tokenizers.__version__}",
        f"documents {len(docs)}",
        "# index bytes text_fnv token_count ids_fnv",
    ]
    for i, (d, ids) in enumerate(zip(docs, all_ids)):
        b = d.encode("utf-8")
        lines.append(f"{i} {len(b)} {fnv1a64_bytes(b):016x} {len(ids)} {fnv1a64_ids(ids):016x}")
    (OUT / "corpus_golden.txt").write_text("\n".join(lines) + "\n")
    full = {str(i): all_ids[i] for i in range(0, len(docs), 97)}
    (OUT / "corpus_full_ids.json").write_text(json.dumps({"golden_format_version": GOLDEN_FORMAT_VERSION,
                                                          "documents": full}))
    (OUT / "encode_cases.json").write_text(json.dumps(encode_cases(DATA), ensure_ascii=False, indent=0))
    (OUT / "decode_cases.json").write_text(json.dumps(decode_cases(tok), ensure_ascii=False, indent=0))
    tiny_tokenizer()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    sys.exit(main())
