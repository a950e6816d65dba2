"""Fenliu (分流): a plugin-based multi-shop message router for e-commerce customer service."""

__version__ = "0.1.0"
