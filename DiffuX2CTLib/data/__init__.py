"""Example data fetched on demand (nothing is downloaded at import)."""

from .example import ExampleCT, fetch_example_ct

__all__ = ["ExampleCT", "fetch_example_ct"]
