"""report.json (the stable interface, written last) and report.md (tables and plots)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from compiler import __version__
from compiler.backends.tensorrt_plan import reproducers
from compiler.cache import runtime_file
from compiler.pipeline import CompileResult


def build_report(cfg: DictConfig, recipe: str, result: CompileResult, status: str,
                 domain: tuple[str, ...] = ()) -> dict[str, Any]:
    stages = {r.name: {"artifact": r.artifact, "sha256": r.sha256, "seconds": round(r.seconds, 4),
                       "build_seconds": round(r.build_seconds, 4), "cached": r.cached, "key": r.key,
                       **({"error": r.error} if r.error else {})} for r in result.stages}
    infos = {r.name: r.info for r in result.stages}
    verify = infos.get("verify", {})
    metrics = {
        "accuracy": verify.get("accuracy", {}),
        "max_abs_error": verify.get("max_abs_error", {}),
        "max_rel_error": verify.get("max_rel_error", {}),
        "latency_ms": result.latency,
        "onnx_nodes": {"export": infos.get("export", {}).get("nodes"), "clean": infos.get("surgery", {}).get("nodes")},
    }
    return {
        "status": status, "recipe": recipe, "compiler_version": __version__,
        "reference": verify.get("reference", cfg.framework.value),
        "error": str(result.error) if result.error else None,
        "stages": stages, "metrics": metrics,
        "engine": _engine(cfg, result, infos.get("build", {})),
        "search": result.search,
        "gates": verify.get("gates", []), "ledger": verify.get("ledger", []),
        "agreement": verify.get("agreement", []), "math_modes": verify.get("math_modes", {}),
        "placement": verify.get("placement"),
        "training": infos.get("train", {}), "surgery": infos.get("surgery", {}).get("passes", []),
        "quantize": infos.get("quantize"),
        "serving": infos.get("serve"),
        "io": infos.get("export", {}).get("io"),
        "io_spec": _io_spec(cfg),
        "import_fixes": infos.get("export", {}).get("import_fixes", []),
        "input_domain": list(domain),
        "verified_shapes": verify.get("ledger_inputs", {}).get("shapes", {}),
        "metric": verify.get("metric"),
        "latency_conditions": result.latency_conditions,
        "recipe_config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }


def _modes(row: dict) -> str:
    modes = row.get("math_mode") or {}
    return f"{modes.get('reference', '?')} -> {modes.get('candidate', '?')}" if modes else "-"


def _engine(cfg: DictConfig, result: CompileResult, build: dict) -> dict[str, Any]:
    """The plan the engine was built by, what the build saw, and the reproducers, rendered now from the plan and
    the recipe's tolerances (never from a cached build, so a changed verify.atol shows)."""
    engine = {k: build.get(k) for k in ("backend", "reason", "layers", "io_tensors", "disabled_optimizers", "tensorrt",
                                        "runtime")}
    if build.get("runtime"):  # the engine's runtime settings: the file beside it holds the same
        engine["runtime_file"] = runtime_file(Path(result.by_name["build"].artifact)).name
    plan = result.plan
    if plan is None:
        return engine
    engine["plan"] = plan.summary()
    if build.get("model"):
        engine["reproducers"] = reproducers(plan, result.io.engine_profiles(), build["model"],
                                            cfg.verify.atol, cfg.verify.rtol)
        engine["reproducers_for"] = f"TensorRT {plan.tensorrt_version}" + (" (TensorRT-RTX)" if
                                                                            plan.backend == "tensorrt_rtx" else "")
    if build.get("runtime"):
        engine["runtime_reproducer"] = _ort_reproducer(result.by_name["build"].artifact, build["runtime"])
    return engine


