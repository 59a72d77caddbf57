"""collapselab.testing: a component that breaks a rule fails with a message naming the rule; the
registries refuse a name taken twice and fill themselves on first lookup; the typing.Protocols say
what registration checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collapselab import registry
from collapselab.curation import Filter
from collapselab.metrics.base import Metric
from collapselab.models.gaussian import Gaussian
from collapselab.policies import Policy, Replace
from collapselab.protocol import GenerativeModel
from collapselab.provenance import Part, Plan
from collapselab.sources.base import Source
from collapselab.testing import (
    ComponentCheckError,
    check_component,
    checks,
    kind_of,
    parametrize_with_checks,
)

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "examples" / "plugin" / "src"


@pytest.fixture
def plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    import collapselab_laplace

    return collapselab_laplace


def test_the_example_plugin_passes(plugin):
    for component in (plugin.Laplace(), plugin.Window(window=3), plugin.Kurtosis()):
        check_component(component)
    assert [kind_of(c) for c in (plugin.Laplace, plugin.Window, plugin.Kurtosis)] == [
        "family", "policy", "metric"]


class DropsChains(Gaussian):
    """Samples the first chain only, without its axis: (n, dim)."""

    def sample(self, n, rng):
        return super().sample(n, rng)[0]


def test_a_family_whose_sample_drops_the_chain_axis_fails_naming_the_rule():
    with pytest.raises(ComponentCheckError, match=(
            r"^DropsChains breaks the rule 'sample returns \(chains, n, \*event\) numbers of the "
            r"data's dtype kind': shape \(5, 2\) on continuous data; want \(2, 5, 2\)")):
        check_component(DropsChains())


class GlobalNoise(Gaussian):
    """Adds noise from numpy's global generator: not reproducible from the rng passed in."""

    def sample(self, n, rng):
        return super().sample(n, rng) + np.random.normal(size=(1, n, 1))  # noqa: NPY002


def test_a_family_that_reads_the_global_generator_fails_naming_the_rule():
    with pytest.raises(ComponentCheckError, match=(
            r"^GlobalNoise breaks the rule 'same rng seed, same samples'")):
        check_component(GlobalNoise())
    rng_only = next(c for c in checks(GlobalNoise()) if c.id == "rng_only")
    with pytest.raises(ComponentCheckError, match=(
            r"'randomness only from the rng passed in': the samples depend on a global "
            r"generator")):
        rng_only(GlobalNoise())


class PastThePool(Replace):
    """Draws as many rows of the newest synthetic pool as the real pool holds."""

    def plan(self, sizes, size, chains, rng):
        return Plan((Part((len(sizes) - 1,), rng.integers(0, sizes[0], (chains, size))),))


def test_a_policy_whose_plan_draws_past_a_pool_fails_naming_the_rule():
    with pytest.raises(ComponentCheckError, match=(
            r"^PastThePool breaks the rule 'plans draw rows within the pools' sizes': part 0 "
            r"draws row 1\d of pools \(1,\), which hold 12 rows per chain \(sizes \[20, 12\]\)$")):
        check_component(PastThePool())


class OneTooMany:
    """A metric with one value too many: (chains + 1,)."""

    kinds = frozenset({"continuous"})

    def __call__(self, ctx):
        return {"spread": np.ones(ctx.chains + 1)}


def test_a_metric_with_the_wrong_per_chain_length_fails_naming_the_rule():
    with pytest.raises(ComponentCheckError, match=(
            r"^OneTooMany breaks the rule 'returns a dict of numbers, each a scalar or one per "
            r"chain \(chains, \.\.\.\)': 'spread' is shape \(4,\) and dtype float64 on continuous "
            r"data of 3 chains; want a number or shape \(3, \.\.\.\)$")):
        check_component(OneTooMany)


class BadDeclarations:
    kinds = frozenset({"continuous", "video"})
    worse = {"spread": "up"}

    def __call__(self, ctx):
        return {}


def test_a_metric_declaring_an_unknown_kind_or_direction_fails_naming_the_rule():
    kinds, _, declarations = (c for c in checks(BadDeclarations) if c.id in (
        "kinds", "needs", "declarations"))
    with pytest.raises(ComponentCheckError, match=r"'kinds names source kinds .*got kinds="):
        kinds(BadDeclarations)
    with pytest.raises(ComponentCheckError, match=r"got worse=\{'spread': 'up'\}$"):
        declarations(BadDeclarations)


def test_a_class_of_no_kind_is_refused_naming_the_protocols():
    with pytest.raises(ComponentCheckError, match=(
            r"^OrderedDict implements no component protocol: a family defines fit, sample, "
            r"score_samples, score, clone; ")):
        from collections import OrderedDict

        check_component(OrderedDict)


@parametrize_with_checks([Replace()])
def test_parametrize_with_checks_gives_one_test_per_rule(component, check, request):
    check(component)
    assert request.node.callspec.id == f"Replace-{check.id}"


def test_a_name_registered_twice_is_refused_naming_both(monkeypatch):
    monkeypatch.setattr(registry.policies, "_entries", dict(registry.policies._entries))
    monkeypatch.setattr(registry.policies, "_origins", dict(registry.policies._origins))
    with pytest.raises(registry.ComponentError, match=(
            r"^policy name 'replace' is taken: collapselab.policies:Replace is registered under "
            r"it; cannot register tests.test_testing_kit:PastThePool too \(choose another "
            r"name\)$")):
        registry.policies.register("replace", PastThePool)
    registry.policies.register("replace", Replace)  # the same class again: no clash
    assert registry.policies.get("replace") is Replace


def test_the_registries_fill_themselves_on_first_lookup():
    code = ("import sys; from collapselab import registry; "
            "assert 'collapselab.components' not in sys.modules; "
            "print(registry.families.get('gmm').__name__, 'collapselab.components' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["GMM", "True"]


def test_the_protocols_ask_what_registration_checks():
    def members(protocol):
        names = {n for n in vars(protocol) if not n.startswith("_") or n == "__call__"}
        names |= set(vars(protocol).get("__annotations__", {}))
        return names

    for key, protocol in {"family": GenerativeModel, "source": Source, "policy": Policy,
                          "filter": Filter, "metric": Metric}.items():
        methods, attributes = registry.PROTOCOLS[key]
        assert members(protocol) == set(methods) | set(attributes), key


def test_sources_declare_what_the_loop_and_metrics_ask_of_them():
    from collapselab import capabilities

    normal = registry.sources.build("normal", {"dim": 2, "heldout_size": 30})
    builtin = registry.sources.build("builtin", {"vocab_size": 40, "block_len": 12,
                                                 "train_blocks": 20})
    assert set(capabilities.truth(normal)) >= {"weights", "means", "covs"}
    assert capabilities.truth(builtin) and capabilities.truth(object()) == {}
    assert [capabilities.block_len(s) for s in (normal, builtin)] == [None, 12]
    assert capabilities.heldout_rows(normal) == 30 and capabilities.heldout_rows(builtin) == 0
    assert capabilities.provides(builtin, capabilities.HasTrainCounts)
    assert capabilities.provides(builtin, capabilities.HasValidSplit)
    assert not capabilities.provides(normal, capabilities.HasImageSplit)
