#!/usr/bin/env python3
"""Generates the mask API and segm COCOeval fixtures from pycocotools.

Writes Tests/COCOTests/Fixtures/masks/*.json (encode, decode, the compressed string, area,
toBbox, frPoly, frBbox, merge, iou) and Tests/COCOTests/Fixtures/cocoeval_segm/<case>_{gt,dt,
expected}.json (COCOeval(gt, dt, 'segm'): the 12 stats and Detectron's per-category AP). The Swift
tests compare RLE with them run for run and string for string; Python is never needed to run
the tests.

    /work/venv/bin/python tools/make_mask_fixtures.py     # pycocotools, numpy
"""
import json
import math
import os
import random

import numpy as np
from make_cocoeval_fixtures import evaluate
from pycocotools import _mask
from pycocotools import mask as maskUtils

ROOT = os.path.join(os.path.dirname(__file__), "..", "Tests", "COCOTests", "Fixtures")


def counts_of(rle):
    """The run lengths of a compressed RLE (rleFrString), to store them next to the string."""
    s, counts, p = rle["counts"], [], 0
    s = s.decode() if isinstance(s, bytes) else s
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def text(rle):
    return rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]


def r2(rng, lo, hi, digits):
    return round(rng.uniform(lo, hi), digits)


# MARK: polygons

def random_polygon(rng, h, w, kind):
    if kind == "convex":
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.5, max(h, w) / 2)
        angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(rng.randint(3, 9)))
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    elif kind == "concave":  # a star: radii alternate
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, max(h, w) / 2)
        n = rng.randint(4, 8)
        pts = [(cx + (r if i % 2 == 0 else r * rng.uniform(0.2, 0.6)) * math.cos(i * math.pi / n),
                cy + (r if i % 2 == 0 else r * rng.uniform(0.2, 0.6)) * math.sin(i * math.pi / n)) for i in range(2 * n)]
    elif kind == "outside":  # partly or wholly outside the image, negative coordinates
        pts = [(rng.uniform(-w, 2 * w), rng.uniform(-h, 2 * h)) for _ in range(rng.randint(3, 8))]
    elif kind == "negative":  # just left of / above the image, where C's (int) truncates toward 0
        pts = [(rng.uniform(-2, 3), rng.uniform(-2, 3)) for _ in range(rng.randint(3, 6))]
    elif kind == "tiny":
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        pts = [(x + rng.uniform(-0.6, 0.6), y + rng.uniform(-0.6, 0.6)) for _ in range(rng.randint(3, 5))]
    elif kind == "self_intersecting":
        pts = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(rng.randint(4, 9))]
    elif kind == "lattice":  # vertices on tenths, halves and pixel edges: the rounding ties
        step = rng.choice([0.1, 0.2, 0.5, 1.0])
        pts = [(round(rng.randint(-2, int(w / step) + 2) * step, 1), round(rng.randint(-2, int(h / step) + 2) * step, 1))
               for _ in range(rng.randint(3, 7))]
    elif kind == "long_edges":  # far outside: long edges, steep and shallow
        pts = [(rng.uniform(-3000, 3000), rng.uniform(-3000, 3000)) for _ in range(rng.randint(3, 5))]
    else:
        raise ValueError(kind)
    flat = []
    for x, y in pts:
        flat += [round(x, rng.choice([1, 2, 3, 6])), round(y, rng.choice([1, 2, 3, 6]))]
    return flat


