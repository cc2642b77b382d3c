"""Backups: configurations and the history of every backup."""
