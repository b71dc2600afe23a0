"""slidestream: the application. CLI, batch pipeline over slide folders on dask, run manifest and resume."""

__version__ = "0.1.0"
__all__ = ["__version__"]
