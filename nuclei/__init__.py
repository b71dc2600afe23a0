"""nuclei: placeholder docstring."""
