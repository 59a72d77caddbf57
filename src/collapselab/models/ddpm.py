"""Denoising diffusion (Ho et al. 2020), the ``ddpm`` family.

A network predicts the noise ε of ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` for ``t = 1..timesteps``;
one network per chain. For 2-D toy data (``continuous``, ``(chains, n, D)``: standardised per chain,
coordinates scaled back after sampling) it is an MLP with a sinusoidal time embedding; for images
(``images``, ``(chains, n, H, W)``, pixels mapped to [-1, 1]) a U-Net from Hugging Face diffusers
(``UNet2DModel``: ``unet_channels`` per resolution level, one ResNet block each, no attention).
Measured on 8x8 digits (1,000 training images, 2 busy CPU cores): a 164k-parameter U-Net
([16, 32]) trained 1,500 steps of 64 in 137 s, 1,000 DDIM samples of 50 steps in 9 s, reaches
precision 0.73 and recall 0.91 against the real data's 0.88 and 0.94 in the fixed feature space.
Training is Adam with the learning rate decaying linearly to a tenth; ``max_steps`` bounds it.

Sampling is ``ancestral`` over ``sample_steps`` of the ``timesteps`` (respaced as in Nichol & Dhariwal
2021: ``β'_s = 1 - ᾱ_s / ᾱ_{s'}`` between kept steps) with the posterior variance β̃, or ``ddim``
(Song et al. 2021, eta 0, diffusers' ``DDIMScheduler`` on this model's β schedule); images clip the
predicted x_0 to the pixel range.

``score_samples`` is the variational bound on log p(x) in nats per sample, in the data's own
coordinates (Ho et al. eq. 5, with reverse variances σ_t² = β_t): ``-KL(q(x_T|x_0) || N(0, I))
- Σ_{t≥2} KL(q(x_{t-1}|x_t, x_0) || p(x_{t-1}|x_t)) + log N(x_0; μ(x_1, 1), β_1)`` plus the
log-Jacobian of the standardisation. Each term uses one draw of x_t from a generator seeded
identically on every call (common random numbers: deterministic, paired across generations). It is
the bound of the full ``timesteps`` chain (one network pass per step: costly for T = 1000), so for
respaced or DDIM sampling it is a proxy for the likelihood of the sampler.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
import pydantic
import torch
from torch import nn

from collapselab.models.sampling import torch_generator
from collapselab.models.vae import PosInt, Threads, torch_threads
from collapselab.protocol import Model, NetworkCache, check_data, check_n


def beta_schedule(kind: str, timesteps: int) -> np.ndarray:
    """β_1..β_T as float64 ``(T,)``: linear (Ho et al., scaled to T) or cosine (Nichol & Dhariwal)."""
    if kind == "linear":
        scale = 1000 / timesteps
        return np.linspace(scale * 1e-4, min(scale * 0.02, 0.999), timesteps)
    s = 0.008
    f = np.cos((np.arange(timesteps + 1) / timesteps + s) / (1 + s) * np.pi / 2) ** 2
    return np.clip(1 - f[1:] / f[:-1], 1e-5, 0.999)


class EpsNet(nn.Module):
    """ε(x_t, t): MLP on ``[x_t, sinusoidal(t)]`` with SiLU activations."""

    def __init__(self, dim: int, hidden: int, layers: int, t_dim: int = 32) -> None:
        super().__init__()
        self.t_dim = t_dim
        sizes = [dim + t_dim] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            mods += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*mods, nn.Linear(sizes[-1], dim))
        half = t_dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(1e4) * torch.arange(half) / half))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x`` (B, D), ``t`` (B,) float in (0, 1] (step / T) -> ε (B, D)."""
        arg = 1000.0 * t[:, None] * self.freqs[None]  # transformer-style sinusoids of t * 1000
        return self.body(torch.cat([x, arg.sin(), arg.cos()], dim=-1))


