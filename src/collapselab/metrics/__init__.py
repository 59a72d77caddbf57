"""Registered metrics, measured on every generation against the real distribution."""
