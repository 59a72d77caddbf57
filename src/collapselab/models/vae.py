"""A convolutional variational autoencoder, the ``vae`` family (Shumailov et al. 2024, the VAE on
MNIST): two 4x4 stride-2 convolutions (64 and 128 channels for 28x28 MNIST) to a Gaussian latent
(20 dimensions), a mirrored transposed-convolution decoder with Bernoulli logits, loss = summed
binary cross-entropy + KL, Adam (lr 1e-3, weight decay 1e-5). For 8x8 digits scale it down
(``channels=[16, 32], latent_dim=8``: see ``configs/images``).

Images ``(chains, n, H, W)`` in [0, 1], H and W divisible by 4; one network per chain.
``sample`` decodes z ~ N(0, I) into the decoder's pixel means (or Bernoulli draws of them);
``encode`` gives latent means for metrics.

``score_samples`` is the ELBO per image in nats — a lower bound on log p(x), with the Bernoulli
likelihood evaluated on grey-level targets (binary cross-entropy; not a normalised density for
non-binary pixels, but comparable across generations). Its expectation over q(z|x) is estimated with
``score_draws`` draws from a generator seeded identically on every call (common random numbers:
the score is a deterministic function of the data, and generations are compared on the same draws).
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
    def __init__(self, shape: tuple[int, int], channels: tuple[int, int], latent_dim: int) -> None:
        super().__init__()
        c1, c2 = channels
        self.h, self.w = shape[0] // 4, shape[1] // 4  # after two stride-2 convolutions
        self.c2, self.latent_dim = c2, latent_dim
        self.enc = nn.Sequential(
            nn.Conv2d(1, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(), nn.Flatten())
        self.to_stats = nn.Linear(c2 * self.h * self.w, 2 * latent_dim)
        self.from_z = nn.Linear(latent_dim, c2 * self.h * self.w)
        self.dec = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, 2, 1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, H, W) -> mean, log-variance (B, L)."""
        mu, logvar = self.to_stats(self.enc(x[:, None])).chunk(2, dim=-1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` (B, L) -> pixel logits (B, H, W)."""
        return self.dec(self.from_z(z).view(-1, self.c2, self.h, self.w))[:, 0]


def neg_elbo(net: VAENet, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Summed BCE + KL per image, one reparameterised draw: (B,)."""
    mu, logvar = net.encode(x)
    eps = torch.randn(mu.shape, generator=gen)
    logits = net.decode(mu + (0.5 * logvar).exp() * eps)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((-2, -1))
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
    return bce + kl


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
        epochs: Annotated[int, pydantic.Field(ge=1, description="passes over the training set")] = 20,
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
        self.epochs = epochs
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
        shape = getattr(setup.source, "image_shape", None)
        if shape is None or (shape[0] % 4 == 0 and shape[1] % 4 == 0):
            return []
        return [f"data: the vae family needs images whose height and width are multiples of 4 "
                f"(two stride-2 convolutions); got {shape[0]}x{shape[1]} images from "
                f"{getattr(setup.source, 'name', 'the source')}"]

    # ------------------------------------------------------------ fitting

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> VAE:
        """Train one network per chain on ``data`` ``(chains, n, H, W)``."""
        x = self._check_images(check_data(data, min_samples=2), fitting=True)
        chains, n, h, w = x.shape
        self.shape_ = (h, w)
        self.state_dicts_: list[dict[str, torch.Tensor]] = []
        self.train_loss_: list[list[float]] = []  # per chain: mean negative ELBO per epoch
        self._nets: dict[int, VAENet] = {}
        gen = torch_generator(rng)
        with torch_threads(self.threads):
            for c in range(chains):
                self._fit_chain(c, torch.from_numpy(x[c]), gen)
        return self

    def _fit_chain(self, c: int, x: torch.Tensor, gen: torch.Generator) -> None:
        with torch.random.fork_rng(devices=[]):  # layer init from gen, global state untouched
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
            net = VAENet(self.shape_, (self.channels[0], self.channels[1]), self.latent_dim)
        self.train_loss_.append(self._train(net, x, gen))
        self._nets[c] = net.eval()
        self.state_dicts_.append({k: v.detach().clone() for k, v in net.state_dict().items()})

    def _train(self, net: VAENet, x: torch.Tensor, gen: torch.Generator) -> list[float]:
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        n, steps = len(x), math.ceil(len(x) / self.batch_size)
        net.train()
        losses = []
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for s in range(steps):
                xb = x[order[s * self.batch_size:(s + 1) * self.batch_size]]
                loss = neg_elbo(net, xb, gen).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(xb)
            losses.append(total / n)
            if not math.isfinite(losses[-1]):
                raise NumericalError(f"training diverged: mean loss {losses[-1]} in epoch {len(losses) - 1}")
        return losses

    # ------------------------------------------------------------ networks

    @property
    def n_chains_(self) -> int:
        return len(self.state_dicts_)

    def _build_net(self, chain: int) -> VAENet:
        net = VAENet(self.shape_, (self.channels[0], self.channels[1]), self.latent_dim)
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
            draws = torch.stack([neg_elbo(net, xb, gen) for _ in range(self.score_draws)])
            return -draws.mean(0).double().numpy()

        return self._per_chain(data, elbo)
