#!/usr/bin/env python3
"""COCO box AP: pycocotools against `detectron evaluate`, on the same files, in one run.

Makes a val2017-sized ground truth (5,000 images, ~36k boxes with polygons, 80 categories) and
5,000 × 100 detections, then times pycocotools (load, loadRes, evaluate, accumulate, summarize)
and the release `detectron evaluate` (same work), checks the 12 stats agree, and prints both.

    swift build -c release --product detectron
    /tmp/venv/bin/python tools/bench_cocoeval.py [--images 5000]
"""
import argparse
import contextlib
import io
import json
import os
import random
import subprocess
import tempfile
import time

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ap = argparse.ArgumentParser()
ap.add_argument("--images", type=int, default=5000)
ap.add_argument("--detectron", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "detectron"))
args = ap.parse_args()
rng = random.Random(0)
cats = [{"id": c, "name": "c%d" % c, "supercategory": "s"} for c in range(1, 91) if c % 9 != 0][:80]
images, anns, dets = [], [], []
for i in range(1, args.images + 1):
    w, h = rng.choice([(640, 480), (480, 640), (640, 427)])
    images.append({"id": i, "file_name": "%012d.jpg" % i, "width": w, "height": h})
    gts = []
    for _ in range(rng.randint(1, 13)):
        bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
        b = [round(rng.uniform(0, w - bw), 2), round(rng.uniform(0, h - bh), 2), round(bw, 2), round(bh, 2)]
        poly = [round(rng.uniform(0, w), 2) for _ in range(rng.randint(8, 40))]
        a = {"id": len(anns) + 1, "image_id": i, "category_id": rng.choice(cats)["id"], "bbox": b, "area": round(bw * bh * 0.7, 2),
             "iscrowd": 1 if rng.random() < 0.01 else 0, "segmentation": [poly]}
        anns.append(a)
        gts.append(a)
    for k in range(100):
        if k < len(gts) and rng.random() < 0.7:
            g = gts[k]
            b = [round(g["bbox"][0] + rng.uniform(-5, 5), 2), round(g["bbox"][1] + rng.uniform(-5, 5), 2), g["bbox"][2], g["bbox"][3]]
            cat = g["category_id"]
        else:
            bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
            b = [round(rng.uniform(0, w - bw), 2), round(rng.uniform(0, h - bh), 2), round(bw, 2), round(bh, 2)]
            cat = rng.choice(cats)["id"]
        dets.append({"image_id": i, "category_id": cat, "bbox": b, "score": round(rng.random(), 4)})
tmp = tempfile.mkdtemp()
gt_path, dt_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "dt.json")
json.dump({"images": images, "annotations": anns, "categories": cats}, open(gt_path, "w"))
json.dump(dets, open(dt_path, "w"))
print("%d images, %d boxes, %d detections; gt %.1f MB, results %.1f MB" % (
    len(images), len(anns), len(dets), os.path.getsize(gt_path) / 1e6, os.path.getsize(dt_path) / 1e6))

t0 = time.time()
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(gt_path)
t_load = time.time() - t0
with contextlib.redirect_stdout(io.StringIO()):
    res = gt.loadRes(dt_path)
    ev = COCOeval(gt, res, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
t_py = time.time() - t0

t0 = time.time()
out = subprocess.run([args.detectron, "evaluate", "--gt", gt_path, "--results", dt_path, "--json", "--timing"],
                     check=True, capture_output=True, text=True)
t_sd = time.time() - t0
ours = json.loads(out.stdout.strip().splitlines()[-1])
names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
worst = max(abs(ours[n] - float(s)) for n, s in zip(names, ev.stats))
print("pycocotools: load gt %.2f s, total %.2f s" % (t_load, t_py))
print("detectron evaluate: total %.2f s (%s)" % (t_sd, out.stderr.strip()))
print("speed-up: %.1fx; largest stat difference %.2e; AP %.4f" % (t_py / t_sd, worst, ours["AP"]))
