#!/usr/bin/env python3
"""Checks that `detectron make-shapes` output loads in pycocotools and that `detectron evaluate`
agrees with pycocotools on it (ground truth jittered into detections).

    swift build --product detectron
    /tmp/venv/bin/python tools/check_shapes_with_pycocotools.py [--detectron .build/debug/detectron]
"""
import argparse
import contextlib
import io
import json
import os
import random
import subprocess
import tempfile

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ap = argparse.ArgumentParser()
ap.add_argument("--detectron", default=os.path.join(os.path.dirname(__file__), "..", ".build", "debug", "detectron"))
args = ap.parse_args()
out = tempfile.mkdtemp()
subprocess.run([args.detectron, "make-shapes", "--out", out, "--train", "10", "--val", "60", "--seed", "4"], check=True)
path = os.path.join(out, "annotations", "instances_val.json")
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(path)
assert len(gt.getImgIds()) == 60 and len(gt.getCatIds()) == 4, "unexpected counts"
for img in gt.loadImgs(gt.getImgIds()):
    assert os.path.exists(os.path.join(out, "val", img["file_name"])), img["file_name"]
rng = random.Random(1)
dets = []
for a in gt.loadAnns(gt.getAnnIds()):
    if rng.random() < 0.85:
        x, y, w, h = a["bbox"]
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"] if rng.random() < 0.9 else rng.randint(1, 4),
                     "bbox": [x + rng.uniform(-3, 3), y + rng.uniform(-3, 3), w * rng.uniform(0.85, 1.15), h * rng.uniform(0.85, 1.15)],
                     "score": rng.random()})
dt_path = os.path.join(out, "dets.json")
json.dump(dets, open(dt_path, "w"))
with contextlib.redirect_stdout(io.StringIO()):
    ev = COCOeval(gt, gt.loadRes(dt_path), "bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
ours = json.loads(subprocess.run([args.detectron, "evaluate", "--gt", path, "--results", dt_path, "--json"],
                                 check=True, capture_output=True, text=True).stdout)
names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
worst = max(abs(ours[n] - float(s)) for n, s in zip(names, ev.stats))
print("make-shapes output loads in pycocotools: %d images, %d annotations (%d crowd)" % (
    len(gt.getImgIds()), len(gt.getAnnIds()), len(gt.getAnnIds(iscrowd=True))))
print("pycocotools AP %.4f, detectron evaluate AP %.4f, largest stat difference %.2e" % (ev.stats[0], ours["AP"], worst))
assert worst <= 1e-4, "stats differ"
print("OK")
