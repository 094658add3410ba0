"""One run log for every command: records as JSON lines, and optionally Weights & Biases.

`--log_jsonl PATH` holds the records of ONE run, one JSON object per line
({"event": "epoch", ...}, {"event": "eval", ...}, ...).  Each run starts the file
anew, and it is rewritten atomically after every record, so at any moment it holds
whole lines only, and an interrupted run keeps what it logged so far.
`--wandb` also sends each record's numbers to a wandb run, when wandb is installed.
(The human-readable line per epoch is printed by the training loop itself.)
"""
from __future__ import annotations

import json
import sys
from typing import Dict, Optional

from .files import atomic_write_text


class RunLog:
    def __init__(self, jsonl: Optional[str] = None, wandb: bool = False, job: str = "run",
                 config: Optional[Dict] = None):
        self.path, self.records = jsonl, []
        self.wandb_run = open_wandb(job, config or {}) if wandb else None

    def log(self, event: str, **fields):
        record = {"event": event, **fields}
        self.records.append(record)
        if self.path:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        if self.wandb_run is not None:
            self.wandb_run.log({f"{event}/{k}": v for k, v in fields.items() if isinstance(v, (int, float))})

    def close(self):
        if self.path and self.records:
            print(f"wrote {len(self.records)} run-log record(s) to {self.path}")
            self.path = None  # said once
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc):
        self.close()


def open_wandb(job: str, config: Dict):
    """A wandb run when the package is installed; else None (with a note)."""
    try:
        import wandb
    except ImportError:
        print("--wandb: the wandb package is not installed (pip install wandb); continuing without it",
              file=sys.stderr)
        return None
    return wandb.init(project="minillama", job_type=job, config={k: str(v) for k, v in config.items()})

