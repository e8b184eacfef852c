"""Export jobs: assessment tables streamed from PostgreSQL to CSV, XLSX or JSON Lines."""
