"""The pipeline's stage table and what a stage may see (compiler/pipeline.py), without running a compile."""

from __future__ import annotations

import pytest
from omegaconf.errors import ConfigAttributeError, ReadonlyConfigError

from compiler.pipeline import STAGES, stage_key_parts, stage_view
from compiler.recipe.resolved import freeze
from tests.conftest import recipe_cfg


def test_each_stage_reads_only_earlier_stages_and_latency_is_last_and_never_cached():
    names = [s.name for s in STAGES]
    for position, stage in enumerate(STAGES):
        assert set(stage.needs) <= set(names[:position]), stage.name
        stage.load()  # its runner resolves
    assert names[-1] == "latency" and [s.name for s in STAGES if not s.cached] == ["latency"]


def test_a_stage_sees_its_sections_read_only_and_no_other():
    cfg = recipe_cfg("cnn_torch")
    export = next(s for s in STAGES if s.name == "export")
    view = stage_view(cfg, export.sections(freeze(cfg).plan))
    assert view.export.opset == cfg.export.opset and view.model.inputs[0].name == "input"
    with pytest.raises(ConfigAttributeError):
        view.train  # noqa: B018 (train is not in export's key, so export cannot read it)
    with pytest.raises(ReadonlyConfigError):
        view.export.opset = 11


def test_a_stage_key_changes_with_its_own_sections_only():
    def parts(stage_name: str, *overrides: str) -> dict:
        cfg = recipe_cfg("cnn_torch", *overrides)
        stage = next(s for s in STAGES if s.name == stage_name)
        return stage_key_parts(stage, cfg, freeze(cfg).plan)

    assert parts("train") == parts("train", "export.opset=16", "verify.atol=1.0")
    assert parts("train") != parts("train", "train.epochs=2")
    assert parts("export") != parts("export", "export.opset=16")
    assert parts("surgery")["plan"] == parts("surgery", "verify.atol=1.0")["plan"]
