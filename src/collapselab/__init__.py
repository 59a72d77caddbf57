"""collapselab: run, measure and prevent model collapse."""

__version__ = "0.1.0"
