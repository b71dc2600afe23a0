"""Slide reader backends behind one protocol, chosen through a registry (no if/elif chains)."""

from wsi.backends import openslide_reader as _openslide_reader  # noqa: F401  (registers "openslide")
from wsi.backends import tiffslide_reader as _tiffslide_reader  # noqa: F401  (registers "tiffslide")
from wsi.backends._registry import BackendReader, backend_order, get_backend, list_backends, register_backend

__all__ = ["BackendReader", "backend_order", "get_backend", "list_backends", "register_backend"]
