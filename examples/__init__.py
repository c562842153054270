"""Worked examples: models fitted outside the project and brought in with `python -m model.onboard`."""
