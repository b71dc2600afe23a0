"""tiling: placeholder docstring."""
