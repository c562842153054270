"""Hotel room rates: a Ridge regression on a Portuguese resort hotel's bookings, for `python -m model.onboard`."""
