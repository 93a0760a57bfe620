"""Mass mailings: scheduling, planning, bulk sending, delivery records, unsubscribe and tracking."""
