#!/usr/bin/env python3
"""Parity of our engine with torchvision's fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn or retinanet_resnet50_fpn (v1) on the same random weights.

  make     writes three test JPEGs, a seeded random model (--model fasterrcnn, maskrcnn or retinanet; every BN
           statistic and the class predictor randomised so they matter), its state_dict (.pth, and
           .safetensors when the safetensors package is importable), and torchvision's intermediates
           and detections for each image under DIR/torchvision/.
  compare  compares DIR/ours/<image>.json (and any DIR/ours/<image>_<blob>.npy) with them; exit
           status 0 only when every image has the same detections within --box-tol and --score-tol.
  run      make (unless DIR/torchvision exists; --fresh redoes it), `detectron infer` on the three
           images with --save-blobs, then compare.

The intermediates compared: the input blob, the FPN levels, and then per model the RPN's proposals and
their scores (fasterrcnn, maskrcnn), the mask head's probabilities of the detections (maskrcnn:
mask_fcn_probs) or every level's class probabilities and box deltas (retinanet: retnet_cls_prob_fpnL,
retnet_bbox_pred_fpnL). For maskrcnn, each matched detection's binary mask (torchvision's
paste_masks_in_image output > 0.5 against our RLE, decoded by pycocotools) must have IoU ≥ --mask-iou.

make also reruns torchvision in float64 and compares it with its float32 results the same way: the
agreement a faithful float32 re-implementation can expect (--no-noise-floor skips it).

Run from the repository root, after `swift build -c release --product detectron`:
  /work/venv/bin/python tools/torchvision_parity.py run --out /tmp/tv-parity --detectron .build/release/detectron
  /work/venv/bin/python tools/torchvision_parity.py run --model retinanet --out /tmp/tv-parity-retinanet --detectron .build/release/detectron

Needs torch and torchvision from PyPI (the CPU wheels will do), numpy and pillow, in a virtual
environment outside the repository:
  python3 -m venv ../venv && ../venv/bin/pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu
  ../venv/bin/pip install numpy pillow
This is a tool, not a test dependency: nothing under Tests/ runs it. `compare` needs numpy only.

torchvision builds its detection models with nn.BatchNorm2d when it is given no weights at all; the
pretrained models (weights or weights_backbone) have FrozenBatchNorm2d. `make` swaps every BatchNorm2d for
a FrozenBatchNorm2d before randomising, so the model computes BN the way the pretrained one does and the
checkpoint has the pretrained one's keys (no num_batches_tracked).
"""
import argparse
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np

# torch, torchvision and PIL are imported by the functions of make that use them: compare needs numpy alone.

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# (base name, width, height, seed of its drawing)
IMAGES = (("a", 640, 480, 11), ("b", 500, 375, 12), ("c", 333, 500, 13))
SEED = 0
BIAS_STD = 0.05        # std of the class predictor's and box predictor's random biases
BBOX_PRED_STD = 0.001  # std of maskrcnn's roi_heads.box_predictor.bbox_pred.weight (Detectron's init)
RPN_BBOX_PRED_STD = 1e-4  # std of maskrcnn's rpn.head.bbox_pred.weight (P2 features reach ~180)
MIN_DETECTIONS = 10    # make fails when an image gets fewer (the comparison would exercise too little)
WORST = 5              # worst pairs listed per image

# Per model: the builder, our config, the weights' file name, and the FPN levels (our blob name,
# torchvision's backbone output key).
# fasterrcnn: CLS_SCORE is the std of roi_heads.box_predictor.cls_score.weight. The box head's
# features are large (mean |x| about 3) and alike across proposals, so the default init (std 0.018)
# already fills the 100 detections; at 0.0015 no image has any, at 0.002 the counts are 11, 100 and
# 0. 0.01 gives 100 on each image with top scores of 0.6 to 0.8 (not saturated) and a
# float64-vs-float32 score difference near 1e-5.
# retinanet: CLS_SCORE is the std of head.classification_head.cls_logits.weight and CLS_BIAS the mean
# of its bias (the prior's −4.6 would leave every score under the 0.05 threshold): chosen so that
# each image has a few hundred candidates above it and the 300 detections are filled from several
# labels and levels.
MODELS = {
    "fasterrcnn": {"builder": "fasterrcnn_resnet50_fpn", "cfg": os.path.join("configs", "torchvision", "fasterrcnn_resnet50_fpn.yaml"),
                   "levels": (("p2", "0"), ("p3", "1"), ("p4", "2"), ("p5", "3"), ("p6", "pool")),
                   "cls_score": 0.01},
    "maskrcnn": {"builder": "maskrcnn_resnet50_fpn", "cfg": os.path.join("configs", "torchvision", "maskrcnn_resnet50_fpn.yaml"),
                 "levels": (("p2", "0"), ("p3", "1"), ("p4", "2"), ("p5", "3"), ("p6", "pool")),
                 "cls_score": 0.01},
    "retinanet": {"builder": "retinanet_resnet50_fpn", "cfg": os.path.join("configs", "torchvision", "retinanet_resnet50_fpn.yaml"),
                  "levels": (("p3", "0"), ("p4", "1"), ("p5", "2"), ("p6", "p6"), ("p7", "p7")),
                  "cls_score": 0.01, "cls_bias": -3.0},
}


