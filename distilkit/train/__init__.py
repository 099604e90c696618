"""The one training loop (Trainer and its Objective protocol), losses as plain functions, and
DDP glue.
"""
