#!/usr/bin/env python3
"""Writes Tests/EngineTests/Fixtures/mask_rcnn/*.json: Detectron's Mask R-CNN target and result
arithmetic on constructed cases, computed the way Detectron computes them (numpy float32,
pycocotools, OpenCV), for the Swift tests (which never run Python).

- targets.json: `roi_data/mask_rcnn.add_mask_rcnn_blobs` pieces: each fg RoI matched to a ground
  truth by IoU (+1, float32) against the boxes of the polygons (`segms.polys_to_boxes`), and the
  matched polygons rasterised in the RoI's frame at M×M (`segms.polys_to_mask_wrt_box`: a square,
  a concave polygon, two parts, a box larger than the polygon, a polygon leaving the box, a box
  under one pixel wide).
- segm_results.json: `core/test.segm_results` for one detection at a time: the M×M soft mask
  padded by one zero pixel, the box expanded by (M + 2)/M and truncated to int32, cv2.resize
  (INTER_LINEAR) to the integer box's size, `> 0.5`, pasted clipped into the image.

Needs numpy, pycocotools and opencv-python-headless, in a virtual environment outside the repository:
    python3 -m venv /work/venv && /work/venv/bin/pip install numpy pycocotools opencv-python-headless
    /work/venv/bin/python tools/make_mask_rcnn_fixtures.py
"""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "EngineTests", "Fixtures", "mask_rcnn")


def polys_to_mask_wrt_box(polygons, box, m):
    """Detectron's segms.polys_to_mask_wrt_box, float32 as there."""
    box = np.asarray(box, dtype=np.float32)
    w = np.maximum(box[2] - box[0], 1)
    h = np.maximum(box[3] - box[1], 1)
    norm = []
    for poly in polygons:
        p = np.array(poly, dtype=np.float32)
        p[0::2] = (p[0::2] - box[0]) * m / w
        p[1::2] = (p[1::2] - box[1]) * m / h
        norm.append(p)
    rle = mask_util.frPyObjects(norm, m, m)
    mask = np.array(mask_util.decode(rle), dtype=np.float32)
    return (np.sum(mask, axis=2) > 0).astype(np.int32)


def polys_to_boxes(polys):
    boxes = np.zeros((len(polys), 4), dtype=np.float32)
    for i, poly in enumerate(polys):
        boxes[i] = [min(min(p[::2]) for p in poly), min(min(p[1::2]) for p in poly),
                    max(max(p[::2]) for p in poly), max(max(p[1::2]) for p in poly)]
    return boxes


def bbox_overlaps(boxes, query):
    """utils/cython_bbox.bbox_overlaps: IoU with +1, in float32 (the Cython's DTYPE)."""
    boxes, query = boxes.astype(np.float32), query.astype(np.float32)
    one = np.float32(1)
    out = np.zeros((len(boxes), len(query)), dtype=np.float32)
    for k, q in enumerate(query):
        area = (q[2] - q[0] + one) * (q[3] - q[1] + one)
        for n, b in enumerate(boxes):
            iw = min(b[2], q[2]) - max(b[0], q[0]) + one
            if iw > 0:
                ih = min(b[3], q[3]) - max(b[1], q[1]) + one
                if ih > 0:
                    ua = np.float32((b[2] - b[0] + one) * (b[3] - b[1] + one) + area - iw * ih)
                    out[n, k] = iw * ih / ua
    return out


