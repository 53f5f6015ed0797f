"""Privacy: what deleting a user or a subject takes with it, and what the retention rule purges."""
