#!/usr/bin/env python3
"""Faster R-CNN R-50-FPN inference on this machine's CPU: `detectron benchmark` against the same
torchvision model run by three other engines — torchvision eager, ONNX Runtime (CPU execution
provider) and OpenVINO (f32, and bf16 where the CPU has it) — with 1 and 2 threads.

The model: torchvision's fasterrcnn_resnet50_fpn (v1) with seeded random weights (timing does not
depend on them; nothing is downloaded), shorter side 500 and longer ≤ 833, 1,000 proposals per FPN
level before NMS and 1,000 after, and RPN NMS threshold 1.0 so that NMS removes nothing and exactly
1,000 proposals reach the box head (torchvision's count is read from the RPN; ours prints its own).
ONNX Runtime and OpenVINO run that model exported once with torch.onnx.export (opset 17, the
TorchScript exporter) into --cache, which keeps the resize to 500×667 inside the graph; every engine
is fed the same 640×480 test pattern as `detectron benchmark` (RGB floats in [0, 1]). Ours runs
configs/12_2017_baselines/e2e_faster_rcnn_R-50-FPN_1x.yaml with the same size, proposal counts and
NMS threshold (its own random weights, so its detection count differs from the others').

Each measurement runs in its own process (so its peak resident memory is its own; torchvision's
includes torch's ~690 MB of libraries) and reports the median of --runs timed runs after one
warm-up, leaving out any run slower than 1.5× the median of the others (ours reports only its median,
min and max, so for ours a slow run is only noted). Before and after each measurement the script
samples /proc/stat for 0.5 s while it idles, and it also counts the CPU time spent during the
measurement by anything but the measured process: if that other load exceeds --max-other-load cores
it waits and measures again (up to --retries times), and marks the row "disturbed" if it never
clears. With --pairs N the engines are measured N times in turn (per thread count) and the table
gives the medians over the N repeats and the median of each repeat's ratio to OpenVINO f32. Prints
a Markdown table, then the versions and the command.

    swift build -c release --product detectron
    /tmp/venv/bin/pip install torch torchvision numpy onnx onnxruntime openvino
    /tmp/venv/bin/python tools/bench_engines.py [--runs 7] [--pairs 3] [--threads 1,2]
"""
import argparse
import importlib.metadata
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

ENGINES = {   # name: label in the table
    "torchvision": "torchvision eager",
    "onnxruntime": "ONNX Runtime (CPU)",
    "openvino-f32": "OpenVINO f32",
    "openvino-bf16": "OpenVINO bf16",
    "ours": "ours (detectron benchmark)",
}
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=7, help="timed runs per measurement, after one warm-up")
ap.add_argument("--pairs", type=int, default=1,
                help="measure all engines this many times in turn and report the medians and each repeat's ratio to OpenVINO f32: "
                     "the machine's speed drifts over minutes, so a ratio holds best within a repeat")
ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of: " + ", ".join(ENGINES))
ap.add_argument("--detectron", default=os.path.join(ROOT, ".build", "release", "detectron"))
ap.add_argument("--cfg", default=os.path.join("configs", "12_2017_baselines", "e2e_faster_rcnn_R-50-FPN_1x.yaml"),
                help="our config, relative to the repository root")
ap.add_argument("--cache", default=os.path.join("/tmp", "bench_engines"), help="where the exported ONNX model is kept")
ap.add_argument("--max-other-load", type=float, default=0.3, help="cores busy with other work above which a measurement counts as disturbed")
ap.add_argument("--retries", type=int, default=3, help="how often to wait and measure again while other load is present")
ap.add_argument("--wait", type=float, default=15.0, help="seconds to wait before looking at the other load again")
ap.add_argument("--child", nargs=2, metavar=("ENGINE", "THREADS"), help=argparse.SUPPRESS)  # one measurement (or export/probe)
args = ap.parse_args()
args.detectron = os.path.abspath(args.detectron)
THREADS = [int(t) for t in args.threads.split(",")]
SELECTED = [e for e in args.engines.split(",") if e]
for e in SELECTED:
    if e not in ENGINES:
        ap.error("unknown engine %r (choose from %s)" % (e, ", ".join(ENGINES)))


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


ONNX_PATH = os.path.join(args.cache, "fasterrcnn_resnet50_fpn_500x833_1000_nms1.0_opset17_torch%s_torchvision%s.onnx"
                         % (version("torch"), version("torchvision")))

# The same test pattern as `detectron benchmark` (BGR there; RGB here, same values per channel order).
ys, xs = np.mgrid[0:480, 0:640]
b, g, r = (xs * 255) // 639, (ys * 255) // 479, ((xs + ys) * 7) % 256
image = np.stack([r, g, b]).astype(np.float32) / 255.0


# ---- children: one engine, one thread count, in a process of its own --------------------------------

