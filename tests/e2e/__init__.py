"""End-to-end tests: real servers on loopback, and a real browser where it matters."""
