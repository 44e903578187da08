"""Metric utilities: classification scores with one stratified bootstrap, fold stratification and
generated-text metrics."""