def frpoly_cases():
    rng = random.Random(101)
    cases = []
    sizes = [(1, 1), (1, 7), (7, 1), (5, 5), (12, 9), (9, 14), (24, 31), (40, 40)]
    kinds = ["convex", "concave", "outside", "negative", "tiny", "self_intersecting", "lattice", "long_edges"]
    for kind in kinds:
        for _ in range(30):
            h, w = rng.choice(sizes)
            cases.append((kind, h, w, random_polygon(rng, h, w, kind)))
    # Odd coordinate counts (the trailing one is ignored), 2-vertex and 1-vertex polygons,
    # repeated vertices, axis-aligned edges, the "first pixel" box of mask.py.
    cases += [
        ("odd_count", 10, 10, [1.2, 1.5, 8.7, 2.0, 5.0, 9.1, 3.3]),
        ("odd_count", 6, 8, [0.0, 0.0, 7.9, 0.4, 4.0, 5.6, 1.0, 5.0, 0.5]),
        ("two_vertices", 5, 5, [1.5, 1.5, 3.0, 4.0]),
        ("one_vertex", 5, 5, [1.5, 1.5]),
        ("repeated_vertices", 10, 10, [1.0, 1.0, 1.0, 1.0, 8.0, 1.0, 8.0, 1.0, 8.0, 8.0, 1.0, 8.0, 1.0, 8.0]),
        ("axis_aligned", 10, 10, [2.0, 2.0, 7.0, 2.0, 7.0, 7.0, 2.0, 7.0]),
        ("first_pixel", 3, 3, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]),
        ("whole_image", 6, 4, [0.0, 0.0, 4.0, 0.0, 4.0, 6.0, 0.0, 6.0]),
        ("beyond_image", 6, 4, [-10.0, -10.0, 50.0, -10.0, 50.0, 50.0, -10.0, 50.0]),
        ("one_pixel_image", 1, 1, [0.4, 0.4, 0.6, 0.4, 0.6, 0.6]),
        ("one_pixel_image", 1, 1, [-0.5, -0.5, 1.5, -0.5, 0.5, 1.5]),
        ("bottom_row", 4, 4, [0.0, 2.5, 4.0, 2.5, 4.0, 9.0, 0.0, 9.0]),
    ]
    out = []
    for kind, h, w, poly in cases:
        rle = _mask.frPoly([poly], h, w)[0]
        out.append({"kind": kind, "h": h, "w": w, "polygon": poly, "counts": counts_of(rle), "string": text(rle)})
    return out


def frbbox_cases():
    rng = random.Random(102)
    boxes = [[0, 0, 1, 1], [0.5, 0.5, 1, 1], [2.4, 1.6, 3.2, 0.3], [-3, -2, 5, 4], [5, 5, 100, 100], [1, 1, 0, 0]]
    boxes += [[r2(rng, -5, 20, 2), r2(rng, -5, 20, 2), r2(rng, 0, 15, 2), r2(rng, 0, 15, 2)] for _ in range(30)]
    out = []
    for b in boxes:
        h, w = rng.choice([(10, 12), (16, 16), (1, 1), (20, 9)])
        rle = _mask.frBbox(np.array([b], dtype=np.double), h, w)[0]
        out.append({"h": h, "w": w, "box": b, "counts": counts_of(rle), "string": text(rle)})
    return out


# MARK: encode, decode, area, toBbox, strings

def random_mask(rng, h, w, kind):
    if kind == "empty":
        return np.zeros((h, w), np.uint8)
    if kind == "full":
        return np.ones((h, w), np.uint8)
    if kind == "noise":
        return (np.array([[rng.random() for _ in range(w)] for _ in range(h)]) < rng.uniform(0.1, 0.9)).astype(np.uint8)
    if kind == "blob":
        m = np.zeros((h, w), np.uint8)
        for _ in range(rng.randint(1, 3)):
            y0, x0 = rng.randint(0, h - 1), rng.randint(0, w - 1)
            m[y0:y0 + rng.randint(1, h), x0:x0 + rng.randint(1, w)] = 1
        return m
    if kind == "wrap":  # a run of 1s that continues from one column into the next (toBbox's full-height rule)
        m = np.zeros((h, w), np.uint8)
        c = rng.randint(0, w - 2) if w > 1 else 0
        m[h - rng.randint(1, h):, c] = 1
        if w > 1:
            m[:rng.randint(1, h), c + 1] = 1
        return m
    raise ValueError(kind)


def rle_cases():
    rng = random.Random(103)
    out = []
    specs = [(1, 1, "empty"), (1, 1, "full"), (1, 5, "noise"), (5, 1, "noise"), (3, 4, "full"), (6, 6, "empty")]
    specs += [(rng.randint(1, 16), rng.randint(1, 16), rng.choice(["noise", "blob", "blob", "wrap", "wrap"])) for _ in range(40)]
    for h, w, kind in specs:
        m = random_mask(rng, h, w, kind)
        rle = maskUtils.encode(np.asfortranarray(m))
        assert (maskUtils.decode(rle) == m).all()
        out.append({"kind": kind, "h": h, "w": w, "mask": ["".join(str(v) for v in row) for row in m],
                    "counts": counts_of(rle), "string": text(rle), "area": int(maskUtils.area(rle)),
                    "bbox": [float(v) for v in maskUtils.toBbox(rle)]})
    return out


