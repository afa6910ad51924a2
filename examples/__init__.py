"""Examples of applications using runplane."""
