"""Assessment: thresholds by year, household-year rows, exits, region indicators, MPI."""