def string_cases():
    """Counts with large values and large differences (multi-group numbers, negative deltas)."""
    rng = random.Random(104)
    out = []
    lists = [[0], [5], [2, 3, 1, 1], [0, 6, 1], [100], [16], [15], [31, 32, 33], [0, 1, 0, 1, 0]]
    for _ in range(12):
        n = rng.randint(1, 12)
        lists.append([rng.choice([0, 1, 15, 16, 17, 31, 32, 500, 1023, 1024, 70000, 2 ** 20 + 3, 2 ** 28 - 1]) for _ in range(n)])
    for counts in lists:
        total = sum(counts)
        # frUncompressedRLE takes any run list; a 1×total mask holds it.
        rle = _mask.frUncompressedRLE([{"size": [1, total], "counts": counts}], 1, total)[0]
        assert counts_of(rle) == counts
        out.append({"h": 1, "w": total, "counts": counts, "string": text(rle), "area": int(maskUtils.area(rle)),
                    "bbox": [float(v) for v in maskUtils.toBbox(rle)]})
    return out


# MARK: merge and iou

def random_rle(rng, h, w):
    kind = rng.choice(["poly", "poly", "box", "empty", "noise"])
    if kind == "poly":
        rles = _mask.frPoly([random_polygon(rng, h, w, rng.choice(["convex", "concave", "self_intersecting"]))], h, w)
        return rles[0]
    if kind == "box":
        return _mask.frBbox(np.array([[r2(rng, -2, w, 1), r2(rng, -2, h, 1), r2(rng, 0, w, 1), r2(rng, 0, h, 1)]]), h, w)[0]
    return maskUtils.encode(np.asfortranarray(random_mask(rng, h, w, "empty" if kind == "empty" else "noise")))


def rle_json(rle):
    return {"size": [int(v) for v in rle["size"]], "counts": text(rle)}


def merge_cases():
    rng = random.Random(105)
    out = []
    for i in range(40):
        h, w = rng.choice([(8, 8), (13, 7), (20, 20)])
        rles = [random_rle(rng, h, w) for _ in range(rng.randint(0 if i < 2 else 1, 4))]
        intersect = bool(rng.random() < 0.4)
        merged = maskUtils.merge(rles, intersect=intersect) if rles else _mask.merge([], intersect)
        out.append({"rles": [rle_json(r) for r in rles], "intersect": intersect, "result": rle_json(merged),
                    "result_counts": counts_of(merged)})
    # Sizes that differ: pycocotools gives the empty 0×0 RLE.
    a, b = random_rle(rng, 8, 8), random_rle(rng, 8, 9)
    merged = maskUtils.merge([a, b])
    out.append({"rles": [rle_json(a), rle_json(b)], "intersect": False, "result": rle_json(merged), "result_counts": counts_of(merged)})
    return out


def iou_cases():
    rng = random.Random(106)
    out = []
    for i in range(25):
        h, w = rng.choice([(10, 10), (16, 12), (24, 24)])
        dt = [random_rle(rng, h, w) for _ in range(rng.randint(1, 5))]
        gt = [random_rle(rng, h, w) for _ in range(rng.randint(1, 5))]
        if i % 5 == 4:  # a ground truth of another size: −1 where the boxes overlap
            gt.append(random_rle(rng, h + 1, w))
        crowd = [int(rng.random() < 0.3) for _ in gt]
        o = maskUtils.iou(dt, gt, crowd)
        boxes_dt = [[r2(rng, -3, w, 2), r2(rng, -3, h, 2), r2(rng, 0, w, 2), r2(rng, 0, h, 2)] for _ in dt]
        boxes_gt = [[r2(rng, -3, w, 2), r2(rng, -3, h, 2), r2(rng, 0, w, 2), r2(rng, 0, h, 2)] for _ in gt]
        ob = maskUtils.iou(boxes_dt, boxes_gt, crowd)
        out.append({"dt": [rle_json(r) for r in dt], "gt": [rle_json(r) for r in gt], "iscrowd": crowd,
                    "iou": [[float(v) for v in row] for row in np.asarray(o)],
                    "dt_boxes": boxes_dt, "gt_boxes": boxes_gt, "box_iou": [[float(v) for v in row] for row in np.asarray(ob)]})
    return out


