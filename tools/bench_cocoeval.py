#!/usr/bin/env python3
"""COCO box or mask AP: pycocotools against `detectron evaluate`, on the same files, in one run.

Makes a val2017-sized ground truth (5,000 images, ~36k objects with polygons, 80 categories) and
5,000 × 100 detections — boxes, or with --iou-type segm masks (compressed RLE, Detectron's
segmentation results: no bbox) — then times pycocotools (load, loadRes, evaluate, accumulate,
summarize) and the release `detectron evaluate` (same work), each in a process of its own, checks
the 12 stats and per-category AP agree, and prints both.

    swift build -c release --product detectron
    /work/venv/bin/python tools/bench_cocoeval.py [--images 5000] [--iou-type segm]
"""
import argparse
import atexit
import contextlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from pycocotools import mask as maskUtils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ap = argparse.ArgumentParser()
ap.add_argument("--images", type=int, default=5000)
ap.add_argument("--iou-type", choices=["bbox", "segm"], default="bbox")
ap.add_argument("--detectron", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "detectron"))
ap.add_argument("--pycocotools-on", nargs=2, metavar=("GT", "DT"), help=argparse.SUPPRESS)
args = ap.parse_args()


def pycocotools_child(gt_path, dt_path, iou_type):
    """Runs in a process of its own: COCO, loadRes, evaluate, accumulate, summarize, timed."""
    t0 = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
    t_load = time.time() - t0
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dt_path), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per = {}
    for k, c in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, 2]
        per[str(c)] = float(np.mean(p[p > -1])) if p[p > -1].size else -1.0
    print(json.dumps({"load": t_load, "total": time.time() - t0, "stats": [float(v) for v in ev.stats], "per_category": per}))


if args.pycocotools_on:
    pycocotools_child(*args.pycocotools_on, args.iou_type)
    sys.exit(0)
rng = random.Random(0)
cats = [{"id": c, "name": "c%d" % c, "supercategory": "s"} for c in range(1, 91) if c % 9 != 0][:80]


def random_box(w, h):
    bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
    return [round(rng.uniform(0, w - bw), 2), round(rng.uniform(0, h - bh), 2), round(bw, 2), round(bh, 2)]


def outline(cx, cy, rx, ry):
    """A star-shaped polygon (COCO-like: 8 to 40 vertices, 2 decimals)."""
    n = rng.randint(8, 40)
    pts = []
    for k in range(n):
        a, r = 2 * math.pi * k / n, rng.uniform(0.65, 1.0)
        pts += [round(cx + rx * r * math.cos(a), 2), round(cy + ry * r * math.sin(a), 2)]
    return pts


def box_object(b, w, h):
    poly = [round(rng.uniform(0, w), 2) for _ in range(rng.randint(8, 40))]
    return {"bbox": b, "area": round(b[2] * b[3] * 0.7, 2), "iscrowd": 1 if rng.random() < 0.01 else 0, "segmentation": [poly]}


def mask_object(b, w, h):
    """A polygon in the box; 1 % crowds, as uncompressed RLE like COCO's."""
    crowd = rng.random() < 0.01
    poly = outline(b[0] + b[2] / 2, b[1] + b[3] / 2, b[2] / 2, b[3] / 2)
    rle = maskUtils.merge(maskUtils.frPyObjects([poly], h, w))
    segm = [poly]
    if crowd:
        flat = maskUtils.decode(rle).flatten(order="F")
        edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
        segm = {"size": [h, w], "counts": ([0] if flat[0] else []) + [int(c) for c in np.diff(edges)]}
    return {"segmentation": segm, "area": float(maskUtils.area(rle)), "bbox": [float(v) for v in maskUtils.toBbox(rle)], "iscrowd": int(crowd)}


