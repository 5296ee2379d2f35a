"""Developer tools that produce test inputs (run by hand, not by pytest)."""
