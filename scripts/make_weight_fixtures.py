#!/usr/bin/env python3
"""Generate the checkpoint-format fixtures for crates/gpt2's `weights` tests.

One tiny random GPT2Model is written in every format the loader reads (safetensors, sharded
safetensors, pytorch_model.bin in torch's zip format, sharded .bin, the legacy pre-1.6 .bin, f16
and bf16), plus files that exercise the .bin reader's corners (strided views, storage offsets,
tied weights sharing one storage) and pickles that must be refused. `reference.safetensors`
holds the expected values as contiguous tensors, written by the `safetensors` library, so the
Rust tests compare what they decode against what torch holds in memory.

    /work/venv/bin/python scripts/make_weight_fixtures.py   # writes tests/fixtures/weights/

transformers 5 no longer writes pytorch_model.bin, so .bin files are written with torch.save on
the state dict, which is what older transformers' save_pretrained(safe_serialization=False) did.
"""

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "weights"

CONFIG = dict(n_embd=8, n_layer=1, n_head=2, vocab_size=16, n_positions=8)


def tiny_config():
    return GPT2Config(**CONFIG)


def with_legacy_buffers(sd, prefix, n_layer, n_positions):
    """Checkpoints saved by transformers < 4.x (the original gpt2 files among them) carry the
    causal mask and masked_bias as buffers; the loader must skip them. Adds them in place, so
    a module's state dict stays the OrderedDict (with `_metadata`) torch pickles."""
    mask = torch.tril(torch.ones(n_positions, n_positions, dtype=torch.uint8)).view(
        1, 1, n_positions, n_positions
    )
    for i in range(n_layer):
        sd[f"{prefix}h.{i}.attn.bias"] = mask.clone()
        sd[f"{prefix}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return sd


def write_bin_shards(sd, directory, n_shards):
    """The layout of transformers 4.x `save_pretrained(..., safe_serialization=False,
    max_shard_size=...)`: pytorch_model-0000i-of-0000n.bin plus pytorch_model.bin.index.json."""
    names = list(sd)
    per = (len(names) + n_shards - 1) // n_shards
    weight_map = {}
    total = 0
    for i in range(n_shards):
        part = {k: sd[k] for k in names[i * per : (i + 1) * per]}
        fname = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        torch.save(part, directory / fname)
        for k, v in part.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


def torch_zip(path, pickle_bytes, storages=None, archive="archive"):
    """A file in torch's zip layout with an arbitrary data.pkl, for the refusal tests."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", pickle_bytes)
        z.writestr(f"{archive}/byteorder", b"little")
        for key, data in (storages or {}).items():
            z.writestr(f"{archive}/data/{key}", data)
        z.writestr(f"{archive}/version", b"3\n")


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    torch.manual_seed(0)
    cfg = tiny_config()
    base = GPT2Model(cfg).eval()
    base_sd = {k: v.contiguous() for k, v in base.state_dict().items()}
    reference = {f"base.{k}": v.clone() for k, v in base_sd.items()}

    # safetensors, one file and sharded, as transformers writes them.
    base.save_pretrained(OUT / "safetensors")
    base.save_pretrained(OUT / "sharded_safetensors", max_shard_size=600)

    # pytorch_model.bin with the legacy buffers, and sharded.
    (OUT / "bin").mkdir()
    torch.save(with_legacy_buffers(dict(base_sd), "", cfg.n_layer, cfg.n_positions), OUT / "bin" / "pytorch_model.bin")
    (OUT / "sharded_bin").mkdir()
    write_bin_shards(base_sd, OUT / "sharded_bin", 2)

    # The pre-1.6 (non-zip) serialization.
    (OUT / "legacy_bin").mkdir()
    torch.save(base_sd, OUT / "legacy_bin" / "pytorch_model.bin", _use_new_zipfile_serialization=False)

    # A GPT2LMHeadModel: `transformer.` prefix, lm_head tied to wte. The state dict holds both
    # names on one storage, which is how a tied .bin is laid out.
    torch.manual_seed(1)
    lm = GPT2LMHeadModel(cfg).eval()
    lm_sd = lm.state_dict()
    assert lm_sd["lm_head.weight"].data_ptr() == lm_sd["transformer.wte.weight"].data_ptr()
    for k, v in lm_sd.items():
        reference[f"lm.{k}"] = v.clone().contiguous()
    (OUT / "lm_tied_bin").mkdir()
    torch.save(with_legacy_buffers(lm_sd, "transformer.", cfg.n_layer, cfg.n_positions), OUT / "lm_tied_bin" / "pytorch_model.bin")
    lm.save_pretrained(OUT / "lm_safetensors")

    # f16 and bf16: the stored dtype differs from the one the model asks for.
    for name, dt in [("f16", torch.float16), ("bf16", torch.bfloat16)]:
        half_sd = {k: v.to(dt) for k, v in base_sd.items()}
        (OUT / f"{name}_safetensors").mkdir()
        save_file(half_sd, OUT / f"{name}_safetensors" / "model.safetensors", metadata={"format": "pt"})
        (OUT / f"{name}_bin").mkdir()
        torch.save(half_sd, OUT / f"{name}_bin" / "pytorch_model.bin")
        for k, v in half_sd.items():
            reference[f"{name}.{k}"] = v.clone()
    (OUT / "f64_bin").mkdir()
    torch.save({k: v.double() for k, v in base_sd.items()}, OUT / "f64_bin" / "pytorch_model.bin")

    # Views: a column slice (storage offset, non-unit row stride), a transpose, a row with a
    # storage offset, and an f16 view, all of one storage per dtype.
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4 - 1
    h = torch.arange(6, dtype=torch.float16).reshape(2, 3)
    views = {"a": t[:, 1:], "b": t.t(), "c": t[1], "d": h.t(), "e": t[:, ::2], "s": t[2, 3]}
    assert not views["a"].is_contiguous() and not views["b"].is_contiguous()
    torch.save(views, OUT / "views.bin")
    for k, v in views.items():
        reference[f"views.{k}"] = v.contiguous().clone()

    # Pickles that would run code if unpickled by Python. They must be refused, not executed.
    # Each is in a torch zip so the refusal comes from the pickle reader, not the zip reader.
    evil = b"\x80\x02cposix\nsystem\nq\x00X\x0b\x00\x00\x00echo pwned!q\x01\x85q\x02Rq\x03."
    torch_zip(OUT / "evil_global.bin", evil)
    evil4 = (
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00"
        b"\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x0dprint('pwned')\x94\x85\x94R\x94."
    )
    torch_zip(OUT / "evil_stack_global.bin", evil4)

    # And one built by Python's own pickler, so the bytes are what an attacker would ship.
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    torch_zip(OUT / "evil_reduce.bin", pickle.dumps({"wte.weight": Evil()}, protocol=2))

    save_file(reference, OUT / "reference.safetensors", metadata={"torch_version": torch.__version__})

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
