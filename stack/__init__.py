"""The stack: reading and checking stack files into the model, the program wiring the
components, and the CLIs."""
