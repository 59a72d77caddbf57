"""The collapse loop: train on real data, then again and again on what the models wrote.

Read ``generations`` top to bottom; set-up, resume and bookkeeping live below it. A one-model run
is a run with one producer; a multi-producer run trains several models each generation, each on
the policy's composition of real data and its own pool, which mixes the producers' outputs in the
shares of its ``trains_on``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from threadpoolctl import ThreadpoolController

from collapselab import capabilities, provenance, registry, theory, watermark, workarea
from collapselab.config import ExperimentConfig
from collapselab.curation import Curated, CurationContext, Filter, curate
from collapselab.errors import Interrupted, NumericalError, RunError
from collapselab.metrics import declare
from collapselab.metrics.base import GenerationContext, Metric
from collapselab.policies import Policy
from collapselab.protocol import NUMBERS, GenerativeModel, checked_samples, clone
from collapselab.provenance import FRESH, Part, Plan, Pool
from collapselab.sources.base import Source, checked
from collapselab.store import SINGLE, RunStore, RunWriter

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

# what makes a generation degenerate (a result); any other exception is a bug or an input problem
NUMERICAL = (NumericalError, FloatingPointError, np.linalg.LinAlgError)

STREAMS = ("generation g, producer p: SeedSequence(seed, spawn_key=(1, g, p)).spawn(5) -> "
           "compose, fit, sample, curate, metrics; the producers' mix at generation g: "
           "spawn_key=(2, g); set-up (real pool, held-out data): spawn_key=(0,)")


class Stream(np.random.Generator):
    """The ``Generator`` of ``default_rng(SeedSequence(seed, spawn_key=key))``, seeded when it is
    first used: a purpose that draws nothing (a deterministic fit, a policy that takes every row,
    a metric without randomness) costs 0.3 µs, not the 12-20 µs of seeding a PCG64 (a generation
    of 1000 categorical chains spent a sixth of its bookkeeping on seeds it never drew from).
    "Used" is any attribute looked up on it, as every method call does; only an unbound call
    (``np.random.Generator.random(stream)``) would bypass the seeding."""

    _UNSEEDED = np.random.PCG64(0)  # held until the first use, never drawn from

    def __init__(self, seed: int, key: tuple[int, ...]) -> None:
        super().__init__(Stream._UNSEEDED)
        self._pending = (seed, key)

    def __getattribute__(self, name: str) -> Any:
        state = object.__getattribute__(self, "__dict__")
        if "_pending" in state:  # the first use of any method or attribute: seed it now
            seed, key = state.pop("_pending")
            np.random.Generator.__init__(
                self, np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))
        return super().__getattribute__(name)

    def spawn(self, n_children: int) -> list[np.random.Generator]:
        return [np.random.Generator(bg) for bg in self.bit_generator.spawn(n_children)]


class Streams:
    """Independent random streams of one producer in one generation, derived from the root seed
    (see ``STREAMS``): any generation of any producer can be replayed alone, and adding a producer
    changes no other producer's streams. The i-th purpose's stream is the i-th child of
    ``SeedSequence(seed, spawn_key=(1, gen, producer))``, seeded when first drawn from."""

    PURPOSES = ("compose", "fit", "sample", "curate", "metrics")

    def __init__(self, seed: int, key: tuple[int, ...]) -> None:
        self._seed, self._key = seed, key

    @classmethod
    def for_generation(cls, seed: int, gen: int, producer: int = 0) -> Streams:
        return cls(seed, (1, gen, producer))

    def __getattr__(self, purpose: str) -> np.random.Generator:
        if purpose not in Streams.PURPOSES:
            raise AttributeError(purpose)
        rng = Stream(self._seed, (*self._key, Streams.PURPOSES.index(purpose)))
        setattr(self, purpose, rng)  # later uses find the attribute: no second stream
        return rng


def mix_stream(seed: int, gen: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, gen)))


def setup_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    real, heldout = np.random.SeedSequence(seed, spawn_key=(0,)).spawn(2)
    return np.random.default_rng(real), np.random.default_rng(heldout)


@dataclass
class Producer:
    """One model of the loop: ``name`` labels its metrics (``None`` in a one-model run),
    ``trains_on`` the shares of producers (by position) in the pool it learns from."""

    name: str | None
    prototype: GenerativeModel
    trains_on: dict[int, float]

    def key(self, metric: str) -> str:
        return f"{self.name}/{metric}" if self.name else metric

    def keyed(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` under this producer's keys (as they are in a one-model run)."""
        return {self.key(k): v for k, v in values.items()} if self.name else values

    @property
    def label(self) -> str:
        return self.name or SINGLE