def targets():
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]
    concave = [[0, 0, 40, 0, 40, 10, 12, 10, 12, 40, 0, 40]]             # an L
    star = [[20, 0, 25, 15, 40, 15, 28, 24, 33, 40, 20, 30, 7, 40, 12, 24, 0, 15, 15, 15]]
    two_parts = [[5, 5, 15, 5, 15, 20, 5, 20], [25, 8.5, 38.25, 8.5, 31.5, 30.75]]
    gts = [square, concave, star, two_parts]
    cases = [
        ("square in its own box", 0, [10, 10, 30, 30], 14),
        ("square, box larger than the polygon", 0, [0, 0, 40, 40], 14),
        ("concave L", 1, [0, 0, 40, 40], 28),
        ("concave L, box cutting the polygon", 1, [5.5, -3.25, 25.75, 20.5], 28),
        ("star", 2, [0, 0, 40, 40], 28),
        ("two parts", 3, [5, 5, 38.25, 30.75], 28),
        ("two parts, a box under one pixel wide", 3, [10.2, 10, 10.7, 25], 14),
        ("star, odd resolution and fractional box", 2, [1.3, 2.7, 37.9, 41.1], 15),
    ]
    out = {"polygons": gts, "boxes": polys_to_boxes(gts).tolist(), "cases": []}
    for name, gt, box, m in cases:
        out["cases"].append({"name": name, "polygons": gts[gt], "box": box, "resolution": m,
                             "mask": "".join(str(v) for v in polys_to_mask_wrt_box(gts[gt], box, m).reshape(-1))})
    # Matching: fg rois against the polygon boxes, argmax (first on ties).
    rois = np.array([[10, 10, 30, 30], [0, 0, 40, 40], [4, 4, 16, 21], [24, 8, 39, 31], [0, 0, 12, 40], [100, 100, 120, 120]],
                    dtype=np.float32)
    overlaps = bbox_overlaps(rois, polys_to_boxes(gts))
    out["match_rois"] = rois.tolist()
    out["match_overlaps"] = overlaps.tolist()
    out["match"] = np.argmax(overlaps, axis=1).tolist()
    return out


def segm_result(probs, box, height, width, m):
    """core/test.segm_results for one detection."""
    scale = (m + 2.0) / m
    box = np.array([box], dtype=np.float32)
    w_half = (box[:, 2] - box[:, 0]) * .5
    h_half = (box[:, 3] - box[:, 1]) * .5
    x_c = (box[:, 2] + box[:, 0]) * .5
    y_c = (box[:, 3] + box[:, 1]) * .5
    w_half *= scale
    h_half *= scale
    exp = np.zeros(box.shape, dtype=np.float32)
    exp[:, 0], exp[:, 2] = x_c - w_half, x_c + w_half
    exp[:, 1], exp[:, 3] = y_c - h_half, y_c + h_half
    ref = exp.astype(np.int32)[0]
    padded = np.zeros((m + 2, m + 2), dtype=np.float32)
    padded[1:-1, 1:-1] = probs
    w = max(ref[2] - ref[0] + 1, 1)
    h = max(ref[3] - ref[1] + 1, 1)
    mask = np.array(cv2.resize(padded, (int(w), int(h))) > 0.5, dtype=np.uint8)
    im = np.zeros((height, width), dtype=np.uint8)
    x0, x1 = max(ref[0], 0), min(ref[2] + 1, width)
    y0, y1 = max(ref[1], 0), min(ref[3] + 1, height)
    if x0 < x1 and y0 < y1:
        im[y0:y1, x0:x1] = mask[(y0 - ref[1]):(y1 - ref[1]), (x0 - ref[0]):(x1 - ref[0])]
    return im


def segm_results():
    rng = np.random.RandomState(0)
    height, width = 50, 60
    cases = []
    for m, box in [(28, [10.4, 5.2, 40.9, 33.7]), (28, [-6.5, -3.0, 20.25, 18.5]), (14, [40.0, 30.0, 75.5, 62.0]),
                   (28, [29.0, 22.0, 30.2, 22.9]), (14, [0.0, 0.0, 59.0, 49.0]), (28, [12.0, 8.0, 26.0, 22.0])]:
        # A smooth blob plus noise: most of the mask is far from 0.5, its edge is not.
        y, x = np.mgrid[0:m, 0:m]
        blob = np.exp(-(((x - m * 0.45) / (m * 0.3)) ** 2 + ((y - m * 0.55) / (m * 0.25)) ** 2))
        # Three decimals, so that the JSON holds the float32 values the mask was computed from.
        probs = np.round(np.clip(blob + rng.uniform(-0.15, 0.15, (m, m)), 0, 1), 3).astype(np.float32)
        im = segm_result(probs, box, height, width, m)
        cases.append({"resolution": m, "box": box, "probs": [round(float(v), 3) for v in probs.reshape(-1)],
                      "mask": "".join(str(v) for v in im.reshape(-1))})
    return {"height": height, "width": width, "threshold": 0.5, "cases": cases}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in (("targets", targets()), ("segm_results", segm_results())):
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(data, f, separators=(",", ":"))
    print("wrote", OUT, "(opencv", cv2.__version__ + ")")


if __name__ == "__main__":
    main()
