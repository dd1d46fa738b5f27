"""The general IO spec end to end: token inputs, several outputs, several inputs (torch and Keras)."""

import textwrap

import numpy as np
import onnx
import pytest

from compiler.data.sources import load_dataset
from compiler.iospec import IOSpec
from tests.conftest import TINY, recipe_cfg


def test_token_task_labels_read_only_unmasked_tokens():
    cfg = recipe_cfg("bert_torch", "data.num_samples=300")
    io = IOSpec.from_cfg(cfg)
    a, b = load_dataset(cfg.data, io, 0), load_dataset(cfg.data, io, 0)
    np.testing.assert_array_equal(a.x_train["input_ids"], b.x_train["input_ids"])  # deterministic by seed
    ids, mask = a.x_train["input_ids"], a.x_train["attention_mask"]
    lengths = mask.sum(1)
    assert ids.shape == (240, 32) and len(set(lengths)) > 5 and lengths.max() <= 16  # variable lengths, padded
    counts = np.stack([((ids % 2 == g) & (mask == 1)).sum(1) for g in range(2)], 1)
    np.testing.assert_array_equal(counts.argmax(1), a.y_train)
    everything = np.stack([(ids % 2 == g).sum(1) for g in range(2)], 1).argmax(1)
    assert (everything == a.y_train).mean() < 0.2  # reading the padding too gives the wrong answer


def test_bert_needs_its_attention_mask(compile_cli):
    run = compile_cli("recipe=bert_torch", "train.epochs=3", "data.num_samples=800", "verify.latency.iterations=3",
                      "verify.min_accuracy=null")
    assert run.code == 0, run.output
    r = run.report
    labels = {row["worst_feed"] for row in r["ledger"]}
    assert r["verified_shapes"]["profile 1 max"] == {"input_ids": [32, 128], "attention_mask": [32, 128]}
    assert len(r["verified_shapes"]) == 7 and labels <= set(r["verified_shapes"])  # test split + 6 profile shapes
    import onnxruntime as ort

    cfg = recipe_cfg("bert_torch", "data.num_samples=800")
    data = load_dataset(cfg.data, IOSpec.from_cfg(cfg), cfg.seed)
    session = ort.InferenceSession(str(run.run_dir / "model.opt.onnx"), providers=["CPUExecutionProvider"])

    def accuracy(mask):
        logits = session.run(None, {"input_ids": data.x_test["input_ids"], "attention_mask": mask})[0]
        return float((logits.argmax(1) == data.y_test).mean())

    full = accuracy(data.x_test["attention_mask"])
    assert full == pytest.approx(r["metrics"]["accuracy"]["engine"]) and full >= 0.85
    assert accuracy(np.zeros_like(data.x_test["attention_mask"])) < full - 0.05   # mask zeroed
    assert accuracy(np.ones_like(data.x_test["attention_mask"])) < 0.5            # mask ignored


def test_dynamo_export_carries_the_recipes_dim_names(compile_cli):
    run = compile_cli("recipe=bert_torch", *TINY, "export.exporter=dynamo", "model.profiles=[]")
    assert run.code == 0, run.output
    model = onnx.load(str(run.run_dir / "model.onnx"), load_external_data=False)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims == {"input_ids": ["batch", "seq"], "attention_mask": ["batch", "seq"]}


def test_two_heads_each_verified_and_accuracy_from_the_class_head(compile_cli):
    run = compile_cli("recipe=two_head_torch", *TINY)
    assert run.code == 0, run.output
    r = run.report
    assert {row["output"] for row in r["ledger"]} == {"class_logits", "box"}
    assert r["training"]["label_output"] == "class_logits" and r["metric"] == "top-1 of class_logits"
    assert len([g for g in r["gates"] if g["name"].endswith("[box]")]) == 4  # torch, onnx, clean, engine, end to end


def test_a_two_input_keras_model_compiles(compile_cli, tmp_path):
    pytest.importorskip("tf2onnx", reason="the `tensorflow` extra is not installed")
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "two_input_tf.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        # Run: python -m compiler recipe=two_input_tf
        framework: tensorflow
        data: {source: synthetic, num_classes: 4, num_samples: 400}
        model:
          inputs:
            - {name: image, shape: [batch, 3, 8, 8]}
            - {name: features, shape: [batch, 5]}
          outputs: [{name: logits}]
          factory: {_target_: compiler.frameworks.keras.models.keras_two_input, image_shape: [8, 8, 3], features: 5, classes: 4}
        train: {epochs: 8, batch_size: 32}
        """))
    run = compile_cli("recipe=two_input_tf", "verify.latency.iterations=3", env={"COMPILER_RECIPE_PATH": str(folder)})
    assert run.code == 0, run.output
    r = run.report
    assert [i["name"] for i in r["io"]["inputs"]] == ["image", "features"]
    assert r["io"]["inputs"][0]["shape"] == ["batch", 3, 8, 8]  # NCHW at the engine, as the recipe says
    assert r["metrics"]["accuracy"]["engine"] > 0.5  # learnable: 4 classes