def _ort_reproducer(engine: str, settings: dict) -> str:
    """A Python line that opens the engine as the compiler verified and timed it."""
    s = settings["session"]
    providers = [(name, opts) if opts else name for name, opts in settings["providers"]]
    return (f"python -c \"import onnxruntime as ort; o = ort.SessionOptions(); o.graph_optimization_level = "
            f"ort.GraphOptimizationLevel.ORT_{'DISABLE_ALL' if s['graph_optimization_level'] == 'disable' else 'ENABLE_' + s['graph_optimization_level'].upper()}; "
            f"s = ort.InferenceSession('{engine}', o, providers={providers!r}, "
            f"disabled_optimizers={s['disabled_optimizers']!r}); print(s.get_providers())\""
            + ("  # then run it through I/O binding with gpu_graph_id set: the CUDA graphs need fixed buffers"
               if settings.get("cuda_graph") else ""))


def _io_spec(cfg: DictConfig) -> dict[str, Any]:
    model = OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    return {k: model[k] for k in ("inputs", "outputs", "dims", "profiles", "label_output")}


def write_report(report: dict[str, Any], run_dir: Path, plot: str | None = None) -> None:
    """report.md (linking the training plot, training_plot.py) and report.json, last."""
    _atomic_write(run_dir / "report.md", render_markdown(report, plot))
    _atomic_write(run_dir / "report.json", json.dumps(report, indent=2, default=str))  # the manifest: last


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + \
        ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]


def _io_lines(report: dict[str, Any]) -> list[str]:
    spec = report.get("io_spec")
    if not spec:
        return []
    lines = ["## Inputs and outputs", ""] + _table(
        ["input", "dtype", "shape", "value range"],
        [[i["name"], i["dtype"] or "float32", i["shape"], i["range"] if i["range"] is not None
          else (f"values {i['values']}" if i.get("values") is not None else "-")]
         for i in spec["inputs"]]) + [""]
    lines += _table(["output", "atol", "rtol"], [[o["name"], o["atol"] if o["atol"] is not None else "verify.atol",
                                                  o["rtol"] if o["rtol"] is not None else "verify.rtol"]
                                                 for o in spec["outputs"]]) + [""]
    if spec["dims"]:
        lines += ["Named dims (min, opt, max): " + ", ".join(f"`{k}` {v}" for k, v in spec["dims"].items()) +
                  (f"; {len(spec['profiles'])} profiles: {spec['profiles']}" if spec["profiles"] else "") + ".", ""]
    if report.get("verified_shapes"):
        lines += ["Every artifact was compared on these inputs: " + "; ".join(
            f"{label} {shapes}" for label, shapes in report["verified_shapes"].items()) + ".", ""]
    if report.get("metric"):
        lines += [f"Task metric: {report['metric']}.", ""]
    if report.get("import_fixes"):
        lines += ["Repairs made when importing the file: " + "; ".join(report["import_fixes"]) + ".", ""]
    if report.get("input_domain"):
        lines += ["Input domain (what the file left open, and what onnxruntime ran when probed):", ""]
        lines += [f"- {note}" for note in report["input_domain"]] + [""]
    return lines


def _search_lines(rows: list[dict]) -> list[str]:
    chosen = next((r for r in rows if r["chosen"]), None)
    head = ["## precision: best", "", "Every precision the backend runs well was converted, built, verified and timed "
            "in this run on the same inputs (on the CUDA provider also the runtime variants of each that passed: "
            "layout, CUDA graphs, fusion); the fastest that passed every gate was kept" +
            (f": **{chosen['candidate']}** ({chosen['why']})." if chosen else ". None passed."), ""]
    return head + _table(["candidate", "conversion", "tool", "fusion", "layout", "CUDA graph", "Memcpy", "accuracy",
                          "reference accuracy", "p50 ms", "at", "passed", "chosen", "why"],
                         [[r["candidate"], r["conversion"], r["tool"], r["fusion"], r["layout"], r["cuda_graph"],
                           "-" if r["memcpy"] is None else r["memcpy"], r["accuracy"], r["reference_accuracy"],
                           r["speed_ms"], r["speed_batch"], r["passed"], r["chosen"], r["why"]] for r in rows]) + [""]


