"""Every recipe in recipes/ compiles and verifies with tiny overrides."""

import pytest

from tests.conftest import RECIPES, TINY


def tiny_onnx_file(folder) -> str:
    """An ONNX file from outside the project's layer list: a torch MLP with BatchNorm and Dropout."""
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                                torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 10)).eval()
    path = folder / "mlp.onnx"
    torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(path), input_names=["pixels"], output_names=["scores"],
                      dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}}, dynamo=False)
    return str(path)


EXTRA = {"onnx_file": lambda tmp: [f"model.path={tiny_onnx_file(tmp)}"]}


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_compiles_with_tiny_overrides(compile_cli, tmp_path, recipe):
    run = compile_cli(f"recipe={recipe}", *TINY, *EXTRA.get(recipe, lambda _: [])(tmp_path))
    assert run.code == 0, run.output
    report = run.report
    assert report["status"] == "passed"
    assert report["metrics"]["max_abs_error"]["engine"] <= report["recipe_config"]["verify"]["atol"] * 10
    if report["recipe_config"]["data"]["source"] != "none":  # onnx_file, decoder_kv_torch: no labelled data
        assert 0.0 <= report["metrics"]["accuracy"]["engine"] <= 1.0


def test_every_recipe_starts_with_its_command():
    from tests.conftest import REPO

    for recipe in RECIPES:
        head = (REPO / "recipes" / f"{recipe}.yaml").read_text().splitlines()[:4]
        assert head[0] == "# @package _global_", recipe
        assert any(f"python -m compiler recipe={recipe}" in line for line in head), recipe


def test_onnx_file_recipe_checks_the_original_and_reads_its_io(compile_cli, tmp_path):
    path = tiny_onnx_file(tmp_path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "data.source=digits", "verify.latency.iterations=3")
    assert run.code == 0, run.output
    report = run.report
    assert report["recipe_config"]["model"]["inputs"] == [
        {"name": "pixels", "shape": ["n", 1, 8, 8], "dtype": "float32", "range": None, "values": None}]
    assert report["recipe_config"]["model"]["dims"]["n"] == [1, 4, 8]  # a default, printed as a note
    assert "input 'pixels' dim 0 ('n') has no range: using [1, 4, 8]; set ++model.dims.n=[min,opt,max]" in run.stderr
    assert "train" not in report["stages"]
    assert {(r["reference"], r["candidate"]) for r in report["ledger"]} == {
        ("model.onnx", "model.clean.onnx"), ("model.clean.onnx", "engine"), ("model.onnx", "engine")}
    assert report["metrics"]["accuracy"]["engine"] == report["metrics"]["accuracy"]["framework"]
    ops = [p["op_delta"] for p in report["surgery"]]
    assert any(delta.get("BatchNormalization", 0) < 0 for delta in ops)  # fused into the Gemm
    assert report["metrics"]["onnx_nodes"]["clean"] < report["metrics"]["onnx_nodes"]["export"]
    assert (run.run_dir / "model.clean.onnx").is_file()


def test_onnx_file_recipe_rejects_a_corrupt_file(compile_cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    run = compile_cli("recipe=onnx_file", f"model.path={bad}")
    assert run.code == 2 and "model.path: not a readable ONNX model" in run.stderr


def test_image_folder_data_compiles_end_to_end(compile_cli, tmp_path):
    from PIL import Image

    rng = __import__("numpy").random.default_rng(0)
    for label, value in (("cats", 200), ("dogs", 40)):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(30):
            pixels = (value + rng.integers(-20, 20, (16, 16))).clip(0, 255).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    run = compile_cli("recipe=cnn_torch", *TINY, "data.source=image_folder", f"data.path={tmp_path / 'images'}",
                      "model.layers.6.dense.units=2", "train.epochs=15", "train.batch_size=16")
    assert run.code == 0, run.output
    assert run.report["metrics"]["accuracy"]["engine"] >= 0.9
    wrong = compile_cli("recipe=cnn_torch", "data.source=image_folder", f"data.path={tmp_path / 'images'}")
    assert wrong.code == 2 and "data has 2 classes" in wrong.stderr