def build_model():
    import torch
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=500, max_size=833,
        rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, rpn_nms_thresh=1.0)
    return model.eval()


def export():
    """Writes the ONNX model once (to a temporary name first, so an interrupted export leaves nothing)."""
    import torch
    os.makedirs(args.cache, exist_ok=True)
    tmp = ONNX_PATH + ".%d.tmp" % os.getpid()
    with torch.no_grad():
        torch.onnx.export(build_model(), ([torch.from_numpy(image)],), tmp, opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["boxes", "labels", "scores"])
    os.replace(tmp, ONNX_PATH)
    return {"path": ONNX_PATH}


def timed(run):
    """One warm-up, then --runs timed calls; returns the last output and the times."""
    times = []
    for i in range(args.runs + 1):
        t0 = time.perf_counter()
        out = run()
        if i > 0:
            times.append(time.perf_counter() - t0)
    return out, times


def torchvision_engine(threads):
    import torch
    torch.set_num_threads(threads)
    model = build_model()
    proposals = []
    model.rpn.register_forward_hook(lambda module, inputs, output: proposals.append(len(output[0][0])))
    x = torch.from_numpy(image)
    with torch.no_grad():
        out, times = timed(lambda: model([x]))
    return {"times": times, "detections": len(out[0]["boxes"]), "proposals": proposals[-1]}


