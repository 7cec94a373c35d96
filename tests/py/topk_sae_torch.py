"""Time the TopK SAE training step in PyTorch, the reference for bench/topk_sae_bench.ts.

Usage: topk_sae_torch.py BATCH STEPS [THREADS] [DEAD_EVERY]

The step (d = 768, m = 24576, k = 32, k_aux = 256, AuxK weight 1/32, Adam lr 1e-4), the same
formulation as models/sae.ts: pre = W_e(x − b) + b_e with W_e [m, d]; idx = topk(pre, k);
z = ReLU(pre[idx]) scattered into a dense [B, m]; x̂ = z·W_d + b; AuxK: the top k_aux
pre-activations among the dead latents, ReLU'd, scattered and decoded without bias against the
detached residual x − x̂; loss = MSE + AuxK/32; backward; Adam. Dead latents: every DEAD_EVERY-th
(default 10) at the start, a latent leaving the set once it fires (as in models/sae.ts, whose
dead_tokens is not reached within the few steps timed). Prints one JSON line: {"seconds": median
step after two warm-up steps, "rss_mb", "threads", "blas", "dead": dead latents at the end}.
"""

import sys

import torch

from step_timing import report_step_time

D, M, K, K_AUX, ALPHA, LR = 768, 24576, 32, 256, 1 / 32, 1e-4


def main(batch, steps, threads, dead_every):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, D)
    w_e = torch.nn.Parameter(torch.randn(M, D) * 0.02)
    b_e = torch.nn.Parameter(torch.zeros(M))
    w_d = torch.nn.Parameter(torch.randn(M, D) * 0.02)
    b = torch.nn.Parameter(torch.zeros(D))
    opt = torch.optim.Adam([w_e, b_e, w_d, b], lr=LR)
    dead = torch.arange(M) % dead_every == 0

    def decode(pre, k, mask=None):
        scores = pre if mask is None else pre.masked_fill(~mask, float("-inf"))
        idx = scores.detach().topk(k, dim=1).indices
        vals = torch.relu(pre.gather(1, idx))
        return torch.zeros_like(pre).scatter(1, idx, vals) @ w_d, idx, vals

    def step():
        nonlocal dead
        pre = (x - b) @ w_e.t() + b_e
        decoded, idx, vals = decode(pre, K)
        x_hat = decoded + b
        mse = ((x_hat - x) ** 2).mean()
        loss = mse
        n_dead = int(dead.sum())
        if n_dead > 0:
            e = (x - x_hat).detach()
            aux = ((e - decode(pre, min(K_AUX, n_dead), dead)[0]) ** 2).mean()
            loss = mse + ALPHA * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        fired = torch.zeros(M, dtype=torch.bool)
        fired[idx[vals.detach() > 0]] = True
        dead = dead & ~fired
        return loss.item()

    report_step_time(step, steps, dead=lambda: int(dead.sum()))


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(args[0], args[1], args[2] if len(args) > 2 else 2, args[3] if len(args) > 3 else 10)
