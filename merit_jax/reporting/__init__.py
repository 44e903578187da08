"""Evaluation reporting: markdown tables, result JSON and figures."""