@dataclass
class Experiment:
    """A config turned into objects: what the loop needs, built (and checked) before any writing."""

    config: ExperimentConfig
    source: Source
    producers: list[Producer]
    policy: Policy
    filters: list[tuple[str, Filter]]
    metrics: list[tuple[str, Metric]]
    predictions: dict[str, theory.Prediction]

    @functools.cached_property
    def theory(self) -> dict[str, list[float]]:
        return theory_columns(self.predictions, self.config.chains)

    @property
    def names(self) -> list[str] | None:
        """Producer names of a multi-producer run (composition keys name them); else None."""
        return [p.label for p in self.producers] if self.producers[0].name else None

    @classmethod
    def build(cls, cfg: ExperimentConfig) -> Experiment:
        source = registry.sources.build(cfg.data.source, cfg.data.params)
        if cfg.producers:
            names = [p.name for p in cfg.producers]
            producers = [Producer(p.name, build_model(p.model, source), {
                names.index(n): share for n, share in (p.trains_on or {p.name: 1.0}).items()})
                for p in cfg.producers]
        else:
            producers = [Producer(None, build_model(cfg.model, source), {0: 1.0})]
        metrics = [(m.name, registry.metrics.build(m.name, m.params)) for m in cfg.metrics or []]
        return cls(
            config=cfg, source=source, producers=producers,
            policy=registry.policies.build(cfg.policy.name, cfg.policy.params),
            filters=[(f.name, registry.filters.build(f.name, f.params)) for f in cfg.curation],
            metrics=metrics,
            predictions={} if cfg.producers else reported(theory.predict(cfg, source), metrics),
        )


def build_model(spec: Any, source: Any) -> Any:
    """The family's prototype; sizes the model can learn from the source (vocabulary, number of
    states) are filled in when the config leaves them unset."""
    params = dict(spec.params)
    accepted = inspect.signature(registry.families.get(spec.family)).parameters
    for name, value in capabilities.source_sizes(source).items():
        if name in accepted and params.get(name) is None:
            params[name] = value
    return registry.families.build(spec.family, params)


class Observer(Protocol):
    """Told of what a run commits (an experiment tracker, a live plot): ``committed`` gets the
    metrics rows of the generations just committed, in order. An observer must not raise; a
    tracker that is down should warn and carry on."""

    def committed(self, rows: list[dict[str, Any]]) -> None: ...


def run(
    cfg: ExperimentConfig, *, resume: bool = False, takeover: bool = False,
    progress: Progress | None = None, observers: Sequence[Observer] = (),
) -> RunStore:
    """Run (or resume) ``cfg`` into ``cfg.run_dir``. A new run that fails before its first
    generation is committed leaves nothing of what it created behind. ``observers`` are told of
    every commit."""
    store = RunStore(cfg.run_dir)
    check_target(store, cfg, resume)
    exp = Experiment.build(cfg)  # bad sources or parameters fail here, before anything is written
    with store.writer(takeover=takeover) as writer:
        check_target(store, cfg, resume)  # again, under the lock: another writer may have begun
        writer.start(cfg.to_yaml(), seeds={"seed": cfg.seed, "streams": STREAMS},
                     keep_samples=cfg.keep_samples)
        # NumPy/scikit-learn families work on small arrays, where BLAS/OpenMP worker threads
        # cost far more than they save (measured: a 2-D GMM fit 24x slower with 2 threads)
        threaded = any(capabilities.threaded(p.prototype) for p in exp.producers)
        try:
            with contextlib.nullcontext() if threaded else one_thread():
                status = generations(exp, store, writer, progress, observers)
        except KeyboardInterrupt:
            salvage(writer, observers)
            raise Interrupted(interrupted(store, writer)) from None
        except BaseException as exc:
            salvage(writer, observers)  # generations finished before the failure stay committed
            failed(writer, exc)
            raise
        writer.finish(status)
    return store


