"""The seed's hand-written pipeline, as users write it today: the baseline for `compiler recipe=cnn_torch`.

Same model, data, epochs and batch size as recipes/cnn_torch.yaml: train with a plain loop,
torch.onnx.export, and one onnxruntime check against the trained model.
    python benchmarks/plain_cnn_torch.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from scipy.ndimage import zoom
from sklearn.datasets import load_digits
from torch import nn


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    digits = load_digits()
    images = zoom(digits.images.astype(np.float32) / 16.0, (1, 28 / 8, 28 / 8), order=1)
    x = torch.from_numpy(images[:, None].astype(np.float32))
    y = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(x)))
    n_test = int(round(len(x) * 0.2))
    x_test, y_test, x_train, y_train = x[order[:n_test]], y[order[:n_test]], x[order[n_test:]], y[order[n_test:]]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train), batch_size=64, shuffle=True)

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(5):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        reference = model(x_test)
    accuracy = float((reference.argmax(1) == y_test).float().mean())

    path = out_dir / "model.onnx"
    torch.onnx.export(model, (x_test[:2],), str(path), input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"input": x_test.numpy()})[0]
    print(f"accuracy {accuracy:.4f}, max abs error torch->onnxruntime {np.abs(onnx_out - reference.numpy()).max():.3g}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "plain_out"))
