"""Tasks: what a task is (spec), the registry, GLUE / NER / QA readers, task files, features,
metrics.
"""
