#!/usr/bin/env python3
"""Reference experiment: torchvision's RetinaNet trained like our one-stage tutorial on the shapes data.

configs/getting_started/tutorial_shapes_retinanet_gn_R-18-FPN.yaml reaches box AP 0.21 in 2,400
iterations. This script trains an independent implementation, torchvision's RetinaNet, the same
way on the same data (data/shapes, `detectron make-shapes --out data/shapes --train 600 --val 100
--seed 1`) and tests it like `detectron test`: if it does much better, suspect our engine.

Mirrored from the tutorial: a GN ResNet-18 body from scratch (stem 7x7/2 of 16 channels + GN + ReLU
+ max pool 3x3/2; 4 stages of 2 basic blocks, widths 16, 32, 64, 128, 1x1 projection + GN shortcuts;
GN with 8 groups; He normal fan_out init = Caffe2's MSRAFill); FPN on C3-C5 with 64 channels and GN
(torchvision's kaiming_uniform(a=1) is Caffe2's XavierFill), P6 by a 3x3/2 conv of C5, P7 of
ReLU(P6); towers of 2 convs + GN + ReLU, normal(0.01) init, prior 0.01; 3 scales per octave x
aspect ratios (0.5, 1, 2), anchors of 2 x the stride; scale 256, max size 352, padding to 128;
input = pixel - Detectron's means on 0-255 values (RGB here, BGR there: same per-channel means);
SGD momentum 0.9, BASE_LR 0.02, linear warm-up from 1/3 over 300 iterations, x0.1 at 1,850 and
2,200, 2,400 iterations of 2 images; Detectron's roidb doubled by flipped copies, shuffled per epoch
with aspect grouping (TRAIN.USE_FLIPPED and TRAIN.ASPECT_GROUPING default True); test: score
threshold 0.05, top 1,000 per level, class-wise NMS 0.5, 100 detections per image.

Not mirrored (torchvision's own behaviour, deliberately kept):
- losses: sigmoid focal loss (alpha 0.25, gamma 2) and plain L1 box loss, each summed per image
  and divided by that image's foreground count, then averaged over images; Detectron's are focal
  loss and smooth L1 (beta 0.11) summed over the batch and divided by the batch's foreground count.
- K = 4 logits per anchor with labels 0..K-1 (torchvision's RetinaNet has no background class:
  labels index the logits directly), as Detectron's K sigmoid logits; mapped back to COCO ids.
- weight decay 1e-4 on every parameter (Detectron: none on GN parameters, WEIGHT_DECAY_GN 0, and
  biases get none and 2x the LR, BIAS_LR 2); PyTorch's SGD puts the LR outside the momentum buffer
  (Caffe2's inside, with SCALE_MOMENTUM): the same except while the LR changes.
- box coordinates without Detectron's +1 (widths x2 - x1, flips W - x), anchors centred at
  k * stride (Detectron: k * stride + (stride - 1) / 2), bilinear torch resize (Detectron: OpenCV).
- matching 0.5 / 0.4 with low-quality matches as Detectron's; anchors crossing the image are kept.

Run from the repository root (about 4,800 forward-backward images; uses --threads cores):
  /work/venv/bin/python tools/train_torchvision_retinanet_shapes.py --threads 2 --out out/torchvision-retinanet
Smoke test: add --iters 20 --val-images 10.
"""
import argparse, json, math, os, random, time
from functools import partial

import numpy as np
import torch
from torch import nn
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7
import torchvision.transforms.functional as TF

GN = partial(nn.GroupNorm, 8, eps=1e-5)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.gn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), GN(cout)
        self.conv2, self.gn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), GN(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), GN(cout))
                         if cin != cout or stride != 1 else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.gn1(self.conv1(x)))
        return torch.relu(self.gn2(self.conv2(y)) + self.shortcut(x))


class Backbone(nn.Module):
    """GN ResNet-18 (widths 16..128) + FPN P3-P7 with 64 channels, as torchvision's BackboneWithFPN."""

    def __init__(self, widths=(16, 32, 64, 128), stem=16, fpn_dim=64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 7, 2, 3, bias=False), GN(stem), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        stages, cin = [], stem
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.stages = nn.ModuleList(stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # C5 has 128 channels != 64, so LastLevelP6P7 takes P6 from C5 (use_P5 False), as Detectron.
        self.fpn = FeaturePyramidNetwork(list(widths[1:]), fpn_dim, LastLevelP6P7(widths[-1], fpn_dim), norm_layer=GN)
        self.out_channels = fpn_dim

    def forward(self, x):
        x, feats = self.stem(x), {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 1:
                feats[f"c{i + 2}"] = x
        return self.fpn(feats)


def tower(dim, n=2):
    conv = nn.Sequential(*[misc_nn_ops.Conv2dNormActivation(dim, dim, norm_layer=GN) for _ in range(n)])
    for m in conv.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
    return conv


def build_model(num_classes):
    sizes = tuple((2 * s, 2 * s * 2 ** (1 / 3), 2 * s * 2 ** (2 / 3)) for s in (8, 16, 32, 64, 128))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    backbone = Backbone()
    head = RetinaNetHead(64, anchors.num_anchors_per_location()[0], num_classes, norm_layer=GN)
    head.classification_head.conv = tower(64)
    head.regression_head.conv = tower(64)
    means_rgb = [122.7717 / 255, 115.9465 / 255, 102.9801 / 255]   # Detectron's PIXEL_MEANS (BGR) reversed
    return RetinaNet(backbone, num_classes, min_size=256, max_size=352, image_mean=means_rgb, image_std=[1 / 255] * 3,
                     anchor_generator=anchors, head=head, score_thresh=0.05, nms_thresh=0.5, detections_per_img=100,
                     topk_candidates=1000, size_divisible=128)


class Shapes:
    def __init__(self, root, split):
        self.coco = COCO(os.path.join(root, "annotations", f"instances_{split}.json"))
        self.dir = os.path.join(root, split)
        self.cat_ids = sorted(self.coco.getCatIds())
        self.label = {c: i for i, c in enumerate(self.cat_ids)}
        self.ids = sorted(self.coco.getImgIds())

    def load(self, img_id, flip=False):
        info = self.coco.loadImgs(img_id)[0]
        img = TF.to_tensor(Image.open(os.path.join(self.dir, info["file_name"])).convert("RGB"))
        anns = [a for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=img_id, iscrowd=False)) if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.label[a["category_id"]] for a in anns], dtype=torch.int64)
        if flip:
            img, w = img.flip(-1), img.shape[-1]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        return img, {"boxes": boxes, "labels": labels}


