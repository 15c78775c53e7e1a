"""Pure order books: price-time priority matching with no I/O, clock, randomness or floats."""
