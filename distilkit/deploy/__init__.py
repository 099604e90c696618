"""Putting models to work: serving them over HTTP."""
