"""Same-machine baseline for `benchmarks/latent_sde.py`: one training iteration of a latent
SDE written with PyTorch + torchsde at the configuration of torchsde's Lorenz example
(batch 1024, 100 observation times on [0, 2], data 3, latent 4, context 64, hidden 128,
GRU encoder run backwards in time, per-dimension diffusion networks, Euler with
dt = 1e-2, Laplace likelihood, Adam). Written for this project to time the reference
library on the machine that runs our benchmark; it is not part of the package and is
never imported by it.

Needs `torch` and `torchsde` in the Python that runs it (a separate environment: the
package itself never depends on PyTorch):

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch torchsde
    /tmp/torchvenv/bin/python benchmarks/baselines/torchsde_latent_sde.py --threads 2

Prints one JSON line: seconds per iteration (forward, backward and Adam step).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchsde
from torch import nn


class Model(nn.Module):
    sde_type = "ito"
    noise_type = "diagonal"

    def __init__(self, data=3, latent=4, context=64, hidden=128):
        super().__init__()
        self.gru = nn.GRU(data, hidden)
        self.to_ctx = nn.Linear(hidden, context)
        self.q0 = nn.Linear(context, 2 * latent)
        act = nn.Softplus
        self.post = nn.Sequential(nn.Linear(latent + context, hidden), act(), nn.Linear(hidden, hidden), act(),
                                  nn.Linear(hidden, latent))
        self.prior = nn.Sequential(nn.Linear(latent, hidden), act(), nn.Linear(hidden, hidden), act(),
                                   nn.Linear(hidden, latent))
        self.diff = nn.ModuleList(
            nn.Sequential(nn.Linear(1, hidden), act(), nn.Linear(hidden, 1), nn.Sigmoid()) for _ in range(latent))
        self.readout = nn.Linear(latent, data)
        self.p0_mean = nn.Parameter(torch.zeros(1, latent))
        self.p0_logstd = nn.Parameter(torch.zeros(1, latent))
        self._ctx = None

    # torchsde's interface: f (posterior drift), h (prior drift), g (diagonal diffusion)
    def f(self, t, y):
        ts, ctx = self._ctx
        i = min(int(torch.searchsorted(ts, t, right=True)), len(ts) - 1)
        return self.post(torch.cat([y, ctx[i]], dim=1))

    def h(self, t, y):
        return self.prior(y)

    def g(self, t, y):
        cols = torch.split(y, 1, dim=1)
        return torch.cat([net(c) for net, c in zip(self.diff, cols)], dim=1)

    def loss(self, xs, ts, dt):
        out, _ = self.gru(torch.flip(xs, dims=(0,)))
        ctx = torch.flip(self.to_ctx(out), dims=(0,))
        self._ctx = (ts, ctx)
        m0, logs0 = self.q0(ctx[0]).chunk(2, dim=1)
        z0 = m0 + logs0.exp() * torch.randn_like(m0)
        zs, log_ratio = torchsde.sdeint(self, z0, ts, dt=dt, method="euler", logqp=True, names={"drift": "f",
                                        "diffusion": "g", "prior_drift": "h"})
        lik = torch.distributions.Laplace(self.readout(zs), 0.01).log_prob(xs).sum(dim=(0, 2)).mean()
        q0 = torch.distributions.Normal(m0, logs0.exp())
        p0 = torch.distributions.Normal(self.p0_mean, self.p0_logstd.exp())
        kl0 = torch.distributions.kl_divergence(q0, p0).sum(dim=1).mean()
        return -lik + log_ratio.sum(dim=0).mean() + kl0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ts = torch.linspace(0.0, 2.0, 100)
    xs = torch.randn(100, args.batch, 3)  # timing only: the values do not change the work
    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def iteration():
        opt.zero_grad()
        loss = model.loss(xs, ts, 1e-2)
        loss.backward()
        opt.step()
        return float(loss.detach())

    iteration()  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.iters):
        iteration()
    per_iter = (time.perf_counter() - t0) / args.iters
    print(json.dumps({"library": "torchsde", "torch": torch.__version__, "torchsde": torchsde.__version__,
                      "threads": args.threads, "batch": args.batch, "seconds_per_iteration": per_iter}))


if __name__ == "__main__":
    main()
