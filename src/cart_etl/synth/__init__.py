"""Synthetic reference cohort: calibrated plans, clinical courses and export writers."""
