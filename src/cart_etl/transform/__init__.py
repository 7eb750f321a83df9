"""Transform stage: staging (rename, cast, units) and pure clinical derivations."""