_pools: tuple[int, ThreadpoolController] | None = None  # (modules imported, their thread pools)


def one_thread() -> contextlib.AbstractContextManager[Any]:
    """``threadpool_limits(1)`` over the BLAS/OpenMP pools loaded. Finding them scans the loaded
    libraries (3 ms, a run's largest fixed cost), so the scan is redone only after an import
    (the number of modules changed: libraries arrive with the modules that load them)."""
    global _pools
    if _pools is None or _pools[0] != len(sys.modules):
        _pools = (len(sys.modules), ThreadpoolController())
    return _pools[1].limit(limits=1)


def check_target(store: RunStore, cfg: ExperimentConfig, resume: bool) -> None:
    if store.exists and not resume:
        raise RunError(f"{store.root} already holds a run; pass --resume to continue it "
                       "or choose another name")
    if resume and store.exists:
        store.check()  # a resume never builds on a damaged run
        if store.config() != cfg:
            raise RunError(f"{store.root} was started with a different config; diff it "
                           f"against {store.root / 'config.yaml'} or choose another name")


def salvage(writer: RunWriter, observers: Sequence[Observer]) -> None:
    """Commit the generations finished before a failure, if the disk lets us."""
    try:
        rows = writer.flush()
    except Exception:  # noqa: BLE001  (the failure being raised is the one to report)
        log.debug("could not commit the staged generations", exc_info=True)
        return
    for observer in observers:
        observer.committed(rows)


def failed(writer: RunWriter, exc: BaseException) -> None:
    """Mark the run failed, with the error, if the disk lets us (a new run that committed
    nothing is removed after this anyway)."""
    try:
        writer.finish("failed", error={"type": type(exc).__name__, "message": str(exc)})
    except Exception:  # noqa: BLE001  (the failure being raised is the one to report)
        log.debug("could not mark the run failed", exc_info=True)


def interrupted(store: RunStore, writer: RunWriter) -> str:
    """Mark an interrupted run as such; say what was kept and where."""
    done = store.completed()
    if done == 0:
        return "interrupted before any generation was committed: nothing was kept"
    writer.finish("interrupted")
    gens = "generation 0 is" if done == 1 else f"generations 0-{done - 1} are"
    return f"interrupted: {gens} kept in {store.root}; rerun with --resume to continue"


