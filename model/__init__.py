"""The house-price model: feature spec, training, reference bins and the model card."""
