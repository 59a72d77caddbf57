"""A convolutional variational autoencoder, the ``vae`` family (Shumailov et al. 2024, the VAE on
MNIST): two 4x4 stride-2 convolutions (64 and 128 channels for 28x28 MNIST) and a ``hidden``-unit
layer to a Gaussian latent (20 dimensions), a mirrored decoder, Adam (lr 1e-3, weight decay 1e-5).
For 8x8 digits see ``configs/images`` (16 latent dimensions, 32/64 channels, 512 hidden units).

Training long enough to be a good generation 0 (issue 18): the KL weight rises linearly over
``kl_warmup`` epochs (Bowman et al. 2016), ``val_fraction`` of the training images are held out and
training stops ``patience`` epochs after the best validation ELBO, whose weights are kept;
``max_steps`` bounds a growing (accumulating) training set. The decoder likelihood is ``bernoulli``
(the paper's cross-entropy of grey levels) or ``gaussian`` with one learned pixel scale (the
"calibrated decoder" of Rybkin et al. 2021, sigma-VAE): on grey-level digits its samples are far
sharper (measured on digits: recall 0.13 → 0.41 of real 0.94 in the same feature space).

Images ``(chains, n, H, W)`` in [0, 1], H and W divisible by 4; one network per chain.
``sample`` decodes z ~ N(0, I) into the decoder's pixel means (or Bernoulli draws of them);
``encode`` gives latent means for metrics.

``score_samples`` is the ELBO per image in nats — a lower bound on log p(x). With ``bernoulli`` the
likelihood is evaluated on grey-level targets (binary cross-entropy: not a normalised density for
non-binary pixels, but comparable across generations); ``gaussian`` is a density on pixel values.
Its expectation over q(z|x) is estimated with ``score_draws`` draws from a generator seeded
identically on every call (common random numbers: the score is a deterministic function of the
data, and generations are compared on the same draws).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from collapselab.capabilities import HasImageSplit, provides
from collapselab.errors import DataError, NumericalError
from collapselab.models.sampling import torch_generator
from collapselab.protocol import Model, NetworkCache, check_data, check_n

PosInt = Annotated[int, pydantic.Field(ge=1)]
Threads = Annotated[int, pydantic.Field(ge=1, description=(
    "torch threads while fitting and sampling (tiny networks run fastest on 1)"))]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore: small convolutions and MLPs are dominated by
    thread synchronisation (measured: a VAE step 14x slower with 2 threads on 2 busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class VAENet(nn.Module):
    def __init__(self, shape: tuple[int, int], channels: tuple[int, int], latent_dim: int,
                 hidden: int) -> None:
        super().__init__()
        c1, c2 = channels
        self.h, self.w = shape[0] // 4, shape[1] // 4  # after two stride-2 convolutions
        self.c2, self.latent_dim = c2, latent_dim
        flat = c2 * self.h * self.w
        self.enc = nn.Sequential(
            nn.Conv2d(1, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(flat, hidden), nn.ReLU())
        self.to_stats = nn.Linear(hidden, 2 * latent_dim)
        self.from_z = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, flat))
        self.dec = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, 2, 1))
        # Gaussian decoder: one learned pixel scale (sigma-VAE, Rybkin et al. 2021)
        self.log_sigma = nn.Parameter(torch.zeros(()))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, H, W) -> mean, log-variance (B, L)."""
        mu, logvar = self.to_stats(self.enc(x[:, None])).chunk(2, dim=-1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` (B, L) -> pixel logits (B, H, W)."""
        return self.dec(self.from_z(z).view(-1, self.c2, self.h, self.w))[:, 0]


MIN_LOG_SIGMA = math.log(1e-3)  # the Gaussian decoder's scale floor: a density, not a spike


def pixel_nll(net: VAENet, logits: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """-log p(x | z) summed over pixels, nats per image ``(B,)``: ``bernoulli`` (binary
    cross-entropy of grey levels, the paper's), ``gaussian`` (mean sigmoid(logits), one learned
    scale: a normalised density on grey levels)."""
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((-2, -1))
    log_sigma = net.log_sigma.clamp(min=MIN_LOG_SIGMA)
    sq = (x - torch.sigmoid(logits)).square() * torch.exp(-2 * log_sigma)
    return (0.5 * sq + log_sigma + 0.5 * math.log(2 * math.pi)).sum((-2, -1))


def neg_elbo_terms(net: VAENet, x: torch.Tensor, gen: torch.Generator,
                   likelihood: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction -log p(x|z) and KL(q(z|x) || N(0, I)) per image, one reparameterised draw:
    two ``(B,)``."""
    mu, logvar = net.encode(x)
    eps = torch.randn(mu.shape, generator=gen)
    logits = net.decode(mu + (0.5 * logvar).exp() * eps)
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
    return pixel_nll(net, logits, x, likelihood), kl


class VAE(NetworkCache, Model):
    """Convolutional VAE over images in [0, 1]; one network per chain."""

    kinds = frozenset({"images"})
    threaded = True

    def __init__(
        self,
        *,
        latent_dim: Annotated[int, pydantic.Field(ge=1, description="latent dimensions")] = 20,
        channels: Annotated[list[PosInt], pydantic.Field(min_length=2, max_length=2, description=(
            "channels of the two 4x4 stride-2 convolutions"))] = [64, 128],  # noqa: B006
        hidden: Annotated[int, pydantic.Field(ge=1, description=(
            "width of the fully connected layer between the convolutions and the latent"))] = 256,
        likelihood: Annotated[Literal["bernoulli", "gaussian"], pydantic.Field(description=(
            "decoder likelihood: bernoulli (cross-entropy of grey levels, the paper's) or gaussian "
            "(one learned pixel scale, sigma-VAE: sharper means on grey-level images)"))] = "bernoulli",
        epochs: Annotated[int, pydantic.Field(ge=1, description=(
            "most passes over the training set (early stopping may end sooner)"))] = 20,
        max_steps: Annotated[int | None, pydantic.Field(ge=1, description=(
            "most optimiser steps (None: no limit): bounds the cost of a growing training set"))
            ] = None,
        kl_warmup: Annotated[int, pydantic.Field(ge=0, description=(
            "epochs over which the KL weight rises linearly from 0 to 1 (0: none)"))] = 0,
        val_fraction: Annotated[float, pydantic.Field(ge=0, lt=1, description=(
            "share of the training images held out for early stopping (0: none)"))] = 0.0,
        patience: Annotated[int, pydantic.Field(ge=1, description=(
            "epochs without a better validation ELBO before training stops (the best weights "
            "are kept)"))] = 20,
        batch_size: Annotated[int, pydantic.Field(ge=1, description="images per step")] = 128,
        lr: Annotated[float, pydantic.Field(gt=0, description="Adam learning rate")] = 1e-3,
        weight_decay: Annotated[float, pydantic.Field(ge=0, description="Adam L2 penalty")] = 1e-5,
        sample_mode: Annotated[Literal["mean", "bernoulli"], pydantic.Field(description=(
            "sampled images: the decoder's pixel means, or Bernoulli draws of them"))] = "mean",
        score_draws: Annotated[int, pydantic.Field(ge=1, description=(
            "draws of z ~ q(z|x) averaged in the ELBO of score_samples"))] = 4,
        batch_eval: Annotated[int, pydantic.Field(ge=1, description=(
            "images per forward pass when sampling, encoding or scoring"))] = 1024,
        threads: Threads = 1,
    ) -> None:
        self.latent_dim = latent_dim
        self.channels = channels
        self.hidden = hidden
        self.likelihood = likelihood
        self.epochs = epochs
        self.max_steps = max_steps
        self.kl_warmup = kl_warmup
        self.val_fraction = val_fraction
        self.patience = patience
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.sample_mode = sample_mode
        self.score_draws = score_draws
        self.batch_eval = batch_eval
        self.threads = threads

    @classmethod
    def check_setup(cls, params: dict[str, Any], setup: Any) -> list[str]:
        """Config time: two stride-2 convolutions halve the image twice, so its height and width
        must be multiples of 4 (a 1x1-pixel image has nothing to convolve)."""
        if not provides(setup.source, HasImageSplit):
            return []
        shape = setup.source.image_shape
        if shape[0] % 4 == 0 and shape[1] % 4 == 0:
            return []
        return [f"data: the vae family needs images whose height and width are multiples of 4 "
                f"(two stride-2 convolutions); got {shape[0]}x{shape[1]} images from "
                f"{setup.source.name}"]

    # ------------------------------------------------------------ fitting

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> VAE:
        """Train one network per chain on ``data`` ``(chains, n, H, W)``."""
        x = self._check_images(check_data(data, min_samples=2), fitting=True)
        chains, n, h, w = x.shape
        self.shape_ = (h, w)
        self.state_dicts_: list[dict[str, torch.Tensor]] = []
        self.train_loss_: list[list[float]] = []  # per chain: mean negative ELBO per epoch
        self.val_loss_: list[list[float]] = []  # per chain: validation negative ELBO per epoch
        self.best_epoch_: list[int] = []  # per chain: the epoch whose weights were kept
        self._nets: dict[int, VAENet] = {}
        gen = torch_generator(rng)
        with torch_threads(self.threads):
            for c in range(chains):
                self._fit_chain(c, torch.from_numpy(x[c]), gen)
        return self

    def _new_net(self) -> VAENet:
        return VAENet(self.shape_, (self.channels[0], self.channels[1]), self.latent_dim, self.hidden)

    def _fit_chain(self, c: int, x: torch.Tensor, gen: torch.Generator) -> None:
        with torch.random.fork_rng(devices=[]):  # layer init from gen, global state untouched
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
            net = self._new_net()
        n_val = int(self.val_fraction * len(x))
        order = torch.randperm(len(x), generator=gen)
        val, train = x[order[:n_val]], x[order[n_val:]]
        state = self._train(net, train, val, gen)
        net.load_state_dict(state)
        self._nets[c] = net.eval()
        self.state_dicts_.append(state)

    def _train(self, net: VAENet, x: torch.Tensor, val: torch.Tensor,
               gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Adam on the negative ELBO with the KL weight warmed up; returns the weights of the best
        validation epoch (the last epoch without validation images)."""
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        n, steps = len(x), math.ceil(len(x) / self.batch_size)
        losses: list[float] = []
        val_losses: list[float] = []
        best, best_epoch, best_state = math.inf, 0, None
        val_gen = torch.Generator().manual_seed(0)
        budget = math.inf if self.max_steps is None else self.max_steps
        for epoch in range(self.epochs):
            if epoch * steps >= budget:
                break
            net.train()
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for s in range(steps):
                if epoch * steps + s >= budget:
                    break
                xb = x[order[s * self.batch_size:(s + 1) * self.batch_size]]
                beta = min(1.0, (epoch * steps + s + 1) / (self.kl_warmup * steps)) \
                    if self.kl_warmup else 1.0
                rec, kl = neg_elbo_terms(net, xb, gen, self.likelihood)
                loss = (rec + beta * kl).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float((rec + kl).detach().sum())
            losses.append(total / n)
            if not math.isfinite(losses[-1]):
                raise NumericalError(f"training diverged: mean loss {losses[-1]} in epoch {epoch}")
            if len(val) == 0:
                continue
            net.eval()
            with torch.no_grad():
                val_gen.manual_seed(0)  # the same draws every epoch: epochs compare on equal terms
                rec, kl = neg_elbo_terms(net, val, val_gen, self.likelihood)
                val_losses.append(float((rec + kl).mean()))
            if epoch >= self.kl_warmup and val_losses[-1] < best:  # a full-KL ELBO only
                best, best_epoch = val_losses[-1], epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif epoch >= self.kl_warmup and epoch - best_epoch >= self.patience:
                break
        self.train_loss_.append(losses)
        self.val_loss_.append(val_losses)
        self.best_epoch_.append(best_epoch if best_state is not None else len(losses) - 1)
        return best_state or {k: v.detach().clone() for k, v in net.state_dict().items()}

    # ------------------------------------------------------------ networks

    @property
    def n_chains_(self) -> int:
        return len(self.state_dicts_)

    def _build_net(self, chain: int) -> VAENet:
        net = self._new_net()
        net.load_state_dict(self.state_dicts_[chain])
        return net.eval()

    def _check_images(self, data: np.ndarray, *, fitting: bool = False) -> np.ndarray:
        if data.ndim != 4:
            raise DataError(f"data must be images (chains, n, H, W); got shape {data.shape}")
        if data.dtype.kind != "f" or data.min() < 0 or data.max() > 1:
            raise DataError("data must be float images in [0, 1]; got "
                             f"{data.dtype} in [{data.min():.3g}, {data.max():.3g}]")
        h, w = data.shape[2:]
        if fitting and (h % 4 or w % 4):
            raise DataError(f"image height and width must be divisible by 4; got {h}x{w}")
        if not fitting:
            if (h, w) != tuple(self.shape_):
                raise ValueError(f"images must be {self.shape_[0]}x{self.shape_[1]}; got {h}x{w}")
            if data.shape[0] not in (1, self.n_chains_):
                raise ValueError(f"data must have 1 or {self.n_chains_} chains; got {data.shape[0]}")
        return np.array(data, dtype=np.float32)  # a writable copy (pools are broadcast views)

    def _per_chain(self, data: np.ndarray, fn: Any) -> np.ndarray:
        """Apply ``fn(net, x_batch) -> array`` per chain in batches; stack to (chains, n, ...)."""
        self.check_fitted()
        x = self._check_images(check_data(data))
        out = []
        with torch.no_grad(), torch_threads(self.threads):
            for c in range(self.n_chains_):
                xc = torch.from_numpy(x[c if x.shape[0] > 1 else 0])
                parts = [fn(self._net(c), xc[s:s + self.batch_eval])
                         for s in range(0, len(xc), self.batch_eval)]
                out.append(np.concatenate(parts) if parts else np.empty((0,)))
        return np.stack(out)

    # ------------------------------------------------------------ protocol

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(chains, n, H, W)``: decoded z ~ N(0, I), as pixel means or Bernoulli draws."""
        n = check_n(n)
        self.check_fitted()
        gen = torch_generator(rng)
        out = np.empty((self.n_chains_, n, *self.shape_), dtype=np.float32)
        with torch.no_grad(), torch_threads(self.threads):
            for c in range(self.n_chains_):
                for s in range(0, n, self.batch_eval):
                    b = min(self.batch_eval, n - s)
                    probs = torch.sigmoid(self._net(c).decode(
                        torch.randn((b, self.latent_dim), generator=gen)))
                    if self.sample_mode == "bernoulli":
                        probs = torch.bernoulli(probs, generator=gen)
                    out[c, s:s + b] = probs.numpy()
        return out

    def encode(self, data: np.ndarray) -> np.ndarray:
        """Latent means ``(chains, n, latent_dim)``; ``(1, n, H, W)`` is encoded by every chain."""
        return self._per_chain(data, lambda net, xb: net.encode(xb)[0].numpy())

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        """ELBO per image in nats ``(chains, n)`` (see the module docstring)."""

        def elbo(net: VAENet, xb: torch.Tensor) -> np.ndarray:
            gen = torch.Generator().manual_seed(0)  # common random numbers, not a sampling seed
            draws = torch.stack([sum(neg_elbo_terms(net, xb, gen, self.likelihood))
                                 for _ in range(self.score_draws)])
            return -draws.mean(0).double().numpy()

        return self._per_chain(data, elbo)
