#!/usr/bin/env python3
"""Writes the small torchvision fixtures of the Swift tests (a few KB each), computed by torchvision itself:

- Tests/ImagingTests/Fixtures/torchvision_resize/caseN.json: GeneralizedRCNNTransform's normalize + resize of
  small random RGB images ({"width", "height", "min_size", "max_size", "mean", "std", "input" (HWC uint8),
  "output" (CHW float32), "out_width", "out_height"}).
- Tests/EngineTests/Fixtures/torchvision/boxes.json: AnchorGenerator cell anchors and grid anchors, BoxCoder.decode,
  batched_nms, the FPN LevelMapper, for random inputs.
- Tests/EngineTests/Fixtures/torchvision/state_dict.pth: a tiny state_dict with torchvision's fasterrcnn names
  (FrozenBatchNorm2d buffers, Conv2dNormActivation-style FPN and RPN names, an int64 num_batches_tracked), and
  state_dict_expected.json: the blobs it must map to (affine scale/bias computed as FrozenBatchNorm2d.forward does).
- Tests/EngineTests/Fixtures/torchvision/retinanet.json: retinanet_resnet50_fpn's anchors and
  RetinaNet.postprocess_detections on random head outputs.

Needs torch and torchvision (CPU), in a virtualenv outside the repository:

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch torchvision
    /tmp/venv/bin/python tools/make_torchvision_fixtures.py
"""
import json
import os
from collections import OrderedDict

import torch
import torchvision
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops
from torchvision.ops.poolers import LevelMapper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
IMAGING = os.path.join(ROOT, "Tests", "ImagingTests", "Fixtures", "torchvision_resize")
ENGINE = os.path.join(ROOT, "Tests", "EngineTests", "Fixtures", "torchvision")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def floats(t):
    return [float(v) for v in t.reshape(-1).tolist()]


def resize_cases(gen):
    # (width, height, min_size, max_size): down, up (480 → 800's 800.0000000000001 rows), max-size bound, odd ratios.
    cases = [(23, 17, 10, 40), (8, 6, 10, 40), (30, 9, 12, 20), (13, 21, 16, 30), (19, 19, 7, 100)]
    for i, (w, h, lo, hi) in enumerate(cases):
        pixels = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8)
        t = GeneralizedRCNNTransform(lo, hi, MEAN, STD)
        image = pixels.permute(2, 0, 1).float() / 255
        out, _ = t.resize(t.normalize(image), None)
        case = {"width": w, "height": h, "min_size": lo, "max_size": hi, "mean": MEAN, "std": STD,
                "input": [int(v) for v in pixels.reshape(-1).tolist()], "output": floats(out),
                "out_width": int(out.shape[2]), "out_height": int(out.shape[1])}
        with open(os.path.join(IMAGING, "case%d.json" % i), "w") as f:
            json.dump(case, f, separators=(",", ":"))


