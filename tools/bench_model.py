#!/usr/bin/env python3
"""R-50-FPN on this machine: `detectron benchmark` against torchvision's fasterrcnn_resnet50_fpn,
retinanet_resnet50_fpn or maskrcnn_resnet50_fpn.

--model fasterrcnn (default): same input (a 640×480 test pattern, or --image), same size rule
(shorter side 500, longer ≤ 833), 1,000 proposals at test; inference seconds per image and training
seconds per iteration (2 images, one box each, one SGD step), with 1 and 2 threads.

--model retinanet or maskrcnn: inference at torchvision's default size (shorter side 800, longer ≤
1,333) on the same test pattern, ours running configs/torchvision/<model>_resnet50_fpn.yaml (the same
model and post-processing), with 1 and 2 threads. For maskrcnn both sides run the same seeded random
weights (written once as a state_dict for ours), so that both mask heads run on the same 100
detections; ours prints how many it had.

Medians after a warm-up (with --pairs N, the medians over N measurements of each side taken in
turn, and the median of the N pairs' ratios), and each run's peak resident memory (every torchvision measurement runs in
its own process; its RSS includes torch's ~690 MB of libraries). Random weights on both sides (timing
does not depend on them; nothing is downloaded). Prints a Markdown table.

    swift build -c release --product detectron
    /tmp/venv/bin/pip install torch torchvision numpy
    /tmp/venv/bin/python tools/bench_model.py [--model fasterrcnn|retinanet|maskrcnn] [--runs 5] [--pairs 3]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torchvision

ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--pairs", type=int, default=1,
                help="measure torchvision and ours this many times in turn (A B A B …) and report the medians and each pair's ratio: "
                     "the machine's speed drifts over minutes, so a ratio holds best within a pair")
ap.add_argument("--detectron", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "detectron"))
ap.add_argument("--model", choices=("fasterrcnn", "retinanet", "maskrcnn"), default="fasterrcnn")
ap.add_argument("--cfg", help="our config (default: the model's; see above)")
ap.add_argument("--child", nargs=2, metavar=("MODE", "THREADS"), help=argparse.SUPPRESS)  # one torchvision measurement
args = ap.parse_args()
CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
if args.cfg is None:
    args.cfg = os.path.join(CONFIGS, "getting_started", "tutorial_1gpu_e2e_faster_rcnn_R-50-FPN.yaml") if args.model == "fasterrcnn" \
        else os.path.join(CONFIGS, "torchvision", args.model + "_resnet50_fpn.yaml")
WEIGHTS = os.path.join("/tmp", "bench_model_maskrcnn_random.pth")   # maskrcnn: the weights both sides run

# The same test pattern as `detectron benchmark` (BGR there; RGB here, same values per channel order).
ys, xs = np.mgrid[0:480, 0:640]
b, g, r = (xs * 255) // 639, (ys * 255) // 479, ((xs + ys) * 7) % 256
image = torch.from_numpy(np.stack([r, g, b]).astype(np.float32) / 255.0)


def ours(train, threads):
    cmd = [args.detectron, "benchmark", "--cfg", args.cfg, "--threads", str(threads), "--runs", str(args.runs)] + (["--train"] if train else [])
    if args.model == "maskrcnn":
        cmd += ["--weights", WEIGHTS]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def torchvision_time(train, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if args.model == "fasterrcnn":
        model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, min_size=500, max_size=833,
            rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, box_batch_size_per_image=256)
    elif args.model == "retinanet":
        model = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    else:
        model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        if not args.child:
            torch.save(model.state_dict(), WEIGHTS)
            return None
    times = []
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
        target = {"boxes": torch.tensor([[640 / 3, 480 / 3, 640 * 2 / 3, 480 * 2 / 3]]), "labels": torch.tensor([1])}
        for i in range(args.runs + 1):
            t0 = time.time()
            losses = model([image, image], [target, target])
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i > 0:
                times.append(time.time() - t0)
    else:
        model.eval()
        with torch.no_grad():
            for i in range(args.runs + 1):
                t0 = time.time()
                model([image])
                if i > 0:
                    times.append(time.time() - t0)
    return statistics.median(times)


def torchvision_child(train, threads):
    """One torchvision measurement in its own process, so that its peak RSS is that run's alone."""
    cmd = [sys.executable, __file__, "--model", args.model, "--runs", str(args.runs), "--child", "train" if train else "infer", str(threads)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


if args.child:
    median = torchvision_time(args.child[0] == "train", int(args.child[1]))
    print(json.dumps({"median_s": median, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit(0)

if args.model == "maskrcnn":
    torchvision_time(False, 1)   # writes the weights both sides run
print("| run | threads | torchvision (s) | ours (s) | ratio ours/torchvision | peak RSS torchvision / ours (MB) |"
      + (" ratio of each pair |" if args.pairs > 1 else ""))
print("|---|---:|---:|---:|---:|---:|" + ("---|" if args.pairs > 1 else ""))
for train in (False, True) if args.model == "fasterrcnn" else (False,):
    for threads in (1, 2):
        pairs = [(torchvision_child(train, threads), ours(train, threads)) for _ in range(args.pairs)]
        tv = statistics.median(p[0]["median_s"] for p in pairs)
        o = statistics.median(p[1]["median_s"] for p in pairs)
        ratios = [p[1]["median_s"] / p[0]["median_s"] for p in pairs]
        print("| %s | %d | %.3f | %.3f | %.2f | %.0f / %.0f |%s" % (
            "training iteration (2 images)" if train else "inference (1 image)", threads, tv, o, statistics.median(ratios),
            max(p[0]["peak_rss_mb"] for p in pairs), max(p[1]["peak_rss_mb"] for p in pairs),
            (" " + ", ".join("%.2f" % r for r in ratios) + " |") if args.pairs > 1 else ""))