# MARK: COCOeval segm cases

def shape_polygon(rng, cx, cy, r, kind):
    if kind == "star":
        n = rng.randint(4, 7)
        return [round(v, 2) for i in range(2 * n) for v in (cx + (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / n),
                                                             cy + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / n))]
    n = rng.randint(3, 10)
    angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(n))
    return [round(v, 2) for a in angles for v in (cx + r * rng.uniform(0.7, 1.0) * math.cos(a), cy + r * rng.uniform(0.7, 1.0) * math.sin(a))]


def annotation_segmentation(rng, h, w, size, holes, parts):
    """Polygons: one or several parts; a ring (outer polygon and its hole as one self-overlapping
    polygon) for holes."""
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    r = size
    polys = [shape_polygon(rng, cx, cy, r, rng.choice(["star", "blob"]))]
    if holes and rng.random() < 0.5:
        # A hole: the ring's outer and inner loops in one polygon joined by a zero-width cut.
        outer = [(cx + r * math.cos(a * math.pi / 8), cy + r * math.sin(a * math.pi / 8)) for a in range(17)]
        inner = [(cx + 0.5 * r * math.cos(-a * math.pi / 8), cy + 0.5 * r * math.sin(-a * math.pi / 8)) for a in range(17)]
        polys = [[round(v, 2) for p in outer + inner for v in p]]
    if parts:
        for _ in range(rng.randint(1, 3)):
            polys.append(shape_polygon(rng, rng.uniform(0, w), rng.uniform(0, h), r * rng.uniform(0.2, 0.6), "blob"))
    return polys


def perturb_rle(rng, rle, h, w, amount):
    m = maskUtils.decode(rle).copy()
    dy, dx = rng.randint(-amount, amount), rng.randint(-amount, amount)
    m = np.roll(np.roll(m, dy, axis=0), dx, axis=1)
    if rng.random() < 0.3:
        flips = np.array([[rng.random() < 0.02 for _ in range(w)] for _ in range(h)])
        m = np.where(flips, 1 - m, m).astype(np.uint8)
    return maskUtils.encode(np.asfortranarray(m))


def make_segm_case(seed, n_images, n_cats, gt_per_image, det_per_image, crowd_p=0.0, empty_p=0.0, tie_scores=False,
                   holes=False, parts=False, size_range=(3.0, 12.0), extra_cat_dets=False, with_bbox=False, uncompressed_crowd=True, min_dets=0, boxes_only=False):
    rng = random.Random(seed)
    cats = [{"id": c * 2, "name": "c%d" % c, "supercategory": "s"} for c in range(1, n_cats + 1)]
    if extra_cat_dets:
        cats.append({"id": 99, "name": "no_gt", "supercategory": "s"})
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        h, w = rng.choice([(24, 32), (32, 24), (40, 40), (16, 20)])
        images.append({"id": i * 5, "file_name": "%d.jpg" % i, "width": w, "height": h})
        gts = []
        if rng.random() >= empty_p:
            for _ in range(rng.randint(1, gt_per_image)):
                cat = rng.choice(cats[:n_cats])["id"]
                crowd = rng.random() < crowd_p
                if crowd:
                    m = random_mask(rng, h, w, "blob")
                    rle = maskUtils.encode(np.asfortranarray(m))
                    if uncompressed_crowd:  # COCO's crowd regions: counts as a list
                        segm = {"size": [h, w], "counts": counts_of(rle)}
                    else:
                        segm = rle_json(rle)
                    area = float(maskUtils.area(rle))
                    bbox = [float(v) for v in maskUtils.toBbox(rle)]
                else:
                    size = rng.uniform(*size_range) if rng.random() > 0.1 else rng.choice([0.6, max(h, w) * 1.2])
                    segm = annotation_segmentation(rng, h, w, size, holes, parts)
                    rle = maskUtils.merge(maskUtils.frPyObjects(segm, h, w))
                    area = float(maskUtils.area(rle))
                    bbox = [float(v) for v in maskUtils.toBbox(rle)]
                    if area == 0:
                        continue
                a = {"id": len(anns) + 1, "image_id": i * 5, "category_id": cat, "segmentation": segm, "area": area,
                     "bbox": bbox, "iscrowd": int(crowd)}
                anns.append(a)
                gts.append((a, rle))
        for a, rle in gts:
            if rng.random() < 0.8:
                cat = a["category_id"] if rng.random() < 0.85 else rng.choice(cats)["id"]
                dets.append((i * 5, cat, perturb_rle(rng, rle, h, w, rng.choice([0, 0, 1, 2]))))
        for _ in range(rng.randint(min_dets, det_per_image)):
            cat = rng.choice(cats if extra_cat_dets else cats[:n_cats])["id"]
            m = random_mask(rng, h, w, rng.choice(["blob", "blob", "noise", "empty"]))
            dets.append((i * 5, cat, maskUtils.encode(np.asfortranarray(m))))
    results = []
    for img, cat, rle in dets:
        score = round(rng.choice([0.5, 0.7, 0.9]) if tie_scores else rng.uniform(0.01, 1.0), 4)
        r = {"image_id": img, "category_id": cat, "segmentation": rle_json(rle), "score": score}
        if with_bbox or boxes_only:
            r["bbox"] = [float(v) for v in maskUtils.toBbox(rle)]
        if boxes_only:  # loadRes rasterises the box as a polygon
            del r["segmentation"]
        results.append(r)
    return {"images": images, "annotations": anns, "categories": cats}, results


