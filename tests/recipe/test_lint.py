"""Bad recipes exit 2 with a message naming the key path, before any work, leaving no cache."""

import subprocess
import sys
import textwrap

import pytest


BAD_INPUTS = [
    # (overrides, key path, words in the message)
    (["train.epoch=3"], "train.epoch", "did you mean 'epochs'"),
    (["train.epochs=abc"], "train.epochs", "expected int"),
    (["engine.precision=fp33"], "engine.precision", "allowed: fp32, tf32, fp16, bf16, int8, fp8, best"),
    (["engine.backend=tensorrtt"], "engine.backend", "did you mean 'tensorrt'"),
    (["model.inputs=[{name: input}]"], "model.inputs[0].shape", "missing required value"),
    (["train.epochs=0"], "train.epochs", "must be positive"),
    (["export.opset=7"], "export.opset", "allowed: 11..21"),
    (["+model.layers.1.maxpool2d.sise=2"], "model.layers[1].maxpool2d.sise", "did you mean 'size'"),
    (["model.layers=[{flatten: {}}, {dense: {units: 7}}]"], "model.layers[1].dense", "data has 10 classes"),
    (["surgery.passes=[fold_constant]"], "surgery.passes[0]", "did you mean 'fold_constants'"),
    (["surgery.passes=[{cleanup: {aggressive: true}}]"], "surgery.passes[0].cleanup.aggressive", "unknown pass argument"),
    (["data.source=npz", "data.path=/nonexistent/d.npz"], "data.path", "file not found"),
    (["data.test_fraction=1.5"], "data.test_fraction", "between 0 and 1"),
    (["engine.backend=tensorrt"], "engine.backend", "tensorrt cannot run here"),
    (["verify.latency.batch_sizes=[0]"], "verify.latency.batch_sizes", "positive batch sizes"),
    (["+model.factory._target_=os.system"], "model.factory._target_", "not on the allow-list"),
    (["hydra.run.dir=/proc/nope/run"], "hydra.run.dir", "cannot create the output directory"),
    (["engine.precision=bf16"], "engine.precision", "the onnxruntime backend does not build bf16 engines"),
    (["model.dims.batch=[1,1000,64]"], "model.dims.batch", "min <= opt <= max"),
    (["model.profiles=[{input: {min: [8,1,28,28], opt: [1,1,28,28], max: [9,1,28,28]}}]"], "model.profiles[0].input",
     "min <= opt <= max"),
    # the general IO spec: named dims, ranges, profiles and dtypes (bert_torch: two int64 inputs)
    (["model.inputs=[{name: input, shape: [batch, 1, height, 28]}]"], "model.inputs[0].shape[2]", "unknown dim name"),
    (["recipe=bert_torch", "model.dims.seq=[64,32,8]"], "model.dims.seq", "min <= opt <= max"),
    (["recipe=bert_torch", "model.inputs.0.range=null"], "model.inputs[0].range", "needs a value range"),
    (["recipe=bert_torch", "model.profiles=[{token_ids: {min: [1,8], opt: [1,8], max: [1,8]}}]"],
     "model.profiles[0].token_ids", "a profile for a missing input"),
    (["recipe=bert_torch", "model.profiles=[{sequence: [1,2,3]}]"], "model.profiles[0].sequence", "unknown dim name"),
    (["recipe=bert_torch", "model.inputs.0.dtype=int16"], "model.inputs[0].dtype", "allowed: float32, float16"),
    (["recipe=bert_torch", "data.token_input=ids"], "data.token_input", "no such input"),
    (["data.limit=5"], "data.limit", "too few samples"),
    (["data.source=none"], "data.source", "training needs data"),
    (["model.layers=[]"], "model.layers", "no layers and no factory"),
    (["model.inputs=[{name: input, shape: [batch, 1, 28]}]"], "model.inputs[0].shape", "a layer list takes"),
    (["model.input.shape=[1,28,28]"], "model.input", "did you mean 'inputs'"),
    (["recipe=nosuch"], "recipe", "nosuch"),
    (["verify.min_accuracy=2"], "verify.min_accuracy", "a fraction"),
    (["train.device=tpu"], "train.device", "allowed: auto, cpu, cuda"),
    (["model.path=/tmp/m.onnx"], "model.path", "only recipes with framework: onnx"),
    (["engine.tensorrt.dla_core=-1"], "engine.tensorrt.dla_core", "must be >= 0"),
    (["export.input_layout=nhwc"], "export.input_layout", "torch models take channels-first input"),
    (["train.optimizer.name=adamm"], "train.optimizer.name", "did you mean 'adam'"),
    # nothing the user sets is silently ignored
    (["+train.epocs=3"], "train.epocs", "did you mean 'epochs'"),
    (["data.path=/tmp/data.npz"], "data.path", "only the npz and image_folder sources read a path"),
    (["surgery.passes=[{set_batch: {size: eight}}]"], "surgery.passes[0].set_batch.size",
     "allowed: an integer >= 1 or 'dynamic'"),
    # values a pass cannot take, targets that resolve outside the allow-list, and the gaps lint used to pass
    (["surgery.passes=[{set_batch: {size: -3}}]"], "surgery.passes[0].set_batch.size", "got -3"),
    (["surgery.passes=[{convert_opset: {version: 3}}]"], "surgery.passes[0].convert_opset.version", "7..23"),
    (["model.layers=[]", "+model.factory={_target_: compiler.cache.os.makedirs, name: /tmp/x}"],
     "model.factory._target_", "reached through another module's attribute"),
    (["model.layers=[]", "+model.factory={_target_: compiler.cache.os.system, command: ls}"],
     "model.factory._target_", "compiler.cache.os is the module os"),
    (["model.layers=[]", "+model.factory={_target_: compiler.cache.Path}"], "model.factory._target_",
     "defined outside the allow-list"),
    (["seed=-1"], "seed", "not a valid random seed"),
    (["model.label_output=nope"], "model.label_output", "names no output of the model"),
    (["verify.metric={_target_: compiler.nothere.top5}"], "verify.metric._target_", "has no attribute 'nothere'"),
    (["model.dims.batch=[1,32,100000000]"], "model.dims", "the largest generated input batch"),
    (["train.epochs=1000000000"], "train.epochs", "allowed: 1..10000"),
    (["recipe=" + "x" * 300], "recipe", "a config name is too long"),
    (["+" + "k" * 300 + "=1"], "k" * 120, "a key name is too long"),
    (["cache.dir=/proc/nope/cache"], "cache.dir", "cannot create the cache"),
]


