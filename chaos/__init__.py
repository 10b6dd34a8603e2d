"""Chaos runs: seeded faults thrown at the whole pipeline under load, and a checker
that proves from the recorded histories that nothing was lost, reordered or
resurrected (see README, "Chaos")."""
