"""Training job: a mean-rings "model", written the way the container contract asks."""

import argparse
import csv
import json
import os
import sys
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, required=True)
parser.add_argument("--alpha", type=float, required=True)
parser.add_argument("--columns", type=json.loads, required=True)
parser.add_argument("--note", required=True)
args = parser.parse_args()
if args.epochs <= 0:
    Path(os.environ["SM_OUTPUT_FAILURE"]).write_text(f"epochs must be positive, got {args.epochs}")
    sys.exit(2)
train = Path(os.environ["SM_CHANNEL_TRAIN"])
rows = []
for path in sorted(train.glob("*.csv")):
    with open(path) as handle:
        rows += list(csv.DictReader(handle))
rings = [float(row["rings"]) for row in rows]
mean = sum(rings) / len(rings)
mae = sum(abs(r - mean) for r in rings) / len(rings)
model_dir = Path(os.environ["SM_MODEL_DIR"])
(model_dir / "model.json").write_text(json.dumps({
    "mean": mean, "epochs": args.epochs, "alpha": args.alpha, "columns": args.columns,
    "note": args.note, "hps": json.loads(os.environ["SM_HPS"]),
    "channels": json.loads(os.environ["SM_CHANNELS"]), "cwd": os.getcwd(),
    "hp_epochs": os.environ["SM_HP_EPOCHS"], "job": os.environ["TRAINING_JOB_NAME"],
}))
print(f"mae={mae:.6f}")