def generations(exp: Experiment, store: RunStore, writer: RunWriter,
                progress: Progress | None, observers: Sequence[Observer] = ()) -> str:
    """The loop. Each generation, each producer composes its training set, fits a fresh model,
    samples from it and has its output curated and measured; the generation is staged, and
    committed with the others at most once a second. Returns how the run ended."""
    cfg = exp.config
    real, heldout = setup_data(exp)
    state = History.restore(exp, store, writer.last_row)
    if state.stopped:
        return "stopped"  # a crash came between the stop and the manifest saying so

    for gen in range(state.start, cfg.generations):
        tic = time.perf_counter()
        marker = cfg.watermark if cfg.watermark and cfg.watermark.applies(gen) else None
        made = Made(gen)
        for p, producer in enumerate(exp.producers):
            rng = Streams.for_generation(cfg.seed, gen, p)
            train, parts = compose(exp, real, state.pools[p], rng.compose)  # (chains, size', ...)
            try:  # workarea: the generation a fit or sampler in other processes names
                with workarea.generation(store.root, gen, producer.name):
                    model = clone(producer.prototype).fit(train, rng=rng.fit)
                    produced = sample(exp, model, train, rng.sample, marker)  # (chains, m, ...)
            except NUMERICAL as exc:  # a result of the experiment; anything else is an error
                made.degenerate(producer, exc)
                continue
            reference = state.references.setdefault(p, model)  # generation 0's model
            out = assess(exp, gen, model, reference, produced, train, real.data, heldout, rng,
                         marker)
            made.add(exp, p, out, parts, train, produced)
        made.finish(exp, tic)
        state.advance(state.mix(gen, made.outputs, made.record))
        writer.stage(gen, made.row, per_chain=made.per_chain, record=made.record,
                     samples=made.samples(exp), models=made.models(exp, state.references),
                     needed=state.generations())  # the pools' samples: a resume reads them back
        stop = len(made.outputs) < len(exp.producers) and (cfg.on_degenerate == "stop" or gen == 0)
        last = stop or gen == cfg.generations - 1
        if last or writer.due():  # one commit a second, not one a generation
            rows = writer.commit(("stopped" if stop else "complete") if last else None)
            for observer in observers:
                observer.committed(rows)
        if stop:
            return "stopped"
        if progress:
            progress(gen + 1, cfg.generations)
    writer.commit("complete")  # resumed after its last commit: only the final clean-up is left
    return "complete"


def setup_data(exp: Experiment) -> tuple[Pool, np.ndarray]:
    """The real pool generation 0 trains on, ``(chains or 1, size, ...)``, and the held-out data
    no generation trains on, ``(1, n_heldout, ...)``."""
    cfg = exp.config
    real_rng, heldout_rng = setup_rngs(cfg.seed)
    data = exp.source.real(cfg.data.size, cfg.chains, real_rng)
    real = Pool.real(checked(exp.source, "real", data, cfg.chains, cfg.data.size))
    heldout = checked(exp.source, "heldout", exp.source.heldout(heldout_rng), cfg.chains)
    return real, heldout


def compose(exp: Experiment, real: Pool, history: list[Pool],
            rng: np.random.Generator) -> tuple[np.ndarray, list[provenance.Take]]:
    """The next training set ``(chains, size', ...)`` by the policy's index plan over the real
    pool and ``history`` (generation 0, or no usable history yet: the real data), and the parts
    it took (its provenance)."""
    cfg = exp.config
    pools = [real, *history]
    plan = (exp.policy.plan([q.n for q in pools], cfg.data.size, cfg.chains, rng)
            if history else Plan((Part((0,)),)))
    if not isinstance(plan, Plan):
        raise RunError(f"{registry.name_of(exp.policy)}.plan returned a {type(plan).__name__}; "
                       "a policy returns a collapselab.provenance.Plan")
    if plan.fresh:  # new real rows, drawn once, after the plan's own draws
        fresh = exp.source.fresh(plan.fresh, cfg.chains, rng)
        pools.append(Pool.real(checked(exp.source, "fresh", fresh, cfg.chains, plan.fresh), FRESH))
    parts = provenance.takes(plan, pools)
    return provenance.data_of(parts, cfg.chains), parts


def sample(exp: Experiment, model: Any, train: np.ndarray, rng: np.random.Generator,
           marker: watermark.Watermark | None) -> np.ndarray:
    """``synthetic_size`` samples per chain of the fitted ``model``, ``(chains, m, ...)``,
    checked: the shape asked for, numbers, all finite (else ``NumericalError``: a degenerate
    generation)."""
    cfg = exp.config
    m = cfg.synthetic_size or cfg.data.size
    with watermark.applied(marker):  # LM samplers add delta to green-list logits
        produced = model.sample(m, rng)
    produced = checked_samples(model, produced, cfg.chains, m, train.shape[2:])
    check_finite(produced)
    return produced  # type: ignore[no-any-return]


