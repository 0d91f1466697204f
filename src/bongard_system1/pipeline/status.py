"""What ``--status`` and ``--reset`` do: describe each stage's record and whether it would run
again, or delete a stage's records and outputs and everything downstream.

Cheap on purpose: the standard library only, no torch, no hashing of big files, so that
``--status`` answers well under a second.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import System1Error
from ..schedule import run_progress
from ..wording import counted, number
from . import profiles
from .lock import PipelineLock
from .records import RECORD_FILES, STAGES, CheckpointManager, rel
from .stages import UNRECORDED, eval_facts, fmt, real_data_sha, resolve_real_data, rmtree


def _latest_run_settings(mgr: CheckpointManager) -> dict | None:
    best = None
    for stage in STAGES:
        rec, _ = mgr.read(stage)
        when = str(rec.get("updated") or rec.get("started") or "") if rec else ""    # the record written last
        if rec and rec.get("run_settings") and (best is None or when >= best[0]):
            best = (when, rec["run_settings"])
    return best[1] if best else None


def pipeline_status(workdir, settings: dict | None = None, real_data: str | None = None,
                    explicit: bool = False, default_profile: str | None = None,
                    overrides: dict | None = None) -> tuple[list[str], bool]:
    """Lines describing each stage (✅/❌, timestamp, key facts, why it would run again) and whether
    every stage is up to date. Cheap checks only (sizes, times, counts; no hashing of big files).

    With ``explicit`` False the stages are compared with the last run's own settings, or with
    ``default_profile`` (the command's own default: quick, or professional for validate_phase1);
    ``overrides`` (the flags given with ``explicit``) are named in the header."""
    default_profile = default_profile or profiles.DEFAULT_PROFILE
    workdir = Path(workdir).resolve()
    mgr = CheckpointManager(workdir)
    lock = PipelineLock(workdir)
    busy = lock.is_held_elsewhere()
    lines = [f"System 1 pipeline status: {workdir}"]
    if busy:
        lines.append(f"a run is in progress ({lock.holder()})")
    if not explicit:
        last = _latest_run_settings(mgr)
        if last:
            try:
                settings = profiles.resolve_settings(last["profile"], last.get("overrides") or {})
            except System1Error as exc:       # a hand-edited record: compare with the default instead
                lines.append(f"   warning: the last run's recorded settings are unusable ({exc})")
                last = None
        if last:
            real_data = last.get("real_data")
            flags = " ".join(f"--{k} {v}" for k, v in (last.get("overrides") or {}).items() if v is not None)
            if real_data != resolve_real_data(None):      # the default real set, where it is
                flags += f" --real-data {real_data or 'none'}"
                flags = flags.strip()
            lines.append(f"compared with the last run's settings: --profile {last['profile']}" + (f" {flags}" if flags else ""))
            if last["profile"] != default_profile or flags:
                lines.append(f"(a run without these flags is a {default_profile} run: give them again "
                             "to go on with this one)")
        else:
            settings = profiles.resolve_settings(default_profile)
            lines.append(("" if lines[-1].startswith("   warning") else "no run recorded yet; ")
                         + f"compared with the default profile ({default_profile})")
    else:
        flags = "".join(f" --{k} {v}" for k, v in (overrides or {}).items() if v is not None)
        if real_data != resolve_real_data(None):
            flags += f" --real-data {real_data or 'none'}"
        lines.append(f"compared with: --profile {settings['profile']}{flags}")
    configs = {"data": profiles.data_config(settings), "training": profiles.train_config(settings)}
    try:
        configs["evaluation"] = profiles.eval_config(settings, real_data, real_data_sha(real_data))
    except OSError:
        configs["evaluation"] = profiles.eval_config(settings, real_data, "unreadable")
    upstream_would_run = False
    upstream_hash = None
    all_ok = True
    for stage in STAGES:
        d = mgr.decide(stage, configs[stage], upstream_hash, upstream_ran=upstream_would_run, deep=False,
                       defaults=profiles.CONFIG_DEFAULTS.get(stage))
        rec = d.record
        if d.warning:
            lines.append(f"   warning: {d.warning}")
        reason = d.reason
        if d.run and upstream_would_run and reason not in ("no record",) and not reason.startswith("config changed"):
            reason = "upstream changed (an earlier stage will run)"
        if busy and reason == "previous run interrupted":
            reason = "running now"
        mark = "❌" if d.run else "✅"
        when = (rec or {}).get("finished") or (rec or {}).get("started") or "-"
        facts = _stage_facts(stage, rec, mgr) if rec else "no record"
        lines.append(f"{mark} {stage:<11} {when:<19}  {facts}")
        why = reason[len("complete and valid "):] if reason.startswith("complete and valid (") else ""
        note = mgr.missing_images(rec) if stage == "data" and not d.run and rec else None
        why = f"{why} ({note})".strip() if note else why
        lines.append(f"   {'would run again: ' + reason if d.run else 'up to date' + (' ' + why if why else '')}")
        all_ok &= not d.run
        upstream_would_run = upstream_would_run or d.run
        if stage == "data":
            upstream_hash = (rec or {}).get("dataset_hash")
        elif stage == "training":
            upstream_hash = ((rec or {}).get("outputs", {}).get("best_checkpoint") or {}).get("sha256")
    return lines, all_ok


def _stage_facts(stage: str, rec: dict, mgr: CheckpointManager) -> str:
    status = rec.get("status")
    prefix = "" if status == "complete" else f"[{status}] "
    try:
        if stage == "data":
            v, c = rec.get("validation") or {}, rec.get("config", {})
            if not v:
                return prefix + f"{counted(c.get('dataset_size'), 'image')} at {c.get('image_size')} px (not finished)"
            return prefix + (f"{counted(v.get('num_images'), 'image')} at {c.get('image_size')} px "
                             f"({number(v.get('num_train'))} train, {number(v.get('num_val'))} val) "
                             f"in {rec['outputs']['dir']}, config {rec.get('config_hash', '')[:8]}")
        if stage == "training":
            c, m = rec.get("config", {}), rec.get("metrics", {})
            if not m:
                # a forced or changed run trains in its staging folder, next to the old run
                run_dir = rec.get("staging_dir") or (rec.get("outputs") or {}).get("run_dir")
                progress = run_progress(mgr.abs(run_dir)) if run_dir else None
                return prefix + f"{c.get('backbone')}, " + (progress or
                                                          f"{counted(c.get('epochs'), 'epoch')} (not finished)")
            best = rec.get("outputs", {}).get("best_checkpoint", {}).get("path", "?")
            history = m.get("history") or []
            early = [h["image_size"] for h in history if h.get("image_size") not in (None, c.get("image_size"))]
            which = "epoch 1" if len(early) == 1 else f"epochs 1-{len(early)}"
            size = f"{c.get('image_size')} px" + (f" ({which} at {early[0]} px)" if early else "")
            return prefix + (f"{c.get('backbone')}, {len(history)}/{c.get('epochs')} epochs, "
                             f"batch {c.get('batch_size')}, {size}, best AP "
                             f"{fmt(m.get('best_metric'))} ({best})")
        if stage == "evaluation":
            if not rec.get("metrics"):
                return prefix + "(not finished)"
            return prefix + eval_facts(rec)
    except (KeyError, TypeError, AttributeError):
        return prefix + "(record incomplete)"
    return prefix


def _pipeline_made(workdir: Path, folder: str) -> list[Path]:
    """What the pipeline itself writes in ``folder`` of the work directory (by name), so that
    ``reset all`` deletes no file of the user's that happens to sit in ``results/`` or ``logs/``."""
    names = profiles.profile_names()
    made = {
        "processed_data": [f"{p}_synthetic{u}{s}" for p in names for u in ("", UNRECORDED) for s in ("", ".new", ".old")]
        + ["real_subset", f"real_subset{UNRECORDED}"],
        "runs": [f"{p}{u}{s}" for p in names for u in ("", UNRECORDED) for s in ("", ".new", ".old")],
        "results": ["system1_training_results.json", f"system1_training_results{UNRECORDED}.json",
                    "professional_training_results_*.json"],
        "logs": [f"{p}_training{u}.log" for p in names for u in ("", UNRECORDED)] + ["validate_phase1.log"],
        "checkpoints": list(RECORD_FILES.values()),
    }[folder]
    base = workdir / folder
    if not base.is_dir() or base.is_symlink():
        return []
    found: set[Path] = set()
    for pattern in made:
        found.update(base.glob(pattern))
        found.update(base.glob(f".{pattern}.*.tmp"))      # an atomic write cut short
    return sorted(found)


def check_workdir(workdir: Path) -> None:
    """An existing work directory to read or reset, or one error line."""
    if not workdir.is_dir():
        raise System1Error(f"work directory {workdir} is a file" if workdir.exists() else
                           f"work directory not found: {workdir}")


def reset_stage(workdir, stage: str) -> list[str]:
    """Delete the records and outputs of ``stage`` and everything downstream (``all``: everything
    the pipeline wrote; files of the user's in its folders stay). Returns the deleted paths,
    relative to the work directory."""
    workdir = Path(workdir).resolve()
    if stage != "all" and stage not in STAGES:
        raise System1Error(f"unknown stage {stage!r}; choose data, training, evaluation or all")
    check_workdir(workdir)
    mgr = CheckpointManager(workdir)
    deleted: list[str] = []

    def checked(path: Path) -> Path:
        # a record names its outputs; a hand-edited one ("..", "runs/../..", an absolute path, a
        # link out) must not reach the work directory itself or anything outside it
        target = path.parent.resolve() / path.name if path.is_symlink() else path.resolve()
        if target == workdir:
            raise System1Error(f"refusing to delete the work directory {workdir} itself (a record names it)")
        if workdir not in target.parents:
            raise System1Error(f"refusing to delete {path}: it is outside the work directory {workdir} "
                               "(a record names it; delete that record by hand)")
        return target

    first = 0 if stage == "all" else STAGES.index(stage)
    had_records = mgr.dir.is_dir() and any(not p.name.startswith(".pipeline.lock") for p in mgr.dir.iterdir())
    with PipelineLock(workdir) as lock:
        doomed: list[Path] = []          # every path checked before the first is deleted
        for name in STAGES[first:]:
            rec, _ = mgr.read(name)
            if name == "data":
                if rec and rec.get("outputs", {}).get("dir"):
                    doomed.append(checked(mgr.abs(rec["outputs"]["dir"])))
                doomed += [child for child in _pipeline_made(workdir, "processed_data")
                           if not child.name.startswith("real_subset")]
            elif name == "training":
                if rec and rec.get("outputs", {}).get("run_dir"):
                    doomed.append(checked(mgr.abs(rec["outputs"]["run_dir"])))
                doomed += _pipeline_made(workdir, "runs")
            elif name == "evaluation":
                doomed += [workdir / "processed_data" / f"real_subset{u}" for u in ("", UNRECORDED)]
            doomed.append(mgr.path(name))
        if stage == "all":
            for folder in ("results", "logs", "checkpoints"):
                doomed += _pipeline_made(workdir, folder)
        for path in doomed:
            if path.exists() or path.is_symlink():
                is_dir = path.is_dir() and not path.is_symlink()
                rmtree(path)
                deleted.append(rel(path, workdir) + ("/" if is_dir else ""))
        for folder in ("runs", "processed_data") + (("results", "logs") if stage == "all" else ()):
            path = workdir / folder
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()
                deleted.append(f"{folder}/")
        if not any(mgr.path(name).exists() for name in STAGES):
            lock.unlink_files()     # while held, so that no other run can hold the file being unlinked
            if mgr.dir.is_dir() and not any(mgr.dir.iterdir()):
                mgr.dir.rmdir()
                if had_records:
                    deleted.append("checkpoints/")
    return deleted
