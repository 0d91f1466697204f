"""Training: OneCycleLR, SWA with a detector-safe BatchNorm refresh, AMP on CUDA, and kill-safe resume.

A run folder holds ``config.json``, ``last.pt`` (everything needed to resume, written atomically
after every epoch, the previous copy kept as ``last.prev.pt`` until the new one is whole),
``best.pt`` (the best model by validation AP, weights only, and the stamp vote), ``metrics.csv`` (one row per epoch,
rewritten from the checkpoint's history so a resumed run never duplicates rows) and
``training_curves.png``. Running the same command again resumes from the last finished epoch and
ends where an uninterrupted run ends: samples and augmentations are seeded per epoch and index.
Progressive resizing: the first half of the one-cycle epochs train at ``early_scale`` times the
image size (rounded to a multiple of 32; 320 px for 416), the rest and the SWA epochs at full size.
After the detector, the stamp vote (:mod:`stamps`) and then the rescorer of strokes and shapes (:mod:`rescore`) are
trained and stored in ``best.pt``; they have their own settings, outside the detector's config hash,
so they can be added to a finished run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from .configs import config_diff
from .errors import System1Error
from .io_utils import fsync_dir, naming, write_bytes_atomic, write_json_atomic
from .model import ModelConfig, build_model, class_names, model_state
from .precision import BF16_TRAIN_MAX_BROKEN_SIZE, autocast, autocast_dtype, training_autocast_dtype
from .predict import CHECKPOINT_FORMAT, System1
from .schedule import epoch_plan, format_duration, one_cycle_warmup, remaining_epoch_seconds
from .settings import MIN_STAMP_IMAGES, RESCORER_VERSION, STAMP_VOTE_VERSION
from .wording import counted


@dataclass
class TrainConfig:
    data_dir: str
    backbone: str = "resnet18"
    categories: str = "all"
    epochs: int = 8
    batch_size: int = 8
    image_size: int = 416
    seed: int = 0
    lr: float | None = None
    weight_decay: float = 0.05
    swa_fraction: float = 0.25
    grad_clip: float = 10.0
    val_images: int = 200
    amp: bool = True
    early_scale: float = 0.75
    # not part of the result: excluded from the hash
    device: str = "auto"
    workers: int | None = None
    time_budget: float | None = None
    dataset_signature: dict = field(default_factory=dict)

    NON_RESULT_KEYS = ("device", "workers", "data_dir")

    def peak_lr(self, train_images: int | None = None):
        """``--lr``, else 2e-3 scaled by sqrt(batch / 8), the batch being what the loader really gives:
        a training set smaller than ``--batch-size`` is one batch of all its images."""
        if self.lr is not None:
            return self.lr
        batch = self.batch_size if train_images is None else min(self.batch_size, max(1, int(train_images)))
        return 2e-3 * math.sqrt(batch / 8)

    def result_dict(self):
        d = asdict(self)
        for k in self.NON_RESULT_KEYS:
            d.pop(k, None)
        if self.early_scale == 1.0:
            d.pop("early_scale")        # runs made before progressive resizing keep their hash
        return d

    def hash(self):
        return hashlib.sha256(json.dumps(self.result_dict(), sort_keys=True).encode()).hexdigest()[:16]


TRAIN_DEFAULTS = {"early_scale": 1.0}     # a value result_dict leaves out, for the messages that compare configs


def resolve_device(device="auto"):
    """``auto`` (CUDA when there is one), ``cpu`` or ``cuda`` (or ``cuda:N``; a ``torch.device`` of
    these too) -> the device to use."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or
                                           (device.startswith("cuda:") and device[5:].isdigit())):
        raise System1Error(f"device {device!r}: expected auto, cpu or cuda")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise System1Error(f"--device {device} asked for, but no CUDA device is available")
    return device


