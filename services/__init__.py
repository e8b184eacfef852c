"""The domain of the marketplace: models and operations per area, no web framework."""
