"""Background jobs on PostgreSQL: a transactional queue, retries, leases and periodic tasks."""
