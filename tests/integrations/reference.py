"""docs/CONTRACT.md section 1 written again, independently of noam_plugin: what integration tests compare with."""

import math


def reference_lr(
    k: int,
    warmup_num_steps: int,
    d_model=None,
    factor=1.0,
    warmup_max_lr=None,
    total_num_steps=None,
    cooldown_num_steps=None,
    cooldown_type="linear",
    cooldown_min_lr=0.0,
) -> float:
    """docs/CONTRACT.md section 1, written again: the lr of the k-th optimizer update."""
    w = warmup_num_steps

    def noam(t):
        if d_model is not None:
            return factor * d_model**-0.5 * min(t**-0.5, t * w**-1.5)
        return warmup_max_lr * min(t / w, (w / t) ** 0.5)

    if cooldown_num_steps is None or k <= total_num_steps - cooldown_num_steps:
        return noam(k)
    s = total_num_steps - cooldown_num_steps
    x = min(1, (k - s) / (cooldown_num_steps + 1))
    f = {"linear": 1 - x, "1-sqrt": 1 - math.sqrt(x), "cosine": (1 + math.cos(math.pi * x)) / 2}[cooldown_type]
    return cooldown_min_lr + (noam(s) - cooldown_min_lr) * f


def reference_amended(k: int, amendments=(), group=None, **params) -> float:
    """docs/CONTRACT.md section 4 ("Amendments"), written again: the lr of the update that brings the count to k
    under `params` and a list of amendments (dicts as in a config). An amendment at n changes only updates with
    k > n: `scale` multiplies (scales multiply), `rewarm_num_steps` r runs k <= n + r at (k - n) / r of the lr,
    cooldown keys replace those in force. `group` (name, index): amendments naming other groups are left out."""
    tail_keys = ("total_num_steps", "cooldown_num_steps", "cooldown_type", "cooldown_min_lr")
    curve = dict(params)
    factor = 1.0
    for a in amendments:
        n = a["at"]
        if k <= n:
            continue
        if "groups" in a and (group is None or not any(sel in group for sel in a["groups"])):
            continue
        if "scale" in a:
            factor *= a["scale"]
        elif "rewarm_num_steps" in a:
            if k <= n + a["rewarm_num_steps"]:
                factor *= (k - n) / a["rewarm_num_steps"]
        else:
            curve.update({key: a[key] for key in tail_keys if key in a})
    return reference_lr(k, **{key: v for key, v in curve.items() if v is not None}) * factor
