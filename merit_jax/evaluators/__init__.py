"""Evaluators: linear probe, zero-shot, retrieval, distribution shift, metrics."""
