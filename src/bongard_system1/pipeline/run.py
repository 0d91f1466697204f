"""The whole pipeline run: the three stages in order, under the work directory's lock, and the
results file (``results/system1_training_results.json``) written at its end.

Module level imports the standard library only; the stages import torch when they run.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

from ..io_utils import write_json_atomic
from .lock import PipelineLock
from .records import STAGES, library_versions, now_text, rel
from .stages import (DEFAULT_REAL_DATA, Context, Reporter, RunOptions, check_real_data, check_writable, stage_data,
                     stage_evaluation, stage_training, unrecorded)


def run_pipeline(opts: RunOptions) -> dict:
    """Run data, training and evaluation, skipping what is done; write and return the results."""
    workdir = Path(opts.workdir).resolve()
    opts.workdir = workdir
    profile = opts.settings["profile"]
    check_writable(workdir, results_path(workdir, profile, opts.checkpoint))
    check_real_data(opts.real_data)
    if str(opts.settings.get("device", "auto")).startswith("cuda"):   # no GPU: said before the data stage
        from ..train import resolve_device
        resolve_device(opts.settings["device"])
    with PipelineLock(workdir):
        log = Reporter(workdir / "logs" / (opts.log_name or f"{profile}_training{unrecorded(opts.checkpoint)}.log"))
        log(f"System 1 pipeline: profile {profile}, work directory {workdir}"
            + ("" if opts.checkpoint else " (no checkpoint records)"))
        if opts.real_data is None:
            where = ("--real-data none" if Path(DEFAULT_REAL_DATA).is_file() else
                     f"none at {DEFAULT_REAL_DATA} from {Path.cwd()}; give --real-data FOLDER_OR_FILE")
            log(f"note: no real set ({where}); the real target will count as not met")
        ctx = Context(opts, log)
        t0 = time.time()
        data_rec, data_ran = stage_data(ctx)
        train_rec, train_ran = stage_training(ctx, data_rec, data_ran)
        eval_rec, _ = stage_evaluation(ctx, data_rec, train_rec, train_ran)
        results = build_results(ctx, data_rec, train_rec, eval_rec, time.time() - t0)
        path = results_path(workdir, profile, opts.checkpoint)
        write_json_atomic(path, results)
        ran = [s for s in STAGES if ctx.actions.get(s, {}).get("ran")]
        log(f"done in {time.time() - t0:.1f} s: " + (f"ran {', '.join(ran)}" if ran else "every stage was up to date")
            + f"; results in {rel(path, workdir)}")
        results["results_file"] = str(path)
        return results


def results_path(workdir: Path, profile: str, checkpoint: bool = True) -> Path:
    """The results file; a --no-checkpoint run's goes beside the recorded run's, not over it."""
    if profile == "professional":
        return workdir / "results" / f"professional_training_results_{time.strftime('%Y%m%d_%H%M%S')}{unrecorded(checkpoint)}.json"
    return workdir / "results" / f"system1_training_results{unrecorded(checkpoint)}.json"


def peak_memory() -> dict:
    """Peak resident memory of this process and its children (MiB), and of the GPU when torch used one."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    out = {"process_rss_mib": round(own, 1), "children_rss_mib": round(kids, 1), "gpu_mib": None}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                out["gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        except Exception:  # noqa: BLE001 - memory facts are best effort
            pass
    return out


def build_results(ctx: Context, data_rec: dict, train_rec: dict, eval_rec: dict, seconds: float) -> dict:
    tm = train_rec.get("metrics", {})
    em = eval_rec.get("metrics", {})
    return {
        "profile": ctx.profile,
        "workdir": str(ctx.workdir),
        "finished": now_text(),
        "settings": ctx.settings,
        "real_data": ctx.opts.real_data,
        "stages": {stage: {**ctx.actions.get(stage, {}), "seconds_this_run": ctx.stage_seconds.get(stage),
                           "seconds_when_built": rec.get("seconds"), "finished": rec.get("finished"),
                           "config_hash": rec.get("config_hash")}
                   for stage, rec in zip(STAGES, (data_rec, train_rec, eval_rec))},
        "dataset": data_rec.get("validation"),
        "training": {"history": tm.get("history"), "best_metric": tm.get("best_metric"),
                     "val_metrics": tm.get("val_metrics"), "stamp_vote": tm.get("stamp_vote"),
                     "rescorer": tm.get("rescorer"), "rescorer_shapes": tm.get("rescorer_shapes"),
                     "best_checkpoint": train_rec.get("outputs", {}).get("best_checkpoint", {}).get("path")},
        "evaluation": em.get("sets"),
        "parses": em.get("parses"),
        "summary": em.get("summary"),
        "targets": em.get("targets"),
        "wall_seconds": round(seconds, 2),
        "peak_memory": peak_memory(),
        "device": tm.get("device"),
        "versions": library_versions(),
    }
