"""The ``distilkit`` command line.

``main`` builds the parser; one module per command group parses flags and calls the library.
"""
