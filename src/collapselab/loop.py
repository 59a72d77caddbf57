"""The collapse loop: train on real data, then again and again on what the last model wrote.

Read ``run_generations`` top to bottom; everything else here is set-up and bookkeeping.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from collapselab import provenance, registry, theory, watermark
from collapselab.config import ExperimentConfig
from collapselab.curation import CurationContext, curate
from collapselab.errors import CollapselabError, RunError
from collapselab.metrics.base import GenerationContext
from collapselab.protocol import clone
from collapselab.store import RunStore, RunWriter, remove_run

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class Streams:
    """Independent random streams of one generation, all derived from the root seed.

    Generation g's streams are ``SeedSequence(seed, spawn_key=(1, g)).spawn(5)``; set-up (the real
    pool and held-out data) uses ``spawn_key=(0,)``. Any generation can be replayed alone.
    """

    compose: np.random.Generator
    fit: np.random.Generator
    sample: np.random.Generator
    curate: np.random.Generator
    metrics: np.random.Generator

    @classmethod
    def for_generation(cls, seed: int, gen: int, producer: int = 0) -> Streams:
        key = (1, gen) if producer == 0 else (1, gen, producer)  # producer p of a multi-model run
        seqs = np.random.SeedSequence(seed, spawn_key=key).spawn(5)
        return cls(*(np.random.default_rng(s) for s in seqs))


def setup_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    real, heldout = np.random.SeedSequence(seed, spawn_key=(0,)).spawn(2)
    return np.random.default_rng(real), np.random.default_rng(heldout)


@dataclass
class Experiment:
    """A config turned into objects: what the loop needs, built (and checked) before any writing."""

    config: ExperimentConfig
    source: Any
    prototype: Any
    policy: Any
    filters: list[tuple[str, Any]]
    metrics: list[tuple[str, Any]]
    predictions: dict[str, theory.Prediction]
    producers: list[tuple[str, Any]]  # (name, prototype) of a multi-producer run; else empty

    @classmethod
    def build(cls, cfg: ExperimentConfig) -> Experiment:
        source = registry.sources.build(cfg.data.source, cfg.data.params)
        return cls(
            config=cfg,
            source=source,
            prototype=build_model(cfg.model, source),
            policy=registry.policies.build(cfg.policy.name, cfg.policy.params),
            filters=[(f.name, registry.filters.build(f.name, f.params)) for f in cfg.curation],
            metrics=[(m.name, registry.metrics.build(m.name, m.params)) for m in cfg.metrics or []],
            predictions=theory.predict(cfg, source),
            producers=[(p.name, build_model(p.model, source)) for p in cfg.producers or []],
        )


def build_model(spec: Any, source: Any) -> Any:
    """The family's prototype; sizes the model can learn from the source (vocabulary, number of
    states) are filled in when the config leaves them unset."""
    params = dict(spec.params)
    accepted = inspect.signature(registry.families.get(spec.family)).parameters
    for name, attr in (("vocab_size", "vocab_size"), ("n_states", "n_states")):
        if name in accepted and params.get(name) is None and hasattr(source, attr):
            params[name] = getattr(source, attr)
    return registry.families.build(spec.family, params)


def run(
    cfg: ExperimentConfig, *, resume: bool = False, takeover: bool = False,
    progress: Progress | None = None,
) -> RunStore:
    """Run (or resume) ``cfg`` into ``cfg.run_dir``. A run that fails before its first generation
    completes leaves no directory behind."""
    store = RunStore(cfg.run_dir)
    if store.exists and not resume:
        raise RunError(f"{store.root} already holds a run; pass --resume to continue it "
                       "or choose another name")
    if resume and store.exists and store.config() != cfg:
        raise RunError(f"{store.root} was started with a different config; "
                       f"diff it against {store.root / 'config.yaml'} or choose another name")
    exp = Experiment.build(cfg)  # bad sources or parameters fail here, before anything is written
    new_run = not store.exists
    with store.writer(takeover=takeover) as writer:  # a refused writer must not clean up below
        try:
            writer.start(cfg.to_yaml(), seeds={
                "seed": cfg.seed,
                "streams": "generation g: SeedSequence(seed, spawn_key=(1, g)).spawn(5) -> "
                           "compose, fit, sample, curate, metrics; set-up: spawn_key=(0,)",
            })
            # NumPy/scikit-learn families work on small arrays, where BLAS/OpenMP worker threads
            # cost far more than they save (measured: a 2-D GMM fit 24x slower with 2 threads)
            threads = None if getattr(exp.prototype, "threaded", False) else 1
            loop = run_producers if exp.producers else run_generations
            with threadpool_limits(limits=threads):
                status = loop(exp, store, writer, progress)
            writer.finish(status)
        except BaseException:
            if new_run and store.completed() == 0:
                remove_run(store.root)
            raise
    return store


def run_generations(exp: Experiment, store: RunStore, writer: RunWriter,
                    progress: Progress | None) -> str:
    cfg, policy = exp.config, exp.policy
    size, m = cfg.data.size, cfg.synthetic_size or cfg.data.size
    real_rng, heldout_rng = setup_rngs(cfg.seed)
    real = exp.source.real(size, cfg.chains, real_rng)  # (chains, size, ...) generation 0's data
    heldout = exp.source.heldout(heldout_rng)  # (1, n_heldout, ...) never trained on
    start = store.completed()
    history, history_labels, reference = restore(store, policy, start)
    labels = provenance.real_labels(real)  # (chains, size): where each training row came from
    train, train_labels = real, labels
    last = store.metrics()[-1] if start else {}
    if "degenerate" in last and (cfg.on_degenerate == "stop" or start == 1):
        return "stopped"  # a crash came between the stop and the manifest saying so
    prune = cfg.keep_samples == "needed" and policy.history == "last"
    # samples beyond generation 0 that the next generation may drop; a crash between a commit and
    # its clean-up leaves older ones behind, and only the newest is needed
    stale = [g for g in range(1, start) if store.has_samples(g)] if prune else []
    for old in stale[:-1]:
        writer.drop_samples(old)
    stale = stale[-1:]

    for gen in range(start, cfg.generations):
        rng = Streams.for_generation(cfg.seed, gen)
        tic = time.perf_counter()
        if gen > 0 and history:
            train, train_labels = provenance.compose(
                policy, real=real, history=history, labels=labels, history_labels=history_labels,
                size=size, rng=rng.compose, source=exp.source)
        marker = cfg.watermark if cfg.watermark and cfg.watermark.applies(gen) else None
        try:
            model = clone(exp.prototype).fit(train, rng=rng.fit)
            with watermark.applied(marker):  # LM samplers add delta to green-list logits
                produced = model.sample(m, rng.sample)
            failure = degenerate(produced)
        except CollapselabError:
            raise  # a problem with the user's input (config, data): not a numerical failure
        except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
            failure, model = f"{type(exc).__name__}: {exc}", None
        if failure is not None:
            log.warning("generation %d is degenerate: %s", gen, failure)
            writer.generation(gen, {"generation": gen, "degenerate": failure},
                              samples=None, artifacts={})
            if cfg.on_degenerate == "stop" or gen == 0:
                return "stopped"
            continue  # history unchanged: the next generation retrains on the last good data
        reference = reference if gen > 0 else model
        synthetic, curated, measured, artifacts = assess(
            exp, gen, model, reference, produced, train, real, heldout, rng, marker)
        row = {"generation": gen, **measured, **provenance.composition(train_labels),
               **theory_row(exp.predictions, gen, cfg.chains),
               "train_size": int(train.shape[1]), "generated": int(produced.shape[1]),
               "wall_s": time.perf_counter() - tic}
        writer.generation(gen, row, samples=synthetic, artifacts=artifacts,
                          model=model if gen == 0 else None,
                          provenance=provenance.record(train_labels, curated.index, curated.scores,
                                                       family=cfg.model.family, generation=gen,
                                                       seed=cfg.seed))
        synthetic_labels = provenance.encode(gen, curated.index)  # rows of `produced` kept
        history = [*history, synthetic] if policy.history == "all" else [synthetic]
        history_labels = ([*history_labels, synthetic_labels] if policy.history == "all"
                          else [synthetic_labels])
        if prune:  # generation 0 and the newest stay for resume and report
            for old in stale:
                writer.drop_samples(old)
            stale = [gen] if gen > 0 else []
        if progress:
            progress(gen + 1, cfg.generations)
    return "complete"


def run_producers(exp: Experiment, store: RunStore, writer: RunWriter,
                  progress: Progress | None) -> str:
    """Several models per generation. Each producer trains on the policy's composition of real data
    and its *own* synthetic pool, which mixes the producers' curated outputs in the shares of its
    ``trains_on`` (``{b: 1}``: A learns only from B). Metrics are prefixed ``<producer>/``.
    Producer p's streams: generation g's, spawned again with key p. A resumed run rebuilds every
    pool from the stored outputs, mixed again with the same streams."""
    cfg, policy = exp.config, exp.policy
    size, m = cfg.data.size, cfg.synthetic_size or cfg.data.size
    real_rng, heldout_rng = setup_rngs(cfg.seed)
    real = exp.source.real(size, cfg.chains, real_rng)
    heldout = exp.source.heldout(heldout_rng)
    names = [name for name, _ in exp.producers]
    families = {ps.name: ps.model.family for ps in cfg.producers or []}
    labels = provenance.real_labels(real)
    pools: dict[str, list[np.ndarray]] = {n: [] for n in names}  # each consumer's synthetic history
    pool_labels: dict[str, list[np.ndarray]] = {n: [] for n in names}
    start = store.completed()
    references = {name: store.model(0, name) for name in names} if start else {}
    for gen in range(cfg.generations):
        tic = time.perf_counter()
        row: dict[str, Any] = {"generation": gen}
        outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # curated samples, their labels
        marker = cfg.watermark if cfg.watermark and cfg.watermark.applies(gen) else None
        for p, (name, prototype) in enumerate(exp.producers):
            if gen < start:  # done before the resume: read back what it kept
                kept = store.provenance(gen, name)["produced_kept"]
                outputs[name] = (store.samples(gen, name), provenance.encode(gen, kept, producer=p))
                continue
            rng = Streams.for_generation(cfg.seed, gen, producer=p)
            train, train_labels = real, labels
            if gen > 0 and pools[name]:
                train, train_labels = provenance.compose(
                    policy, real=real, history=pools[name], labels=labels,
                    history_labels=pool_labels[name], size=size, rng=rng.compose,
                    source=exp.source)
            model = clone(prototype).fit(train, rng=rng.fit)
            with watermark.applied(marker):
                produced = model.sample(m, rng.sample)
            reference = references.setdefault(name, model)
            synthetic, curated, measured, _ = assess(
                exp, gen, model, reference, produced, train, real, heldout, rng, marker)
            own = {**measured, **provenance.composition(train_labels, names),
                   "train_size": int(train.shape[1])}
            row.update({f"{name}/{k}": v for k, v in own.items()})
            writer.files(gen, name, samples=synthetic, model=model if gen == 0 else None,
                         provenance=provenance.record(
                             train_labels, curated.index, curated.scores, family=families[name],
                             generation=gen, seed=cfg.seed, producer=name))
            outputs[name] = (synthetic, provenance.encode(gen, curated.index, producer=p))
        mix_rng = Streams.for_generation(cfg.seed, gen).compose
        for ps in cfg.producers or []:
            pool, codes = mix(outputs, ps.trains_on or {ps.name: 1.0}, m, mix_rng)
            last = policy.history == "last"
            pools[ps.name] = [pool] if last else [*pools[ps.name], pool]
            pool_labels[ps.name] = [codes] if last else [*pool_labels[ps.name], codes]
        if gen < start:
            continue
        row["wall_s"] = time.perf_counter() - tic
        writer.generation(gen, row, samples=None, artifacts={})
        if progress:
            progress(gen + 1, cfg.generations)
    return "complete"


def assess(exp: Experiment, gen: int, model: Any, reference: Any, produced: np.ndarray,
           train: np.ndarray, real: np.ndarray, heldout: np.ndarray, rng: Streams,
           marker: watermark.Watermark | None) -> tuple[np.ndarray, Any, dict[str, Any],
                                                        dict[str, np.ndarray]]:
    """Curate what ``model`` produced, then measure the generation. Returns the curated samples,
    what curation kept (rows and scores), the row's measured part (metrics, each filter's kept
    share, watermark detection rates) and the per-sample artifacts."""
    synthetic, kept, curated = curate(
        exp.filters, produced,
        CurationContext(gen, model, reference, rng.curate, exp.source, exp.config.watermark))
    marks = {} if marker is None else watermark.measure(
        marker, model, produced, real, rng.metrics, skip=getattr(model, "prompt_tokens", 0))
    ctx = GenerationContext(gen=gen, model=model, reference=reference, train=train,
                            synthetic=synthetic, real=real, heldout=heldout,
                            source=exp.source, rng=rng.metrics)
    return synthetic, curated, {**measure(exp.metrics, ctx), **kept, **marks}, ctx.artifacts


def mix(outputs: dict[str, tuple[np.ndarray, np.ndarray]], shares: dict[str, float], m: int,
        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic pool of about ``m`` samples per chain: ``round(share * m)`` random rows of each
    named producer's output (fewer if it kept fewer), with their provenance labels."""
    first_data, first_labels = next(iter(outputs.values()))
    parts, codes = [first_data[:, :0]], [first_labels[:, :0]]  # nothing kept: an empty pool
    for name, share in shares.items():
        data, labels = outputs[name]
        k = min(int(round(share * m)), data.shape[1])
        if k:
            idx = np.argpartition(rng.random(data.shape[:2]), k - 1, axis=1)[:, :k]
            rows = np.arange(data.shape[0])[:, None]
            parts.append(data[rows, idx])
            codes.append(labels[rows, idx])
    return np.concatenate(parts, axis=1), np.concatenate(codes, axis=1)


