"""Time the dense SAE training step in PyTorch, the reference for bench/sae_step_bench.ts.

Usage: sae_step_torch.py BATCH STEPS [THREADS]

The step: z = ReLU(x·W_e + b_e), x̂ = z·W_d + b_d, loss = MSE(x̂, x) + 1e-3·mean|z|, backward,
Adam (lr 1e-4), with d = 768, m = 6144. Prints one JSON line: {"seconds": median seconds per
step after two warm-up steps, "rss_mb": peak resident set size, "threads", "blas"}.
"""

import sys

import torch

from step_timing import report_step_time

D, M, L1 = 768, 6144, 1e-3


def main(batch, steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, D)
    w_e = torch.nn.Parameter(torch.randn(D, M) * 0.02)
    b_e = torch.nn.Parameter(torch.zeros(M))
    w_d = torch.nn.Parameter(torch.randn(M, D) * 0.02)
    b_d = torch.nn.Parameter(torch.zeros(D))
    opt = torch.optim.Adam([w_e, b_e, w_d, b_d], lr=1e-4)

    def step():
        z = torch.relu(torch.addmm(b_e, x, w_e))
        x_hat = torch.addmm(b_d, z, w_d)
        loss = ((x_hat - x) ** 2).mean() + L1 * z.abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    report_step_time(step, steps)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 2)