# ---------------------------------------------------------------- checkpoints
def _atomic_torch_save(obj, path, keep_previous=None):
    """Write ``obj`` to ``path`` whole or not at all: a temporary file, fsynced, then renamed over it
    (the old file first renamed to ``keep_previous`` when given), and the folder fsynced. A failed
    write (a full disk) is an OSError naming ``path`` and Ctrl-C a KeyboardInterrupt: torch's zip
    writer turns either into a RuntimeError ("unexpected pos ...") on its way out, unwrapped here."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = (exc.__cause__ or exc.__context__) if isinstance(exc, RuntimeError) else None
        if isinstance(cause, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        if isinstance(exc, OSError) or isinstance(cause, OSError):
            raise naming(cause if isinstance(cause, OSError) else exc, path, force=True) from None
        raise
    if keep_previous and os.path.exists(path):
        os.replace(path, keep_previous)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _try_load(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None


def load_checkpoint_model(path):
    """Load a checkpoint (best.pt or last.pt) into a freshly built model; weights_only loading."""
    ckpt = _try_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise System1Error(f"{path} is not a readable bongard-system1 checkpoint (truncated or corrupt?)")
    cfg = ModelConfig(**ckpt["model_config"])
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise System1Error(f"{path} does not fit the model it describes: {str(exc).splitlines()[0]}")
    return model, ckpt


def _whole_state(path):
    state = _try_load(path) if os.path.exists(path) else None
    return state if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT else None


def _read_resume_state(run_dir):
    """The newest whole last.pt (falling back to last.prev.pt), or None; says when it fell back. A
    damaged last.pt is set aside as last.pt.corrupt, so that the next checkpoint does not push it
    into last.prev.pt in place of the good one."""
    last, prev = os.path.join(run_dir, "last.pt"), os.path.join(run_dir, "last.prev.pt")
    state = _whole_state(last)
    if state is not None or not os.path.exists(last):
        return state or _whole_state(prev)
    os.replace(last, last + ".corrupt")
    state = _whole_state(prev)
    if state is not None:
        print(f"warning: {last} is truncated or corrupt (moved to last.pt.corrupt); resuming from last.prev.pt "
              f"(epoch {state.get('epoch')})", file=sys.stderr)
    else:
        print(f"warning: {last} is truncated or corrupt (moved to last.pt.corrupt), and there is no whole "
              "last.prev.pt to resume from", file=sys.stderr)
    return state


_OLD_RUN_FILES = ("last.pt", "last.prev.pt", "last.pt.corrupt", "best.pt")


def _check_unresumable(out_dir, cfg) -> None:
    """With nothing to resume from in ``out_dir``: refuse a run of another config there, and a
    best.pt past its first epoch (its last.pt deleted or damaged): training over it would replace
    a model that cannot be resumed."""
    prior = None
    try:
        with open(os.path.join(out_dir, "config.json")) as f:
            prior = json.load(f)
    except (OSError, ValueError):
        pass
    if isinstance(prior, dict) and prior.get("config_hash") not in (None, cfg.hash()):
        old = {k: v for k, v in prior.items() if k not in ("config_hash", "planned_epochs", *TrainConfig.NON_RESULT_KEYS)}
        raise System1Error(f"{out_dir} holds a run with another config ({config_diff(old, cfg.result_dict(), TRAIN_DEFAULTS)}) "
                           "and no last.pt to resume; pass --restart to start over or use another --out")
    best = _whole_state(os.path.join(out_dir, "best.pt"))
    if best is not None and best.get("config_hash") not in (None, cfg.hash()):
        raise System1Error(f"{out_dir}/best.pt was trained with another config and there is no last.pt to resume; "
                           "pass --restart to start over or use another --out")
    if best is not None and int(best.get("epoch") or 0) > 1:
        raise System1Error(f"{out_dir} holds a best.pt (epoch {best['epoch']}) but no whole last.pt to resume from "
                           "(deleted, or damaged with no whole last.prev.pt); pass --restart to train again (the old "
                           "files stay until the new run's first epoch is validated) or use another --out")


# ---------------------------------------------------------------- BatchNorm refresh for SWA
@torch.no_grad()
def refresh_batchnorm(model, loader, device, max_batches=50, amp_dtype=None):
    """Recompute BatchNorm running statistics of a detector (update_bn needs a plain forward(x)), under
    the autocast dtype training used."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = {}
    for bn in bns:
        bn.reset_running_stats()
        momenta[bn] = bn.momentum
        bn.momentum = None          # cumulative average over all batches
    was_training = model.training
    model.train()
    for i, (images, targets) in enumerate(loader):
        if i >= max_batches:
            break
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with autocast(device, amp_dtype):
            model(images, targets)  # detectors in train mode want targets; the losses are ignored
    for bn in bns:
        bn.momentum = momenta[bn]
    model.train(was_training)


# ---------------------------------------------------------------- validation
def validation_metrics(model, names, model_cfg, data_dir, device, max_images=200, progress=False, amp=True):
    """COCO metrics on the dataset's val split: shapes, strokes and all categories together (the network
    under autocast where the device has fast bf16, as in inference, unless ``amp`` is False)."""
    from .data.dataset import read_gray
    from .evaluate import coco_metrics, combined_gt
    gt = combined_gt(data_dir, split="val", max_images=max_images)
    system = System1(model, model_cfg, names, device, amp=amp)
    dets = []
    ims = gt["images"]
    for k in range(0, len(ims), 8):
        batch = ims[k:k + 8]
        grays = [read_gray(os.path.join(data_dir, im["file_name"])) for im in batch]
        for im, ds in zip(batch, system.detect_batch(grays)):
            for d in ds:
                dets.append({"image_id": im["id"], "category": d.category, "bbox": d.bbox, "score": d.score,
                             "style": d.style})
    cat_id = {c["name"]: c["id"] for c in gt["categories"]}
    dets = [dict(d, category_id=cat_id[d["category"]]) for d in dets if d["category"] in cat_id]
    return coco_metrics(gt, dets, per_type=False)


