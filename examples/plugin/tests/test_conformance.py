"""The plugin's components follow collapselab's protocols: one test per component and rule
(collapselab.testing, as collapselab checks its own components)."""

from collapselab_laplace import Kurtosis, Laplace, Window

from collapselab.testing import parametrize_with_checks


@parametrize_with_checks([Laplace(), Window(window=3), Kurtosis()])
def test_conforms(component, check):
    check(component)
