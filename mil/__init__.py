"""mil: placeholder docstring."""
