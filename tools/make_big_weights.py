#!/usr/bin/env python3
"""Writes two ~167 MB weight files for the read benchmark (docs/benchmarks.md): torchvision's
fasterrcnn_resnet50_fpn state_dict with random weights (no download) as torch.save writes it, and
the same arrays as a Detectron-style pickle ({'blobs': {name: ndarray}}, protocol 2).

  ../venv/bin/python tools/make_big_weights.py OUT_DIR      (needs torch, torchvision, numpy)
"""
import os
import pickle
import sys

import torch
import torchvision

out = sys.argv[1] if len(sys.argv) > 1 else "."
torch.manual_seed(0)
model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
state = model.state_dict()
torch.save(state, os.path.join(out, "fasterrcnn_resnet50_fpn_random.pth"))
blobs = {k.replace(".", "_"): v.numpy() for k, v in state.items()}
with open(os.path.join(out, "detectron_style_big.pkl"), "wb") as f:
    pickle.dump({"blobs": blobs, "cfg": "MODEL:\n  NUM_CLASSES: 91\n"}, f, protocol=2)
for name in ("fasterrcnn_resnet50_fpn_random.pth", "detectron_style_big.pkl"):
    print(name, os.path.getsize(os.path.join(out, name)) // 1_000_000, "MB")
