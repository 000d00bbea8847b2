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


def reference_group_curve(params: dict, group_name=None, group_index=None) -> tuple[dict, float]:
    """docs/CONTRACT.md section 1 "Per-group schedules", written again: (curve parameters, lr_scale) of one group.

    `params` is a scheduler block's params with `groups`; the group is known by its `name` key and/or its index.
    Its curve is the main one with the matching override's keys replaced (d_model and warmup_max_lr pick the
    form), times lr_scale.
    """
    skip = ("groups", "warmup_unit", "allow_param_change", "amendments")
    main = {key: value for key, value in params.items() if key not in skip}
    for override in params.get("groups", []):
        if override.get("name", object()) == group_name or override.get("index", object()) == group_index:
            curve = dict(main)
            if "d_model" in override:
                curve.pop("warmup_max_lr", None)
            if "warmup_max_lr" in override:
                curve.pop("d_model", None)
                curve.pop("factor", None)
            own = {key: value for key, value in override.items() if key not in ("name", "index", "lr_scale")}
            curve.update(own)
            return curve, override.get("lr_scale", 1.0)
    return main, 1.0


def reference_group_lr(k: int, params: dict, group_name=None, group_index=None) -> float:
    """The lr of the k-th update in one group (reference_group_curve)."""
    curve, scale = reference_group_curve(params, group_name, group_index)
    return reference_lr(k, **curve) * scale


def reference_amended(k: int, params: dict, group_name=None, group_index=None) -> float:
    """docs/CONTRACT.md section 4 ("Amendments"), written again: the lr of the update that brings the count to k
    in one group (none: the main curve) under `params` with `amendments` (and `groups`). An amendment at n changes
    only updates with k > n, and only the groups it names (none named: all): `scale` multiplies (scales
    multiply), `rewarm_num_steps` r runs k <= n + r at (k - n) / r of the lr, cooldown keys replace those of the
    group's curve."""
    curve, factor = reference_group_curve(params, group_name, group_index)
    tail_keys = ("total_num_steps", "cooldown_num_steps", "cooldown_type", "cooldown_min_lr")
    for a in params.get("amendments", []):
        n = a["at"]
        if k <= n:
            continue
        if "groups" in a and group_name not in a["groups"] and group_index not in a["groups"]:
            continue
        if "scale" in a:
            factor *= a["scale"]
        elif "rewarm_num_steps" in a:
            if k <= n + a["rewarm_num_steps"]:
                factor *= (k - n) / a["rewarm_num_steps"]
        else:
            curve.update({key: a[key] for key in tail_keys if key in a})
    return reference_lr(k, **{key: v for key, v in curve.items() if v is not None}) * factor
