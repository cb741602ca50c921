#!/usr/bin/env python3
"""Writes the pickle fixtures of Tests/PickleTests/Fixtures with numpy and torch, and the values
the Swift reader must find in them (expected.json).

Run from the repository root, in a virtual environment outside it:
  python3 -m venv ../venv && ../venv/bin/pip install numpy torch
  ../venv/bin/python tools/make_pickle_fixtures.py
"""
import collections
import json
import os
import pickle

import numpy as np
import torch

out = os.path.join(os.path.dirname(__file__), "..", "Tests", "PickleTests", "Fixtures")
os.makedirs(out, exist_ok=True)
expected = {}


def describe(a):
    a = np.asarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "values": [float(v) for v in a.astype(np.float64).ravel(order="C")]}


# A Detectron model-zoo style checkpoint: {'blobs': {name: ndarray}, 'cfg': yaml text}, as
# Detectron's save_object writes it (protocol 2), plus the same dict at protocols 4 and 5.
rng = np.random.RandomState(7)
blobs = collections.OrderedDict()
blobs["conv1_w"] = rng.randn(2, 3, 3, 3).astype(np.float32)
blobs["res_conv1_bn_s"] = np.array([1.5, -0.25], dtype=np.float32)
blobs["fortran_w"] = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
blobs["f64"] = np.array([0.1, -2.5, 3e10], dtype=np.float64)
blobs["i64"] = np.array([-3, 0, 7, 2**40], dtype=np.int64)
blobs["scalar_like"] = np.array(4.0, dtype=np.float32)
zoo = {"blobs": dict(blobs), "cfg": "MODEL:\n  NUM_CLASSES: 81\n"}
for proto in (2, 4, 5):
    with open(os.path.join(out, "detectron_p%d.pkl" % proto), "wb") as f:
        pickle.dump(zoo, f, protocol=proto)
expected["detectron"] = {k: describe(v) for k, v in blobs.items()}

# An ImageNet-pretrained body: a flat dict without 'blobs'.
flat = {"res2_0_branch2a_w": rng.randn(4, 2, 1, 1).astype(np.float32), "res2_0_branch2a_bn_b": np.zeros(4, dtype=np.float32)}
with open(os.path.join(out, "imagenet_flat.pkl"), "wb") as f:
    pickle.dump(flat, f, protocol=2)
expected["imagenet_flat"] = {k: describe(v) for k, v in flat.items()}

# A PyTorch zip checkpoint: several dtypes, a view and a transpose that share one storage.
torch.manual_seed(3)
w = torch.randn(2, 3)
state = collections.OrderedDict()
state["w"] = w
state["column"] = w[:, 1]          # non-contiguous view of w's storage
state["transposed"] = w.t()        # shares w's storage, other strides
state["half"] = torch.tensor([0.5, -1.25, 65504.0], dtype=torch.float16)
state["bf16"] = torch.tensor([1.0, -3.5, 0.0078125], dtype=torch.bfloat16)
state["long"] = torch.tensor([[1, -2], [3, 2**33]], dtype=torch.int64)
state["param"] = torch.nn.Parameter(torch.arange(4, dtype=torch.float32))
torch.save(state, os.path.join(out, "torch_state.pth"))
expected["torch"] = {k: describe(v.detach().float().numpy() if v.dtype in (torch.float16, torch.bfloat16) else v.detach().numpy()) for k, v in state.items()}
for k in ("half", "bf16"):
    expected["torch"][k]["dtype"] = str(state[k].dtype).replace("torch.", "")

# A pickle that asks for os.system: must be refused by name, never run.
with open(os.path.join(out, "evil.pkl"), "wb") as f:
    f.write(b"cos\nsystem\n(S'echo pwned'\ntR.")

with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
print("wrote", sorted(os.listdir(out)))
