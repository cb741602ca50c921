#!/usr/bin/env python3
"""Writes the PNG decoder fixtures of Tests/ImagingTests/Fixtures/png, decoded by OpenCV itself.

Detectron reads images with cv2.imread(path, cv2.IMREAD_COLOR), so the expected pixels are OpenCV's. Every image is
tiny (odd sizes, a gradient plus a few distinct pixels) and deterministic. Written with Pillow where Pillow can make
the exact kind, otherwise chunk by chunk with zlib + struct (16-bit RGB, Adam7 interlacing):

- rgb8, rgba8 (varying alpha), grey8, greyalpha8, grey16 (full 0..65535 range), rgb16, palette8, palette4,
  palette_trns (PLTE + a short tRNS), grey1 (1-bit), interlaced (Adam7, 8-bit RGB), and rgb8_named.jpg (the bytes of
  rgb8.png under a .jpg name: the decoder must choose by content, not by extension).
- For each of them NAME.bgr: the raw bytes of cv2.imread(path, cv2.IMREAD_COLOR) (H x W x 3 uint8, BGR, row-major).
- Broken files: truncated.png (rgb8.png cut in the middle of its IDAT data), corrupt_crc.png (one IDAT data byte
  flipped, so the chunk CRC no longer matches), bad_header.png (PNG signature + garbage), not_png.png (text).
- expected.json: per valid file width, height, colour type, bit depth, interlace, chunk list and the SHA-256 of
  NAME.bgr; per broken file what cv2.imread returned; the versions used; and the result of the rule check below.

The script also checks cv2's output against a rule computed independently in numpy from the generated samples
(what OpenCV's PNG decoder asks of libpng): 16-bit samples -> high byte (png_set_strip_16: truncation, not rounding);
alpha dropped without compositing (png_set_strip_alpha); palette -> RGB (png_set_palette_to_rgb), tRNS ignored;
grey -> 3 equal channels; 1/2/4-bit grey -> 8 bit (0/255 for 1 bit); BGR order. Any difference is recorded in
expected.json ("rule_mismatches", and per file) and makes the script exit with an error, unless --allow-rule-mismatch.

Needs Pillow, numpy and OpenCV, in a virtualenv outside the repository; run from anywhere:

    python3 -m venv /work/venv && /work/venv/bin/pip install pillow numpy opencv-python-headless
    /work/venv/bin/python tools/make_png_fixtures.py
"""
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import zlib

import cv2
import numpy as np
import PIL
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "ImagingTests", "Fixtures", "png")
SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------
# Deterministic sample data.

def grid(w, h):
    return np.meshgrid(np.arange(w), np.arange(h))  # x, y, each (h, w)


