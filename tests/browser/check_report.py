#!/usr/bin/env python3
"""The HTML report in a real browser: `reckon train --report` renders in headless Chromium with no console
error, its reconciliation columns are all +0 (memory at the peak, FLOPs per op × phase), and its pictures are drawn — the PNG has thousands of pixels of each memory category's fill, of the op
bars and of the roofline's points (the exact colours cli/html_report.cpp uses; a page whose SVG failed to
render is all white there). Also: `reckon report RUN.json` renders the same page byte for byte.

usage: check_report.py path/to/reckon [workdir]      (needs chromium: scripts/setup.sh installs it)
"""
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib


def png_pixels(path):
    """(width, height, rows of RGB tuples) of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    counts = {}
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        for x in range(0, stride, channels):
            key = bytes(line[x:x + 3])
            counts[key] = counts.get(key, 0) + 1
        prev = line
    return width, height, counts


def main():
    reckon = os.path.abspath(sys.argv[1])
    work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="reckon_report_")
    os.makedirs(work, exist_ok=True)
    html, html2, js, png = (os.path.join(work, n) for n in ("run.html", "again.html", "run.json", "run.png"))
    run = subprocess.run([reckon, "train", "--preset", "tiny", "--steps", "4", "--threads", "2", "--quiet",
                          "--report", html, "--json", js], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run([reckon, "report", js, "-o", html2], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert open(html, "rb").read() == open(html2, "rb").read(), "reckon report renders another page than --report"
    page = open(html, encoding="utf-8").read()
    diffs = re.findall(r'<td class="n">(?:<b>)?([+-][0-9]+)(?:</b>)?</td>', page)  # only diff cells carry a sign
    assert len(diffs) >= 10 and all(d == "+0" for d in diffs), f"the report's reconciliation differs: {diffs}"
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", ""), "not self-contained"

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed (scripts/setup.sh installs it)"
    shot = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--force-device-scale-factor=1", "--window-size=1280,2200", "--enable-logging=stderr",
                           "--v=0", "--screenshot=" + png, "file://" + html],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and os.path.exists(png), shot.stdout + shot.stderr
    console = [l for l in (shot.stdout + shot.stderr).splitlines() if ":CONSOLE(" in l]
    assert not console, "console messages: " + "\n".join(console)

    width, height, counts = png_pixels(png)
    need = {"parameter": "4e79a7", "gradient": "f28e2b", "optimizer_state": "59a14f", "activation": "e15759",
            "temporary": "76b7b2", "op bars": "9c755f"}
    found = {name: counts.get(bytes.fromhex(colour), 0) for name, colour in need.items()}
    print(f"check_report: {width}x{height} PNG, pixels per fill: {found}")
    for name, n in found.items():
        minimum = 300 if name == "temporary" else 3000
        assert n >= minimum, f"{name} ({need[name]}): {n} pixels, expected at least {minimum}: the picture is not drawn"
    white = counts.get(b"\xff\xff\xff", 0)
    assert white < 0.95 * width * height, "the page is almost all white"
    print("check_report: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
