"""Data: corpus reading and caching, masking, batching, the one table reader, augmentation,
transfer sets and teacher caches.
"""
