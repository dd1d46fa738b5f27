"""`data.source: none` with a factory model: nothing to train on, so the train stage keeps the weights the factory
builds (a pretrained model, or one from its config) and saves them as training would, for export and reference."""

from __future__ import annotations

from pathlib import Path

NOT_TRAINED = "not trained (data.source=none): the factory's weights as built"


def save_as_built(cfg, io, work_dir: Path) -> tuple[str, dict]:
    """(artifact name, info) of the untrained model, in the framework's own format."""
    if cfg.framework.value == "torch":
        import torch

        from compiler.model.torch_builder import build_torch_model

        torch.manual_seed(cfg.seed)
        model = build_torch_model(cfg.model, io).eval()
        torch.save(model.state_dict(), work_dir / "model.pt")
        artifact, parameters = "model.pt", sum(p.numel() for p in model.parameters())
    else:
        import keras

        from compiler.model.keras_builder import build_keras_model

        keras.utils.set_random_seed(cfg.seed)
        model = build_keras_model(cfg.model, io)
        model.save(work_dir / "model.keras")
        artifact, parameters = "model.keras", model.count_params()
    return artifact, {"trained": False, "note": NOT_TRAINED, "history": [], "parameters": int(parameters),
                      "train_samples": 0, "test_samples": 0, "final_val_accuracy": None}
