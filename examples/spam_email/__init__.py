"""Spam email: a gradient-boosted classifier on one Gmail inbox's emails, for `python -m model.onboard`."""