SEGM_CASES = {
    "basic": dict(seed=1, n_images=6, n_cats=3, gt_per_image=4, det_per_image=3),
    "holes_and_parts": dict(seed=2, n_images=8, n_cats=2, gt_per_image=4, det_per_image=3, holes=True, parts=True),
    "rle_crowds": dict(seed=3, n_images=8, n_cats=2, gt_per_image=5, det_per_image=4, crowd_p=0.3),
    "compressed_crowds": dict(seed=4, n_images=6, n_cats=2, gt_per_image=4, det_per_image=3, crowd_p=0.4, uncompressed_crowd=False),
    "empty_images": dict(seed=5, n_images=10, n_cats=3, gt_per_image=3, det_per_image=4, empty_p=0.4),
    "tied_scores": dict(seed=6, n_images=8, n_cats=2, gt_per_image=5, det_per_image=5, tie_scores=True),
    "tiny_and_image_sized": dict(seed=7, n_images=10, n_cats=3, gt_per_image=4, det_per_image=3, size_range=(0.4, 30.0)),
    "over_100_detections": dict(seed=8, n_images=2, n_cats=1, gt_per_image=12, det_per_image=130, min_dets=105),
    "category_without_gt": dict(seed=9, n_images=8, n_cats=3, gt_per_image=3, det_per_image=3, extra_cat_dets=True),
    "results_with_bbox": dict(seed=10, n_images=8, n_cats=2, gt_per_image=4, det_per_image=3, with_bbox=True),
    "box_results": dict(seed=12, n_images=8, n_cats=2, gt_per_image=4, det_per_image=3, boxes_only=True),
    "many_categories": dict(seed=11, n_images=12, n_cats=25, gt_per_image=6, det_per_image=6, crowd_p=0.05, parts=True),
}


def write(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))


def main():
    masks = os.path.join(ROOT, "masks")
    os.makedirs(masks, exist_ok=True)
    for name, make in (("frpoly", frpoly_cases), ("frbbox", frbbox_cases), ("rle", rle_cases), ("strings", string_cases),
                       ("merge", merge_cases), ("iou", iou_cases)):
        cases = make()
        write(os.path.join(masks, name + ".json"), cases)
        print("masks/%-12s %3d cases" % (name + ".json", len(cases)))
    segm = os.path.join(ROOT, "cocoeval_segm")
    os.makedirs(segm, exist_ok=True)
    for name, kw in SEGM_CASES.items():
        gt, dets = make_segm_case(**kw)
        expected = evaluate(gt, dets, "segm")
        for suffix, obj in (("gt", gt), ("dt", dets), ("expected", expected)):
            write(os.path.join(segm, "%s_%s.json" % (name, suffix)), obj)
        print("cocoeval_segm/%-24s %3d anns %4d dets  AP %.4f AP50 %.4f AR100 %.4f" % (
            name, len(gt["annotations"]), len(dets), expected["stats"][0], expected["stats"][1], expected["stats"][8]))


if __name__ == "__main__":
    main()
