#!/usr/bin/env python3
"""Writes OpenCV resize fixtures for Tests/ImagingTests: cv2.resize(INTER_LINEAR) outputs for small
random images, 8-bit and float32 (Detectron resizes mean-subtracted float32 images).

Each case is one JSON file: {"width", "height", "channels", "fx", "fy", "dtype", "input": [...],
"output": [...], "out_width", "out_height"}.

    /tmp/venv/bin/pip install opencv-python-headless numpy
    /tmp/venv/bin/python tools/make_resize_fixtures.py
"""
import json
import os

import cv2
import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "ImagingTests", "Fixtures", "resize")
os.makedirs(OUT, exist_ok=True)
rng = np.random.RandomState(0)
cases = [(23, 17, 1.0417), (40, 30, 0.5), (31, 45, 0.77), (12, 9, 2.0), (19, 21, 1.3), (64, 48, 0.3333)]
for i, (w, h, s) in enumerate(cases):
    im = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
    for dtype in ("uint8", "float32"):
        src = im if dtype == "uint8" else im.astype(np.float32) - np.array([102.9801, 115.9465, 122.7717], dtype=np.float32)
        out = cv2.resize(src, None, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        case = {"width": w, "height": h, "channels": 3, "fx": s, "fy": s, "dtype": dtype,
                "input": [round(float(v), 4) for v in src.reshape(-1)],
                "output": [round(float(v), 4) for v in out.reshape(-1)],
                "out_width": int(out.shape[1]), "out_height": int(out.shape[0])}
        with open(os.path.join(OUT, "case%d_%s.json" % (i, dtype)), "w") as f:
            json.dump(case, f, separators=(",", ":"))
print("cv2", cv2.__version__, "wrote", len(os.listdir(OUT)), "cases")
