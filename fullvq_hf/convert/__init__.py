"""Converters between this package's state dicts and other layouts (diffusers' VQModel; official checkpoints)."""
