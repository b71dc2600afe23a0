"""survival: placeholder docstring."""
