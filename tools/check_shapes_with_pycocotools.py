#!/usr/bin/env python3
"""Checks that `detectron make-shapes` output loads in pycocotools, that `annToMask` reads every
segmentation (polygons of objects, compressed RLE of crowds), and that `detectron evaluate`
agrees with pycocotools on it, boxes and masks (ground truth jittered into detections).

    swift build --product detectron
    /work/venv/bin/python tools/check_shapes_with_pycocotools.py [--detectron .build/debug/detectron]
"""
import argparse
import atexit
import contextlib
import io
import json
import os
import random
import shutil
import subprocess
import tempfile

import numpy as np
from pycocotools import mask as maskUtils

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ap = argparse.ArgumentParser()
ap.add_argument("--detectron", default=os.path.join(os.path.dirname(__file__), "..", ".build", "debug", "detectron"))
args = ap.parse_args()
out = tempfile.mkdtemp()
atexit.register(shutil.rmtree, out, True)
subprocess.run([args.detectron, "make-shapes", "--out", out, "--train", "10", "--val", "60", "--seed", "4"], check=True)
path = os.path.join(out, "annotations", "instances_val.json")
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(path)
assert len(gt.getImgIds()) == 60 and len(gt.getCatIds()) == 4, "unexpected counts"
for img in gt.loadImgs(gt.getImgIds()):
    assert os.path.exists(os.path.join(out, "val", img["file_name"])), img["file_name"]
# Every segmentation rasterises; a crowd's RLE has exactly its area, an object's polygons about it.
ratios = []
for a in gt.loadAnns(gt.getAnnIds()):
    img = gt.imgs[a["image_id"]]
    m = gt.annToMask(a)
    assert m.shape == (img["height"], img["width"]), a["id"]
    if a["iscrowd"]:
        assert isinstance(a["segmentation"]["counts"], str) and m.sum() == a["area"], a["id"]
    else:
        assert all(len(p) >= 6 for p in a["segmentation"]), a["id"]
        ratios.append(m.sum() / a["area"])
print("annToMask: %d masks; object mask pixels / area: min %.3f, median %.3f, max %.3f" % (
    len(gt.getAnnIds()), min(ratios), float(np.median(ratios)), max(ratios)))
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
print("bbox: pycocotools AP %.4f, detectron evaluate AP %.4f, largest stat difference %.2e" % (ev.stats[0], ours["AP"], worst))
assert worst <= 1e-4, "bbox stats differ"

# Masks as Detectron writes them (compressed RLE, no bbox): the ground truth's, shifted a little.
segms = []
for a in gt.loadAnns(gt.getAnnIds(iscrowd=False)):
    if rng.random() < 0.85:
        m = np.roll(np.roll(gt.annToMask(a), rng.randint(-2, 2), axis=0), rng.randint(-2, 2), axis=1)
        rle = maskUtils.encode(np.asfortranarray(m))
        segms.append({"image_id": a["image_id"], "category_id": a["category_id"] if rng.random() < 0.9 else rng.randint(1, 4),
                      "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}, "score": rng.random()})
segm_path = os.path.join(out, "segms.json")
json.dump(segms, open(segm_path, "w"))
with contextlib.redirect_stdout(io.StringIO()):
    ev = COCOeval(gt, gt.loadRes(segm_path), "segm")
    ev.evaluate(); ev.accumulate(); ev.summarize()
ours = json.loads(subprocess.run([args.detectron, "evaluate", "--gt", path, "--results", segm_path, "--iou-type", "segm", "--json"],
                                 check=True, capture_output=True, text=True).stdout)
worst = max(abs(ours[n] - float(s)) for n, s in zip(names, ev.stats))
print("segm: pycocotools AP %.4f, detectron evaluate AP %.4f, largest stat difference %.2e" % (ev.stats[0], ours["AP"], worst))
assert worst <= 1e-4, "segm stats differ"
print("OK")