def boxes_fixture(gen):
    sizes, ratios = ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5
    ag = AnchorGenerator(sizes, ratios)
    cell = [floats(c) for c in ag.cell_anchors]
    # A 32 × 96 padded input: P2…P6 are 8×24, 4×12, 2×6, 1×3, 1×2 (P6 strides 32 and 48, not 64).
    image = torch.zeros(1, 3, 32, 96)
    maps = [torch.zeros(1, 1, h, w) for h, w in [(8, 24), (4, 12), (2, 6), (1, 3), (1, 2)]]
    grids = ag(ImageList(image, [(30, 90)]), maps)[0]
    per_level = [m.shape[-2] * m.shape[-1] * 3 for m in maps]
    grid_levels = [floats(g) for g in torch.split(grids, per_level)]

    n = 40
    xy = torch.rand(n, 2, generator=gen) * 100
    wh = torch.rand(n, 2, generator=gen) * 60 + 1
    ref = torch.cat([xy, xy + wh], 1)
    deltas = torch.randn(n, 4, generator=gen) * 0.5
    deltas[0, 2] = 9.0  # past the clip
    decoded = {}
    for key, weights in (("rpn", (1.0, 1.0, 1.0, 1.0)), ("box", (10.0, 10.0, 5.0, 5.0))):
        decoded[key] = floats(det_utils.BoxCoder(weights).decode_single(deltas, ref))

    m = 251
    xy = torch.rand(m, 2, generator=gen) * 200
    wh = torch.rand(m, 2, generator=gen) * 80 + 2
    nms_boxes = torch.cat([xy, xy + wh], 1)
    nms_scores = torch.rand(m, generator=gen)
    nms_groups = torch.randint(0, 3, (m,), generator=gen)
    small = box_ops.batched_nms(nms_boxes[:200], nms_scores[:200], nms_groups[:200], 0.5)          # offset trick (≤ 1000 boxes)
    big_boxes = nms_boxes.repeat(4, 1) + torch.arange(4).repeat_interleave(m)[:, None] * 0.37       # 1004 boxes: per group
    big_scores = torch.rand(4 * m, generator=gen)
    big_groups = nms_groups.repeat(4)
    big = box_ops.batched_nms(big_boxes, big_scores, big_groups, 0.6)

    levels_boxes = torch.cat([xy[:100] * 3, xy[:100] * 3 + torch.rand(100, 2, generator=gen) * 700 + 1], 1)
    mapper = LevelMapper(2, 5)
    levels = (mapper([levels_boxes]) + 2).tolist()

    out = {"cell_anchors": cell, "grid_image": [32, 96], "grid_maps": [[8, 24], [4, 12], [2, 6], [1, 3], [1, 2]],
           "grid_anchors": grid_levels, "reference": floats(ref), "deltas": floats(deltas),
           "decoded_rpn": decoded["rpn"], "decoded_box": decoded["box"],
           "nms_boxes": floats(nms_boxes[:200]), "nms_scores": floats(nms_scores[:200]), "nms_groups": nms_groups[:200].tolist(),
           "nms_small_keep": small.tolist(), "nms_big_boxes": floats(big_boxes), "nms_big_scores": floats(big_scores),
           "nms_big_groups": big_groups.tolist(), "nms_big_keep": big.tolist(),
           "level_boxes": floats(levels_boxes), "levels": levels}
    with open(os.path.join(ENGINE, "boxes.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))


def state_dict_fixture(gen):
    sd = OrderedDict()

    def bn(prefix, c):
        sd[prefix + ".weight"] = torch.rand(c, generator=gen) + 0.5
        sd[prefix + ".bias"] = torch.randn(c, generator=gen) * 0.1
        sd[prefix + ".running_mean"] = torch.randn(c, generator=gen) * 0.1
        sd[prefix + ".running_var"] = torch.rand(c, generator=gen) + 0.5

    sd["backbone.body.conv1.weight"] = torch.randn(4, 3, 1, 1, generator=gen)
    bn("backbone.body.bn1", 4)
    for i in range(2):
        sd["backbone.body.layer1.%d.conv1.weight" % i] = torch.randn(2, 4, 1, 1, generator=gen)
        bn("backbone.body.layer1.%d.bn1" % i, 2)
        sd["backbone.body.layer1.%d.conv3.weight" % i] = torch.randn(4, 2, 1, 1, generator=gen)
        bn("backbone.body.layer1.%d.bn3" % i, 4)
    sd["backbone.body.layer1.0.downsample.0.weight"] = torch.randn(4, 4, 1, 1, generator=gen)
    bn("backbone.body.layer1.0.downsample.1", 4)
    sd["backbone.body.layer1.0.downsample.1.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    for k in range(2):
        sd["backbone.body.layer%d.0.conv2.weight" % (k + 2)] = torch.randn(2, 2, 3, 3, generator=gen)
    sd["backbone.body.layer4.0.conv2.weight"] = torch.randn(2, 2, 3, 3, generator=gen)
    sd["backbone.fpn.inner_blocks.0.0.weight"] = torch.randn(3, 4, 1, 1, generator=gen)
    sd["backbone.fpn.inner_blocks.0.0.bias"] = torch.randn(3, generator=gen)
    sd["backbone.fpn.inner_blocks.3.0.weight"] = torch.randn(3, 2, 1, 1, generator=gen)
    sd["backbone.fpn.layer_blocks.1.0.weight"] = torch.randn(3, 3, 3, 3, generator=gen)
    sd["rpn.head.conv.0.0.weight"] = torch.randn(3, 3, 3, 3, generator=gen)
    sd["rpn.head.cls_logits.bias"] = torch.randn(3, generator=gen)
    sd["roi_heads.box_head.fc6.weight"] = torch.randn(5, 6, generator=gen)
    sd["roi_heads.box_predictor.bbox_pred.bias"] = torch.randn(8, generator=gen)
    sd["roi_heads.mask_head.weight"] = torch.randn(2, generator=gen)   # not this model's: kept by name, reported unused
    torch.save(sd, os.path.join(ENGINE, "state_dict.pth"))

    expected = {}

    def put(name, t):
        expected[name] = {"shape": list(t.shape), "values": floats(t)}

    def folded(prefix, ours):
        frozen = torchvision.ops.misc.FrozenBatchNorm2d(sd[prefix + ".weight"].numel())
        frozen.load_state_dict({k: sd[prefix + "." + k] for k in ("weight", "bias", "running_mean", "running_var")})
        scale = frozen.weight * (frozen.running_var + frozen.eps).rsqrt()
        put(ours + "_s", scale)
        put(ours + "_b", frozen.bias - frozen.running_mean * scale)

    put("conv1_w", sd["backbone.body.conv1.weight"])
    folded("backbone.body.bn1", "res_conv1_bn")
    for i in range(2):
        put("res2_%d_branch2a_w" % i, sd["backbone.body.layer1.%d.conv1.weight" % i])
        folded("backbone.body.layer1.%d.bn1" % i, "res2_%d_branch2a_bn" % i)
        put("res2_%d_branch2c_w" % i, sd["backbone.body.layer1.%d.conv3.weight" % i])
        folded("backbone.body.layer1.%d.bn3" % i, "res2_%d_branch2c_bn" % i)
    put("res2_0_branch1_w", sd["backbone.body.layer1.0.downsample.0.weight"])
    folded("backbone.body.layer1.0.downsample.1", "res2_0_branch1_bn")
    for s in (3, 4, 5):
        put("res%d_0_branch2b_w" % s, sd["backbone.body.layer%d.0.conv2.weight" % (s - 1)])
    put("fpn_inner_res2_1_sum_lateral_w", sd["backbone.fpn.inner_blocks.0.0.weight"])
    put("fpn_inner_res2_1_sum_lateral_b", sd["backbone.fpn.inner_blocks.0.0.bias"])
    put("fpn_inner_res5_0_sum_w", sd["backbone.fpn.inner_blocks.3.0.weight"])
    put("fpn_res3_0_sum_w", sd["backbone.fpn.layer_blocks.1.0.weight"])
    put("conv_rpn_fpn2_w", sd["rpn.head.conv.0.0.weight"])
    put("rpn_cls_logits_fpn2_b", sd["rpn.head.cls_logits.bias"])
    put("fc6_w", sd["roi_heads.box_head.fc6.weight"])
    put("bbox_pred_b", sd["roi_heads.box_predictor.bbox_pred.bias"])
    put("roi_heads.mask_head.weight", sd["roi_heads.mask_head.weight"])
    with open(os.path.join(ENGINE, "state_dict_expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"), sort_keys=True)


def retinanet_fixture(gen):
    """retinanet_resnet50_fpn's AnchorGenerator (cell anchors, and the grid on maps whose strides are not
    powers of two) and RetinaNet.postprocess_detections on random head outputs (3 labels, 9 anchors, a
    32 × 48 padded input resized to 30 × 45; a low threshold and top-k so that the cut and NMS matter)."""
    from types import SimpleNamespace
    from torchvision.models.detection.retinanet import RetinaNet, _default_anchorgen

    ag = _default_anchorgen()
    cell = [floats(c) for c in ag.cell_anchors]
    shapes = [(4, 6), (2, 3), (1, 2), (1, 1), (1, 1)]
    image = ImageList(torch.zeros(1, 3, 32, 48), [(30, 45)])
    anchors = ag(image, [torch.zeros(1, 1, h, w) for h, w in shapes])[0]
    A, K = 9, 3
    per_level = [h * w * A for h, w in shapes]
    logits = [torch.randn(1, n, K, generator=gen) * 1.5 - 1.0 for n in per_level]
    deltas = [torch.randn(1, n, 4, generator=gen) * 0.3 for n in per_level]
    # Two exact ties of score across labels at P3.
    logits[0][0, 5, 1] = logits[0][0, 7, 2] = 1.25
    settings = SimpleNamespace(score_thresh=0.3, topk_candidates=25, nms_thresh=0.5, detections_per_img=40,
                               box_coder=det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0)))
    head = {"cls_logits": logits, "bbox_regression": deltas}
    result = RetinaNet.postprocess_detections(settings, head, [list(anchors.split(per_level))], [(30, 45)])[0]
    out = {"cell_anchors": cell, "image": [32, 48], "resized": [30, 45], "maps": [list(s) for s in shapes], "anchors_per_cell": A,
           "classes": K, "score_thresh": 0.3, "topk": 25, "nms": 0.5, "detections": 40,
           "grid_anchors": [floats(a) for a in anchors.split(per_level)],
           "probs": [floats(torch.sigmoid(l)) for l in logits], "deltas": [floats(d) for d in deltas],
           "boxes": floats(result["boxes"]), "scores": floats(result["scores"]), "labels": result["labels"].tolist()}
    with open(os.path.join(ENGINE, "retinanet.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))


def main():
    os.makedirs(IMAGING, exist_ok=True)
    os.makedirs(ENGINE, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    resize_cases(gen)
    boxes_fixture(gen)
    state_dict_fixture(gen)
    retinanet_fixture(torch.Generator().manual_seed(1))
    print("torch", torch.__version__, "torchvision", torchvision.__version__, "wrote fixtures to", IMAGING, "and", ENGINE)


if __name__ == "__main__":
    main()
