"""The seed's hand-written Keras pipeline: the baseline for `compiler recipe=cnn_tf`.

Same model, data, epochs and batch size as recipes/cnn_tf.yaml: model.fit, tf2onnx from a
tf.function (NCHW input, like the compiler's default), and one onnxruntime check.
    python benchmarks/plain_cnn_tf.py OUT_DIR
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from scipy.ndimage import zoom  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = zoom(digits.images.astype(np.float32) / 16.0, (1, 28 / 8, 28 / 8), order=1)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    n_test = int(round(len(x) * 0.2))
    x_test, y_test, x_train, y_train = x[order[:n_test]], y[order[:n_test]], x[order[n_test:]], y[order[n_test:]]

    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=5, batch_size=64, validation_data=(x_test, y_test), verbose=0)
    reference = np.asarray(model(x_test, training=False))
    accuracy = float((reference.argmax(1) == y_test).mean())

    signature = (tf.TensorSpec((None, 28, 28, 1), tf.float32, name="input"),)

    @tf.function(input_signature=signature)
    def serve(inp):
        return {"logits": model(inp, training=False)}

    path = out_dir / "model.onnx"
    tf2onnx.convert.from_function(serve, input_signature=signature, opset=17, inputs_as_nchw=["input"],
                                  output_path=str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x_test.transpose(0, 3, 1, 2)})[0]
    print(f"accuracy {accuracy:.4f}, max abs error keras->onnxruntime {np.abs(onnx_out - reference).max():.3g}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "plain_out"))
