"""One table per concept: the names users write in configs and read in messages (no torch here)."""

from __future__ import annotations

SCHEDULER_NAME = "NoamLR"  # DeepSpeed's "type", the saved state's "type", the class, messages

# warmup_unit: what one step of every *_num_steps is (docs/CONTRACT.md section 1)
UPDATES, SAMPLES, TOKENS = "updates", "samples", "tokens"
WARMUP_UNITS = (UPDATES, SAMPLES, TOKENS)
DEFAULT_UNIT = UPDATES
DATA_UNITS = (SAMPLES, TOKENS)  # counted in data: the lr is read at the data seen including the update's own

# cooldown_type: the shape f(x) of the tail (the functions are in schedule.py)
LINEAR, ONE_MINUS_SQRT, COSINE = "linear", "1-sqrt", "cosine"
COOLDOWN_TYPES = (LINEAR, ONE_MINUS_SQRT, COSINE)
DEFAULT_COOLDOWN = LINEAR

MAX_INT = 2**63 - 1  # counts and sizes: int64, what torch and JSON tools keep exactly
MAX_COUNT = MAX_INT - 1  # a saved count: one more update must still fit
