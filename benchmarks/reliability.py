"""A 12-job parallel sweep whose workers are SIGKILLed three times: the cache must stay sound.

    python benchmarks/reliability.py [--kills 3] [--jobs 2]

Runs `-m hydra/launcher=joblib hydra.launcher.n_jobs=2` over 12 cnn_torch jobs (tiny settings) while a
killer SIGKILLs a random worker at a random moment; a killed worker stops joblib's whole sweep, so this is
done three times (the cache carries over), and then the same sweep runs once more, undisturbed.
Prints, per pass: jobs completed, jobs that failed cleanly (an exit code and a message in job.json),
jobs cut off by a kill, and for the shared cache: entries verified against their recorded hashes and
corrupted entries (must be 0). The second pass shows the sweep recovering from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

JOBS = ["seed=0,1,2,3", "engine.onnxruntime.optimization_level=basic,extended,all"]
TINY = ["train.epochs=1", "data.limit=240", "verify.latency.iterations=5", "verify.latency.warmup=1",
        "verify.max_accuracy_drop=100"]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def killer(proc: subprocess.Popen, kills: int, log: list, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(kills):
        time.sleep(rng.uniform(8, 45))
        workers = [p for p in descendants(proc.pid) if b"python" in Path(f"/proc/{p}/cmdline").read_bytes()[:200]]
        if proc.poll() is not None or not workers:
            return
        victim = rng.choice(workers)
        try:
            os.kill(victim, signal.SIGKILL)
            log.append(victim)
        except ProcessLookupError:
            pass


def audit_cache(cache: Path) -> tuple[int, int]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from compiler.cache import RESULT_FILE, sha256_artifact

    verified = corrupted = 0
    for entry in cache.glob("*/*"):
        if entry.name.startswith("."):
            continue  # an interrupted build's workspace or an evicted entry: never looked up
        result = json.loads((entry / RESULT_FILE).read_text())
        if sha256_artifact(entry / result["artifact"]) == result["sha256"]:
            verified += 1
        else:
            corrupted += 1
    return verified, corrupted


def sweep(work: Path, name: str, cache: Path, jobs: int, kills: int, seed: int = 0) -> dict:
    sweep_dir = work / name
    env = {**os.environ, "COMPILER_CACHE_DIR": str(cache), "COMPILER_LOCK_DIR": str(work)}
    cmd = [sys.executable, "-m", "compiler", "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}",
           "recipe=cnn_torch", *TINY, *JOBS, f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    killed: list[int] = []
    thread = threading.Thread(target=killer, args=(proc, kills, killed, seed))
    thread.start()
    proc.communicate()
    thread.join()
    jobs_dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and d.name[0].isdigit()] if sweep_dir.is_dir() else []
    states = []
    for d in jobs_dirs:
        job = json.loads((d / "job.json").read_text()) if (d / "job.json").is_file() else None
        states.append("completed" if job and job["code"] == 0 else "failed cleanly" if job and job["error"] else
                      "cut off")
    verified, corrupted = audit_cache(cache)
    return {"pass": name, "exit": proc.returncode, "kills": len(killed), "completed": states.count("completed"),
            "failed cleanly": states.count("failed cleanly"), "cut off": states.count("cut off") + 12 - len(jobs_dirs),
            "cache entries verified": verified, "corrupted": corrupted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reliability-"))
    cache = work / "cache"
    # a SIGKILLed worker stops joblib's whole sweep, so each kill gets a pass of its own; the cache carries over
    rows = [sweep(work, f"killed {i + 1}", cache, args.jobs, 1, seed=i) for i in range(args.kills)]
    rows.append(sweep(work, "rerun", cache, args.jobs, 0))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
