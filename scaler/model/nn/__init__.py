"""Modules built from NetSpecs."""
