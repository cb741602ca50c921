#!/usr/bin/env python3
"""Data loading: `detectron benchmark-loader` against PyTorch's DataLoader, same files, same pipeline.

Makes 256 640×480 JPEGs (or uses --images), then for numWorkers 0/1/2/4 runs:
  - detectron benchmark-loader (threads and processes), release build;
  - PyTorch's DataLoader with the same pipeline: Pillow decode, BGR float32 minus Detectron's
    PIXEL_MEANS, cv2.resize to shorter side 500 / longer ≤ 833 (INTER_LINEAR), padding to a
    multiple of 32, batches of 2;
and the raw single-thread libjpeg-turbo decode rate of the files. Prints a Markdown table.

    swift build -c release --product detectron
    /tmp/venv/bin/pip install torch numpy pillow opencv-python-headless
    /tmp/venv/bin/python tools/bench_dataloader.py
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import cv2
import numpy as np
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("--images", help="folder of JPEGs (default: make 256 at 640x480)")
ap.add_argument("--detectron", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "detectron"))
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--workers", default="0,1,2,4")
args = ap.parse_args()

folder = args.images
if not folder:
    folder = tempfile.mkdtemp(prefix="sd-bench-jpegs-")
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(256):
        base = (np.sin(xx / (20 + i % 17)) * 60 + np.cos(yy / (15 + i % 11)) * 60 + 128)
        img = np.stack([base + rng.randint(-30, 30, base.shape), base[::-1] + rng.randint(-30, 30, base.shape),
                        np.roll(base, i, axis=1) + rng.randint(-30, 30, base.shape)], axis=2)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(folder, "img_%04d.jpg" % i), quality=90)
files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))
MEANS = np.array([[[102.9801, 115.9465, 122.7717]]], dtype=np.float32)


def ours(workers, kind):
    out = subprocess.run([args.detectron, "benchmark-loader", "--images", folder, "--workers", str(workers), "--kind", kind,
                          "--epochs", str(args.epochs)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def decode_rate():
    out = subprocess.run([args.detectron, "benchmark-loader", "--images", folder, "--decode-only", "--epochs", str(args.epochs)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def pytorch(workers):
    import torch
    from torch.utils.data import DataLoader, Dataset

    class Folder(Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            im = np.asarray(Image.open(files[i]).convert("RGB"))[:, :, ::-1].astype(np.float32) - MEANS
            h, w = im.shape[:2]
            s = 500.0 / min(h, w)
            if np.round(s * max(h, w)) > 833:
                s = 833.0 / max(h, w)
            im = cv2.resize(im, None, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
            return torch.from_numpy(im.transpose(2, 0, 1).copy())

    def collate(items):
        h = max(t.shape[1] for t in items)
        w = max(t.shape[2] for t in items)
        h, w = (h + 31) // 32 * 32, (w + 31) // 32 * 32
        blob = torch.zeros(len(items), 3, h, w)
        for k, t in enumerate(items):
            blob[k, :, :t.shape[1], :t.shape[2]] = t
        return blob

    torch.set_num_threads(1)
    loader = DataLoader(Folder(), batch_size=2, shuffle=True, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    n, secs = 0, 0.0
    for epoch in range(args.epochs):
        t0 = time.time()
        count = sum(b.shape[0] for b in loader)
        if epoch > 0:
            secs += time.time() - t0
            n += count
    return n / secs


rows = []
for w in [int(x) for x in args.workers.split(",")]:
    try:
        pt = pytorch(w)
    except ImportError:
        pt = float("nan")
    t = ours(w, "threads")
    p = ours(w, "processes") if w > 0 else t
    rows.append((w, pt, t, p))
dec = decode_rate()
print("%d files, %dx%d; single-thread libjpeg-turbo decode: %.1f images/s; usable cores: %d" % (
    len(files), Image.open(files[0]).width, Image.open(files[0]).height, dec, len(os.sched_getaffinity(0))))
print("| numWorkers | PyTorch DataLoader | ours, threads | ours, processes | ratio (best of ours / PyTorch) |")
print("|---:|---:|---:|---:|---:|")
for w, pt, t, p in rows:
    print("| %d | %.1f | %.1f | %.1f | %.2f× |" % (w, pt, t, p, max(t, p) / pt))
best = max(max(t, p) for _, _, t, p in rows)
print("best: %.1f images/s = %.0f %% of decode rate × usable cores (%.1f)" % (best, 100 * best / (dec * len(os.sched_getaffinity(0))),
                                                                          dec * len(os.sched_getaffinity(0))))