def onnxruntime_engine(threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(ONNX_PATH, so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out, times = timed(lambda: session.run(None, {name: image}))
    return {"times": times, "detections": len(out[0]), "providers": session.get_providers()}


def openvino_engine(threads, precision):
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(core.read_model(ONNX_PATH), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    out, times = timed(lambda: request.infer({0: image}))
    return {"times": times, "detections": len(out[0]),
            "precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "ov_threads": int(compiled.get_property("INFERENCE_NUM_THREADS"))}


def probe():
    """The exact versions (local build tags included), and what OpenVINO says this CPU can do."""
    import importlib
    r = {"versions": {}, "capabilities": []}
    for name in ("torch", "torchvision", "onnx", "onnxruntime", "openvino"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            r["versions"][name] = "not installed"
            continue
        r["versions"][name] = module.get_version() if name == "openvino" else module.__version__
        if name == "openvino":
            r["capabilities"] = list(module.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return r


def robust_median(times):
    """The median of the runs left after dropping those slower than 1.5× the median of the others."""
    kept = [t for i, t in enumerate(times) if len(times) < 3 or t <= 1.5 * statistics.median(times[:i] + times[i + 1:])]
    return statistics.median(kept), len(times) - len(kept)


if args.child:
    engine, threads = args.child[0], int(args.child[1])
    if engine == "export":
        result = export()
    elif engine == "probe":
        result = probe()
    else:
        result = {"torchvision": torchvision_engine, "onnxruntime": onnxruntime_engine,
                  "openvino-f32": lambda t: openvino_engine(t, "f32"), "openvino-bf16": lambda t: openvino_engine(t, "bf16")}[engine](threads)
        result["median_s"], result["discarded"] = robust_median(result["times"])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    sys.exit(0)


# ---- the guard against other load --------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def busy_cpu_s():
    """CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / TICK


def own_cpu_s():
    """CPU seconds of this process and of its children that have ended."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class OtherLoad:
    """Cores kept busy by anything but this script and its children between start and stop."""

    def __init__(self):
        self.wall, self.busy, self.own = time.monotonic(), busy_cpu_s(), own_cpu_s()

    def stop(self):
        wall = time.monotonic() - self.wall
        return max(0.0, (busy_cpu_s() - self.busy) - (own_cpu_s() - self.own)) / wall


def idle_load():
    load = OtherLoad()
    time.sleep(0.5)
    return load.stop()


def wait_quiet():
    """The other load while idling, waiting (up to --retries times) for it to fall to --max-other-load."""
    for attempt in range(args.retries + 1):
        load = idle_load()
        if load <= args.max_other_load or attempt == args.retries:
            return load
        print("  other load %.2f cores; waiting %.0f s" % (load, args.wait), file=sys.stderr, flush=True)
        time.sleep(args.wait)


def run_json(cmd, cwd=None):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["exit status %d" % p.returncode])[-1]
        return {"error": "%s (exit %d)" % (last[:200], p.returncode)}
    return json.loads(p.stdout.strip().splitlines()[-1])


def child(engine, threads):
    return run_json([sys.executable, os.path.abspath(__file__), "--runs", str(args.runs), "--cache", args.cache, "--child", engine, str(threads)])


def ours(threads):
    r = run_json([args.detectron, "benchmark", "--cfg", args.cfg, "--threads", str(threads), "--runs", str(args.runs),
                  "TEST.SCALE", "500", "TEST.MAX_SIZE", "833", "TEST.RPN_NMS_THRESH", "1.0"], cwd=ROOT)
    r.setdefault("discarded", None)   # ours prints no per-run times
    return r


def measure(engine, threads):
    """One measurement in a quiet moment: again (up to --retries times) if other load showed up before, during or after it."""
    for attempt in range(args.retries + 1):
        before = wait_quiet()
        during = OtherLoad()
        r = ours(threads) if engine == "ours" else child(engine, threads)
        r["other_load"] = max(before, during.stop(), idle_load())
        r["disturbed"] = r["other_load"] > args.max_other_load
        if not r["disturbed"] or "error" in r or attempt == args.retries:
            return r
        print("  %s, %d threads: other load %.2f cores; measuring again" % (engine, threads, r["other_load"]), file=sys.stderr, flush=True)


# ---- the parent ---------------------------------------------------------------------------------------

started = time.monotonic()
if not os.path.exists(args.detectron) and "ours" in SELECTED:
    sys.exit("no %s: swift build -c release --product detectron" % args.detectron)
if any(e != "torchvision" and e != "ours" for e in SELECTED):
    if os.path.exists(ONNX_PATH):
        print("  reusing %s" % ONNX_PATH, file=sys.stderr, flush=True)
    else:
        print("  exporting %s" % ONNX_PATH, file=sys.stderr, flush=True)
        r = child("export", 1)
        if "error" in r:
            sys.exit("ONNX export failed: " + r["error"])
found = child("probe", 1)
if "error" in found:
    sys.exit("probing the versions failed: " + found["error"])
if "openvino-bf16" in SELECTED:
    caps = found["capabilities"]
    if "BF16" not in caps:
        print("OpenVINO: this CPU's OPTIMIZATION_CAPABILITIES (%s) have no BF16; skipping OpenVINO bf16." % ", ".join(caps))
        SELECTED.remove("openvino-bf16")


def notes(engine, rs):
    n = []
    if any("error" in r for r in rs):
        return "failed: " + next(r["error"] for r in rs if "error" in r)
    if rs[0].get("proposals") is not None:
        n.append("%s proposals" % "/".join(sorted({str(r["proposals"]) for r in rs})))
    if rs[0].get("detections") is not None:
        n.append("%s detections" % "/".join(sorted({str(r["detections"]) for r in rs})))
    if rs[0].get("precision"):
        n.append("compiled precision %s" % rs[0]["precision"])
    if engine == "ours":
        slow = sum(r["max_s"] > 1.5 * r["median_s"] for r in rs)
        n.append("slowest run > 1.5× median in %d of %d" % (slow, len(rs)) if slow else "no run > 1.5× median")
    else:
        n.append("%d of %d runs discarded" % (sum(r["discarded"] for r in rs), args.runs * len(rs)))
    n.append("other load ≤ %.2f cores" % max(r["other_load"] for r in rs))
    disturbed = sum(r["disturbed"] for r in rs)
    if disturbed:
        n.append("**disturbed** (%d of %d)" % (disturbed, len(rs)))
    return "; ".join(n)


print("| engine | threads | median s/image | ratio to OpenVINO f32 | peak RSS (MB) | notes |")
print("|---|---:|---:|---:|---:|---|", flush=True)
for threads in THREADS:
    repeats = []
    for p in range(args.pairs):
        rep = {}
        for engine in SELECTED:
            print("  %s, %d thread%s (repeat %d of %d)" % (engine, threads, "s" if threads > 1 else "", p + 1, args.pairs), file=sys.stderr, flush=True)
            rep[engine] = measure(engine, threads)
        repeats.append(rep)
    for engine in SELECTED:
        rs = [rep[engine] for rep in repeats]
        if any("error" in r for r in rs):
            print("| %s | %d | – | – | – | %s |" % (ENGINES[engine], threads, notes(engine, rs)), flush=True)
            continue
        ratios = [rep[engine]["median_s"] / rep["openvino-f32"]["median_s"] for rep in repeats
                  if "median_s" in rep.get("openvino-f32", {})]
        ratio = "%.2f" % statistics.median(ratios) if len(ratios) == len(rs) else "–"
        if args.pairs > 1 and ratio != "–" and engine != "openvino-f32":
            ratio += " (" + ", ".join("%.2f" % x for x in ratios) + ")"
        print("| %s | %d | %.3f | %s | %.0f | %s |" % (ENGINES[engine], threads, statistics.median(r["median_s"] for r in rs), ratio,
                                                    max(r["peak_rss_mb"] for r in rs), notes(engine, rs)), flush=True)

head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "?"
print("\n%s; ours at %s; %.1f min; command: %s" % (
    ", ".join("%s %s" % kv for kv in found["versions"].items()), head,
    (time.monotonic() - started) / 60, shlex.join([os.path.relpath(sys.executable), os.path.relpath(__file__)] + sys.argv[1:])))
