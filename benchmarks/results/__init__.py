"""Results: the row schema and crash-safe writer, the statistical compare of two runs, reports and plots."""