def degenerate(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, NumericalError) else f"{type(exc).__name__}: {exc}"


@dataclass
class Made:
    """What generation ``gen`` made, gathered as its producers finish: its metrics row, the
    per-chain values the commit summarises into it, its record's arrays and each producer's
    curated output (by position)."""

    gen: int
    row: dict[str, Any] = field(default_factory=dict)
    per_chain: dict[str, np.ndarray] = field(default_factory=dict)  # committed as mean and sem
    record: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[int, Pool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row["generation"] = self.gen

    def degenerate(self, producer: Producer, exc: BaseException) -> None:
        self.row[producer.key("degenerate")] = degenerate(exc)
        log.warning("generation %d%s is degenerate: %s", self.gen,
                    f" of {producer.name}" if producer.name else "", exc)

    def add(self, exp: Experiment, p: int, out: Assessed, parts: list[provenance.Take],
            train: np.ndarray, produced: np.ndarray) -> None:
        """Producer ``p``'s assessed output: its row, per-chain values, provenance, artifacts."""
        producer, chains = exp.producers[p], exp.config.chains
        self.row |= producer.keyed({
            **out.row, **provenance.composition(parts, chains, exp.names),
            "train_size": int(train.shape[1]), "generated": int(produced.shape[1])})
        self.per_chain |= producer.keyed(out.per_chain)
        self.record |= prefixed(f"provenance.{producer.label}.", provenance.record(
            parts, kept=out.curated.index,
            produced=int(produced.shape[1]), scores=out.curated.scores))
        self.record |= prefixed(f"artifacts.{producer.label}.", out.artifacts)
        self.outputs[p] = Pool((self.gen, p), out.synthetic, origin=(self.gen, p),
                               rows=out.curated.index)

    def samples(self, exp: Experiment) -> dict[str | None, np.ndarray]:
        """Each producer's curated samples, by name (the store's key)."""
        return {exp.producers[p].name: out.data for p, out in self.outputs.items()}

    def models(self, exp: Experiment, references: dict[int, Any]) -> dict[str | None, Any]:
        """Generation 0's models, by producer name, kept as the references; none later."""
        return {exp.producers[p].name: references[p] for p in self.outputs} if self.gen == 0 else {}

    def finish(self, exp: Experiment, tic: float) -> None:
        """The row's totals over producers, theory columns and wall time."""
        if len(exp.producers) > 1:  # totals, for cost accounting
            self.row["train_size"] = sum(self.row.get(q.key("train_size"), 0)
                                         for q in exp.producers)
            self.row["generated"] = sum(self.row.get(q.key("generated"), 0)
                                        for q in exp.producers)
        self.row |= {k: column[self.gen] for k, column in exp.theory.items()}
        self.row["wall_s"] = time.perf_counter() - tic


@dataclass
class Assessed:
    """A generation's output after curation, and what was measured of it."""

    synthetic: np.ndarray  # the curated samples
    curated: Curated  # what curation kept (rows and scores)
    row: dict[str, Any]  # scalar metrics, each filter's kept share, watermark detection rates
    per_chain: dict[str, np.ndarray]  # per-chain metric values (committed as mean and sem)
    artifacts: dict[str, np.ndarray]  # per-chain and per-sample arrays for the record


def assess(exp: Experiment, gen: int, model: Any, reference: Any, produced: np.ndarray,
           train: np.ndarray, real: np.ndarray, heldout: np.ndarray, rng: Streams,
           marker: watermark.Watermark | None) -> Assessed:
    """Curate what ``model`` produced, then measure the generation."""
    synthetic, kept, curated = curate(exp.filters, produced, CurationContext(
        gen, model, reference, rng.curate, exp.source, exp.config.watermark) if exp.filters else None)
    marks = {} if marker is None else watermark.measure(
        marker, model, produced, real, rng.metrics, skip=capabilities.prompt_tokens(model))
    ctx = GenerationContext(gen=gen, model=model, reference=reference, train=train,
                            synthetic=synthetic, real=real, heldout=heldout,
                            source=exp.source, rng=rng.metrics)
    scalars, per_chain = measure(exp.metrics, ctx)
    return Assessed(synthetic, curated, {**scalars, **kept, **marks}, per_chain, ctx.artifacts)


# --- history: the pools each producer learns from, and after a resume ------------------------------


@dataclass
class History:
    """Each producer's synthetic pools (newest last) and generation 0's models: what the loop
    carries from one generation to the next (which samples stay on disk is the store's)."""

    exp: Experiment
    pools: list[list[Pool]]
    start: int = 0
    references: dict[int, Any] = field(default_factory=dict)
    stopped: bool = False

    def mix(self, gen: int, outputs: dict[int, Pool],
            record: dict[str, np.ndarray]) -> dict[int, Pool]:
        """The pool each producer learns from next: its own curated output, or its ``trains_on``
        mix of the producers' outputs (``round(share * m)`` random rows of each, fewer if it kept
        fewer), recorded. A producer whose sources all failed gets no new pool."""
        cfg = self.exp.config
        rng = None
        m = cfg.synthetic_size or cfg.data.size
        out = {}
        for c, consumer in enumerate(self.exp.producers):
            if consumer.trains_on == {c: 1.0}:  # its own output: nothing to mix
                if c not in outputs:
                    continue  # it failed: it learns from its last pool again
                out[c] = outputs[c]
            else:
                parts: list[provenance.Take] = []
                rng = rng or mix_stream(cfg.seed, gen)
                for p, share in consumer.trains_on.items():
                    k = min(int(round(share * m)), outputs[p].n) if p in outputs else 0
                    if k:
                        src = outputs[p]
                        parts.append(([src], provenance.draw_rows(src.n, k, cfg.chains, rng)))
                if not parts:
                    continue
                record |= provenance.record_parts(parts, f"pool.{consumer.label}.")
                out[c] = Pool((gen, c), provenance.data_of(parts, cfg.chains),
                              provenance.labels_of(parts, cfg.chains))
            record[f"pool.{consumer.label}.made"] = np.array(True)
        return out

    def advance(self, pools: dict[int, Pool]) -> None:
        for c, pool in pools.items():
            self.pools[c] = [pool] if self.exp.policy.history == "last" else [*self.pools[c], pool]

    def generations(self) -> set[int]:
        """The generations whose samples the pools hold: a resume reads them back from disk."""
        return {q.key[0] for pools in self.pools for q in pools}

    @classmethod
    def restore(cls, exp: Experiment, store: RunStore,
                last: dict[str, Any] | None) -> History:
        """The history of a resumed run, rebuilt from its committed files and ``last``, its last
        committed row (empty for a new run)."""
        state = cls(exp=exp, pools=[[] for _ in exp.producers], start=store.completed())
        if state.start == 0 or last is None:
            return state
        if any(k.endswith("degenerate") for k in last) and (
                exp.config.on_degenerate == "stop" or state.start == 1):
            state.stopped = True
            return state
        if state.start >= exp.config.generations:
            return state  # killed while finishing: the final clean-up may have run, nothing to train
        for c, consumer in enumerate(exp.producers):
            # newest first: a policy that keeps the last pool reads one generation's record
            made = (g for g in reversed(range(state.start)) if store.pool(g, consumer.name))
            gens = list(itertools.islice(made, 1) if exp.policy.history == "last" else made)
            state.pools[c] = [rebuild_pool(exp, store, g, c) for g in reversed(gens)]
        state.references = {p: store.model(0, producer.name)
                            for p, producer in enumerate(exp.producers)}
        return state


def rebuild_pool(exp: Experiment, store: RunStore, gen: int, c: int) -> Pool:
    """Consumer ``c``'s pool of generation ``gen``, from the stored samples and record."""

    def output(g: int, p: int, n: int) -> Pool:
        name = exp.producers[p].name
        data, prov = store.samples(g, name), store.provenance(g, name)
        kept = prov["kept"].astype(np.int64) if "kept" in prov else np.arange(data.shape[1])
        return Pool((g, p), data, origin=(g, p), rows=np.broadcast_to(kept, data.shape[:2]))

    mix = store.pool(gen, exp.producers[c].name)
    if "parts" not in mix:
        return output(gen, c, 0)
    parts = provenance.read_parts(mix, "", output)
    chains = exp.config.chains
    return Pool((gen, c), provenance.data_of(parts, chains), provenance.labels_of(parts, chains))


# --- small helpers -------------------------------------------------------------------------------


def prefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {prefix + k: v for k, v in arrays.items()}


def check_finite(samples: np.ndarray) -> None:
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        raise NumericalError("non-finite samples")


def measure(metrics: list[tuple[str, Any]],
            ctx: GenerationContext) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run every metric: its values, and its per-chain values apart, which the commit writes into
    the row (``<key>`` and ``<key>.sem``, held in their places until then) and which are kept as
    artifacts (integer and boolean ones as the metric gave them, any other as float64). A metric
    returns a dict of numbers, each a scalar or one per chain; anything else is a ``RunError``
    naming the metric, the key and the rule."""
    row: dict[str, Any] = {}
    per_chain: dict[str, np.ndarray] = {}
    for name, metric in metrics:
        values = metric(ctx)
        if not isinstance(values, dict):
            raise RunError(f"{name}.__call__ returned a {type(values).__name__}; a metric returns "
                           "a dict of named values")
        for key, value in values.items():
            arr = np.asarray(value)
            if arr.dtype.kind not in NUMBERS or arr.ndim and arr.shape[0] != ctx.chains:
                got = repr(value) if arr.ndim == 0 else f"shape {arr.shape} and dtype {arr.dtype}"
                raise RunError(f"{name}.__call__ returned {got} for {key!r}; a metric value is a "
                               f"number, or numbers per chain: shape ({ctx.chains}, ...)")
            if arr.ndim:
                per_chain[key] = arr
                ctx.artifacts[f"chain.{key}"] = (
                    arr if arr.dtype.kind in "biu" else arr.astype(np.float64, copy=False))
                row[key] = row[f"{key}.sem"] = None  # the commit's summary, in metric order
            else:
                row[key] = float(arr)
    return row, per_chain


def reported(predictions: dict[str, theory.Prediction],
             metrics: list[tuple[str, Any]]) -> dict[str, theory.Prediction]:
    """The predictions of keys the run's metrics declare they report (their ``describe`` keys
    and patterns; every prediction when a metric declares none, none without metrics): a row
    holds no theory of a metric the run does not compute."""
    tables = [declare.declarations(metric)[0] for _, metric in metrics]
    if not all(tables):
        return predictions
    return {key: pred for key, pred in predictions.items()
            if any(declare.lookup(table, key) is not None for table in tables)}


def theory_columns(predictions: dict[str, theory.Prediction],
                   chains: int) -> dict[str, list[float]]:
    """The rows' theory columns, one value per generation: ``<metric>.theory`` (the chain mean's
    expectation) and ``<metric>.theory_se`` (its standard error over ``chains``) where known;
    ``<metric>.theory_bound`` (1 upper, -1 lower) where the theory is a bound."""
    out = {}
    for key, pred in predictions.items():
        out[f"{key}.theory"] = np.asarray(pred.mean, dtype=float).tolist()
        if pred.sd is not None:
            out[f"{key}.theory_se"] = (np.asarray(pred.sd, dtype=float) / np.sqrt(chains)).tolist()
        if pred.bound is not None:  # the theory bounds the expectation: 1 upper, -1 lower
            out[f"{key}.theory_bound"] = [1.0 if pred.bound == "upper" else -1.0] * len(pred.mean)
    return out
