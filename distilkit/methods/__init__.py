"""Distillation methods, one subpackage each, all the same shape.

Each exports a ``Config`` dataclass and ``run(config, out_dir, resume=True) -> metrics``;
its objectives live beside them.
"""
