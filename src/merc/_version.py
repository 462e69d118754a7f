"""merc's version: a leaf, so that any layer can record it without importing the package root."""

__version__ = "0.2.0"
