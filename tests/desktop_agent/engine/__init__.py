"""Unit tests of the engine, the only tests that may import its private modules (see ``test_public_api``)."""
