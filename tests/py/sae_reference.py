"""PyTorch reference of the SAE (SPEC section 3): loss terms and torch.optim.Adam steps.

Usage: sae_reference.py DIR

DIR/cases.json lists {"name", "cfg" (the [sae] section), "steps"}. For each case
DIR/<name>.in.safetensors holds the weights written by lcblm ("W_e" [m, d], "b_e" [m], "W_d" [m, d],
"b" [d]), the batch "x" [B, d] and the dead-latent counters "tokens_since_fired" [m]. The script
takes `steps` Adam steps (lr = cfg.lr) on that same batch and writes DIR/<name>.out.json
({"steps": [terms before each step]}) and DIR/<name>.out.safetensors (the weights and counters
after the steps). Everything runs in float64 from the float32 inputs, in a dense formulation
written independently of lcblm's: TopK through a scatter into [B, m], AuxK by masking live
latents with -inf.
"""

import json
import sys

import torch

torch.set_default_dtype(torch.float64)
from safetensors_io import read_safetensors, write_safetensors


def losses(p, x, cfg, since):
    """Loss terms and the latents that fired (dense z [B, m])."""
    pre = (x - p["b"]) @ p["W_e"].T + p["b_e"]
    if cfg["kind"] == "relu-l1":
        z = torch.relu(pre)
        x_hat = z @ p["W_d"] + p["b"]
        mse = ((x_hat - x) ** 2).mean()
        l1 = z.abs().mean()
        return {"mse": mse, "l1": l1, "total": mse + cfg["l1"] * l1}, z
    vals, idx = pre.topk(cfg["k"], dim=1)
    z = torch.zeros_like(pre).scatter(1, idx, torch.relu(vals))
    x_hat = z @ p["W_d"] + p["b"]
    mse = ((x_hat - x) ** 2).mean()
    dead = since >= cfg["dead_tokens"]
    aux = torch.zeros(())
    if dead.any():
        k_aux = min(cfg["k_aux"], int(dead.sum()))
        aux_vals, aux_idx = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=1)
        z_aux = torch.zeros_like(pre).scatter(1, aux_idx, torch.relu(aux_vals))
        e = (x - x_hat).detach()
        aux = ((e - z_aux @ p["W_d"]) ** 2).mean()
    return {"mse": mse, "aux": aux, "total": mse + cfg["aux_alpha"] * aux}, z


def run(case, directory):
    t = read_safetensors(f"{directory}/{case['name']}.in.safetensors")
    cfg = case["cfg"]
    p = {name: torch.nn.Parameter(t[name].clone()) for name in ["W_e", "b_e", "W_d", "b"]}
    x, since = t["x"], t["tokens_since_fired"].clone()
    opt = torch.optim.Adam(list(p.values()), lr=cfg["lr"])
    steps = []
    for _ in range(case["steps"]):
        opt.zero_grad()
        terms, z = losses(p, x, cfg, since)
        terms["total"].backward()
        if cfg["kind"] == "relu-l1":
            g, w = p["W_d"].grad, p["W_d"].detach()
            p["W_d"].grad = g - (g * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True) * w
        opt.step()
        if cfg["kind"] == "relu-l1":
            with torch.no_grad():
                p["W_d"] /= p["W_d"].norm(dim=1, keepdim=True)
        fired = (z > 0).any(0)
        since += x.shape[0]
        since[fired] = 0
        steps.append({k: float(v) for k, v in terms.items()})
    json.dump({"steps": steps}, open(f"{directory}/{case['name']}.out.json", "w"))
    write_safetensors(f"{directory}/{case['name']}.out.safetensors", {**p, "tokens_since_fired": since})


if __name__ == "__main__":
    directory = sys.argv[1]
    for case in json.load(open(f"{directory}/cases.json")):
        run(case, directory)
