"""Producer organisations (cooperatives, household shops, enterprises) and their members."""