def _placement_lines(report: dict[str, Any]) -> list[str]:
    """Where the engine's nodes run on the CUDA provider: CPU nodes and Memcpy nodes are host<->device copies."""
    placed = report.get("placement")
    if not placed:
        return []
    providers = ", ".join(f"{p} {n}" for p, n in sorted(placed["by_provider"].items()))
    lines = ["## Node placement (CUDA provider)", "", f"{placed['nodes']} nodes ran ({providers}); **{placed['memcpy']} "
             f"Memcpy** nodes, {len(placed['cpu_nodes'])} other nodes on the CPU.", ""]
    if placed["cpu_nodes"] or placed["memcpy_nodes"]:
        lines += ["On the CPU or copying: " + ", ".join(placed["cpu_nodes"] + placed["memcpy_nodes"]) + ".", ""]
    lines += [f"- {copy}" for copy in placed.get("copies") or []] + ([""] if placed.get("copies") else [])
    return lines


def _serving_lines(report: dict[str, Any]) -> list[str]:
    served = report.get("serving")
    if not served:
        return []
    name, kind = served["model_name"], served["instance_kind"]
    batching = (f"max_batch_size {served['max_batch_size']}" + (", dynamic batching" if served["dynamic_batching"]
                                                                else "")) if served["max_batch_size"] else \
        "max_batch_size 0 (full dims, not batched)"
    lines = ["## Serving (Triton)", "", f"`{served['config']}`: platform `{served['platform']}`, {batching}, "
             f"{served['instances']} x {kind}, warm-up {', '.join(served['warmup']) or 'off'}; the engine as "
             f"`triton/{name}/{served['engine_file']}`.", ""]
    lines += [f"- {note}" for note in served.get("notes", [])] + ([""] if served.get("notes") else [])
    lines += ["Serve it with NVIDIA's Triton container (the onnxruntime and TensorRT backends):", "", "```bash",
              "docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -v $PWD/triton:/models "
              "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models", "```", "",
              f"Or try it here: `python -m compiler serve .` loads `{served['twin_config']}` (the same config on "
              "Triton's Python backend, running onnxruntime with the engine's runtime settings).", ""]
    return lines


