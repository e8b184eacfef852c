"""Administrative regions by statistical division code, and village service sites."""
