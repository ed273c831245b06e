"""The stack: its one typed model, the instance catalog, the program wiring and the CLIs."""
