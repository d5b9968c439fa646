"""``make report-check``: every figure of a rendered report.html is there, has something drawn, and fits its box.

The page is 1,200 px wide (the template's body) less its padding; a figure is shown at most that wide, so one much
wider is shrunk until its text cannot be read. Checked from the HTML itself, so it runs wherever Python does;
where headless Chromium is installed the Makefile also prints the whole page to PDF for a look.

    python -m embedkit.report.check demo/report/report.html
"""

from __future__ import annotations

import base64
import io
import re
import sys
from pathlib import Path

import numpy as np

BOX_PX = 1200 - 32           # the body's max-width less 1em padding each side
MAX_SHRINK = 2.0             # shown at half its size or less: 8-pt text becomes 4 pt
MAX_HEIGHT_PX = 3000         # taller than about three screens at full width
IMG = re.compile(r'<img\s+alt="([^"]*)"\s+src="data:image/png;base64,([^"]*)"')


def problems(html: Path) -> list[str]:
    """One line per figure that is missing, empty, too wide or too tall (empty list: the page passes)."""
    from PIL import Image, UnidentifiedImageError

    text = Path(html).read_text(encoding="utf-8")
    found = IMG.findall(text)
    out = [] if found else [f"{html}: no figures at all"]
    for alt, data in found:
        if not data:
            out.append(f"{alt}: missing (no image data)")
            continue
        try:
            image = Image.open(io.BytesIO(base64.b64decode(data))).convert("L")
        except (ValueError, UnidentifiedImageError):
            out.append(f"{alt}: missing (not a PNG)")
            continue
        out += [f"{alt}: {why}" for why in _judge(image)]
    return out


def _judge(image) -> list[str]:
    width, height = image.size
    shown = min(1.0, BOX_PX / width)
    pixels = np.asarray(image)
    values, counts = np.unique(pixels, return_counts=True)
    why = []
    if 1 - counts.max() / pixels.size < 0.002:
        why.append(f"empty (one colour, {width}×{height} px)")
    if width > BOX_PX * MAX_SHRINK:
        why.append(f"overflows its box: {width} px wide, shown at {shown:.0%} of its size")
    if height * shown > MAX_HEIGHT_PX:
        why.append(f"too tall: {round(height * shown)} px on the page")
    return why


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_file():
        print("usage: python -m embedkit.report.check REPORT.html (build one with `make demo`)", file=sys.stderr)
        return 2
    found = problems(Path(args[0]))
    for line in found:
        print(line, file=sys.stderr)
    n = len(IMG.findall(Path(args[0]).read_text(encoding="utf-8")))
    print(f"{args[0]}: {n} figure(s), {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
