"""The stateful exchange core: accounts, risk holds, fees, ledger, sequencer, persistence, recovery."""
