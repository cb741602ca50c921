#!/usr/bin/env python3
"""Generates COCOeval fixtures: ground truth, detections and pycocotools' results.

Writes Tests/COCOTests/Fixtures/cocoeval/<case>_{gt,dt,expected}.json. The Swift tests compare
COCOEvaluator's 12 stats and per-category AP with `expected` (within 1e-4); Python is never
needed to run the tests.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install pycocotools numpy
    /tmp/venv/bin/python tools/make_cocoeval_fixtures.py
"""
import contextlib
import io
import json
import math
import os
import random

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "COCOTests", "Fixtures", "cocoeval")


def rbox(rng, w, h, smin=2, smax=None):
    smax = smax or min(w, h) // 2
    bw, bh = rng.uniform(smin, smax), rng.uniform(smin, smax)
    x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)]


def jitter(rng, b, amount):
    x, y, w, h = b
    return [round(x + rng.uniform(-amount, amount) * w, 2), round(y + rng.uniform(-amount, amount) * h, 2),
            round(max(0.5, w * (1 + rng.uniform(-amount, amount))), 2), round(max(0.5, h * (1 + rng.uniform(-amount, amount))), 2)]


def make_case(seed, n_images, n_cats, gt_per_image, det_per_image, crowd_p=0.0, empty_p=0.0, nodet_p=0.0,
              tie_scores=False, size_range=None, ignore_p=0.0, area_from_segm=False, perfect=False, extra_cat_dets=False):
    rng = random.Random(seed)
    cats = [{"id": c, "name": "c%d" % c, "supercategory": "s"} for c in range(1, n_cats + 1)]
    if extra_cat_dets:
        cats.append({"id": n_cats + 1, "name": "no_gt", "supercategory": "s"})
    images, anns, dets = [], [], []
    aid = 1
    for i in range(1, n_images + 1):
        w, h = rng.choice([(640, 480), (480, 640), (320, 240), (1000, 800)])
        images.append({"id": i * 3, "file_name": "%d.jpg" % i, "width": w, "height": h})
        if rng.random() < empty_p:
            gts = []
        else:
            gts = []
            for _ in range(rng.randint(1, gt_per_image)):
                b = rbox(rng, w, h, *(size_range or (2, None)))
                cat = rng.randint(1, n_cats)
                crowd = 1 if rng.random() < crowd_p else 0
                area = b[2] * b[3]
                if area_from_segm:
                    area = round(area * rng.uniform(0.4, 1.0), 2)
                a = {"id": aid, "image_id": i * 3, "category_id": cat, "bbox": b, "area": area, "iscrowd": crowd,
                     "segmentation": [[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3]]]}
                if rng.random() < ignore_p:
                    a["ignore"] = 1
                anns.append(a)
                gts.append(a)
                aid += 1
        if rng.random() < nodet_p:
            continue
        for g in gts:
            if perfect:
                dets.append({"image_id": i * 3, "category_id": g["category_id"], "bbox": g["bbox"], "score": round(rng.uniform(0.5, 1), 3)})
            elif rng.random() < 0.8:
                dets.append({"image_id": i * 3, "category_id": g["category_id"] if rng.random() < 0.85 else rng.randint(1, n_cats),
                             "bbox": jitter(rng, g["bbox"], rng.choice([0.02, 0.1, 0.25])), "score": 0})
        if not perfect:
            for _ in range(rng.randint(0, det_per_image)):
                dets.append({"image_id": i * 3, "category_id": rng.randint(1, n_cats + (1 if extra_cat_dets else 0)),
                             "bbox": rbox(rng, w, h, *(size_range or (2, None))), "score": 0})
    for d in dets:
        if d["score"] == 0:
            d["score"] = round(rng.choice([0.5, 0.7, 0.9]) if tie_scores else rng.uniform(0.01, 1.0), 4)
    return {"images": images, "annotations": anns, "categories": cats}, dets


def evaluate(gt, dets, iou_type="bbox"):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        res = coco.loadRes(json.loads(json.dumps(dets)))
        ev = COCOeval(coco, res, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # Detectron's per-category AP: mean precision over IoU 0.50:0.95, area all, 100 dets.
    per = {}
    for k, cat in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, 2]
        v = p[p > -1]
        per[str(cat)] = float(np.mean(v)) if v.size else -1.0
    return {"stats": [float(s) for s in ev.stats], "per_category": per}


CASES = {
    "basic": dict(seed=1, n_images=6, n_cats=3, gt_per_image=4, det_per_image=3),
    "crowds": dict(seed=2, n_images=8, n_cats=2, gt_per_image=5, det_per_image=4, crowd_p=0.3),
    "empty_images": dict(seed=3, n_images=10, n_cats=3, gt_per_image=3, det_per_image=4, empty_p=0.4),
    "images_without_detections": dict(seed=4, n_images=10, n_cats=3, gt_per_image=3, det_per_image=2, nodet_p=0.4),
    "tied_scores": dict(seed=5, n_images=8, n_cats=2, gt_per_image=6, det_per_image=6, tie_scores=True),
    "tiny_and_huge": dict(seed=6, n_images=10, n_cats=3, gt_per_image=5, det_per_image=4, size_range=(1, 600)),
    "many_categories": dict(seed=7, n_images=30, n_cats=80, gt_per_image=8, det_per_image=10),
    "over_100_detections": dict(seed=8, n_images=4, n_cats=2, gt_per_image=20, det_per_image=140),
    "category_without_gt": dict(seed=9, n_images=8, n_cats=3, gt_per_image=3, det_per_image=3, extra_cat_dets=True),
    "ignore_flags_and_segment_areas": dict(seed=10, n_images=10, n_cats=3, gt_per_image=5, det_per_image=3, ignore_p=0.3, area_from_segm=True),
    "perfect": dict(seed=11, n_images=5, n_cats=2, gt_per_image=4, det_per_image=0, perfect=True),
    "large_random": dict(seed=12, n_images=150, n_cats=20, gt_per_image=10, det_per_image=25, crowd_p=0.05, empty_p=0.05),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, kw in CASES.items():
        gt, dets = make_case(**kw)
        expected = evaluate(gt, dets)
        for suffix, obj in (("gt", gt), ("dt", dets), ("expected", expected)):
            with open(os.path.join(OUT, "%s_%s.json" % (name, suffix)), "w") as f:
                json.dump(obj, f, separators=(",", ":"))
        print("%-32s AP %.4f AP50 %.4f AR100 %.4f" % (name, expected["stats"][0], expected["stats"][1], expected["stats"][8]))


if __name__ == "__main__":
    main()
