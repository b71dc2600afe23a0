"""Nuclei detection and instance segmentation (CNN and classical baseline), slide inference, measurements.

Not built yet: this package holds no code until the nuclei milestone.
"""
