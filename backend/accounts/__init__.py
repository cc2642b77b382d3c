"""Accounts: users, sign-in sessions and login throttling."""
