"""Contacts (CSV import, GDPR), target groups with conditions and the "update target group" task."""
