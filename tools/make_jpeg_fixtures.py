#!/usr/bin/env python3
"""Writes the JPEG fixtures of Tests/ImagingTests/Fixtures with Pillow, an encoder independent of ours.

Run from the repository root:  python3 tools/make_jpeg_fixtures.py   (needs: pip install pillow)
"""
import os
from PIL import Image

out = os.path.join(os.path.dirname(__file__), "..", "Tests", "ImagingTests", "Fixtures")
os.makedirs(out, exist_ok=True)

# 16x8: left half pure red, right half pure blue; 4:4:4 so the colours stay exact at the centre.
img = Image.new("RGB", (16, 8))
for y in range(8):
    for x in range(16):
        img.putpixel((x, y), (255, 0, 0) if x < 8 else (0, 0, 255))
img.save(os.path.join(out, "red_blue_16x8.jpg"), quality=95, subsampling=0)

# 8x8 greyscale gradient.
grey = Image.new("L", (8, 8))
for y in range(8):
    for x in range(8):
        grey.putpixel((x, y), 16 * x + y)
grey.save(os.path.join(out, "grey_8x8.jpg"), quality=90)

# 32x24 progressive colour image.
prog = Image.new("RGB", (32, 24))
for y in range(24):
    for x in range(32):
        prog.putpixel((x, y), (8 * x % 256, 10 * y % 256, 128))
prog.save(os.path.join(out, "progressive_32x24.jpg"), quality=85, progressive=True)
print("wrote", sorted(os.listdir(out)))