# ---------------------------------------------------------------- outputs
CSV_FIELDS = ["epoch", "image_size", "loss", "loss_classification", "loss_bbox_regression", "loss_bbox_ctrness", "lr",
              "val_AP", "val_AP50", "val_AP75", "val_style_accuracy", "swa", "seconds"]


def write_metrics_csv(history, path):
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow(row)
    write_bytes_atomic(path, text.getvalue().encode("utf-8"))


def plot_curves(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for key in ("loss", "loss_classification", "loss_bbox_regression", "loss_bbox_ctrness"):
        ax[0].plot(ep, [h.get(key, float("nan")) for h in history], label=key)
    ax[0].set_title("training loss"); ax[0].set_xlabel("epoch"); ax[0].legend(fontsize=7)
    ax[1].plot(ep, [h["val_AP"] for h in history], label="AP@[.5:.95]")
    ax[1].plot(ep, [h["val_AP50"] for h in history], label="AP50")
    ax[1].set_title("validation (synthetic, all categories)"); ax[1].set_xlabel("epoch"); ax[1].legend(fontsize=7)
    ax[1].set_ylim(0, 1)
    ax[2].plot(ep, [h["lr"] for h in history]); ax[2].set_title("learning rate"); ax[2].set_xlabel("epoch")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
    write_bytes_atomic(path, png.getvalue())


def _why(exc: Exception) -> str:
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not valid JSON"


def _dataset_signature(data_dir):
    path = os.path.join(data_dir, "dataset.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                m = json.load(f)
        except (OSError, ValueError) as exc:
            raise System1Error(f"{path} is not a readable dataset manifest ({_why(exc)}); "
                               "delete the folder and generate the dataset again") from None
        if not isinstance(m, dict):
            raise System1Error(f"{path} is not a dataset manifest; delete the folder and generate the dataset again")
        if m.get("status") not in (None, "complete"):
            raise System1Error(f"{data_dir} is not finished ({path} says {m.get('status')!r}): run the same "
                               "'system1 generate' again to finish it")
        return {"params": m.get("params"), "num_images": m.get("num_images")}
    from .io_utils import sha256_file
    return {"shapes_sha256": sha256_file(os.path.join(data_dir, "shapes_coco.json"))}


def _epochs_within_budget(model, loader, cfg, mcfg, names, dev, data_dir, minutes):
    """How many epochs (at most ``cfg.epochs``) fit in ``minutes``.

    Timed on a throwaway copy of the model: a few training steps fed by the real loader (so data
    loading counts) and one validation pass over a few images, scaled up to a whole epoch.
    """
    import copy
    probe = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    amp_dtype, scaler = amp_settings(dev, cfg.amp, cfg.image_size)
    times, it = [], iter(loader)
    t = time.perf_counter()
    for _ in range(min(8, len(loader))):
        images, targets = next(it)
        train_step(probe, images, targets, opt, scaler, dev, amp_dtype, cfg.grad_clip)
        if dev == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - t)
        t = now
    del it
    warm = sorted(times[3:] or times)            # the first steps start workers and tune kernels
    step = warm[len(warm) // 2]
    n_val = 16
    t = time.perf_counter()
    probed = validation_metrics(probe.eval(), names, mcfg.to_dict(), data_dir, dev, n_val, amp=cfg.amp)
    scored = probed.get("num_images") or n_val
    per_val = min(cfg.val_images, scored) if scored < n_val else cfg.val_images   # fewer: the whole val split
    val_seconds = (time.perf_counter() - t) * per_val / scored
    per_epoch = len(loader) * step + val_seconds     # at full size: early epochs make it an upper bound
    fit = max(1, int(minutes * 60 * 0.95 // per_epoch))
    epochs = min(cfg.epochs, fit)
    print(f"time budget {minutes:g} min: about {per_epoch / 60:.1f} min an epoch here, so {epochs} of "
          f"{counted(cfg.epochs, 'epoch')}", file=sys.stderr)
    del probe, opt
    return epochs


# ---------------------------------------------------------------- one step
def amp_settings(dev, amp=True, smallest_size=None):
    """The autocast dtype and a GradScaler for mixed precision, or (None, disabled scaler).

    The dtype is :func:`precision.autocast_dtype`'s (CUDA: bf16, or fp16 with loss scaling where bf16
    is missing; CPU: bf16 only with AMX or AVX-512 BF16, measured 2.5x faster than fp32 at 416 px with
    AMX, 2.0x with AVX-512 BF16 alone). Given the smallest image side the run trains at, fp32 on the
    CPU at 64 px or less (:func:`precision.training_autocast_dtype`: a oneDNN bf16 bug).
    """
    if not amp:
        amp_dtype = None
    elif smallest_size is None:
        amp_dtype = autocast_dtype(dev)
    else:
        amp_dtype = training_autocast_dtype(dev, smallest_size)
    scaler = torch.amp.GradScaler("cuda", enabled=dev == "cuda" and amp_dtype == torch.float16)
    return amp_dtype, scaler


def train_step(model, images, targets, opt, scaler, dev, amp_dtype, grad_clip):
    """Forward, backward (scaled for fp16), gradient clipping and an optimizer step; returns the losses.

    A non-finite loss skips the update and is returned for the caller to report.
    """
    images = [im.to(dev, non_blocking=True) for im in images]
    targets = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in targets]
    with autocast(dev, amp_dtype):
        losses = model(images, targets)
        loss = sum(losses.values())
    if not torch.isfinite(loss):
        return losses, loss
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    return losses, loss


# ---------------------------------------------------------------- the loop
def train_detector(data_dir, out_dir, *, backbone="resnet18", categories="all", epochs=8, batch_size=8,
                   image_size=416, device="auto", workers=None, seed=0, lr=None, time_budget=None,
                   restart=False, progress=True, val_images=200, stamp_images=3000, early_scale=0.75,
                   rescore_images=800, start_over_unresumable=False) -> dict:
    """Train (or resume, or confirm finished) a detector in ``out_dir``, then its stamp vote on
    ``stamp_images`` synthetic images (0: none) and its rescorer on the detector's outputs for
    ``rescore_images`` synthetic images (0: none); returns a summary dict. ``early_scale``: the size of
    the early epochs relative to ``image_size`` (1: every epoch at full size; see :func:`epoch_plan`).
    One training at a time in a run folder: a second is refused while the first runs. A folder with
    an earlier run but nothing to resume from is refused (see :func:`_check_unresumable`), unless
    ``start_over_unresumable`` (the pipeline, whose records say what its folders hold)."""
    args = dict(backbone=backbone, categories=categories, epochs=epochs, batch_size=batch_size,
                image_size=image_size, device=device, workers=workers, seed=seed, lr=lr, time_budget=time_budget,
                restart=restart, progress=progress, val_images=val_images, stamp_images=stamp_images,
                early_scale=early_scale, rescore_images=rescore_images,
                start_over_unresumable=start_over_unresumable)
    if os.path.isfile(data_dir):
        raise System1Error(f"--data {data_dir} is a file; give the dataset folder (the one holding shapes_coco.json)")
    if not os.path.isdir(data_dir):
        raise System1Error(f"dataset folder not found: {data_dir} (make one with 'system1 generate')")
    if not os.path.exists(os.path.join(data_dir, "shapes_coco.json")):
        raise System1Error(f"{data_dir} holds no shapes_coco.json: generate a dataset first (system1 generate)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise System1Error(f"--out {out_dir} is a file; give a run folder (new, or one to resume)")
    if os.path.realpath(out_dir) == os.path.realpath(data_dir):
        raise System1Error(f"--out {out_dir} is the dataset folder; give a run folder of its own")
    created = not os.path.exists(out_dir)
    try:
        with _run_folder_lock(out_dir):
            return _train_detector(data_dir, out_dir, **args)
    except BaseException:
        # a run that failed before writing anything leaves no folder of its own behind
        if created and os.path.isdir(out_dir) and set(os.listdir(out_dir)) <= {".train.lock"}:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _run_folder_lock(out_dir):
    """An flock on ``out_dir/.train.lock`` (released by the kernel if the process dies)."""
    import filelock
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise System1Error(f"cannot create run folder {out_dir}: {exc.strerror or exc}")
    lock = filelock.FileLock(os.path.join(out_dir, ".train.lock"), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise System1Error(f"another training run is using {out_dir}; wait for it to finish or use another --out") \
            from None
    except OSError as exc:
        raise System1Error(f"cannot lock run folder {out_dir}: {exc.strerror or exc}") from None
    return lock


def _train_detector(data_dir, out_dir, *, backbone, categories, epochs, batch_size, image_size, device, workers,
                    seed, lr, time_budget, restart, progress, val_images, stamp_images, early_scale,
                    rescore_images, start_over_unresumable) -> dict:
    from tqdm import tqdm
    from torch.optim.swa_utils import SWALR, AveragedModel
    from .data.dataset import DetectionDataset, collate, unreadable_images

    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("image_size", image_size)):
        if int(v) <= 0:
            raise System1Error(f"{name} must be positive, got {v}")
    if int(stamp_images) != 0 and int(stamp_images) < MIN_STAMP_IMAGES:
        raise System1Error(f"stamp images must be 0 (no stamp vote) or at least {MIN_STAMP_IMAGES}, got {stamp_images}")
    if not 0.0 < float(early_scale) <= 1.0:
        raise System1Error(f"early scale must be in (0, 1], got {early_scale}")
    if int(rescore_images) < 0:
        raise System1Error(f"rescore images must be 0 (no rescorer) or more, got {rescore_images}")
    if not os.path.exists(os.path.join(data_dir, "shapes_coco.json")):
        raise System1Error(f"{data_dir} holds no shapes_coco.json: generate a dataset first (system1 generate)")
    dev = resolve_device(device)
    cfg = TrainConfig(data_dir=os.path.abspath(data_dir), backbone=backbone, categories=categories,
                      epochs=int(epochs), batch_size=int(batch_size), image_size=int(image_size), seed=int(seed),
                      lr=lr, device=dev, workers=workers, time_budget=time_budget, val_images=int(val_images),
                      early_scale=float(early_scale), dataset_signature=_dataset_signature(data_dir))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise System1Error(f"cannot create run folder {out_dir}: {exc.strerror or exc}")

    state = None if restart else _read_resume_state(out_dir)
    if state is None and not restart and not start_over_unresumable:
        _check_unresumable(out_dir, cfg)
    if state is not None and state["config_hash"] != cfg.hash():
        diff = config_diff(state["config"], cfg.result_dict(), TRAIN_DEFAULTS)
        raise System1Error(f"{out_dir} holds a run with another config ({diff}); "
                           "pass --restart to start over or use another --out")
    torch.manual_seed(cfg.seed)
    if dev == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    else:
        torch.backends.cudnn.benchmark = True        # one or two input sizes: let cuDNN pick its kernels
    mcfg = ModelConfig(backbone=backbone, categories=categories, image_size=cfg.image_size)
    names = class_names(categories)
    model = build_model(mcfg).to(dev)
    train_set = DetectionDataset(data_dir, cfg.image_size, categories, split="train", augment=True, seed=cfg.seed)
    if len(train_set) == 0:
        raise System1Error(f"{data_dir} has no training images")
    val_set = DetectionDataset(data_dir, cfg.image_size, "shapes", split="val", augment=False)
    if len(val_set) == 0:
        raise System1Error(f"{data_dir} has no validation images, which choose the best model: generate it with "
                           "more images or a larger --val-fraction")
    if state is None or int(state["epoch"]) < epochs:      # every image read once before training on them
        bad = unreadable_images(train_set.records + val_set.records)
        if bad:
            raise System1Error(f"{len(bad)} image(s) of {data_dir} are missing, unreadable or not the size their "
                               f"record says (first: {bad[0]}); run the same 'system1 generate' command again, "
                               "which draws them again")
    n_workers = workers if workers is not None else (0 if dev == "cpu" else min(6, os.cpu_count() or 1))
    gen = torch.Generator()
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True
                                         if len(train_set) >= cfg.batch_size else False, collate_fn=collate,
                                         num_workers=n_workers, generator=gen, pin_memory=dev == "cuda",
                                         persistent_workers=False)
    steps_per_epoch = max(1, len(loader))
    if state is not None:
        epochs = int(state.get("planned_epochs", cfg.epochs))
    elif time_budget:
        epochs = _epochs_within_budget(model, loader, cfg, mcfg, names, dev, data_dir, time_budget)
    else:
        epochs = cfg.epochs
    def write_config():
        write_json_atomic(os.path.join(out_dir, "config.json"), dict(cfg.result_dict(), config_hash=cfg.hash(),
                                                                     planned_epochs=epochs, device=dev,
                                                                     data_dir=cfg.data_dir))

    # a new run over an old one's files (--restart, or nothing to resume): they (and config.json) go
    # only when the new run's first epoch is trained and validated (drop_old_run), so a kill before
    # that leaves the old run as it was; a kill after it leaves a folder without last.pt, where the
    # same command starts anew
    old_run = state is None and any(os.path.exists(os.path.join(out_dir, f)) for f in _OLD_RUN_FILES)
    if not old_run:
        write_config()
    swa_epochs, early_epochs, early_size = epoch_plan(epochs, cfg.swa_fraction, cfg.image_size, cfg.early_scale)
    main_epochs = epochs - swa_epochs
    peak = cfg.peak_lr(len(train_set))
    opt = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=cfg.weight_decay)
    total_steps = main_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak, total_steps=total_steps,
                                                pct_start=one_cycle_warmup(total_steps, 0.2), div_factor=20.0,
                                                final_div_factor=50.0)
    swa_model = AveragedModel(model) if swa_epochs else None
    swa_every = max(1, steps_per_epoch // 4)    # SWA averages a few snapshots per epoch
    swa_sched = SWALR(opt, swa_lr=peak * 0.05, anneal_epochs=1) if swa_epochs else None
    smallest = min(early_size, cfg.image_size) if early_epochs else cfg.image_size
    amp_dtype, scaler = amp_settings(dev, cfg.amp, smallest)
    if dev == "cpu" and cfg.amp and amp_dtype is None and autocast_dtype(dev) is not None and state is None:
        print(f"note: training at {smallest} px runs in fp32: on the CPU, bf16 weight gradients of FCOS's last "
              f"FPN convolution come out as garbage at {BF16_TRAIN_MAX_BROKEN_SIZE} px or less (a oneDNN bug)",
              file=sys.stderr)
    elif dev == "cpu" and cfg.amp and amp_dtype is None and state is None:
        print("note: this CPU multiplies bf16 only in software (no AMX or AVX-512 BF16), so training runs in "
              "fp32, about 3x slower than the profiles' CPU timings; each epoch's line says how long the "
              "rest should take", file=sys.stderr)

    start_epoch, history, best = 0, [], -1.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):        # empty when saved by a disabled scaler (CPU, bf16): a resume on an fp16 GPU starts it fresh
            scaler.load_state_dict(state["scaler"])
        if swa_model is not None and state.get("swa_model") is not None:
            swa_model.load_state_dict(state["swa_model"])
            swa_sched.load_state_dict(state["swa_scheduler"])
        torch.set_rng_state(state["rng_torch"])
        if dev == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu())
        start_epoch, history, best = int(state["epoch"]), list(state["history"]), float(state["best_metric"])
        print(f"{out_dir}: training already finished ({epochs}/{epochs} epochs)" if start_epoch >= epochs else
              f"resuming {out_dir} after epoch {start_epoch}/{epochs}", file=sys.stderr)
        if history:     # a kill between last.pt and these two leaves them an epoch short: write them again
            write_metrics_csv(history, os.path.join(out_dir, "metrics.csv"))
            plot_curves(history, os.path.join(out_dir, "training_curves.png"))

    def drop_old_run():
        """--restart, once the new run's first epoch is trained and validated: the old run's
        checkpoints go and config.json describes the new run, before any new file is written."""
        nonlocal old_run
        if old_run:
            for f in _OLD_RUN_FILES:
                if os.path.exists(os.path.join(out_dir, f)):
                    os.remove(os.path.join(out_dir, f))
            write_config()
            old_run = False

    def checkpoint(epoch):
        drop_old_run()
        _atomic_torch_save({
            "format": CHECKPOINT_FORMAT, "epoch": epoch, "config": cfg.result_dict(), "config_hash": cfg.hash(),
            "model_config": mcfg.to_dict(), "class_names": names, "model": model_state(model),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "swa_model": swa_model.state_dict() if swa_model is not None else None,
            "swa_scheduler": swa_sched.state_dict() if swa_sched is not None else None,
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if dev == "cuda" else None,
            "history": history, "best_metric": best, "planned_epochs": epochs,
        }, os.path.join(out_dir, "last.pt"), keep_previous=os.path.join(out_dir, "last.prev.pt"))

    def save_best(weights_model, metrics, epoch, is_swa):
        _atomic_torch_save({"format": CHECKPOINT_FORMAT, "model_config": mcfg.to_dict(), "class_names": names,
                            "model": model_state(weights_model), "epoch": epoch, "swa": is_swa,
                            "val_metrics": json.dumps(metrics), "config_hash": cfg.hash()},
                           os.path.join(out_dir, "best.pt"))

    t_run = time.time()
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        in_swa = epoch >= main_epochs
        if in_swa:
            swa_sched.step()          # the SWA learning rate holds during this epoch
        size = early_size if epoch < early_epochs else cfg.image_size
        train_set.set_epoch(epoch, size)
        model.transform.min_size, model.transform.max_size = (size,), size    # validation resets them
        gen.manual_seed(cfg.seed * 1000003 + epoch)
        model.train()
        sums, n = {}, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress,
                   file=sys.stderr, leave=False)
        for images, targets in bar:
            losses, loss = train_step(model, images, targets, opt, scaler, dev, amp_dtype, cfg.grad_clip)
            if not torch.isfinite(loss):
                raise System1Error(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); try a lower --lr")
            if not in_swa:
                sched.step()
            elif n % swa_every == swa_every - 1:
                swa_model.update_parameters(model)
            for k, v in losses.items():
                sums["loss_" + k] = sums.get("loss_" + k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            n += 1
            bar.set_postfix(loss=f"{sums['loss'] / n:.3f}")
        bar.close()
        lr_now = opt.param_groups[0]["lr"]
        if in_swa:
            swa_model.update_parameters(model)
        # evaluate the SWA average at the end of the SWA phase, otherwise the current model
        eval_model, is_swa = model, False
        if in_swa and epoch == epochs - 1:
            eval_model, is_swa = swa_model.module, True
            refresh_batchnorm(eval_model, loader, dev, amp_dtype=amp_dtype)
        try:
            metrics = validation_metrics(eval_model, names, mcfg.to_dict(), data_dir, dev, cfg.val_images,
                                         amp=cfg.amp)
        except Exception as exc:      # a failed validation must not throw away an epoch of training
            print(f"warning: validation after epoch {epoch + 1} failed ({type(exc).__name__}: {exc}); "
                  "recorded as AP 0", file=sys.stderr)
            metrics = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "style_accuracy": None, "error": str(exc)}
        row = {"epoch": epoch + 1, "image_size": size, **{k: round(v / max(n, 1), 5) for k, v in sums.items()}, "lr": lr_now,
               "val_AP": metrics["AP"], "val_AP50": metrics["AP50"], "val_AP75": metrics["AP75"],
               "val_style_accuracy": metrics.get("style_accuracy"), "swa": is_swa,
               "seconds": round(time.time() - t0, 1)}
        history.append(row)
        drop_old_run()
        if metrics["AP"] > best:
            best = metrics["AP"]
            save_best(eval_model, metrics, epoch + 1, is_swa)
        checkpoint(epoch + 1)
        write_metrics_csv(history, os.path.join(out_dir, "metrics.csv"))
        plot_curves(history, os.path.join(out_dir, "training_curves.png"))
        # one log line per epoch, progress bar or not
        left = remaining_epoch_seconds(history, epochs, early_epochs, early_size, cfg.image_size)
        print(f"epoch {epoch + 1}/{epochs}  {size}px  loss {row['loss']:.3f}  lr {lr_now:.2e}  val AP {metrics['AP']:.3f}"
              f"  AP50 {metrics['AP50']:.3f}{'  (SWA)' if is_swa else ''}  {row['seconds']:.0f}s"
              f"{f'  (about {format_duration(left)} of epochs left)' if left else ''}", file=sys.stderr)
    if _whole_state(os.path.join(out_dir, "best.pt")) is None:
        what = "damaged" if os.path.exists(os.path.join(out_dir, "best.pt")) else "missing"
        raise System1Error(f"{out_dir}/best.pt is {what} and training has finished ({len(history)}/{epochs} epochs), so "
                           "it cannot be made again from last.pt; pass --restart to train again or use another --out")
    n_stamp = int(stamp_images) if categories != "shapes" else 0     # no strokes, nothing to vote on
    stamp_vote = add_stamp_vote(os.path.join(out_dir, "best.pt"), n_stamp, cfg.seed, dev, progress)
    n_rescore = int(rescore_images) if categories != "shapes" else 0
    rescorer = add_rescorer(os.path.join(out_dir, "best.pt"), n_rescore, cfg.seed, dev, progress)
    best_ckpt = _try_load(os.path.join(out_dir, "best.pt")) or {}
    return {"best_checkpoint": os.path.join(out_dir, "best.pt"), "last_checkpoint": os.path.join(out_dir, "last.pt"),
            "history": history, "best_metric": best, "val_metrics": json.loads(best_ckpt.get("val_metrics", "{}")),
            "device": dev, "seconds": round(time.time() - t_run, 1), "config_hash": cfg.hash(),
            "epochs_done": len(history), "planned_epochs": epochs, "stamp_vote": stamp_vote, "rescorer": rescorer}