def rgb8_samples(w, h):
    x, y = grid(w, h)
    im = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x * 37 + y * 91) % 256], axis=-1).astype(np.uint8)
    im[0, 0] = (255, 0, 0)          # pure red: catches an RGB/BGR swap
    im[0, w - 1] = (0, 0, 255)
    im[h - 1, 0] = (0, 255, 0)
    im[h - 1, w - 1] = (255, 255, 255)
    im[h // 2, w // 2] = (1, 2, 3)
    return im


def alpha8_samples(w, h):
    x, y = grid(w, h)
    a = ((x * 53 + y * 97) % 256).astype(np.uint8)
    a[0, 0], a[0, 1], a[1, 0] = 0, 255, 1  # fully transparent pixel keeps its colour (no compositing)
    return a


def grey8_samples(w, h):
    x, y = grid(w, h)
    g = ((x * 255 // (w - 1) + y * 29) % 256).astype(np.uint8)
    g[0, 0], g[0, w - 1], g[h - 1, 0], g[h // 2, w // 2] = 0, 255, 1, 128
    return g


def sixteen_samples(w, h, channels, seed):
    """Samples spread over 0..65535, with low bytes >= 0x80 so that truncation and rounding to 8 bits differ."""
    x, y = grid(w, h)
    c = np.arange(channels).reshape(1, 1, channels) if channels > 1 else 0
    xx, yy = (x[..., None], y[..., None]) if channels > 1 else (x, y)
    v = ((xx * 9173 + yy * 13331 + c * 21871 + seed * 7919) * 40503) % 65536
    v = v.astype(np.uint16)
    specials = [0, 65535, 0x00FF, 0x01FF, 0x7F80, 0x80FF, 0xFF7F, 0x0100]
    flat = v.reshape(-1)
    flat[:len(specials)] = specials  # the first pixels of the first row(s)
    return v


def palette_colours(n, seed):
    i = np.arange(n)
    pal = np.stack([(i * 67 + seed * 13) % 256, (i * 151 + 40) % 256, (255 - i * 29) % 256], axis=-1).astype(np.uint8)
    pal[0] = (255, 0, 0)
    return pal


def index_samples(w, h, n):
    x, y = grid(w, h)
    idx = ((x * 3 + y * 5) % n).astype(np.uint8)
    idx[0, 0], idx[h - 1, w - 1] = 0, n - 1
    return idx


# ---------------------------------------------------------------------------------------------------------------
# Raw PNG writing and reading (chunk level).

def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def pack_row(row, bit_depth):
    """One scanline (w * channels samples) as bytes, big-endian for 16 bit, MSB-first packing below 8 bits."""
    row = np.asarray(row).reshape(-1)
    if bit_depth == 16:
        return row.astype(">u2").tobytes()
    if bit_depth == 8:
        return row.astype(np.uint8).tobytes()
    per_byte = 8 // bit_depth
    padded = np.zeros(-(-len(row) // per_byte) * per_byte, dtype=np.uint8)
    padded[:len(row)] = row
    out = np.zeros(len(padded) // per_byte, dtype=np.uint8)
    for k in range(per_byte):
        out |= (padded[k::per_byte] << (8 - bit_depth * (k + 1))).astype(np.uint8)
    return out.tobytes()


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(path, samples, bit_depth, colour_type, interlace=0, palette=None, trns=None):
    """samples: (h, w) or (h, w, channels). Filter type 0 (None) on every row; Adam7 passes if interlace."""
    h, w = samples.shape[:2]
    if interlace:
        passes = [samples[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7]
        passes = [p for p in passes if p.shape[0] and p.shape[1]]  # empty passes are left out entirely
    else:
        passes = [samples]
    raw = b"".join(b"\x00" + pack_row(r, bit_depth) for p in passes for r in p)
    data = SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, interlace))
    if palette is not None:
        data += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if trns is not None:
        data += chunk(b"tRNS", bytes(trns))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def read_chunks(data):
    """[(tag, offset of the chunk's length field, data length)] of a well-formed PNG."""
    assert data[:8] == SIGNATURE
    out, pos = [], 8
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8].decode("ascii"), pos, n))
        pos += 12 + n
    return out


def header(path):
    data = open(path, "rb").read()
    chunks = read_chunks(data)
    assert chunks[0][0] == "IHDR"
    w, h, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return {"width": w, "height": h, "color_type": colour_type, "bit_depth": bit_depth, "interlace": interlace,
            "chunks": [c[0] for c in chunks]}


def corrupt_idat_position(z, row_bytes):
    """(byte index, bit mask, index in the inflated data) of a one-bit flip in the zlib stream z after which the raw
    deflate data still inflates completely to the same length, differing in one sample byte (not a filter byte)."""
    ref = zlib.decompress(z)
    order = sorted(range(2, len(z) - 4), key=lambda i: (abs(i - len(z) // 2), i))
    for i in order:
        for mask in (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80):
            b = bytearray(z)
            b[i] ^= mask
            d = zlib.decompressobj(-15)
            try:
                out = d.decompress(bytes(b[2:-4]))
            except zlib.error:
                continue
            diff = [k for k in range(len(ref)) if k >= len(out) or out[k] != ref[k]]
            if d.eof and len(out) == len(ref) and len(diff) == 1 and diff[0] % (row_bytes + 1) != 0:
                return i, mask, diff[0]
    raise AssertionError("no suitable byte to flip")


# ---------------------------------------------------------------------------------------------------------------
# The rule: what OpenCV's PNG decoder asks of libpng for IMREAD_COLOR, computed from the generated samples.

def rule_bgr(kind, samples, palette=None, bit_depth=8):
    s = np.asarray(samples)
    if kind == "palette":
        rgb = palette[s]                               # png_set_palette_to_rgb; tRNS ignored
    else:
        if bit_depth == 16:
            s = (s >> 8).astype(np.uint8)              # png_set_strip_16: the high byte
        elif bit_depth < 8:
            s = (s.astype(np.uint32) * 255 // ((1 << bit_depth) - 1)).astype(np.uint8)  # expand_gray_1_2_4_to_8
        s = s.astype(np.uint8)
        if s.ndim == 2:
            s = s[..., None]
        if kind in ("grey", "grey_alpha"):
            rgb = np.repeat(s[..., :1], 3, axis=-1)    # png_set_gray_to_rgb (alpha dropped)
        else:
            rgb = s[..., :3]                           # png_set_strip_alpha, no compositing
    return np.ascontiguousarray(rgb[..., ::-1])        # png_set_bgr


def alternatives(kind, samples, palette, bit_depth, got):
    """Names of other plausible rules that do match cv2's output (to describe a mismatch)."""
    found = []
    s = np.asarray(samples).astype(np.float64)
    if bit_depth == 16:
        rounded = ((np.asarray(samples).astype(np.uint32) * 255 + 32895) >> 16).astype(np.uint8)  # png_set_scale_16
        if kind == "grey":
            rounded = np.repeat(rounded[..., None], 3, axis=-1)
        if np.array_equal(got, rounded[..., :3][..., ::-1]):
            found.append("16->8 by rounding (png_set_scale_16: (v*255+32895)>>16)")
    if kind in ("rgba", "grey_alpha"):
        a = s[..., -1:] / 255.0
        col = s[..., :-1] if kind == "rgba" else np.repeat(s[..., :1], 3, axis=-1)
        for name, bg in (("black", 0.0), ("white", 255.0)):
            comp = np.clip(np.round(col * a + bg * (1 - a)), 0, 255).astype(np.uint8)[..., ::-1]
            if np.abs(got.astype(int) - comp.astype(int)).max() <= 1:
                found.append("alpha composited over %s" % name)
    return found


# ---------------------------------------------------------------------------------------------------------------

def imread_capturing_stderr(path):
    """cv2.imread plus whatever OpenCV/libpng wrote to the C-level stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        messages = tmp.read().decode("utf-8", "replace").strip()
    return img, re.sub(r"\[ ?(\w+):\d+@[\d.]+\]", r"[\1]", messages)  # drop OpenCV's run-dependent timestamps


def main():
    allow_mismatch = "--allow-rule-mismatch" in sys.argv[1:]
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    p = lambda name: os.path.join(OUT, name)
    cases = []  # (file name, writer, kind for the rule, samples, palette, bit depth)

    im = rgb8_samples(9, 6)
    Image.frombytes("RGB", (9, 6), im.tobytes()).save(p("rgb8.png"))
    cases.append(("rgb8.png", "pillow", "rgb", im, None, 8))

    rgba = np.concatenate([rgb8_samples(7, 5), alpha8_samples(7, 5)[..., None]], axis=-1)
    Image.frombytes("RGBA", (7, 5), rgba.tobytes()).save(p("rgba8.png"))
    cases.append(("rgba8.png", "pillow", "rgba", rgba, None, 8))

    g = grey8_samples(11, 4)
    Image.frombytes("L", (11, 4), g.tobytes()).save(p("grey8.png"))
    cases.append(("grey8.png", "pillow", "grey", g, None, 8))

    la = np.stack([grey8_samples(5, 7), alpha8_samples(5, 7)], axis=-1)
    Image.frombytes("LA", (5, 7), la.tobytes()).save(p("greyalpha8.png"))
    cases.append(("greyalpha8.png", "pillow", "grey_alpha", la, None, 8))

    g16 = sixteen_samples(9, 5, 1, seed=1)
    Image.frombytes("I;16", (9, 5), g16.astype("<u2").tobytes()).save(p("grey16.png"))
    cases.append(("grey16.png", "pillow", "grey", g16, None, 16))

    rgb16 = sixteen_samples(7, 6, 3, seed=2)
    write_png(p("rgb16.png"), rgb16, 16, 2)  # Pillow cannot write 16-bit RGB
    cases.append(("rgb16.png", "zlib", "rgb", rgb16, None, 16))

    pal8, idx8 = palette_colours(40, 1), index_samples(9, 5, 40)  # > 16 colours, so Pillow keeps 8 bits
    pim = Image.frombytes("P", (9, 5), idx8.tobytes())
    pim.putpalette(pal8.reshape(-1).tolist())
    pim.save(p("palette8.png"))
    cases.append(("palette8.png", "pillow", "palette", idx8, pal8, 8))

    pal4, idx4 = palette_colours(12, 2), index_samples(7, 5, 12)  # odd width: the last nibble of a row is padding
    pim = Image.frombytes("P", (7, 5), idx4.tobytes())
    pim.putpalette(pal4.reshape(-1).tolist())
    pim.save(p("palette4.png"), bits=4)
    cases.append(("palette4.png", "pillow", "palette", idx4, pal4, 4))

    palt, idxt = palette_colours(20, 3), index_samples(5, 6, 20)
    trns = bytes([0, 64, 128, 255, 1, 200])  # shorter than the palette: the other entries are opaque
    pim = Image.frombytes("P", (5, 6), idxt.tobytes())
    pim.putpalette(palt.reshape(-1).tolist())
    pim.save(p("palette_trns.png"), transparency=trns)
    cases.append(("palette_trns.png", "pillow", "palette", idxt, palt, 8))

    x, y = grid(13, 5)  # 13 pixels: 3 padding bits at the end of each row
    bw = ((x + y) % 3 == 0).astype(np.uint8)
    bw[0, 0], bw[0, 12] = 1, 0
    Image.frombytes("1", (13, 5), np.packbits(bw, axis=1).tobytes()).save(p("grey1.png"))
    cases.append(("grey1.png", "pillow", "grey", bw, None, 1))

    inter = rgb8_samples(11, 7)  # 11x7: all seven Adam7 passes are non-empty
    write_png(p("interlaced.png"), inter, 8, 2, interlace=1)  # Pillow cannot write interlaced PNGs
    cases.append(("interlaced.png", "zlib", "rgb", inter, None, 8))

    shutil.copyfile(p("rgb8.png"), p("rgb8_named.jpg"))
    cases.append(("rgb8_named.jpg", "copy of rgb8.png", "rgb", im, None, 8))

    # Broken files, all derived from rgb8.png.
    good = open(p("rgb8.png"), "rb").read()
    idat = [c for c in read_chunks(good) if c[0] == "IDAT"]
    assert len(idat) == 1, "expected one IDAT chunk"
    _, off, n = idat[0]
    with open(p("truncated.png"), "wb") as f:
        f.write(good[:off + 8 + n // 2])
    # Flip one bit of the IDAT data where the deflate stream still inflates to a full image differing in one pixel
    # sample, so that only the chunk CRC (and zlib's Adler-32) can tell: searched outwards from the middle.
    pos, mask, sample = corrupt_idat_position(good[off + 8:off + 8 + n], 9 * 3)
    bad = bytearray(good)
    bad[off + 8 + pos] ^= mask
    with open(p("corrupt_crc.png"), "wb") as f:
        f.write(bytes(bad))
    with open(p("bad_header.png"), "wb") as f:
        f.write(SIGNATURE + bytes((i * 73 + 11) % 256 for i in range(40)))
    with open(p("not_png.png"), "wb") as f:
        f.write(b"hello\n")
    broken_desc = {
        "truncated.png": "rgb8.png cut after %d of the %d IDAT data bytes" % (n // 2, n),
        "corrupt_crc.png": "rgb8.png with IDAT data byte %d (file offset %d) XOR 0x%02x: the chunk CRC no longer "
                           "matches; the deflate stream still inflates, with inflated byte %d (a sample, not a filter "
                           "byte) changed and a wrong Adler-32" % (pos, off + 8 + pos, mask, sample),
        "bad_header.png": "PNG signature followed by 40 bytes of garbage",
        "not_png.png": "the text 'hello\\n'",
    }

    files, mismatches = {}, []
    for name, writer, kind, samples, palette, bit_depth in cases:
        path = p(name)
        info = header(path)
        expected_ct = {"rgb": 2, "rgba": 6, "grey": 0, "grey_alpha": 4, "palette": 3}[kind]
        assert (info["color_type"], info["bit_depth"]) == (expected_ct, bit_depth), (name, info)
        img, messages = imread_capturing_stderr(path)
        assert img is not None and img.dtype == np.uint8 and img.shape == (info["height"], info["width"], 3), name
        bgr = np.ascontiguousarray(img).tobytes()
        stem = os.path.splitext(name)[0]
        with open(p(stem + ".bgr"), "wb") as f:
            f.write(bgr)
        want = rule_bgr(kind, samples, palette, bit_depth)
        ok = np.array_equal(want, img)
        entry = dict(info, writer=writer, bgr=stem + ".bgr", sha256=hashlib.sha256(bgr).hexdigest(), rule_ok=ok)
        if messages:
            entry["cv2_messages"] = messages
        if not ok:
            diff = np.argwhere(want != img)
            mm = {"file": name, "kind": kind, "bit_depth": bit_depth, "differing_samples": int(len(diff)),
                  "first": [{"y": int(a), "x": int(b), "bgr_channel": int(c), "rule": int(want[a, b, c]),
                             "cv2": int(img[a, b, c])} for a, b, c in diff[:5]],
                  "matches_instead": alternatives(kind, samples, palette, bit_depth, img)}
            mismatches.append(mm)
            entry["rule_mismatch"] = mm
        files[name] = entry
        print("%-16s %2dx%-2d ct=%d depth=%-2d interlace=%d  rule %s%s" % (
            name, info["width"], info["height"], info["color_type"], info["bit_depth"], info["interlace"],
            "OK" if ok else "MISMATCH", "" if ok else "  " + json.dumps(mm)))

    broken = {}
    for name, desc in broken_desc.items():
        img, messages = imread_capturing_stderr(p(name))
        res = "None" if img is None else "image %s %s" % ("x".join(map(str, img.shape)), img.dtype)
        broken[name] = {"what": desc, "cv2_imread": res, "cv2_messages": messages}
        if img is not None:
            got = np.ascontiguousarray(img).tobytes()
            broken[name]["sha256"] = hashlib.sha256(got).hexdigest()
            broken[name]["equals_rgb8_bgr"] = got == open(p("rgb8.bgr"), "rb").read()
        print("%-16s cv2.imread -> %s%s" % (name, res, ("   [%s]" % messages.replace("\n", " | ")) if messages else ""))

    m = re.search(r"PNG:\s*(.*)", cv2.getBuildInformation())
    doc = {
        "generator": "tools/make_png_fixtures.py",
        "decode": "cv2.imread(path, cv2.IMREAD_COLOR); NAME.bgr = raw H x W x 3 uint8 BGR bytes, row-major",
        "versions": {"opencv": cv2.__version__, "opencv_libpng": m.group(1).strip() if m else None,
                     "pillow": PIL.__version__, "numpy": np.__version__},
        "rule": "16-bit -> high byte (truncation); alpha dropped, no compositing; palette -> RGB, tRNS ignored; "
                "grey -> 3 equal channels; 1/2/4-bit grey scaled to 8 bit; BGR order",
        "rule_mismatches": mismatches,
        "files": files,
        "broken": broken,
    }
    with open(p("expected.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")

    total = sum(os.path.getsize(p(f)) for f in os.listdir(OUT))
    print("cv2", cv2.__version__, "(%s)" % doc["versions"]["opencv_libpng"], "Pillow", PIL.__version__,
          "- wrote", len(os.listdir(OUT)), "files,", total, "bytes; rule",
          "holds for all %d files" % len(files) if not mismatches else "MISMATCHES: %d" % len(mismatches))
    if mismatches and not allow_mismatch:
        sys.exit("rule mismatch (see above); rerun with --allow-rule-mismatch to record it in expected.json")


if __name__ == "__main__":
    main()
