"""Validate stage: pandera models per layer, named rules, lazy validation and quarantine."""
