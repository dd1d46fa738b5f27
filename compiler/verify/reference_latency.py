"""The framework reference's latency, remembered between runs.

The engine is timed fresh at the end of every compile. The framework model is the reference it is compared
with; timing it needs the framework itself (importing torch alone costs 1.4-2 s on a 2-core machine, most of a
no-change rerun). So its figures are kept in the cache under everything they depend on: the reference artifact's
content, the batches and shapes timed, the latency settings, the device, this host and its CPU count, and the
framework's version. A later run with the same key, within MAX_AGE, shows them again, marked with when they were
measured; anything else, or `verify.latency.reuse_framework=false`, times the framework fresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from compiler import __version__
from compiler.cache import sha256_artifact, tool_versions
from compiler.frameworks import TOOLS

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.plan import EnginePlan

MAX_AGE = timedelta(hours=24)


def key(cfg: DictConfig, plan: EnginePlan, artifacts: Mapping[str, Path], batches: list[int]) -> str:
    from omegaconf import OmegaConf


    framework = cfg.framework.value
    reference = artifacts["export"] if framework == "onnx" else artifacts["train"]
    latency = OmegaConf.to_container(cfg.verify.latency, resolve=True)
    latency.pop("reuse_framework", None)
    payload = {"reference": sha256_artifact(reference), "framework": framework, "batches": batches,
               "model": OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True), "latency": latency,
               "seed": cfg.seed, "data": OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True),
               "gpu": bool(plan.gpu), "host": platform.node(), "cpus": os.cpu_count(), "compiler": __version__,
               "tools": tool_versions(TOOLS[framework])}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _path(root: Path, digest: str) -> Path:
    return root / ".latency" / f"{digest}.json"  # beside .plots: not a stage entry


def remembered(root: Path | None, digest: str) -> dict | None:
    """{figures, measured_at} from an earlier run, when there is one young enough."""
    if root is None:
        return None
    try:
        entry = json.loads(_path(root, digest).read_text())
        measured = datetime.fromisoformat(entry["measured_at"])
    except (OSError, ValueError, KeyError):
        return None
    return entry if datetime.now(timezone.utc) - measured <= MAX_AGE else None


def remember(root: Path | None, digest: str, figures: dict, measured_at: str) -> None:
    if root is None:
        return
    path = _path(root, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"figures": figures, "measured_at": measured_at}))
    os.replace(tmp, path)
