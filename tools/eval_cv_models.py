"""Score the fine-tuned fold models of a recipe run on their own test folds (CPU), writing JSON.

Used when a recipe run on a lent GPU was cut short: its fine-tuning jobs left ``best.pt`` files but
no ``result.json``. Usage: python tools/eval_cv_models.py RUN DATA OUT.json [T ...]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hipposnn.pipeline import evaluate_model, split_names
from hipposnn.weights import atomic_write_text, load_model, read_payload


def main() -> None:
    run, data, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    steps = [int(t) for t in sys.argv[4:]] or [32]
    results = json.loads(out.read_text()) if out.exists() else {}
    for path in sorted(run.glob("*/fold_[0-9]/finetune_T*/best.pt")):
        key = str(path.relative_to(run).parent)
        fold = int(path.parent.parent.name.split("_")[1])
        meta = read_payload(path)["meta"]
        test = split_names(data, fold, 5, 0)[2]
        model = load_model(path)
        for t in steps:
            name = f"{key}@T{t}"
            if name in results:
                continue
            t0 = time.time()
            r = evaluate_model(model, data, test, timesteps=t, coding=meta["coding"], seed=0)
            r["epoch"] = meta.get("epoch")
            r["seconds"] = round(time.time() - t0, 1)
            results[name] = r
            atomic_write_text(out, json.dumps(results, indent=1))
            print(f"{name}: 3D {r['mean_dice_3d']:.4f} 2D {r['mean_dice_2d']:.4f} rate {r['mean_firing_rate']:.4f}")


if __name__ == "__main__":
    main()
