"""The core every layer shares: errors, the format table, file writing and hashing, the
degradation model and the metrics. It imports nothing else of the package."""