@pytest.mark.parametrize("overrides, path, words", BAD_INPUTS, ids=[b[1] + ":" + b[2][:20] for b in BAD_INPUTS])
def test_bad_input_exits_2_naming_the_key(compile_cli, cache_dir, overrides, path, words):
    recipe = [] if any(o.startswith("recipe=") for o in overrides) else ["recipe=cnn_torch"]
    run = compile_cli(*recipe, *overrides)
    assert run.code == 2, run.output
    assert "Traceback" not in run.output
    assert not run.run_dir.exists() and not cache_dir.exists(), "a refused run wrote files"
    for line in (line for line in run.stderr.splitlines() if line.startswith("  - ")):
        for part in ("got ", "; allowed: ", ". Fix: "):  # key path, bad value, what is allowed, a fix
            assert part in line, f"{part!r} missing from: {line}"
    assert path in run.stderr and words in run.stderr, run.stderr
    assert not cache_dir.exists() or not any(cache_dir.rglob("result.json"))  # nothing was built
    assert not (run.run_dir / "model.pt").exists()


def test_the_catalogue_has_at_least_25_distinct_bad_inputs():
    assert len({b[1] + b[2] for b in BAD_INPUTS}) + len(FILE_CASES) >= 25


FILE_CASES = {
    "corrupt npz": (lambda d: d.write_bytes(b"not a zip"), ["data.source=npz"], "data.path", "not a readable .npz"),
    "npz without the key": (lambda d: __import__("numpy").savez(d, images=[1.0]), ["data.source=npz"], "data.x_key",
                            "no such array in the .npz file"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_user_file_exits_2(compile_cli, tmp_path, case):
    write, overrides, path, words = FILE_CASES[case]
    data = tmp_path / "data.npz"
    write(data)
    run = compile_cli("recipe=cnn_torch", *overrides, f"data.path={data}")
    assert run.code == 2 and path in run.stderr and words in run.stderr, run.stderr


def test_every_problem_is_reported_at_once(compile_cli):
    run = compile_cli("recipe=cnn_torch", "train.epochs=abc", "engine.precision=fp33", "+model.inptu=1")
    assert run.code == 2
    assert "3 problems" in run.stderr
    for path in ("train.epochs", "engine.precision", "model.inptu"):
        assert path in run.stderr


def test_missing_recipe_lists_the_choices(compile_cli):
    run = compile_cli()
    assert run.code == 2 and "recipe" in run.stderr and "cnn_torch" in run.stderr


@pytest.mark.parametrize("recipe", ["cnn_torch", "cnn_tf"])
def test_lint_mode_imports_no_framework(recipe, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.argv = ["compiler", "recipe={recipe}", "mode=lint"]
        from compiler.cli import main
        try:
            main()
        except SystemExit as exc:
            heavy = sorted(m for m in ("torch", "tensorflow", "keras", "onnxruntime") if m in sys.modules)
            print("EXIT", exc.code, "HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert f"recipe '{recipe}' is valid" in out.stdout
    assert "EXIT 0 HEAVY []" in out.stdout, out.stdout + out.stderr
    assert not (tmp_path / "outputs").exists()  # lint writes nothing
