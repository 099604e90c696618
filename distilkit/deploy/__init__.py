"""Putting models to work: ONNX export and runtime, task pipelines, semantic search, the
deployment bench.
"""
