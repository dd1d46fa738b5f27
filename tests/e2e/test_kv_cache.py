"""KV-cache decoders: the catalogue recipe compiles, and verification runs a prefill then a decode step on the
prefill's own cache; the cache layout is read off the IO names."""

from __future__ import annotations

import re

import numpy as np

from compiler.iospec import IOSpec
from compiler.verify.kv_cache import kv_cache, step_feeds, step_sizes
from compiler.verify.runners import CallableRunner
from tests.conftest import recipe_cfg

PAST = [f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")]
PRESENT = [f"present.{i}.{k}" for i in range(2) for k in ("key", "value")]


def _io(*overrides: str) -> IOSpec:
    return IOSpec.from_cfg(recipe_cfg("decoder_kv_torch", *overrides))


def test_the_cache_is_read_off_the_io_names():
    cache = kv_cache(_io())
    assert cache.pairs == tuple(zip(PAST, PRESENT))
    assert (cache.past_dims, cache.new_dims) == (("past",), ("seq",))
    assert kv_cache(IOSpec.from_cfg(recipe_cfg("bert_torch"))) is None


def test_prefill_starts_from_an_empty_past_and_decode_takes_one_token_on_it():
    prefill, decode = step_sizes(_io(), kv_cache(_io()))
    assert prefill == {"past": 0, "seq": 16} and decode == {"past": 16, "seq": 1}
    # a past shorter than the longest prompt: the prompt fits what the decode step's past holds
    prefill, decode = step_sizes(_io("model.dims.past=[0,4,8]"), kv_cache(_io("model.dims.past=[0,4,8]")))
    assert prefill == {"past": 0, "seq": 8} and decode == {"past": 8, "seq": 1}


def test_the_decode_step_is_fed_the_references_own_cache():
    io = _io()
    calls = []

    def append_to_cache(feed):  # a decoder's cache arithmetic: present = past + one row per new token
        calls.append({k: v.shape for k, v in feed.items()})
        new = feed["input_ids"].shape[1]
        present = {out: np.concatenate([feed[past], np.full((1, 2, new, 16), float(new), np.float32)], axis=2)
                   for past, out in zip(PAST, PRESENT)}
        return {"logits": np.zeros((1, new, 128), np.float32), **present}

    feeds = step_feeds(io, CallableRunner("ref", append_to_cache, io), np.random.default_rng(0))
    (prefill_label, prefill), (decode_label, decode) = feeds
    assert prefill_label == "prefill (past=0, seq=16)" and decode_label == "decode on the prefill's cache (past=16, seq=1)"
    assert prefill["past_key_values.0.key"].shape == (1, 2, 0, 16) and prefill["attention_mask"].shape == (1, 16)
    assert decode["input_ids"].shape == (1, 1) and decode["attention_mask"].shape == (1, 17)
    assert (decode["past_key_values.1.value"] == 16.0).all()  # the prefill's present, not noise
    assert len(calls) == 1


def test_the_reproducers_shapes_satisfy_total_is_past_plus_seq():
    from compiler.backends.tensorrt_plan import reproducers
    from compiler.plan import resolve as plan

    cfg = recipe_cfg("decoder_kv_torch", "engine.backend=tensorrt", "engine.tensorrt.timing_cache=null")
    line = reproducers(plan(cfg), IOSpec.from_cfg(cfg).engine_profiles(), "model.clean.onnx", 1e-4, 1e-3)["trtexec"]
    expected = {"minShapes": (1, 0, 1), "optShapes": (1, 16, 1), "maxShapes": (4, 48, 16)}
    for key, (batch, past, seq) in expected.items():
        shapes = dict(item.split(":") for item in re.search(rf"--{key}=(\S+)", line).group(1).split(","))
        dims = {k: [int(v) for v in s.split("x")] for k, s in shapes.items()}
        assert dims["input_ids"] == [batch, seq] and dims["attention_mask"] == [batch, past + seq], key
        assert all(dims[name] == [batch, 2, past, 16] for name in PAST), key


def test_the_decoder_recipe_compiles_with_prefill_and_decode_verified(compile_cli):
    run = compile_cli("recipe=decoder_kv_torch", "verify.latency.iterations=3", "verify.latency.warmup=1",
                      "verify.latency.warmup_seconds=0", "verify.latency.quiet_tries=1")
    assert run.code == 0, run.output
    report = run.report
    assert report["training"]["trained"] is False
    shapes = report["verified_shapes"]
    assert shapes["prefill (past=0, seq=16)"]["past_key_values.0.key"] == [1, 2, 0, 16]
    assert shapes["decode on the prefill's cache (past=16, seq=1)"]["attention_mask"] == [1, 17]
    end_to_end = [r for r in report["ledger"] if r["reference"] == "torch" and r["candidate"] == "engine"]
    assert {r["output"] for r in end_to_end} == {"logits", *PRESENT}
    assert all(r["passed"] and r["max_abs_error"] < 1e-4 for r in end_to_end)


def _export_foreign_decoder(path):
    """A GPT-2 with a KV cache, exported as optimum names its dims: nothing in the file relates them."""
    import torch
    import transformers

    from compiler.frameworks.torch.models import causal_lm_with_cache

    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=128)
    model = causal_lm_with_cache(config).eval()
    past = [torch.zeros(2, 2, 3, 16) for _ in PAST]
    inputs = (torch.zeros(2, 1, dtype=torch.int64), torch.ones(2, 4, dtype=torch.int64), *past)
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            **{name: {0: "batch_size", 2: "past_sequence_length"} for name in PAST}}
    torch.onnx.export(model, inputs, str(path), input_names=["input_ids", "attention_mask", *PAST],
                      output_names=["logits", *PRESENT], dynamic_axes=axes, opset_version=17, dynamo=False)


def test_a_foreign_decoder_gets_its_cache_domain_derived_and_compiles(compile_cli, tmp_path):
    path = tmp_path / "gpt2_kv.onnx"
    _export_foreign_decoder(path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "verify.latency.iterations=3",
                      "verify.latency.warmup=1", "verify.latency.warmup_seconds=0", "verify.latency.quiet_tries=1")
    assert run.code == 0, run.output
    assert "dim 'total_sequence_length' (past and new tokens, as a decoder's attention mask covers) is taken as " \
           "past_sequence_length + sequence_length" in run.output
    shapes = run.report["verified_shapes"]
    decode = shapes["decode on the prefill's cache (past_sequence_length=16, sequence_length=1)"]
    assert decode["attention_mask"] == [4, 17] and decode["past_key_values.1.value"] == [4, 2, 16, 16]
    assert shapes["prefill (past_sequence_length=0, sequence_length=16)"]["input_ids"] == [4, 16]
