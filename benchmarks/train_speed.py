"""Training throughput (images/s) of detector settings, measured side by side in one run.

    python benchmarks/train_speed.py --data DATASET [--configs resnet18:320:8,resnet50:416:8] \
        [--steps 20] [--warmup 5] [--device auto] [--workers N] [--out results/train_speed.json]

Each config is ``backbone:image_size:batch_size[:fp32]``; ``:fp32`` turns mixed precision off. The
timed loop is the trainer's own step (``bongard_system1.train.train_step``: data loading with
augmentation, mixed precision where the trainer uses it (CUDA, or a CPU with AMX or AVX-512 BF16), gradient
clipping, AdamW), after ``--warmup`` untimed steps.
"""

import argparse
import json
import os
import time

from _common import check_out, existing, parser, run, write_out
from bongard_system1.argtypes import image_px, non_empty_path, non_negative_int, positive_int
from bongard_system1.errors import System1Error


def measure(data, backbone, size, batch, steps, warmup, dev, workers, amp=True):
    import torch
    from bongard_system1.data.dataset import DetectionDataset, collate
    from bongard_system1.model import ModelConfig, build_model
    from bongard_system1.train import amp_settings, train_step
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, image_size=size)).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp_dtype, scaler = amp_settings(dev, amp)
    ds = DetectionDataset(data, size, "all", split="train", augment=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, collate_fn=collate,
                                         num_workers=workers, pin_memory=dev == "cuda",
                                         persistent_workers=workers > 0)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    done, t0 = 0, None
    while done < warmup + steps:
        for images, targets in loader:
            if done == warmup:
                if dev == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            train_step(model, images, targets, opt, scaler, dev, amp_dtype, 10.0)
            done += 1
            if done >= warmup + steps:
                break
    if dev == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    row = {"backbone": backbone, "image_size": size, "batch_size": batch, "device": dev,
           "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off", "steps": steps,
           "images_per_s": round(steps * batch / seconds, 1)}
    if dev == "cuda":
        row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def config_list(text):
    """``backbone:size:batch[:fp32]``, comma-separated -> [(backbone, size, batch, amp), ...]."""
    out = []
    for spec in text.split(","):
        parts = spec.strip().split(":")
        if len(parts) not in (3, 4) or parts[0] not in ("resnet18", "resnet50") or parts[3:] not in ([], ["fp32"]):
            raise argparse.ArgumentTypeError(f"expected backbone:size:batch[:fp32] with backbone resnet18 or "
                                             f"resnet50, got {spec!r}")
        try:
            size, batch = image_px(parts[1]), positive_int(parts[2])
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{spec!r}: {exc}") from None
        out.append((parts[0], size, batch, parts[3:] != ["fp32"]))
    return out


def main():
    ap = parser(__doc__)
    ap.add_argument("--data", required=True, type=non_empty_path, help="a dataset folder written by system1 generate")
    ap.add_argument("--configs", type=config_list, default="resnet18:320:8,resnet18:416:8,resnet50:416:8",
                    help="backbone:image_size:batch_size[:fp32], comma-separated")
    ap.add_argument("--steps", type=positive_int, default=20, help="timed steps per config")
    ap.add_argument("--warmup", type=non_negative_int, default=5, help="untimed steps first")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--workers", type=non_negative_int, default=None,
                    help="loader workers (default: 0 on CPU, 8 on CUDA)")
    ap.add_argument("--out", default=None, type=non_empty_path, help="write the figures as JSON here")
    a = ap.parse_args()
    existing(a.data, "--data")
    check_out(a.out, [a.data])
    import torch                    # torch only now: --help and bad flags answer at once
    from bongard_system1.data.dataset import DetectionDataset
    from bongard_system1.train import resolve_device
    n_train = len(DetectionDataset(a.data, 64, "all", split="train", augment=False))
    too_big = [f"{b}:{s}:{n}" for b, s, n, _ in a.configs if n > n_train]
    if too_big:                     # every config checked before the first one runs for minutes
        raise System1Error(f"--data {a.data} holds {n_train} training images: fewer than a batch of "
                           f"{', '.join(too_big)}")
    dev = resolve_device(a.device)
    workers = a.workers if a.workers is not None else (0 if dev == "cpu" else min(8, os.cpu_count() or 1))
    if dev == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    else:
        torch.backends.cudnn.benchmark = True
    rows = []
    for backbone, size, batch, amp in a.configs:
        row = measure(a.data, backbone, size, batch, a.steps, a.warmup, dev, workers, amp=amp)
        print(json.dumps(row), flush=True)
        rows.append(row)
    info = {"device_name": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "loader_workers": workers, "results": rows}
    write_out(a.out, info)
    return 0


if __name__ == "__main__":
    run(main)
