"""Processing job: copy the summary it was given to its own output."""

import os
import shutil
from pathlib import Path

OPT_ML = Path(os.environ.get("MLOPS_OPT_ML", "/opt/ml"))
shutil.copy(OPT_ML / "processing/input/summary/summary.json", OPT_ML / "processing/published")
