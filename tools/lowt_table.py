"""Print the Markdown table of the low-latency pilot from its raw JSON (docs/results/lowt_pilot/eval_*.json).

    python tools/lowt_table.py [docs/results/lowt_pilot]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

HEADER = ("| model | T | val 3D Dice | val 2D Dice | firing rate | spikes / neuron | SOPs / ROI "
          "| energy / ROI (µJ) | x ANN energy |\n|---|---|---|---|---|---|---|---|---|")


def rows(folder: Path) -> List[str]:
    lines = []
    for path in sorted(folder.glob("eval_*.json")):
        data = json.loads(path.read_text())
        for label, model in data["models"].items():
            for key, r in model["runs"].items():
                if key == "ann":
                    lines.append(f"| {label} | - | {r['dice_3d']:.4f} ± {r['sd_dice_3d']:.4f} | {r['dice_2d']:.4f} "
                                 f"| - | - | - | {r['energy_roi_uj']:.1f} | 1 |")
                elif key.startswith("poisson_input_T"):
                    lines.append(f"| {label}, input = mean of {key[15:]} Poisson steps | - | {r['dice_3d']:.4f} "
                                 f"± {r['sd_dice_3d']:.4f} | {r['dice_2d']:.4f} | - | - | - | - | - |")
                else:
                    lines.append(f"| {label} | {key} | {r['dice_3d']:.4f} ± {r['sd_dice_3d']:.4f} | {r['dice_2d']:.4f} "
                                 f"| {r['mean_firing_rate']:.4f} | {r['spikes_per_neuron']:.2f} "
                                 f"| {r['synops_roi'] / 1e9:.2f} G | {r['energy_roi_uj']:.1f} "
                                 f"| {r['energy_vs_ann']:.3f} |")
    return lines


def main(argv: List[str]) -> int:
    folder = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "docs" / "results" / "lowt_pilot"
    print(HEADER)
    print("\n".join(rows(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
