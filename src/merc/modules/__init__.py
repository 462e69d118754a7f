"""Reusable building blocks shared by the models (fusion, positions, context encoders)."""