def epoch_batches(ds, rng, ims_per_batch):
    """Detectron's roidb order: every image and its flipped copy, shuffled with aspect grouping."""
    entries = [(i, f) for f in (False, True) for i in ds.ids if ds.coco.getAnnIds(imgIds=i, iscrowd=False)]
    wide = lambda e: ds.coco.imgs[e[0]]["width"] >= ds.coco.imgs[e[0]]["height"]
    groups = [[e for e in entries if wide(e)], [e for e in entries if not wide(e)]]
    batches = []
    for g in groups:
        rng.shuffle(g)
        batches += [g[k:k + ims_per_batch] for k in range(0, len(g) - len(g) % ims_per_batch, ims_per_batch)]
    rng.shuffle(batches)
    return batches


def lr_at(it, base=0.02, warm_iters=300, warm_factor=1 / 3, steps=(1850, 2200), gamma=0.1):
    lr = base * gamma ** sum(it >= s for s in steps)
    if it < warm_iters:
        alpha = it / warm_iters
        lr *= warm_factor * (1 - alpha) + alpha
    return lr


def train(model, ds, args):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr_at(0), momentum=0.9, weight_decay=1e-4)
    rng, batches, window = random.Random(args.seed), [], []
    model.train()
    start = time.time()
    for it in range(args.iters):
        if not batches:
            batches = epoch_batches(ds, rng, 2)
        imgs, targets = zip(*[ds.load(i, f) for i, f in batches.pop()])
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        losses = model(list(imgs), list(targets))
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            raise SystemExit(f"loss is {loss.item()} at iteration {it + 1}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        window = (window + [[loss.item(), losses["classification"].item(), losses["bbox_regression"].item()]])[-20:]
        if it == 0 or (it + 1) % 20 == 0 or it + 1 == args.iters:
            med = np.median(np.array(window), 0)
            el = time.time() - start
            print(f"iter {it + 1:5d}  lr {lr_at(it):.5f}  loss {loss.item():.4f} (cls {losses['classification'].item():.4f} "
                  f"box {losses['bbox_regression'].item():.4f})  median20 {med[0]:.4f} ({med[1]:.4f} + {med[2]:.4f})  "
                  f"elapsed {el:.1f} s  {el / (it + 1):.3f} s/it", flush=True)
    return time.time() - start


@torch.no_grad()
def test(model, ds, args):
    model.eval()
    ids = ds.ids[:args.val_images] if args.val_images else ds.ids
    results, start = [], time.time()
    for img_id in ids:
        img, _ = ds.load(img_id)
        det = model([img])[0]
        for b, s, l in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            results.append({"image_id": img_id, "category_id": ds.cat_ids[l], "score": round(s, 5),
                            "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)]})
    elapsed = time.time() - start
    path = os.path.join(args.out, "bbox_shapes_val_results.json")
    with open(path, "w") as f:
        json.dump(results, f)
    print(f"{len(results)} detections on {len(ids)} images written to {path}")
    if not results:
        print("no detections: AP 0")
        return elapsed, [0.0] * 12
    ev = COCOeval(ds.coco, ds.coco.loadRes(path), "bbox")
    ev.params.imgIds = ids
    ev.evaluate(); ev.accumulate(); ev.summarize()
    for k, c in enumerate(ds.cat_ids):
        p = ev.eval["precision"][:, :, k, 0, -1]
        ap = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
        print(f"  AP {ds.coco.cats[c]['name']:10s} {ap:.4f}")
    return elapsed, [float(s) for s in ev.stats]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/shapes")
    ap.add_argument("--iters", type=int, default=2400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="out/torchvision-retinanet")
    ap.add_argument("--seed", type=int, default=3)   # Detectron's RNG_SEED default
    ap.add_argument("--val-images", type=int, default=0, help="test on the first N val images only (0: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    train_ds, val_ds = Shapes(args.data, "train"), Shapes(args.data, "val")
    model = build_model(len(train_ds.cat_ids))
    print(f"torch {torch.__version__}, {args.threads} threads, {sum(p.numel() for p in model.parameters())} parameters, "
          f"{len(train_ds.ids)} train / {len(val_ds.ids)} val images")
    train_time = train(model, train_ds, args)
    torch.save(model.state_dict(), os.path.join(args.out, "model_final.pth"))
    test_time, stats = test(model, val_ds, args)
    print(f"training {train_time:.1f} s ({train_time / max(1, args.iters):.3f} s/it), testing {test_time:.1f} s, "
          f"box AP {stats[0]:.4f} AP50 {stats[1]:.4f} AP75 {stats[2]:.4f}")
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump({"iters": args.iters, "train_s": train_time, "test_s": test_time, "coco_stats": stats}, f, indent=1)


if __name__ == "__main__":
    main()
