"""Stage: canonical raw frames -> typed frames (rename, cast, convert units, map codes)."""
