"""Agents: the machines that back up, and their logs."""