class DDPM(NetworkCache, Model):
    """Denoising diffusion with an MLP denoiser for 2-D toy data and small images."""

    kinds = frozenset({"continuous", "images"})
    threaded = True

    def __init__(
        self,
        *,
        hidden: Annotated[int, pydantic.Field(ge=1, description="width of the MLP")] = 128,
        layers: Annotated[int, pydantic.Field(ge=1, description="hidden layers of the MLP")] = 3,
        unet_channels: Annotated[list[PosInt], pydantic.Field(min_length=1, max_length=4, description=(
            "images: channels of the U-Net's resolution levels (diffusers UNet2DModel, one ResNet "
            "block per level; each level after the first halves the image)"))] = [16, 32],  # noqa: B006
        timesteps: Annotated[int, pydantic.Field(ge=2, description="diffusion steps T")] = 100,
        sample_steps: Annotated[int, pydantic.Field(ge=1, description=(
            "denoising steps when sampling (<= timesteps; fewer is faster)"))] = 50,
        sampler: Annotated[Literal["ancestral", "ddim"], pydantic.Field(description=(
            "ancestral (DDPM, stochastic) or ddim (deterministic DDIM steps, diffusers' "
            "DDIMScheduler: good images in few steps)"))] = "ancestral",
        schedule: Annotated[Literal["linear", "cosine"], pydantic.Field(description=(
            "noise schedule β_t"))] = "cosine",
        epochs: Annotated[int, pydantic.Field(ge=1, description="passes over the training set")] = 200,
        max_steps: Annotated[int | None, pydantic.Field(ge=1, description=(
            "most optimiser steps (None: epochs decide): bounds the cost of a growing training "
            "set"))] = None,
        batch_size: Annotated[int, pydantic.Field(ge=1, description="samples per step")] = 128,
        lr: Annotated[float, pydantic.Field(gt=0, description=(
            "Adam learning rate (linear decay to lr/10)"))] = 2e-3,
        batch_eval: Annotated[int, pydantic.Field(ge=1, description=(
            "samples per forward pass when sampling or scoring"))] = 4096,
        threads: Threads = 1,
    ) -> None:
        if sample_steps > timesteps:
            raise ValueError(f"sample_steps must be <= timesteps={timesteps}; got {sample_steps}")
        self.hidden = hidden
        self.layers = layers
        self.unet_channels = unet_channels
        self.timesteps = timesteps
        self.sample_steps = sample_steps
        self.sampler = sampler
        self.schedule = schedule
        self.epochs = epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.batch_eval = batch_eval
        self.threads = threads

    # ------------------------------------------------------------ schedule

    def _abar(self) -> np.ndarray:
        """ᾱ_0..ᾱ_T with ᾱ_0 = 1: ``(T + 1,)`` float64."""
        return np.concatenate([[1.0], np.cumprod(1 - beta_schedule(self.schedule, self.timesteps))])

    # ------------------------------------------------------------ data coordinates

    def _to_model(self, data: np.ndarray, *, fitting: bool = False) -> torch.Tensor:
        """``(chains, n, *event)`` -> float32 ``(chains, n, D)`` in the model's coordinates."""
        x = check_data(data, min_samples=2 if fitting else 1)
        if x.dtype.kind != "f":
            raise ValueError(f"data must be floats; got dtype {x.dtype}")
        if fitting:
            self.event_shape_ = tuple(x.shape[2:])
            self.images_ = x.ndim == 4
            if x.ndim not in (3, 4):
                raise ValueError(f"data must be (chains, n, D) or images (chains, n, H, W); "
                                 f"got shape {x.shape}")
        elif tuple(x.shape[2:]) != self.event_shape_ or x.shape[0] not in (1, self.n_chains_):
            raise ValueError(f"data must have shape (1 or {self.n_chains_}, n, "
                             f"{', '.join(map(str, self.event_shape_))}); got {x.shape}")
        flat = x.reshape(*x.shape[:2], -1).astype(np.float64)
        if fitting:
            if self.images_:
                if x.min() < 0 or x.max() > 1:
                    raise ValueError(f"images must lie in [0, 1]; got [{x.min():.3g}, {x.max():.3g}]")
                self.shift_, self.scale_ = np.full((x.shape[0], 1), 0.5), np.full((x.shape[0], 1), 0.5)
            else:
                self.shift_ = flat.mean(axis=1)  # (C, D)
                self.scale_ = np.maximum(flat.std(axis=1), 1e-6)
        shift, scale = self.shift_, self.scale_
        if not fitting and x.shape[0] == 1 and self.n_chains_ > 1:
            flat = np.broadcast_to(flat, (self.n_chains_, *flat.shape[1:]))
        z = (flat - shift[:, None]) / scale[:, None]
        return torch.from_numpy(z.astype(np.float32))

    def _log_jacobian(self) -> np.ndarray:
        """log |dz/dx| per chain ``(C,)``: added to densities of z to get densities of x."""
        dim = int(np.prod(self.event_shape_))
        return -np.log(np.broadcast_to(self.scale_, (len(self.scale_), dim))).sum(axis=1)

    # ------------------------------------------------------------ fitting

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> DDPM:
        """Train one denoiser per chain on ``data``."""
        z = self._to_model(data, fitting=True)  # (C, n, D)
        self.n_chains_, self.dim_ = int(z.shape[0]), int(z.shape[-1])
        self.state_dicts_: list[dict[str, torch.Tensor]] = []
        self.train_loss_: list[float] = []  # per chain: mean loss over the last 10% of steps
        self._nets: dict[int, nn.Module] = {}
        gen = torch_generator(rng)
        with torch_threads(self.threads):
            for c in range(len(z)):
                self._fit_chain(c, z[c], gen)
        return self

    def _new_net(self) -> nn.Module:
        """The MLP for vectors; for images a U-Net from diffusers (``UNet2DModel``)."""
        if not self.images_:
            return EpsNet(self.dim_, self.hidden, self.layers)
        from diffusers import UNet2DModel

        levels = len(self.unet_channels)
        return UNet2DModel(
            sample_size=self.event_shape_, in_channels=1, out_channels=1,
            block_out_channels=tuple(self.unet_channels), layers_per_block=1,
            down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=math.gcd(8, *self.unet_channels))

    def _eps(self, net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise for ``x`` (B, D) at integer steps ``t`` (B,) in 1..T: (B, D)."""
        if not self.images_:
            return net(x, t / self.timesteps)  # type: ignore[no-any-return]
        img = x.view(len(x), 1, *self.event_shape_)
        return net(img, t - 1).sample.reshape(len(x), -1)  # type: ignore[no-any-return]  # diffusers counts from 0

    def _fit_chain(self, c: int, z: torch.Tensor, gen: torch.Generator) -> None:
        with torch.random.fork_rng(devices=[]):  # layer init from gen, global state untouched
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
            net = self._new_net()
        abar = torch.from_numpy(self._abar()).float()
        n = len(z)
        per_epoch = math.ceil(n / self.batch_size)
        total = self.epochs * per_epoch
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - 0.9 * i / total)
        tail = []
        for step in range(total):
            if step % per_epoch == 0:
                order = torch.randperm(n, generator=gen)
            i = step % per_epoch
            x0 = z[order[i * self.batch_size:(i + 1) * self.batch_size]]
            t = torch.randint(1, self.timesteps + 1, (len(x0),), generator=gen)
            eps = torch.randn(x0.shape, generator=gen)
            a = abar[t][:, None]
            loss = (self._eps(net, a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step >= int(0.9 * total):
                tail.append(float(loss.detach()))
        self.train_loss_.append(float(np.mean(tail)))
        self._nets[c] = net.eval()
        self.state_dicts_.append({k: v.detach().clone() for k, v in net.state_dict().items()})

    def _build_net(self, chain: int) -> nn.Module:
        net = self._new_net()
        net.load_state_dict(self.state_dicts_[chain])
        return net.eval()

    # ------------------------------------------------------------ sampling

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(chains, n, *event)``: ancestral sampling over ``sample_steps`` respaced steps."""
        n = check_n(n)
        self.check_fitted()
        gen = torch_generator(rng)
        abar_all = self._abar()
        keep = np.unique(np.linspace(1, self.timesteps, self.sample_steps).round().astype(int))
        abar = abar_all[keep]  # ᾱ at the kept steps, ascending
        abar_prev = np.concatenate([[1.0], abar[:-1]])
        beta = 1 - abar / abar_prev
        out = np.empty((self.n_chains_, n, self.dim_))
        with torch.no_grad(), torch_threads(self.threads):
            for c in range(self.n_chains_):
                net = self._net(c)
                for s in range(0, n, self.batch_eval):
                    b = min(self.batch_eval, n - s)
                    x = torch.randn((b, self.dim_), generator=gen)
                    if self.sampler == "ddim":
                        out[c, s:s + b] = self._ddim(net, x).double().numpy()
                        continue
                    for i in range(len(keep) - 1, -1, -1):
                        eps = self._eps(net, x, torch.full((b,), int(keep[i])))
                        if self.images_:  # via x0, clipped to the pixel range
                            x0 = ((x - math.sqrt(1 - abar[i]) * eps) / math.sqrt(abar[i])).clamp(-1, 1)
                            c0 = math.sqrt(abar_prev[i]) * beta[i] / (1 - abar[i])
                            ct = math.sqrt(1 - beta[i]) * (1 - abar_prev[i]) / (1 - abar[i])
                            x = c0 * x0 + ct * x
                        else:  # ε form: no division by sqrt(ᾱ_t), which amplifies errors at t ~ T
                            x = (x - beta[i] / math.sqrt(1 - abar[i]) * eps) / math.sqrt(1 - beta[i])
                        if i > 0:
                            var = beta[i] * (1 - abar_prev[i]) / (1 - abar[i])
                            x = x + math.sqrt(var) * torch.randn((b, self.dim_), generator=gen)
                    out[c, s:s + b] = x.double().numpy()
        x = out * self.scale_[:, None] + self.shift_[:, None]
        if self.images_:
            x = np.clip(x, 0, 1).astype(np.float32)
        return x.reshape(self.n_chains_, n, *self.event_shape_)

    def _ddim(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM (eta 0) from noise ``x`` (B, D) over ``sample_steps`` steps, with
        diffusers' ``DDIMScheduler`` on this model's β schedule; images clip x_0 to [-1, 1]."""
        from diffusers import DDIMScheduler

        sched = DDIMScheduler(num_train_timesteps=self.timesteps,
                              trained_betas=beta_schedule(self.schedule, self.timesteps).tolist(),
                              clip_sample=self.images_, set_alpha_to_one=True)
        sched.set_timesteps(self.sample_steps)
        for t in sched.timesteps:  # diffusers' steps 0..T-1 are this model's 1..T
            eps = self._eps(net, x, torch.full((len(x),), int(t) + 1))
            x = sched.step(eps, int(t), x, eta=0.0).prev_sample
        return x

    # ------------------------------------------------------------ scoring

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        """Variational bound on log p(x) per sample, nats ``(chains, n)`` (module docstring)."""
        self.check_fitted()
        z = self._to_model(data).double()  # (C, n, D)
        abar = self._abar()
        beta = 1 - abar[1:] / abar[:-1]  # β_1..β_T
        d = self.dim_
        out = np.empty(z.shape[:2])
        with torch.no_grad(), torch_threads(self.threads):
            for c in range(self.n_chains_):
                net = self._net(c)
                for s in range(0, z.shape[1], self.batch_eval):
                    out[c, s:s + self.batch_eval] = self._bound(net, z[c, s:s + self.batch_eval],
                                                                abar, beta, d)
        return out + self._log_jacobian()[:, None]

    def _bound(self, net: nn.Module, x0: torch.Tensor, abar: np.ndarray, beta: np.ndarray,
               d: int) -> np.ndarray:
        gen = torch.Generator().manual_seed(0)  # common random numbers, not a sampling seed
        b = len(x0)
        a_t = abar[-1]  # L_T: KL(N(sqrt(ᾱ_T) x0, 1 - ᾱ_T) || N(0, 1))
        total = -0.5 * ((a_t * x0.square()).sum(-1) + d * (1 - a_t - 1 - math.log(1 - a_t)))
        for t in range(1, self.timesteps + 1):
            a, a_prev, bt = abar[t], abar[t - 1], beta[t - 1]
            eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
            eps_hat = self._eps(net, xt.float(), torch.full((b,), t)).double()
            mu_p = (xt - bt / math.sqrt(1 - a) * eps_hat) / math.sqrt(1 - bt)  # reverse mean
            if t == 1:  # decoder: log N(x0; μ(x_1, 1), β_1)
                total = total - 0.5 * ((x0 - mu_p).square().sum(-1) / bt
                                       + d * math.log(2 * math.pi * bt))
                continue
            mu_q = (math.sqrt(a_prev) * bt * x0 + math.sqrt(1 - bt) * (1 - a_prev) * xt) / (1 - a)
            var_q = bt * (1 - a_prev) / (1 - a)  # KL(N(μ_q, var_q) || N(μ_p, β_t)), summed over D
            kl = 0.5 * ((mu_q - mu_p).square().sum(-1) / bt
                        + d * (var_q / bt - 1 - math.log(var_q / bt)))
            total = total - kl
        return total.numpy()
