"""PyTorch reference of the LCBLM (SPEC section 4): every loss term and one AdamW step.

Usage: lcblm_reference.py DIR

DIR/cases.json lists {"name", "d", "cfg" (the [lcblm] section), "lr", "weight_decay"}. For each
case DIR/<name>.in.safetensors holds the model weights ("lcblm.*", PyTorch layout [out, in]),
the inputs "input.x" [B, d] and the injected training noise "noise.u" [B, K], "noise.eps"
[B, K, E]. The script writes DIR/<name>.out.json ({"train": terms, "eval": terms}) and
DIR/<name>.out.safetensors ("grad.<name>" and "updated.<name>" after one
torch.optim.AdamW step on the training total). Everything runs in float64 from the float32
inputs. The ortho term is the SPEC's K² loop over i < j, not the vectorised form.
"""

import json
import sys

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, kl_divergence

torch.set_default_dtype(torch.float64)
from safetensors_io import read_safetensors, write_safetensors


def encoder(p, cfg, x, k, e):
    if cfg["encoder"] == "mlp":
        hidden = F.relu(F.linear(x, p["lcblm.encoder.0.weight"], p["lcblm.encoder.0.bias"]))
        out = F.linear(hidden, p["lcblm.encoder.2.weight"], p["lcblm.encoder.2.bias"])
    else:
        out = F.linear(x, p["lcblm.encoder.0.weight"], p["lcblm.encoder.0.bias"])
        if cfg["encoder"] == "shallow":
            out = F.gelu(out)  # exact (erf) GELU, PyTorch's default
    return out.reshape(x.shape[0], k, e)


def similarity(p, cfg, mu):
    h = p["lcblm.prototypes"]
    if cfg["similarity"] == "cosine":
        num = (mu * h).sum(-1)
        return num / (mu.norm(dim=-1).clamp_min(1e-8) * h.norm(dim=-1).clamp_min(1e-8))
    if cfg["similarity"] == "inner":
        return (mu * h).sum(-1)
    dist = ((mu - h) ** 2).sum(-1).clamp_min(1e-12).sqrt()
    return p["lcblm.distance_bias"] - dist


def ortho_loop(w, k, e):
    blocks = [w[:, i * e : (i + 1) * e] for i in range(k)]
    blocks = [b / b.norm() for b in blocks]
    total = torch.zeros(())
    for i in range(k):
        for j in range(i + 1, k):
            total = total + ((blocks[i].T @ blocks[j]) ** 2).sum()
    return total


def losses(p, cfg, x, noise):
    k, e = cfg["concepts"], cfg["embedding_dim"]
    mu = encoder(p, cfg, x, k, e)
    scale = p["lcblm.logit_scale"].exp().clamp(1, 100)
    logits = scale * similarity(p, cfg, mu)
    alpha = torch.sigmoid(logits)
    if noise is None:
        c, z = alpha, mu
    else:
        u = noise["noise.u"].clamp(1e-6, 1 - 1e-6)
        c = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / cfg["tau"])
        z = mu + cfg["z_noise"] * noise["noise.eps"]
    gated = c[:, :, None] * z
    dec_in = gated.reshape(x.shape[0], k * e) if cfg["topology"] == "stacked" else gated.sum(1)
    x_hat = F.linear(dec_in, p["lcblm.decoder.weight"], p["lcblm.decoder.bias"])
    mse = ((x_hat - x) ** 2).mean()
    a = alpha.detach()
    h = p["lcblm.prototypes"]
    cond = (a * ((mu - h) ** 2).sum(-1) + (1 - a) * (mu**2).sum(-1)).sum(1).mean()
    pbar = alpha.mean(0).clamp(1e-6, 1 - 1e-6)
    prior = torch.full_like(pbar, cfg["prior"])
    sparsity = kl_divergence(Bernoulli(probs=pbar), Bernoulli(probs=prior)).sum()
    entropy = Bernoulli(logits=logits).entropy().sum(1).mean()
    ortho = ortho_loop(p["lcblm.decoder.weight"], k, e) if cfg["ortho"] > 0 else torch.zeros(())
    total = (mse + cfg["gamma"] * cond + cfg["beta"] * sparsity + cfg["entropy"] * entropy
             + cfg["ortho"] * ortho)
    return {"mse": mse, "condKl": cond, "sparsityKl": sparsity, "entropy": entropy,
            "ortho": ortho, "total": total}


def run_case(folder, case):
    cfg = case["cfg"]
    tensors = read_safetensors(f"{folder}/{case['name']}.in.safetensors")
    x = tensors.pop("input.x")
    noise = {"noise.u": tensors.pop("noise.u"), "noise.eps": tensors.pop("noise.eps")}
    params = {name: t.clone().requires_grad_(True) for name, t in tensors.items()}
    with torch.no_grad():
        eval_terms = {n: v.item() for n, v in losses(params, cfg, x, None).items()}
    train = losses(params, cfg, x, noise)
    train_terms = {n: v.item() for n, v in train.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=case["lr"], betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=case["weight_decay"])
    opt.zero_grad()
    train["total"].backward()
    out = {f"grad.{n}": p.grad.clone() for n, p in params.items()}
    opt.step()
    out.update({f"updated.{n}": p.detach().clone() for n, p in params.items()})
    write_safetensors(f"{folder}/{case['name']}.out.safetensors", out)
    with open(f"{folder}/{case['name']}.out.json", "w") as f:
        json.dump({"train": train_terms, "eval": eval_terms}, f)


def main():
    folder = sys.argv[1]
    with open(f"{folder}/cases.json") as f:
        cases = json.load(f)
    for case in cases:
        run_case(folder, case)


if __name__ == "__main__":
    main()
