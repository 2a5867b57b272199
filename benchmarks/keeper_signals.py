"""The keeper's "source over derived" signals, measured on procedural photos (tests/photos.py).

    .venv/bin/python benchmarks/keeper_signals.py --seeds 12

For each scene (at 384x288 and 640x480): the block-grid ratio (:func:`retrieval.duplicates.keeper._grid`,
the smaller of columns and rows) of the pixels as rendered (never JPEG'd) and after a JPEG round trip
at qualities 70, 85, 95 and 100, and the share of clipped highlights (>= 254) before and after a
brightness edit of +12 % and +30 %. Prints one JSON line with the range of each, which is where
``GRID_RATIO`` (1.15) and ``CLIP_MIN`` (0.2 %) come from (docs/duplicates.md, "The keeper").
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.duplicates.keeper import _grid  # noqa: E402
from tests.photos import SIZE, SMALL, render  # noqa: E402


def grid_of(im: Image.Image) -> float:
    grey = np.asarray(im.convert("L"), np.float32)
    return min(_grid(grey), _grid(grey.T))


def clipped(im: Image.Image) -> float:
    return float((np.asarray(im.convert("L")) >= 254).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12)
    args = parser.parse_args()
    grids: dict[str, list[float]] = {"never_jpeg": [], "q70": [], "q85": [], "q95": [], "q100": []}
    clips: dict[str, list[float]] = {"as_rendered": [], "bright_12": [], "bright_30": []}
    for seed in range(args.seeds):
        for size in (SMALL, SIZE):
            im = render(seed, size=size)
            grids["never_jpeg"].append(grid_of(im))
            for q in (70, 85, 95, 100):
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=q)
                grids[f"q{q}"].append(grid_of(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
            clips["as_rendered"].append(clipped(im))
            clips["bright_12"].append(clipped(ImageEnhance.Brightness(im).enhance(1.12)))
            clips["bright_30"].append(clipped(ImageEnhance.Brightness(im).enhance(1.30)))
    print(json.dumps({"images": 2 * args.seeds,
                      "grid_ratio": {k: [round(min(v), 3), round(max(v), 3)] for k, v in grids.items()},
                      "clipped_share": {k: [round(min(v), 4), round(max(v), 4)] for k, v in clips.items()}}))


if __name__ == "__main__":
    main()
