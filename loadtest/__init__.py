"""Benchmarks and load generators: clients of tokex, never part of it."""
