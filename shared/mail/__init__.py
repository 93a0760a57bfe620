"""Outbound mail: composition, DKIM signing, SMTP transport."""