def render_markdown(report: dict[str, Any], plot: str | None) -> str:
    m = report["metrics"]
    lines = [f"# Compile report: `{report['recipe']}` — {report['status'].upper()}", ""]
    if report["error"]:
        lines += ["```", report["error"], "```", ""]
    lines += ["## Stages", ""] + _table(
        ["stage", "artifact", "cached", "seconds", "build seconds", "sha256"],
        [[n, s["artifact"], "yes" if s["cached"] else "no", s["seconds"], s["build_seconds"], s["sha256"][:12]]
         for n, s in report["stages"].items()]) + [""]
    lines += _io_lines(report)
    if report["engine"].get("backend"):
        lines += [f"Engine backend: **{report['engine']['backend']}** — {report['engine']['reason']}", ""]
    plan = report["engine"].get("plan")
    if plan:
        lines += ["## Engine plan", ""] + _table(["decision", "value"], [[k, v] for k, v in plan.items()
                                                                        if k not in ("backend", "reason")]) + [""]
    if report.get("search"):
        lines += _search_lines(report["search"])
    lines += _placement_lines(report)
    if report["engine"].get("runtime"):
        lines += ["Runtime settings (every session that verified and timed the engine used them; "
                  f"`{report['engine']['runtime_file']}` beside the engine holds them):", "", "```json",
                  json.dumps(report["engine"]["runtime"], indent=1, sort_keys=True), "```", "",
                  "Open it the same way outside the compiler, from the run directory:", "", "```bash",
                  report["engine"]["runtime_reproducer"], "```", ""]
    if report["engine"].get("disabled_optimizers"):
        engine = report["stages"]["build"]["artifact"]
        lines += ["Load the engine with the transformers it was built without (loading without them gives the same "
                  "results, slower):", "", "```python",
                  f"onnxruntime.InferenceSession({engine!r}, disabled_optimizers={report['engine']['disabled_optimizers']!r})",
                  "```", ""]
    if report["engine"].get("reproducers"):
        lines += ["## Reproduce outside the compiler", "", f"From the run directory, on a machine with "
                  f"{report['engine'].get('reproducers_for', 'TensorRT')}:", "",
                  "```bash"] + list(report["engine"]["reproducers"].values()) + ["```", ""]
    if report["engine"].get("layers"):
        lines += ["## Engine layers", ""] + _table(["layer", "precision"],
                                                   [[x["name"], x["precision"]] for x in report["engine"]["layers"]]) + [""]
    if m["accuracy"]:
        lines += ["## Accuracy (top-1, test split)", ""] + _table(
            ["model", "accuracy"], [[k, v] for k, v in m["accuracy"].items()]) + [""]
    if report["ledger"]:
        lines += ["## Error ledger", ""] + _table(
            ["reference", "candidate", "math mode", "output", "max abs error", "max rel error", "passed"],
            [[r["reference"], r["candidate"], _modes(r), r["output"], r["max_abs_error"], r["max_rel_error"], r["passed"]]
             for r in report["ledger"]]) + [""]
    if report.get("agreement"):
        lines += ["## Agreement with strict fp32 (no labels)", ""] + _table(
            ["output", "rel L2", "cosine", "argmax agreement", "budgets", "passed"],
            [[a["output"], a["rel_l2"], a["cosine"], "-" if a["argmax"] is None else a["argmax"],
              ", ".join(f"{k} {v:g}" for k, v in a["budget"].items()), a["passed"]] for a in report["agreement"]]) + [""]
    if m["latency_ms"]:
        rows = [[who, b, v["p50"], v["p99"], v["iterations"]] for who, per in m["latency_ms"].items() for b, v in per.items()]
        c = report.get("latency_conditions") or {}
        lines += ["## Latency (ms per call)", "", f"Measured by this run at {c.get('measured_at')} on {c.get('host')} "
                  f"({c.get('cpus')} CPUs), alone: no other compile on this machine computed meanwhile (the timing "
                  "lock), and never taken from the cache" + (
                      f"; the framework reference's figures are those measured at {c['framework_measured_at']} "
                      "(the same reference, settings and machine: verify.latency.reuse_framework)"
                      if c.get("framework_measured_at", c.get("measured_at")) != c.get("measured_at") else "") + ".",
                  ""] + \
            _table(["model", "batch", "p50", "p99", "iterations"], rows) + [""]
    threads = (report.get("latency_conditions") or {}).get("intra_op_threads")
    if threads:
        lines += [f"`intra_op_threads: auto` timed the engine at batch {threads['batch']} with each thread count "
                  f"and kept **{threads['chosen']}**:", ""] + _table(
            ["intra_op_threads", "p50 ms"], [[r["intra_op_threads"], r["p50_ms"]] for r in threads["table"]]) + [""]
    lines += _serving_lines(report)
    if report["gates"]:
        lines += ["## Gates", ""] + _table(["gate", "passed", "detail"],
                                           [[g["name"], g["passed"], g["detail"]] for g in report["gates"]]) + [""]
    q = report.get("quantize")
    if q:
        precision = q.get("precision", "int8")
        lines += [f"## {precision.upper()} conversion", ""]
        if q.get("method"):
            lines += [f"Calibration: {q['calibration_samples']} samples, {q['method']}, per-channel weights: "
                      f"{q['per_channel']}; {q['quantize_linear_nodes']} QuantizeLinear nodes.", ""]
        elif precision in ("int8", "fp8"):
            lines += [f"Calibration: {q['calibration_samples']} samples; {q['quantize_linear_nodes']} "
                      "QuantizeLinear nodes.", ""]
        if q.get("kept_fp32_shallow"):
            lines += [f"Kept fp32 for speed (reduction depth below {q['min_reduction_depth']}): "
                      f"{', '.join(q['kept_fp32_shallow'])}.", ""]
        if q.get("fused_for_gpu"):
            f = q["fused_for_gpu"]
            lines += ["Fused before the conversion (onnxruntime's transformer optimizer, for its CUDA kernels: "
                      f"model type {f['model_type']}, {f['num_heads']} heads, hidden size {f['hidden_size']}; "
                      f"{f.get('packed_projections_split', 0)} packed q/k/v projections split and "
                      f"{f.get('attention_scales_moved', 0)} attention scales moved first): " +
                      (", ".join(f"{op} x{n}" for op, n in f["fused_operators"].items()) or "nothing fused") + ".", ""]
            if f.get("fusion_refused"):
                lines += ["The optimizer raised for model type " + "; ".join(
                    f"{kind} ({why})" for kind, why in f["fusion_refused"].items()) + ".", ""]
            if f.get("fusion_rejected"):
                lines += ["Fusions rejected, as they changed what the graph computes (checked on "
                          f"{f.get('fusion_checked_on', 'calibration inputs')}): " + "; ".join(
                              f"{kind}: {why}" for kind, why in f["fusion_rejected"].items()) + ".", ""]
        if q.get("kept_fp32_overflow"):
            lines += [f"Kept fp32 for range (tensors beyond fp16 on calibration data): "
                      f"{', '.join(q['kept_fp32_overflow'])}.", ""]
        if q.get("calibration"):
            lines += [f"Calibration inputs: {q['calibration']}.", ""]
        if q.get("judged_by") == "agreement":
            reached = q.get("agreement_score")
            lines += [f"Converted by {q.get('tool', 'onnxruntime')}. No labels: judged by agreement with the fp32 model "
                      "(verify/agreement.py); " + (f"worst output's relative L2 at {-reached:.2f} of its budget."
                                                   if reached is not None and reached >= -1 else
                                                   "a budget is exceeded." if reached is not None
                                                   else f"not measured: {q['not_measured']}."), ""]
        else:
            reduced = q.get(f"{precision}_accuracy")
            lines += [f"Converted by {q.get('tool', 'onnxruntime')}. Top-1 of the fp32 model {q['fp32_accuracy']:.4f}, "
                      f"of the {precision} model " + (f"{reduced:.4f}." if reduced is not None
                                                      else f"not measured: {q['not_measured']}."), ""]
        if q["snippet"]:
            lines += ["Nodes kept in fp32 to meet the " + ("accuracy budget" if q.get("judged_by") != "agreement"
                                                          else "agreement budgets") +
                      "; paste this into the recipe to skip the search:",
                      "", "```yaml", q["snippet"].rstrip(), "```", ""]
    if report["surgery"]:
        lines += ["## Graph surgery", ""] + _table(
            ["#", "pass", "nodes before", "nodes after", "op delta", "seconds"],
            [[p["index"], p["pass"], p["nodes_before"], p["nodes_after"],
              (", ".join(f"{k} {v:+d}" for k, v in p["op_delta"].items()) or p.get("skipped", "-"))
              + "".join(f"; {n}" for n in p.get("notes", [])), p["seconds"]]
             for p in report["surgery"]]) + [""]
    history = report["training"].get("history", [])
    if history:
        lines += ["## Training", "", f"Device: {report['training'].get('device')}, precision: "
                  f"{report['training'].get('precision')}, parameters: {report['training'].get('parameters')}", ""]
        lines += _table(["epoch", "loss", "train accuracy", "test accuracy"],
                        [[h["epoch"], h["loss"], h["accuracy"], h["val_accuracy"]] for h in history]) + [""]
        if plot:
            lines += [f"![training curves]({plot})", ""]
    elif report["training"].get("trained") is False:
        lines += ["## Training", "", f"{report['training']['note']}; parameters: {report['training']['parameters']}.", ""]
    return "\n".join(lines)
