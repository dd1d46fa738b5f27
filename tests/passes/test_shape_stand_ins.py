"""Shape inference through the ops onnxruntime's quantizer writes (passes/_shape_stand_ins.py): each stand-in's
mapping against both schemas, and shape computations after a DynamicQuantizeLSTM and a ConvInteger folding as
they would after the float ops, with the outputs unchanged."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from compiler.passes import fold_shape_computations
from compiler.passes._shape_stand_ins import CONTRIB, SYMBOLIC

RNG = np.random.default_rng(0)


def _schemas():
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    return {(s.domain, s.name): s for s in C.get_all_operator_schema()}


@pytest.mark.parametrize("table, domain", [(CONTRIB, "com.microsoft"), (SYMBOLIC, "")])
def test_each_stand_in_takes_the_inputs_and_attributes_its_standard_op_names_alike(table, domain):
    schemas = _schemas()
    for name, entry in table.items():
        ours, standard = schemas[(domain, name)], onnx.defs.get_schema(entry.op)
        kept = [ours.inputs[i].name.lower() for i in entry.inputs]
        if entry.op != "Identity":  # Identity names its one input `input`
            assert kept == [i.name.lower() for i in standard.inputs][:len(kept)], name
        assert len(ours.outputs) == len(standard.outputs), name
        assert set(entry.attributes) <= set(ours.attributes) & set(standard.attributes), name
        assert all(a in ours.attributes for a, _ in entry.unless), name


def _const(name, value):
    return nh.from_array(np.array(value, np.int64), name)


def _quantized(model, op, tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    src, out = tmp_path / "float.onnx", tmp_path / "quantized.onnx"
    onnx.save(model, src)
    quantize_dynamic(str(src), str(out), op_types_to_quantize=[op])
    quantized = onnx.load(out)
    return quantized


def _same_outputs(before, after, feeds):
    a, b = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
            for m in (before, after))
    for x, y in zip(a, b):
        assert x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_a_shape_computation_after_a_dynamic_quantize_lstm_folds(tmp_path):
    """ddddocr's recognizer head: an LSTM's output flattened by Shape -> Gather -> Mul -> Concat -> Reshape.
    onnx's inference knows no DynamicQuantizeLSTM, so nothing after it had a shape and the chain stayed."""
    hidden = 4
    nodes = [h.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=hidden),
             h.make_node("Reshape", ["y", "keep_two"], ["y3"]),          # [seq, 1, hidden]
             h.make_node("Shape", ["y3"], ["s"]),
             h.make_node("Gather", ["s", "zero"], ["seq"], axis=0), h.make_node("Gather", ["s", "one"], ["batch"], axis=0),
             h.make_node("Gather", ["s", "two"], ["width"], axis=0), h.make_node("Mul", ["seq", "batch"], ["rows"]),
             h.make_node("Unsqueeze", ["rows", "axes"], ["r"]), h.make_node("Unsqueeze", ["width", "axes"], ["w"]),
             h.make_node("Concat", ["r", "w"], ["target"], axis=0),
             h.make_node("Reshape", ["y3", "target"], ["out"])]
    inits = [nh.from_array(RNG.standard_normal((1, 4 * hidden, 3)).astype(np.float32), "W"),
             nh.from_array(RNG.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R"),
             _const("keep_two", [0, 0, -1]), _const("zero", 0), _const("one", 1), _const("two", 2), _const("axes", [0])]
    graph = h.make_graph(nodes, "lstm", [h.make_tensor_value_info("x", T.FLOAT, ["seq", 1, 3])],
                         [h.make_tensor_value_info("out", T.FLOAT, None)], inits)
    model = _quantized(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), "LSTM", tmp_path)
    assert "DynamicQuantizeLSTM" in [n.op_type for n in model.graph.node]

    folded = fold_shape_computations.apply(model)

    assert [n.op_type for n in folded.graph.node] == ["DynamicQuantizeLSTM", "Reshape", "Reshape"]
    assert nh.to_array([i for i in folded.graph.initializer if i.name == folded.graph.node[2].input[1]][0]).tolist() \
        == [-1, hidden]
    for seq in (2, 7):
        _same_outputs(model, folded, {"x": RNG.standard_normal((seq, 1, 3)).astype(np.float32)})


def test_dims_after_an_integer_convolution_are_tied_by_symbolic_inference(tmp_path):
    """A ConvInteger with a dynamic width: onnxruntime's symbolic inference gave up on the whole graph (it leaves
    ConvInteger to onnx, which can only name a new dim), so two Reshapes' dims were never proved equal. With Conv
    standing in, the width is one expression through the graph; sympy leaves `floor(..)*12 / (floor(..)+1)`
    unsimplified after the [0, 0, -1] Reshape, and onnx's static 12 is kept there."""
    nodes = [h.make_node("Conv", ["x", "k"], ["c"], strides=[2, 2]),          # [1, 4, 3, w']
             h.make_node("Transpose", ["c"], ["t"], perm=[3, 0, 1, 2]),      # [w', 1, 4, 3]
             h.make_node("Reshape", ["t", "flat"], ["rows"]),                # [-1, 12]: a new dim to onnx
             h.make_node("MatMul", ["rows", "m"], ["p"]),                    # [w', 5]
             h.make_node("Shape", ["t"], ["s"]), h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             h.make_node("Unsqueeze", ["n", "axes"], ["nu"]), h.make_node("Concat", ["nu", "one", "minus"], ["target"], axis=0),
             h.make_node("Reshape", ["p", "target"], ["out"]),               # [w', 1, 5]
             h.make_node("Reshape", ["t", "keep_two"], ["t3"]),              # [w', 1, 12]
             h.make_node("Shape", ["t3"], ["s3"]), h.make_node("Gather", ["s3", "two"], ["d"], axis=0),
             h.make_node("Cast", ["d"], ["df"], to=T.FLOAT), h.make_node("Div", ["t3", "df"], ["scaled"])]
    inits = [nh.from_array(RNG.standard_normal((4, 1, 3, 3)).astype(np.float32), "k"),
             nh.from_array(RNG.standard_normal((12, 5)).astype(np.float32), "m"),
             _const("flat", [-1, 12]), _const("zero", 0), _const("two", 2), _const("axes", [0]), _const("one", [1]),
             _const("minus", [-1]), _const("keep_two", [0, 0, -1])]
    graph = h.make_graph(nodes, "conv", [h.make_tensor_value_info("x", T.FLOAT, [1, 1, 8, "w"])],
                         [h.make_tensor_value_info(o, T.FLOAT, None) for o in ("out", "scaled")], inits)
    model = _quantized(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), "Conv", tmp_path)
    assert "ConvInteger" in [n.op_type for n in model.graph.node]

    folded = fold_shape_computations.apply(model)

    assert "Shape" not in [n.op_type for n in folded.graph.node]
    for width in (9, 20):
        _same_outputs(model, folded, {"x": RNG.standard_normal((1, 1, 8, width)).astype(np.float32)})