def box_detections(i, w, h, gts):
    """100 boxes, 70 % of the first ones near an object of the image."""
    dets = []
    for k in range(100):
        if k < len(gts) and rng.random() < 0.7:
            a, _ = gts[k]
            b = [round(a["bbox"][0] + rng.uniform(-5, 5), 2), round(a["bbox"][1] + rng.uniform(-5, 5), 2), a["bbox"][2], a["bbox"][3]]
            cat = a["category_id"]
        else:
            b, cat = random_box(w, h), rng.choice(cats)["id"]
        dets.append({"image_id": i, "category_id": cat, "bbox": b, "score": round(rng.random(), 4)})
    return dets


def mask_detections(i, w, h, gts):
    """100 masks as Detectron writes them (compressed RLE, no bbox), 70 % of the first ones near an object."""
    polys = []
    for k in range(100):
        if k < len(gts) and rng.random() < 0.7:
            a, b = gts[k]
            cx, cy = b[0] + b[2] / 2 + rng.uniform(-5, 5), b[1] + b[3] / 2 + rng.uniform(-5, 5)
            polys.append((outline(cx, cy, b[2] / 2, b[3] / 2), a["category_id"]))
        else:
            b = random_box(w, h)
            polys.append((outline(b[0] + b[2] / 2, b[1] + b[3] / 2, b[2] / 2, b[3] / 2), rng.choice(cats)["id"]))
    rles = maskUtils.frPyObjects([p for p, _ in polys], h, w)
    return [{"image_id": i, "category_id": cat, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}, "score": round(rng.random(), 4)}
            for rle, (_, cat) in zip(rles, polys)]


images, anns, dets = [], [], []
make_object, make_detections = (mask_object, mask_detections) if args.iou_type == "segm" else (box_object, box_detections)
for i in range(1, args.images + 1):
    w, h = rng.choice([(640, 480), (480, 640), (640, 427)])
    images.append({"id": i, "file_name": "%012d.jpg" % i, "width": w, "height": h})
    gts = []
    for _ in range(rng.randint(1, 13)):
        b = random_box(w, h)
        a = {"id": len(anns) + 1, "image_id": i, "category_id": rng.choice(cats)["id"]}
        a.update(make_object(b, w, h))
        anns.append(a)
        gts.append((a, b))
    dets += make_detections(i, w, h, gts)
tmp = tempfile.mkdtemp()
atexit.register(shutil.rmtree, tmp, True)
gt_path, dt_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "dt.json")
json.dump({"images": images, "annotations": anns, "categories": cats}, open(gt_path, "w"))
json.dump(dets, open(dt_path, "w"))
print("%s: %d images, %d objects, %d detections; gt %.1f MB, results %.1f MB" % (
    args.iou_type, len(images), len(anns), len(dets), os.path.getsize(gt_path) / 1e6, os.path.getsize(dt_path) / 1e6))
del images, anns, dets, gts

# Each tool in a fresh process, one after the other: a large Python heap alive beside the other
# tool slows its page faults on this machine.
out = subprocess.run([sys.executable, __file__, "--iou-type", args.iou_type, "--pycocotools-on", gt_path, dt_path],
                     check=True, capture_output=True, text=True)
py = json.loads(out.stdout.strip().splitlines()[-1])

t0 = time.time()
out = subprocess.run([args.detectron, "evaluate", "--gt", gt_path, "--results", dt_path, "--iou-type", args.iou_type, "--json", "--timing"],
                     check=True, capture_output=True, text=True)
t_sd = time.time() - t0
ours = json.loads(out.stdout.strip().splitlines()[-1])
names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
worst = max(abs(ours[n] - v) for n, v in zip(names, py["stats"]))
per_cat = max(abs(ours["per_category"][c] - v) for c, v in py["per_category"].items())
print("pycocotools: load gt %.2f s, total %.2f s" % (py["load"], py["total"]))
print("detectron evaluate: total %.2f s (%s)" % (t_sd, out.stderr.strip()))
print("speed-up: %.1fx; largest stat difference %.2e, per-category %.2e; AP %.4f" % (py["total"] / t_sd, worst, per_cat, ours["AP"]))