STAMP_EPOCHS = 3


def _second_stage(best_path, key: str, num_images: int) -> tuple[dict | None, dict | None]:
    """The checkpoint ``best_path`` and its entry ``key`` (a stage trained after the detector, or
    None); with ``num_images`` 0 the entry is removed (the checkpoint rewritten atomically) and
    ``(None, None)`` returned."""
    ckpt = _try_load(best_path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise System1Error(f"{best_path} is not a readable bongard-system1 checkpoint (truncated or corrupt?)")
    if num_images == 0:
        if key in ckpt:
            ckpt.pop(key)
            _atomic_torch_save(ckpt, best_path)
        return None, None
    return ckpt, ckpt.get(key) if isinstance(ckpt.get(key), dict) else None


def add_stamp_vote(best_path, num_images, seed, device, progress=True) -> dict | None:
    """Train the stamp vote and store it in the checkpoint ``best_path`` (rewritten atomically),
    unless it already holds one made with the same settings; ``num_images`` 0 removes it. Returns
    the vote's settings and metrics, or None."""
    from .stamps import train_stamp_classifier
    ckpt, old = _second_stage(best_path, "stamp_vote", num_images)
    if ckpt is None:
        return None
    settings = {"images": int(num_images), "epochs": STAMP_EPOCHS, "seed": int(seed), "version": STAMP_VOTE_VERSION}
    if old is not None and old.get("settings") == settings:
        return {"settings": settings, "metrics": old.get("metrics")}
    try:
        trained = train_stamp_classifier(num_images, STAMP_EPOCHS, seed, device, progress)
    except ValueError as exc:
        raise System1Error(str(exc))
    ckpt["stamp_vote"] = {"settings": settings, "metrics": trained["metrics"], "state_dict": trained["state_dict"]}
    _atomic_torch_save(ckpt, best_path)
    m = trained["metrics"]
    print(f"stamp vote: {m['train_patches']} patches from {num_images} images, synthetic val accuracy "
          f"{m['val_accuracy']:.3f}, {m['seconds']:.0f}s", file=sys.stderr)
    return {"settings": settings, "metrics": m}


def add_rescorer(best_path, num_images, seed, device, progress=True) -> dict | None:
    """Train the rescorer (of strokes, and of the hybrid's shapes) on the detector's own outputs (with its stamp vote, at the default
    inference settings) for ``num_images`` synthetic images and store it in ``best_path`` (rewritten
    atomically), unless it already holds one made with the same settings and the same detector; 0
    removes it. Returns the rescorer's settings and metrics, or None."""
    from .rescore import train_rescorer
    ckpt, old = _second_stage(best_path, "rescorer", num_images)
    if ckpt is None:
        return None
    # the detector's outputs it learns from depend on the stamp vote too (the styles do not enter
    # its features, but a retrained detector or vote means a retrained rescorer all the same)
    wanted = {"images": int(num_images), "seed": int(seed), "version": RESCORER_VERSION,
              "detector": _weights_digest(ckpt)}
    if old is not None and old.get("wanted") == wanted:
        return {"settings": old.get("settings"), "metrics": old.get("metrics"),
                "shape_metrics": (old.get("shapes") or {}).get("metrics")}
    system = System1.load(best_path, device=device, rescore=False)
    entry = train_rescorer(system, int(num_images), int(seed), int(ckpt["model_config"]["image_size"]), progress)
    if entry is None:       # a detector too weak to give right strokes: it goes on without a rescorer
        print(f"rescorer: not trained (the detector's strokes on {num_images} images gave too few "
              "detections, or none right)", file=sys.stderr)
        if ckpt.pop("rescorer", None) is not None:
            _atomic_torch_save(ckpt, best_path)
        return None
    entry["wanted"] = wanted
    ckpt["rescorer"] = entry
    _atomic_torch_save(ckpt, best_path)
    m = entry["metrics"]
    shapes = (entry.get("shapes") or {}).get("metrics")
    print(f"rescorer: {m['detections']} stroke detections ({m['matched']} right)"
          + (f" and {shapes['detections']} shape candidates ({shapes['matched']} right)" if shapes
             else " (no shape part: too few shape candidates, or none right)")
          + f" from {num_images} images, "
          f"{m['seconds']:.0f}s", file=sys.stderr)
    return {"settings": entry["settings"], "metrics": m, "shape_metrics": shapes}


def _weights_digest(ckpt: dict) -> str:
    """A short digest of a checkpoint's detector weights and stamp vote."""
    h = hashlib.sha256()
    for part in (ckpt.get("model"), (ckpt.get("stamp_vote") or {}).get("state_dict")):
        for k, v in sorted((part or {}).items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cli_train(args):
    res = train_detector(args.data, args.out, backbone=args.backbone, categories=args.categories,
                         epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                         device=args.device, workers=args.workers, seed=args.seed, lr=args.lr,
                         time_budget=args.time_budget, restart=args.restart,
                         progress=not args.no_progress and sys.stderr.isatty(),
                         stamp_images=args.stamp_images, early_scale=args.early_scale,
                         rescore_images=args.rescore_images)
    vm = res["val_metrics"]
    print(f"done: best val AP {res['best_metric']:.3f} (AP50 {vm.get('AP50', 0):.3f}); "
          f"best model {res['best_checkpoint']}")
    return 0