def weights_name(model_name):
    return MODELS[model_name]["builder"] + "_random"


# ---------------------------------------------------------------------------------------------
# make

def draw_image(width, height, seed):
    """A smooth test picture: a four-corner colour gradient with coloured rectangles and ellipses,
    slightly blurred so that JPEG keeps it close to what was drawn."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.RandomState(seed)
    corners = rng.uniform(0, 255, (2, 2, 3))
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    background = (corners[0, 0] * (1 - y) * (1 - x) + corners[0, 1] * (1 - y) * x
                  + corners[1, 0] * y * (1 - x) + corners[1, 1] * y * x)
    img = Image.fromarray(np.round(background).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    side = min(width, height)
    for _ in range(14):
        w = rng.uniform(0.08, 0.5) * side
        h = w * np.exp(rng.uniform(-0.8, 0.8))
        x0 = rng.uniform(-0.1 * width, width - 0.5 * w)
        y0 = rng.uniform(-0.1 * height, height - 0.5 * h)
        fill = tuple(int(v) for v in rng.randint(0, 256, 3))
        outline = tuple(int(v) for v in rng.randint(0, 256, 3)) if rng.rand() < 0.5 else None
        box = [x0, y0, x0 + w, y0 + h]
        if rng.rand() < 0.5:
            draw.rectangle(box, fill=fill, outline=outline, width=3)
        else:
            draw.ellipse(box, fill=fill, outline=outline, width=3)
    return img.filter(ImageFilter.GaussianBlur(1.0))


def write_images(images_dir):
    os.makedirs(images_dir, exist_ok=True)
    paths = []
    for base, width, height, seed in IMAGES:
        path = os.path.join(images_dir, base + ".jpg")
        draw_image(width, height, seed).save(path, quality=90, progressive=False, optimize=False)
        paths.append(path)
    return paths


def freeze_batch_norms(module, frozen_bn):
    """Replaces every nn.BatchNorm2d under module by a FrozenBatchNorm2d with the same statistics."""
    import torch
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = frozen_bn(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norms(child, frozen_bn)


def build_model(model_name, cls_score_std):
    """torchvision's model with default settings and seeded random weights; BN and the class
    predictor randomised beyond the default init (which leaves them trivial)."""
    import torch
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d

    spec = MODELS[model_name]
    torch.manual_seed(SEED)
    model = getattr(torchvision.models.detection, spec["builder"])(weights=None, weights_backbone=None)
    model.eval()
    with torch.no_grad():
        freeze_batch_norms(model, FrozenBatchNorm2d)
        count = 0
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.uniform_(0.9, 1.1)
                m.bias.normal_(0, 0.05)
                m.running_mean.normal_(0, 0.05)
                m.running_var.uniform_(0.8, 1.25)
                count += 1
        if model_name in ("fasterrcnn", "maskrcnn"):
            predictor = model.roi_heads.box_predictor
            predictor.cls_score.weight.normal_(0, cls_score_std)
            predictor.cls_score.bias.normal_(0, BIAS_STD)
            predictor.bbox_pred.bias.normal_(0, BIAS_STD)
            if model_name == "maskrcnn":
                # Small random box deltas in both stages: with the default init, this model's large random
                # features make proposals and detections under a pixel wide, whose pasted masks are a
                # column of pixels (nothing to compare) and where a float32 difference flips a whole one.
                model.rpn.head.bbox_pred.weight.normal_(0, RPN_BBOX_PRED_STD)
                predictor.bbox_pred.weight.normal_(0, BBOX_PRED_STD)
        else:
            head = model.head
            head.classification_head.cls_logits.weight.normal_(0, cls_score_std)
            head.classification_head.cls_logits.bias.normal_(spec["cls_bias"], BIAS_STD)
            head.regression_head.bbox_reg.bias.normal_(0, BIAS_STD)
    print("%s: %d FrozenBatchNorm2d randomised; class predictor weight std %g, biases std %g"
          % (spec["builder"], count, cls_score_std, BIAS_STD))
    return model


def save_weights(model, model_name, out):
    import torch
    state = model.state_dict()
    path = os.path.join(out, weights_name(model_name) + ".pth")
    torch.save(state, path)
    print("wrote", path, "(%d tensors)" % len(state))
    try:
        from safetensors.torch import save_file
    except ImportError:
        return
    path = os.path.join(out, weights_name(model_name) + ".safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    print("wrote", path)


def forward(model, image):
    """Runs the model on one CHW image in [0, 1]; returns its detections, sorted by descending score,
    and the intermediates captured on the way (hooks and a wrapper; torchvision is not edited)."""
    import torch

    captured = {}

    def on_transform(module, inputs, output):
        captured["images"] = output[0]

    def on_backbone(module, inputs, output):
        captured["features"] = output

    def appender(key):
        def hook(module, inputs, output):
            captured.setdefault(key, []).append(output)
        return hook

    hooks = [model.transform.register_forward_hook(on_transform), model.backbone.register_forward_hook(on_backbone)]
    rpn = getattr(model, "rpn", None)
    if rpn is not None:
        hooks.append(rpn.head.register_forward_hook(appender("objectness")))
        filter_proposals = rpn.filter_proposals

        def capture_proposals(*a, **k):
            boxes, scores = filter_proposals(*a, **k)
            captured["proposals"], captured["proposal_scores"] = boxes[0], scores[0]
            return boxes, scores

        rpn.filter_proposals = capture_proposals
        if getattr(model.roi_heads, "mask_predictor", None) is not None:
            hooks.append(model.roi_heads.mask_predictor.register_forward_hook(appender("mask_logits")))
    else:
        # RetinaNet's predictors run once per level, finest first.
        hooks.append(model.head.classification_head.cls_logits.register_forward_hook(appender("cls_logits")))
        hooks.append(model.head.regression_head.bbox_reg.register_forward_hook(appender("bbox_reg")))
    try:
        with torch.no_grad():
            result = model([image])[0]
    finally:
        if rpn is not None:
            del rpn.filter_proposals
        for h in hooks:
            h.remove()
    if rpn is not None:
        captured["objectness"] = captured["objectness"][0][0]
    order = torch.argsort(result["scores"], descending=True, stable=True).tolist()
    detections = [{"bbox": result["boxes"][i].tolist(), "score": result["scores"][i].item(), "category_id": int(result["labels"][i])}
                  for i in order]
    if "masks" in result:
        # paste_masks_in_image's probabilities, binarised as torchvision's reference evaluation does (> 0.5).
        binary = (result["masks"][:, 0] > 0.5).numpy()
        for d, i in zip(detections, order):
            d["mask"] = binary[i]
    return detections, captured


def decode(path):
    """The image as torchvision decodes it: uint8 CHW RGB."""
    import torchvision
    return torchvision.io.decode_jpeg(torchvision.io.read_file(path))


def run_torchvision(model, model_name, path, out_dir):
    """Runs the model on one image; writes its pixels, intermediates and detections. Returns a summary."""
    import torch

    levels = MODELS[model_name]["levels"]
    base = os.path.splitext(os.path.basename(path))[0]
    pixels = decode(path)
    detections, captured = forward(model, pixels.float() / 255)
    np.save(os.path.join(out_dir, base + "_pixels.npy"), pixels.permute(1, 2, 0).contiguous().numpy())
    images = captured["images"]
    blobs = {"data": images.tensors}
    for name, key in levels:
        blobs[name] = captured["features"][key]
    if "proposals" in captured:
        blobs["proposals"] = captured["proposals"]
        blobs["proposal_scores"] = captured["proposal_scores"]
    if "mask_logits" in captured:
        blobs["mask_fcn_probs"] = torch.sigmoid(captured["mask_logits"][0])
    for (name, _), logits, deltas in zip(levels, captured.get("cls_logits", []), captured.get("bbox_reg", [])):
        level = name[1:]
        blobs["retnet_cls_prob_fpn" + level] = torch.sigmoid(logits)
        blobs["retnet_bbox_pred_fpn" + level] = deltas
    blobs = {name: value.detach().float().contiguous().numpy() for name, value in blobs.items()}
    for name, value in blobs.items():
        np.save(os.path.join(out_dir, "%s_%s.npy" % (base, name)), value)

    height, width = pixels.shape[1:]
    resized = [int(v) for v in images.image_sizes[0]]
    padded = [int(v) for v in images.tensors.shape[2:]]
    masks = [d.pop("mask") for d in detections if "mask" in d]
    if masks:
        np.save(os.path.join(out_dir, base + "_masks.npy"), np.stack(masks))
    with open(os.path.join(out_dir, base + ".json"), "w") as f:
        json.dump({"image": path, "model": model_name, "width": int(width), "height": int(height), "resized": resized, "padded": padded,
                   "detections": detections}, f, indent=1)

    # How close the RPN's per-level top-n cut runs to a tie: a smaller gap than our error would change the proposals.
    cuts = []
    if rpn_present(model):
        n = model.rpn.pre_nms_top_n()
        for logits in captured["objectness"]:
            flat = logits.flatten()
            if flat.numel() > n:
                top = torch.topk(flat, n + 1).values
                cuts.append(float(top[n - 1] - top[n]))
    return {"base": base, "path": path, "size": (int(width), int(height)), "resized": resized, "padded": padded,
            "detections": detections, "masks": masks, "labels": len({d["category_id"] for d in detections}),
            "fpn_max": {name: float(np.abs(blobs[name]).max()) for name, _ in levels},
            "proposals": blobs.get("proposals"), "proposal_scores": blobs.get("proposal_scores"), "rpn_cut_gaps": cuts}


def rpn_present(model):
    return getattr(model, "rpn", None) is not None


def noise_floor(model, summaries):
    """torchvision in float64 against its own float32 results: the agreement an exact re-implementation
    can hope for, to set against --box-tol and --score-tol. Leaves the model in float64."""
    model.double()
    print("torchvision float64 vs float32 (the noise floor of float32 arithmetic):")
    for s in summaries:
        detections, captured = forward(model, decode(s["path"]).double() / 255)
        pairs, lost, extra = match_detections(s["detections"], detections, 4.0)
        print("  %s: detections %d vs %d, unmatched %d+%d, max |Δbox| %.2e px, max |Δscore| %.2e"
              % (s["base"], len(s["detections"]), len(detections), len(lost), len(extra),
                 max((p[2] for p in pairs), default=0.0), max((p[3] for p in pairs), default=0.0)))
        if s["masks"]:
            ious = []
            for i, j, _, _ in pairs:
                a, b = s["masks"][i], detections[j]["mask"]
                union = np.logical_or(a, b).sum()
                ious.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
            print("  %s: masks of %d pairs, IoU min %.4f, median %.4f, %d below 0.99"
                  % (s["base"], len(ious), min(ious), float(np.median(ious)), sum(v < 0.99 for v in ious)))
        if s["proposals"] is not None:
            for line in compare_proposals(s["proposals"].astype(np.float64), captured["proposals"].numpy(),
                                          s["proposal_scores"].astype(np.float64), captured["proposal_scores"].numpy()):
                print("  " + line)


def make(out, model_name, cls_score_std, check_noise):
    import torch
    torch.set_num_threads(2)
    paths = write_images(os.path.join(out, "images"))
    print("wrote", ", ".join(paths))
    model = build_model(model_name, cls_score_std)
    save_weights(model, model_name, out)
    tv_dir = os.path.join(out, "torchvision")
    os.makedirs(tv_dir, exist_ok=True)
    summaries = [run_torchvision(model, model_name, path, tv_dir) for path in paths]
    print("wrote", tv_dir)
    print()
    print("image  W×H      resized W×H  padded W×H  detections  classes  top score  proposals")
    for s in summaries:
        dets = s["detections"]
        print("%-6s %-8s %-12s %-11s %-11d %-8d %-10.4f %s" % (
            s["base"], "%d×%d" % s["size"], "%d×%d" % tuple(s["resized"][::-1]), "%d×%d" % tuple(s["padded"][::-1]),
            len(dets), s["labels"], dets[0]["score"] if dets else float("nan"),
            "-" if s["proposals"] is None else len(s["proposals"])))
    print("max |value| per FPN level:")
    for s in summaries:
        print("  %s: %s" % (s["base"], "  ".join("%s %.4g" % kv for kv in s["fpn_max"].items())))
    if rpn_present(model):
        print("gap between the %dth and the next RPN logit, per level with more anchors (ties would make the cut ambiguous):"
              % model.rpn.pre_nms_top_n())
        for s in summaries:
            print("  %s: %s" % (s["base"], "  ".join("%.2e" % g for g in s["rpn_cut_gaps"])))
    low = [s["base"] for s in summaries if len(s["detections"]) < MIN_DETECTIONS]
    bad = [s["base"] for s in summaries if not all(np.isfinite(v) for v in s["fpn_max"].values())]
    if low or bad:
        sys.exit("make: %s" % "; ".join(filter(None, [
            "fewer than %d detections on %s (change --cls-score-std)" % (MIN_DETECTIONS, ", ".join(low)) if low else "",
            "non-finite FPN activations on %s" % ", ".join(bad) if bad else ""])))
    if check_noise:
        print()
        noise_floor(model, summaries)


# ---------------------------------------------------------------------------------------------
# compare

class BlobError(Exception):
    pass


def expected_shape(name):
    """Shape pattern of a blob: None where any size is allowed."""
    if name == "data":
        return (1, 3, None, None)
    if name == "proposals":
        return (None, 4)
    if name == "proposal_scores":
        return (None,)
    if name.startswith("retnet_"):
        return (1, None, None, None)
    if name == "mask_fcn_probs":
        return (None, None, None, None)
    return (1, 256, None, None)


def blob_names(tv_dir, base):
    """The intermediates make wrote for an image, in a fixed order: data, the levels, the rest."""
    prefix = base + "_"
    names = [os.path.basename(p)[len(prefix):-4] for p in glob.glob(os.path.join(tv_dir, prefix + "*.npy"))]
    names = [n for n in names if n not in ("pixels", "masks")]
    def key(n):
        if n == "data":
            return (0, n)
        if len(n) == 2 and n[0] == "p":
            return (1, n)
        return (2, n[-1], n)
    return sorted(names, key=key)


def load_blob(path, name):
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:
        raise BlobError("%s: cannot read as .npy: %s" % (path, e))
    if a.dtype != np.float32:
        raise BlobError("%s: dtype %s, expected float32" % (path, a.dtype))
    pattern = expected_shape(name)
    if a.ndim != len(pattern) or any(p is not None and p != s for p, s in zip(pattern, a.shape)):
        raise BlobError("%s: shape %s, expected %s" % (path, a.shape, "(" + ", ".join("*" if p is None else str(p) for p in pattern) + ")"))
    return a.astype(np.float64)


def compare_array(name, theirs, ours):
    line = "  %-15s %-22s vs %-22s" % (name, str(theirs.shape), str(ours.shape))
    common = tuple(slice(0, min(a, b)) for a, b in zip(theirs.shape, ours.shape))
    t, o = theirs[common], ours[common]
    note = "" if theirs.shape == ours.shape else "  (SHAPES DIFFER; over the common region)"
    if t.size == 0:
        return line + "  nothing in common" + note
    diff = np.abs(t - o)
    at = np.unravel_index(int(np.argmax(diff)), diff.shape)
    scale = float(np.abs(t).max())
    rel = float(diff.max()) / scale if scale > 0 else float("inf")
    if name == "data" and t.shape[1] == 3 and np.abs(t - o[:, ::-1]).max() < 0.01 * diff.max():
        note += "  (about equal with the channels reversed: BGR against RGB?)"
    return line + "  max|Δ| %.3e  /max|torch| %.3e  at %s%s" % (diff.max(), rel, tuple(int(i) for i in at), note)


def nearest(theirs, ours):
    """For each row of theirs, the index of the row of ours nearest by max-abs coordinate difference, and that difference."""
    index = np.zeros(len(theirs), dtype=np.int64)
    dist = np.full(len(theirs), np.inf)
    if len(ours) == 0:
        return index, dist
    for start in range(0, len(theirs), 256):
        d = np.abs(theirs[start:start + 256, None, :] - ours[None, :, :]).max(-1)
        index[start:start + 256] = d.argmin(1)
        dist[start:start + 256] = d.min(1)
    return index, dist


def compare_proposals(theirs, ours, theirs_scores, ours_scores):
    """Proposals as sets: each torchvision box against our nearest one, both lists in score order."""
    if theirs_scores is not None and ours_scores is not None:
        if len(theirs_scores) != len(theirs) or len(ours_scores) != len(ours):
            return ["  proposals       box and score counts differ (torch %d/%d, ours %d/%d)"
                    % (len(theirs), len(theirs_scores), len(ours), len(ours_scores))]
        t_order = np.argsort(-theirs_scores, kind="stable")
        o_order = np.argsort(-ours_scores, kind="stable")
        theirs, theirs_scores = theirs[t_order], theirs_scores[t_order]
        ours, ours_scores = ours[o_order], ours_scores[o_order]
    else:
        theirs_scores = ours_scores = None
    lines = ["  proposals       %d vs %d%s" % (len(theirs), len(ours), "" if theirs_scores is not None else " (no scores: compared in file order)")]
    if len(theirs) == 0 or len(ours) == 0:
        return lines
    index, dist = nearest(theirs, ours)
    same = int((index == np.arange(len(theirs))).sum())
    text = "                  nearest: max Δcoord %.3e px, at its own rank %d/%d" % (dist.max(), same, len(theirs))
    if theirs_scores is not None:
        text += ", max Δscore %.3e" % np.abs(theirs_scores - ours_scores[index]).max()
    lines.append(text)
    top = min(100, len(theirs))
    within = int((dist[:top] <= 0.01).sum())
    k = min(top, len(ours))
    in_place = int((np.abs(theirs[:k] - ours[:k]).max(-1) <= 0.01).sum())
    lines.append("                  top-%d within 0.01 px: %d have a match, %d at the same rank" % (top, within, in_place))
    return lines


def match_detections(theirs, ours, radius):
    """Greedy in torchvision's score order: each detection takes the nearest unmatched one of ours with
    the same category_id, if within radius px. Returns pairs (i, j, Δbox, Δscore) and the unmatched of each side."""
    taken = np.zeros(len(ours), dtype=bool)
    ours_boxes = np.array([d["bbox"] for d in ours], dtype=np.float64).reshape(-1, 4)
    ours_cats = np.array([d["category_id"] for d in ours])
    pairs, lost = [], []
    for i in sorted(range(len(theirs)), key=lambda i: -theirs[i]["score"]):
        t = theirs[i]
        candidates = np.flatnonzero(~taken & (ours_cats == t["category_id"])) if len(ours) else np.zeros(0, dtype=np.int64)
        if len(candidates):
            d = np.abs(ours_boxes[candidates] - np.array(t["bbox"])).max(-1)
            best = int(np.argmin(d))
            if d[best] <= radius:
                j = int(candidates[best])
                taken[j] = True
                pairs.append((i, j, float(d[best]), abs(t["score"] - ours[j]["score"])))
                continue
        lost.append(i)
    return pairs, lost, [j for j in range(len(ours)) if not taken[j]]


def describe(d):
    return "cat %-3d score %.6f [%s]" % (d["category_id"], d["score"], ", ".join("%.3f" % v for v in d["bbox"]))


def compare_image(tv_dir, ours_dir, base, args):
    """Prints the comparison of one image; returns its summary row and the list of what failed."""
    print("== %s" % base)
    with open(os.path.join(tv_dir, base + ".json")) as f:
        theirs = json.load(f)
    row = {"image": base, "count": "%d / -" % len(theirs["detections"]), "box": float("nan"), "score": float("nan")}
    ours_path = os.path.join(ours_dir, base + ".json")
    if not os.path.exists(ours_path):
        print("  no %s" % ours_path)
        return row, ["no ours/%s.json" % base]
    try:
        with open(ours_path) as f:
            ours = json.load(f)
    except ValueError as e:
        print("  %s: not JSON: %s" % (ours_path, e))
        return row, ["ours/%s.json is not JSON" % base]
    failures = []

    sizes = "  image %d×%d, resized %d×%d, padded %d×%d (W×H)" % ((theirs["width"], theirs["height"]) + tuple(theirs["resized"][::-1]) + tuple(theirs["padded"][::-1]))
    for key in ("width", "height", "resized", "padded"):
        if key in ours and ours[key] != theirs[key]:
            value = ours[key] if key in ("width", "height") else "%s×%s (W×H)" % tuple(ours[key][::-1])
            sizes += "; ours: %s %s" % (key, value)
            failures.append("%s %s" % (key, value))
    print(sizes)

    blobs = blob_names(tv_dir, base)
    loaded = {}
    for name in blobs:
        t_path = os.path.join(tv_dir, "%s_%s.npy" % (base, name))
        o_path = os.path.join(ours_dir, "%s_%s.npy" % (base, name))
        if not (os.path.exists(t_path) and os.path.exists(o_path)):
            continue
        try:
            loaded[name] = (load_blob(t_path, name), load_blob(o_path, name))
        except BlobError as e:
            print("  %-15s ERROR %s" % (name, e))
            failures.append("%s blob malformed" % name)
    for name in blobs:
        if name in loaded and name not in ("proposals", "proposal_scores"):
            print(compare_array(name, *loaded[name]))
    if "proposals" in loaded:
        scores = loaded.get("proposal_scores", (None, None))
        for line in compare_proposals(loaded["proposals"][0], loaded["proposals"][1], scores[0], scores[1]):
            print(line)
    missing = [name for name in blobs if not os.path.exists(os.path.join(ours_dir, "%s_%s.npy" % (base, name)))]
    if missing and len(missing) < len(blobs):
        print("  (ours has no %s)" % ", ".join(missing))

    t_dets, o_dets = theirs["detections"], ours["detections"]
    pairs, lost, extra = match_detections(t_dets, o_dets, args.match_radius)
    max_box = max((p[2] for p in pairs), default=0.0)
    max_score = max((p[3] for p in pairs), default=0.0)
    row.update(count="%d / %d" % (len(t_dets), len(o_dets)), box=max_box, score=max_score)
    print("  detections      %d vs %d; matched %d; unmatched: torch %d, ours %d; max |Δbox| %.3e px, max |Δscore| %.3e"
          % (len(t_dets), len(o_dets), len(pairs), len(lost), len(extra), max_box, max_score))
    worst = sorted((p for p in pairs if p[2] > 0 or p[3] > 0), key=lambda p: -max(p[2] / args.box_tol, p[3] / args.score_tol))[:WORST]
    for i, j, db, ds in worst:
        print("    torch #%-3d %s\n    ours  #%-3d %s  Δbox %.3e  Δscore %.3e" % (i, describe(t_dets[i]), j, describe(o_dets[j]), db, ds))
    for i in lost[:WORST]:
        print("    torch #%-3d %s  has no match" % (i, describe(t_dets[i])))
    for j in extra[:WORST]:
        print("    ours  #%-3d %s  has no match" % (j, describe(o_dets[j])))

    masks_path = os.path.join(tv_dir, base + "_masks.npy")
    if os.path.exists(masks_path):
        failures += compare_masks(np.load(masks_path), o_dets, pairs, args.mask_iou)
    if len(t_dets) != len(o_dets):
        failures.append("count %d vs %d" % (len(t_dets), len(o_dets)))
    if lost or extra:
        failures.append("%d+%d unmatched" % (len(lost), len(extra)))
    if max_box > args.box_tol:
        failures.append("max Δbox %.3g > %g" % (max_box, args.box_tol))
    if max_score > args.score_tol:
        failures.append("max Δscore %.3g > %g" % (max_score, args.score_tol))
    return row, failures


def compare_masks(theirs, ours, pairs, threshold):
    """Each matched pair's binary masks: torchvision's paste_masks_in_image > 0.5 against ours (the
    RLE `segmentation` of our detection, decoded with pycocotools). Returns the failures."""
    from pycocotools import mask as mask_util
    ious = []
    for i, j, _, _ in pairs:
        seg = ours[j].get("segmentation")
        if seg is None:
            return ["ours has no segmentation on detection %d" % j]
        mine = mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        t = theirs[i]
        union = np.logical_or(mine, t).sum()
        ious.append(1.0 if union == 0 else np.logical_and(mine, t).sum() / union)
    if not ious:
        return []
    worst = int(np.argmin(ious))
    print("  masks           %d pairs; IoU min %.4f (pair %d), median %.4f; %d below %.2f"
          % (len(ious), ious[worst], worst, float(np.median(ious)), sum(v < threshold for v in ious), threshold))
    return ["%d masks with IoU < %g" % (sum(v < threshold for v in ious), threshold)] if min(ious) < threshold else []


def compare(out, args):
    tv_dir, ours_dir = os.path.join(out, "torchvision"), os.path.join(out, "ours")
    bases = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(tv_dir, "*.json")))
    if not bases:
        sys.exit("compare: no torchvision results in %s (run make first)" % tv_dir)
    rows, failed = [], []
    for base in bases:
        row, failures = compare_image(tv_dir, ours_dir, base, args)
        row["result"] = "FAIL" if failures else "pass"
        rows.append(row)
        if failures:
            failed.append("%s: %s" % (base, ", ".join(failures)))
        print()
    print("| image | detections (torch / ours) | max Δbox (px) | max Δscore | result |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %.2e | %.2e | %s |" % (r["image"], r["count"], r["box"], r["score"], r["result"]))
    print("(tolerances: box %g px, score %g)" % (args.box_tol, args.score_tol))
    if failed:
        print("FAIL " + "; ".join(failed))
        return 1
    print("PASS: %d images, same detections" % len(rows))
    return 0


# ---------------------------------------------------------------------------------------------
# run

def run(args):
    out = args.out
    tv_dir = os.path.join(out, "torchvision")
    if args.fresh or not os.path.isdir(tv_dir):
        make(out, args.model, args.cls_score_std, not args.no_noise_floor)
    else:
        print("%s exists: skipping make (--fresh redoes it)" % tv_dir)
    cfg = args.cfg or MODELS[args.model]["cfg"]
    if not os.path.exists(cfg) and os.path.exists(os.path.join(REPO, cfg)):
        cfg = os.path.join(REPO, cfg)
    weights = os.path.join(out, weights_name(args.model) + ".pth")
    for path, what in ((cfg, "config"), (args.detectron, "detectron executable"), (weights, "weights")):
        if not os.path.exists(path):
            sys.exit("run: no %s at %s" % (what, path))
    ours_dir = os.path.join(out, "ours")
    if os.path.isdir(ours_dir):
        shutil.rmtree(ours_dir)
    blobs = sorted({name for base, _, _, _ in IMAGES for name in blob_names(tv_dir, base)})
    cmd = [args.detectron, "infer", "--cfg", cfg, "--weights", weights, "--output-dir", ours_dir,
           "--json-only", "--save-blobs", ",".join(blobs)] + [os.path.join(out, "images", base + ".jpg") for base, _, _, _ in IMAGES]
    print("$ " + shlex.join(cmd), flush=True)
    status = subprocess.run(cmd).returncode
    if status != 0:
        sys.exit("run: detectron infer failed with exit status %d" % status)
    print()
    return compare(out, args)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("make", "compare", "run"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True, help="working directory (images/, torchvision/, ours/, weights)")
        if name in ("make", "run"):
            p.add_argument("--model", choices=sorted(MODELS), default="fasterrcnn", help="the torchvision model (default fasterrcnn)")
            p.add_argument("--cls-score-std", type=float, default=None, help="std of the random class predictor weights")
            p.add_argument("--no-noise-floor", action="store_true", help="skip the float64 rerun of torchvision")
        if name in ("compare", "run"):
            p.add_argument("--box-tol", type=float, default=0.01, help="largest |Δ| of a box coordinate, px")
            p.add_argument("--score-tol", type=float, default=1e-4, help="largest |Δscore|")
            p.add_argument("--match-radius", type=float, default=4.0, help="farthest box (max |Δ| of a coordinate, px) a detection may match")
            p.add_argument("--mask-iou", type=float, default=0.99, help="least IoU of a matched detection's binary masks (maskrcnn)")
        if name == "run":
            p.add_argument("--detectron", required=True, help="the detectron executable")
            p.add_argument("--cfg", default=None, help="config for our engine (default: the model's under configs/torchvision; "
                           "relative paths: to the working or repository directory)")
            p.add_argument("--fresh", action="store_true", help="redo make even when OUT/torchvision exists")
    args = ap.parse_args()
    if args.command in ("make", "run") and args.cls_score_std is None:
        args.cls_score_std = MODELS[args.model]["cls_score"]
    if args.command == "make":
        make(args.out, args.model, args.cls_score_std, not args.no_noise_floor)
    elif args.command == "compare":
        sys.exit(compare(args.out, args))
    else:
        sys.exit(run(args))


if __name__ == "__main__":
    main()