def restore(store: RunStore, policy: Any,
            start: int) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    """History, its provenance labels and the reference model of a resumed run (nothing for a
    new one)."""
    if start == 0:
        return [], [], None
    kept = [g for g in range(start) if store.has_samples(g)]
    gens = kept if policy.history == "all" else kept[-1:]
    history = [store.samples(g) for g in gens]
    labels = []
    for g, data in zip(gens, history, strict=True):
        try:
            index = store.provenance(g)["produced_kept"]
        except RunError:  # a run from before provenance: rows as stored
            index = np.broadcast_to(np.arange(data.shape[1]), data.shape[:2])
        labels.append(provenance.encode(g, index))
    return history, labels, store.model(0)


def degenerate(samples: np.ndarray) -> str | None:
    if samples.shape[1] == 0:
        return "no samples"
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        return "non-finite samples"
    return None


def measure(metrics: list[tuple[str, Any]], ctx: GenerationContext) -> dict[str, Any]:
    """Run every metric; per-chain values become a mean and its standard error."""
    row: dict[str, Any] = {}
    nonfinite = []
    for _name, metric in metrics:
        for key, value in metric(ctx).items():
            arr = np.asarray(value, dtype=float)
            if arr.ndim == 0:
                row[key] = float(arr)
            else:
                ctx.artifacts[f"chain.{key}"] = arr
                row[key] = float(arr.mean())
                if arr.size > 1:
                    row[f"{key}.sem"] = float(arr.std(ddof=1) / np.sqrt(arr.size))
            if not np.isfinite(row[key]):
                nonfinite.append(key)
    if nonfinite:
        row["nonfinite"] = nonfinite
    return row


def theory_row(predictions: dict[str, theory.Prediction], gen: int, chains: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, pred in predictions.items():
        row[f"{key}.theory"] = float(pred.mean[gen])
        if pred.sd is not None:
            row[f"{key}.theory_se"] = float(pred.sd[gen] / np.sqrt(chains))
    return row
