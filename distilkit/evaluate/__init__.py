"""Scoring and reporting: sentence evaluation (STS-B, SST-2 probe, throughput), timing, the
run report, plots.
"""
