"""The Hydra entry: compose the recipe, lint it, compile it, report, and exit with the right code.

Exit codes: 0 compiled and verified, 1 a stage failed, 2 the recipe is invalid (nothing was
run), 3 built but verification gates failed.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from typing import Any

from omegaconf import DictConfig, OmegaConf

from compiler import discovery, recipe_source, schema, tracking
from compiler.activation_memory import fit_recipe
from compiler.cache import cache_root
from compiler.composition import compose, composition_problems, with_dict_keys
from compiler.errors import (DEBUG_VAR, EXIT_INVALID_RECIPE, EXIT_OK, EXIT_STAGE_FAILED, EXIT_VERIFY_FAILED,
    InputDomainError, Problem, RecipeError, debug_enabled, describe)
from compiler.input_domain import probe
from compiler.lint import lint, resolved_problems, structure_problems
from compiler.machine_lock import working
from compiler.onnx_io import resolve_onnx_io
from compiler.paths import writable
from compiler.pipeline import compile_recipe
from compiler.recipe.resolved import Resolved, freeze
from compiler.report import build_report, write_report
from compiler.resources import conf_dir
from compiler.sweep import JOB_FILE, prelint
from compiler.training_plot import TrainingPlot

log = logging.getLogger("compiler")


def job_dir_name(num: Any, overrides: str) -> str:
    """A sweep job's folder: `<n>_<overrides>`, shortened (with a hash) past 120 characters: file systems
    refuse names over 255 bytes, and a sweep over a list-valued key reaches that quickly."""
    name = f"{num}_{overrides}"
    if len(name) <= 120:
        return name
    import hashlib

    return f"{name[:100]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


# module level: joblib/Ray workers import this module to run _hydra_task and need the resolver too
OmegaConf.register_new_resolver("compiler_job_dir", job_dir_name, replace=True)


@dataclass
class _Session:
    jobs: int = 0
    exit_code: int = EXIT_OK
    checked: Any = None                      # a single run's Checked, from before Hydra made its run dir
    checked_cfg: Any = None                  # the recipe it checked (an ONNX recipe's IO filled from its file)
    existed: frozenset = frozenset()         # the run dir and its parents that existed before this run


_SESSION = _Session()


def recipe_problems(cfg: DictConfig) -> list:
    """Every problem of a composed recipe (an ONNX recipe first reads its IO spec from its file)."""
    return _opened_and_problems(cfg)[1]


def _opened_and_problems(cfg: DictConfig) -> tuple[Any, list]:
    """(what an ONNX file's IO left to defaults, or None; every problem of the composed recipe)."""
    from omegaconf.errors import OmegaConfBaseException


    problems = structure_problems(cfg)
    if problems:
        return None, problems
    try:
        return _problems(cfg)
    except OmegaConfBaseException as exc:  # a value no check anticipated: still the recipe's fault, with its key
        key = getattr(exc, "full_key", None) or "<recipe>"
        return None, [Problem(str(key), str(exc).splitlines()[0],
                              getattr(exc, "value", None) if hasattr(exc, "value") else key,
                              "a value of the key's type (README, 'Options')", fix="correct or remove this key")]


def lint_problems(cfg: DictConfig) -> list:
    """What `mode=lint` reports of a composed recipe: its problems, then those of the IOSpec it resolves to (the
    recipe is read-only afterwards)."""
    return recipe_problems(cfg) or resolved_problems(freeze(cfg))


def _problems(cfg: DictConfig) -> tuple[Any, list]:
    opened = None
    if cfg.framework.value == "onnx":
        problems, opened = resolve_onnx_io(cfg)
        _notes(opened.notes)
        if problems:
            return opened, problems
    return opened, lint(cfg)


@dataclass
class Checked:
    """What checking a composed recipe gave: an exit code when it may not run (2) or was only linted (0), else
    the recipe resolved for the compile (read-only from here on)."""

    code: int | None
    resolved: Resolved | None = None


def check_recipe(cfg: DictConfig, recipe: str) -> Checked:
    """Lint, resolve once, and for an ONNX file try its generated inputs on it: everything that can refuse a run
    (exit 2), before any run dir, log or cache entry is written."""
    import dataclasses


    opened, problems = _opened_and_problems(cfg)
    domain = list(opened.notes) if opened is not None else []
    if not problems and cfg.mode.value != "lint" and cfg.framework.value == "onnx":
        notes, problem = fit_recipe(cfg, opened)  # first: the probe runs the file at the max shapes
        problems = [problem] if problem else []
        _notes(notes)
        domain += notes
    resolved = None if problems else freeze(cfg, domain)
    problems = problems or resolved_problems(resolved)
    if problems:
        return _refused(problems)
    if cfg.mode.value == "lint":
        print(f"compiler: recipe '{recipe}' is valid")
        return Checked(EXIT_OK)
    if cfg.framework.value == "onnx":  # the generated inputs, tried on the file before anything is built
        probed = probe(resolved, opened)
        _notes(probed.notes)
        problems = [probed.problem] if probed.problem else resolved_problems(probed.resolved)
        if problems:
            return _refused(problems)
        resolved = dataclasses.replace(probed.resolved, domain=tuple(domain + probed.notes))
    return Checked(None, resolved)


def _refused(problems: list) -> Checked:
    print(f"compiler: {RecipeError(problems).render()}", file=sys.stderr)
    return Checked(EXIT_INVALID_RECIPE)


def _notes(notes: list[str]) -> None:
    for note in notes:
        print(f"compiler: note: {note}", file=sys.stderr)


def run_job(cfg: DictConfig, recipe: str, run_dir: Path, checked: Checked | None = None) -> int:
    """Check (unless the caller already did), then (unless mode=lint) compile one composed recipe; return its
    exit code."""
    checked = checked or check_recipe(cfg, recipe)
    if checked.code is not None:
        return checked.code
    resolved = checked.resolved
    cfg = resolved.cfg


    plot = TrainingPlot(run_dir, cache_root(cfg.cache) if cfg.cache.enabled else None)
    result = compile_recipe(resolved, run_dir, log, plot, recipe)
    verify = result.by_name.get("verify")
    if result.error:
        status = "failed"
        code = EXIT_INVALID_RECIPE if isinstance(result.error, InputDomainError) else EXIT_STAGE_FAILED
    elif not verify.info.get("passed"):
        status, code = "failed", EXIT_VERIFY_FAILED
    else:
        status, code = "passed", EXIT_OK
    with working():  # plotting and writing are work: not while another job times
        report = build_report(cfg, recipe, result, status, resolved.domain)
        write_report(report, run_dir, plot.wait())
        _track(cfg, report, run_dir)
    _print_summary(report, run_dir)
    return code


def _track(cfg: DictConfig, report: dict, run_dir: Path) -> None:
    """MLflow and TensorBoard, when the recipe turns them on; a tracking failure never fails the compile."""
    if not (cfg.tracking.mlflow or cfg.tracking.tensorboard):
        return

    try:
        if cfg.tracking.tensorboard:
            log.info("tensorboard: %s", tracking.write_tensorboard(report, run_dir))
        if cfg.tracking.mlflow:
            log.info("mlflow: run %s in %s", tracking.log_job(cfg, report, run_dir), tracking.store_uri())
    except Exception as exc:
        print(f"compiler: warning: tracking failed: {describe(exc)}", file=sys.stderr)


def _print_summary(report: dict, run_dir: Path) -> None:
    m = report["metrics"]
    if report["error"]:
        print(f"compiler: {report['error']}", file=sys.stderr)
    lines = [f"compiler: {report['recipe']}: {report['status'].upper()}"]
    if m["accuracy"]:
        lines.append("  accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in m["accuracy"].items()))
    if m["max_abs_error"]:
        lines.append(f"  max abs error {report['reference']}->engine: {m['max_abs_error']['engine']:.3g}")
    if m["latency_ms"]:
        lines.append("  latency p50: " + ", ".join(f"{who} b{b[1:]} {v['p50']:.3f} ms" for who, per in
                                                  m["latency_ms"].items() for b, v in per.items()))
    for gate in report["gates"]:
        if not gate["passed"]:
            lines.append(f"  FAILED gate {gate['name']}: {gate['detail']}")
    lines.append(f"  report: {run_dir / 'report.md'}")
    print("\n".join(lines))
    _to_log_file("\n".join(lines))


def _to_log_file(text: str) -> None:
    """compiler.log ends with the verdict too (the console already has it: only the run's file handler gets it)."""
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _hydra_task(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    _SESSION.jobs += 1
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    error = ""
    try:
        checked_cfg = _SESSION.checked_cfg if _SESSION.checked is not None else cfg
        code = run_job(checked_cfg, hydra_cfg.runtime.choices.get("recipe", "?"), run_dir, _SESSION.checked)
    except RecipeError as exc:  # found late (e.g. the factory's allow-list re-check)
        error = exc.render()
        print(f"compiler: {error}", file=sys.stderr)
        code = EXIT_INVALID_RECIPE
    except Exception as exc:
        error = describe(exc)
        if debug_enabled():
            log.exception("compiler: unexpected error")
        else:
            print(f"compiler: {error}", file=sys.stderr)
        code = EXIT_STAGE_FAILED
    multirun = hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN"
    if code == EXIT_INVALID_RECIPE and not multirun:
        _remove_run_dir(run_dir)
    if multirun:  # the sweep summary reads this, whatever happened to the job
        (run_dir / JOB_FILE).write_text(json.dumps({"code": code, "error": error,
                                                    "overrides": list(hydra_cfg.overrides.task)}))
        if code != EXIT_OK:
            code = EXIT_STAGE_FAILED  # a sweep fails as a whole if any job failed
    _SESSION.exit_code = max(_SESSION.exit_code, code)
    return code


def _remove_run_dir(run_dir: Path) -> None:
    """A refused run (exit 2) leaves nothing: its run dir (Hydra's .hydra/ and log) goes, and so does every
    parent folder that this run created and that is empty now."""
    import shutil

    for handler in logging.getLogger().handlers[:]:  # Hydra's file handler holds compiler.log open
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logging.getLogger().removeHandler(handler)
    run_dir = run_dir.absolute()
    if not _SESSION.existed or run_dir in _SESSION.existed:  # a folder that was there (or not known): only
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)   # what Hydra wrote into it goes
        (run_dir / "compiler.log").unlink(missing_ok=True)
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.parents:
        if parent in _SESSION.existed or not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()


def _invalid_command_line(exc: BaseException, overrides: list[str]) -> int:
    problems = composition_problems(exc, overrides, more=recipe_problems)
    print(f"compiler: {RecipeError(problems).render()}", file=sys.stderr)
    return EXIT_INVALID_RECIPE


def _sweep_problems(job: list[str]) -> str:
    """The lint verdict on one job of a sweep, as text ('' when it may run)."""
    from hydra.errors import HydraException


    try:
        cfg = compose(job)
    except HydraException as exc:
        return RecipeError(composition_problems(exc, job)).render()
    problems = lint_problems(cfg)
    return RecipeError(problems).render() if problems else ""


def _prelint_sweep(argv: list[str]) -> int:
    """Lint every combination of a sweep before any job starts; report all failing ones."""
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        failures = prelint(overrides, _sweep_problems)
    except Exception as exc:  # an override Hydra cannot parse, a sweep it cannot expand
        return _invalid_command_line(exc, overrides)
    for job, message in failures:
        print(f"compiler: sweep job [{' '.join(job)}]: {message}", file=sys.stderr)
    if failures:
        print(f"compiler: {len(failures)} sweep job(s) are invalid; no job was started", file=sys.stderr)
        return EXIT_INVALID_RECIPE
    return EXIT_OK


def _unwritable_output(argv: list[str]) -> str:
    """A message when the run (or sweep) directory could not be created, checked before Hydra tries."""
    multirun = "-m" in argv or "--multirun" in argv
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = next((a.split("=", 1)[1] for a in argv if a.startswith(f"{key}=")), None)
    target = Path(given if given and "${" not in given else ".").expanduser().absolute()
    ok, probe = writable(target)
    if ok:
        return ""
    where = f"{key}={given}" if given else f"the current directory ({target})"
    return (f"{key}: cannot create the output directory under {probe} ({where}); "
            f"fix: run from a writable directory or set {key}=/a/writable/path")


def _lint_only(overrides: list[str]) -> int:
    """`mode=lint` without a sweep: one composition through Hydra's compose API, no run dir, no logging."""
    from hydra.errors import HydraException


    try:
        cfg = compose(overrides)
    except HydraException as exc:
        return _invalid_command_line(exc, overrides)
    recipe = next((o.split("=", 1)[1] for o in overrides if o.startswith("recipe=")), "?")
    return run_job(cfg, recipe, Path("."))


_HYDRA_FLAGS_NEEDING_APP = ("-m", "--multirun", "--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--shell-completion")


def _discovery(argv: list[str]) -> str | None:
    """The compiler's own help, version and list pages (no recipe needed), or None."""
    if any(a in ("--help", "-h") for a in argv):
        return discovery.help_text()
    if "--version" in argv or "-V" in argv:
        return discovery.version_text()
    if "list" in argv or "mode=list" in argv:
        return discovery.list_text()
    return None


def _print_page(page: str) -> None:
    """Print a page; a reader that closes the pipe early (`--help | head -1`) is no error."""
    import os

    try:
        print(page)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush would raise again


MAX_NAME = 120  # a key or a config name Hydra looks up as a file: file systems refuse names over 255 bytes


def _overlong_names(argv: list[str]) -> list:
    """Keys, and the names of config groups (recipe=, hydra/launcher=), too long to be a file name or a key."""
    problems = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        bare = key.lstrip("+~")
        if any(len(part) > MAX_NAME for part in bare.replace("/", ".").split(".")):
            problems.append(Problem(bare, "a key name is too long", bare, f"names of at most {MAX_NAME} characters",
                                    fix="check the command line for a pasted value in place of a key"))
        elif (bare == "recipe" or "/" in bare) and len(value) > MAX_NAME:
            problems.append(Problem(bare, "a config name is too long", value, f"names of at most {MAX_NAME} "
                                    "characters (`python -m compiler list` shows the recipes)",
                                    fix=f"{bare}=<a shorter name>"))
    return problems


def main() -> None:
    recipe_source.register()
    schema.register()
    if "--verbose" in sys.argv:  # ours, not Hydra's: full tracebacks, like COMPILER_DEBUG=1
        sys.argv.remove("--verbose")
        import os

        os.environ[DEBUG_VAR] = "1"
    argv = sys.argv[1:]
    if argv[:1] == ["serve"]:  # python -m compiler serve RUN_DIR: the run's Triton repository, served locally
        from compiler.serve.command import main as serve

        sys.exit(serve(argv[1:]))
    page = _discovery(argv)
    if page is not None:
        _print_page(page)
        sys.exit(EXIT_OK)
    too_long = _overlong_names(argv)
    if too_long:
        print(f"compiler: {RecipeError(too_long).render()}", file=sys.stderr)
        sys.exit(EXIT_INVALID_RECIPE)

    argv = sys.argv[1:] = with_dict_keys(argv)
    if "mode=lint" in argv and not any(a.split("=")[0] in _HYDRA_FLAGS_NEEDING_APP for a in argv):
        sys.exit(_lint_only(argv))
    problem = _unwritable_output(argv) if not any(a.startswith("--") and a != "--multirun" for a in argv) else ""
    if problem:
        print(f"compiler: {problem}", file=sys.stderr)
        sys.exit(EXIT_INVALID_RECIPE)
    multirun = "-m" in argv or "--multirun" in argv
    if multirun and _prelint_sweep(argv) != EXIT_OK:
        sys.exit(EXIT_INVALID_RECIPE)
    if not multirun and not any(a.startswith("-") for a in argv):
        _diagnose_composition([a for a in argv if not a.lstrip("+~").startswith(("hydra.", "hydra/"))])
    entry = hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_hydra_task)
    try:
        entry()
    except SystemExit as exc:
        if exc.code not in (0, None):
            if _SESSION.jobs == 0 and not multirun:  # Hydra failed before the job: the command line is invalid
                sys.exit(EXIT_INVALID_RECIPE)
            # a sweep was linted whole before it started: a failure now (a launcher's worker killed, say) is a
            # failed run, even though its jobs ran in other processes
            sys.exit(EXIT_STAGE_FAILED if multirun else exc.code)
    _exit(_SESSION.exit_code, multirun)


def _diagnose_composition(overrides: list[str]) -> None:
    """A single run composed once, by Hydra's own `run`, its failure diagnosed here (exit 2, every problem with
    its key path and fix) instead of worded by Hydra. Hydra would first compose the whole command line a second
    time only to read `hydra.mode` (None here, then forced to RUN: a run without -m is a single run, whatever a
    recipe says), and a composition costs 0.2 s. Only Hydra's composition is watched: the job's own compose calls
    raise as usual."""
    from hydra._internal.hydra import Hydra
    from hydra.errors import HydraException

    original = Hydra.compose_config

    def compose_config(self: Any, *args: Any, **kwargs: Any) -> Any:
        Hydra.compose_config = original
        try:
            cfg = original(self, *args, **kwargs)
        except HydraException as exc:
            sys.exit(_invalid_command_line(exc, overrides))
        _check_before_run_dir(cfg)
        return cfg

    Hydra.get_mode = lambda self, config_name, overrides: None
    Hydra.compose_config = compose_config


def _check_before_run_dir(cfg: DictConfig) -> None:
    """Check the composed recipe before Hydra creates the run dir, so a refused run writes nothing; remember
    which folders on the run dir's path already existed (a late refusal removes only what this run made)."""
    import copy

    from omegaconf import open_dict

    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)  # as Hydra's run_job does next: hydra.run.dir reads ${hydra:...}
    try:
        path = Path(str(OmegaConf.select(cfg, "hydra.run.dir"))).expanduser().absolute()
        _SESSION.existed = frozenset(p for p in (path, *path.parents) if p.exists())
    except Exception:  # an unresolvable run dir: Hydra words that itself, next
        pass
    task = copy.deepcopy(cfg)
    with open_dict(task):
        del task["hydra"]
    recipe = OmegaConf.select(cfg, "hydra.runtime.choices.recipe", default=None) or "?"
    _SESSION.checked, _SESSION.checked_cfg = check_recipe(task, recipe), task
    if _SESSION.checked.code == EXIT_INVALID_RECIPE:
        sys.exit(EXIT_INVALID_RECIPE)


def _exit(code: int, multirun: bool = False) -> None:
    """Exit. A single run skips the interpreter's teardown (a second once torch or TensorFlow is loaded, for
    nothing): what Python's own exit does first still runs, in its order (non-daemon threads joined and the
    hooks registered with threading, such as a worker pool's shutdown; then every atexit handler: temporary
    folders, MLflow, logging), then the streams are flushed and the process ends. A sweep exits as usual."""
    if multirun:
        sys.exit(code)
    import atexit
    import os
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
