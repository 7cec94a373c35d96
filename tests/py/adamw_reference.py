"""Run torch.optim.AdamW on given parameters and per-step gradients, print the results.

Usage: adamw_reference.py INPUT.json OUTPUT.json

INPUT.json holds {"params": [...], "grads": [[...], ...] (one list per step), "lr", "betas",
"eps", "weight_decay"}. OUTPUT.json receives {"params", "exp_avg", "exp_avg_sq", "step"} after
all steps, computed in float32 as PyTorch trains.
"""

import json
import sys

import torch


def main(src, dst):
    with open(src) as f:
        cfg = json.load(f)
    p = torch.nn.Parameter(torch.tensor(cfg["params"], dtype=torch.float32))
    opt = torch.optim.AdamW(
        [p],
        lr=cfg["lr"],
        betas=tuple(cfg["betas"]),
        eps=cfg["eps"],
        weight_decay=cfg["weight_decay"],
        foreach=False,
    )
    for g in cfg["grads"]:
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    state = opt.state[p]
    out = {
        "params": p.detach().tolist(),
        "exp_avg": state["exp_avg"].tolist(),
        "exp_avg_sq": state["exp_avg_sq"].tolist(),
        "step": int(state["step"]),
    }
    with open(dst, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
