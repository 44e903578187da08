"""Metric utilities: classification scores and the one bootstrap (`classification`), label
stratification (`stratify`), generated-report metrics (`text`: BLEU/ROUGE-L/METEOR, `clinical`:
SCP statement F1, `generation`: all together with bootstrap intervals over records)."""
