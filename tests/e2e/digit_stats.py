"""A user's processing script (tests/e2e/test_custom_step_kind.py): per-split row counts
and mean ink of the raw digits -> stats.json. Runs as a SageMaker processing job would:
paths as arguments, numpy and pyarrow only."""
import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

parser = argparse.ArgumentParser()
parser.add_argument("--raw", required=True)
parser.add_argument("--output", required=True)
args = parser.parse_args()

stats = {}
for split_dir in sorted(p for p in Path(args.raw).iterdir() if p.is_dir()):
    table = pq.read_table(split_dir)
    pixels = np.stack(table.column("pixels").to_numpy(zero_copy_only=False)).astype(float)
    stats[split_dir.name] = {"rows": table.num_rows, "mean_ink": float(pixels.mean() / 255)}
out = Path(args.output)
out.mkdir(parents=True, exist_ok=True)
(out / "stats.json").write_text(json.dumps({"splits": stats,
                                            "train_rows": stats["train"]["rows"]}))
print(f"train_rows={stats['train']['rows']}")
