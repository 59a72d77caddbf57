"""Data sources: where real data comes from, and what is known about its true distribution."""
