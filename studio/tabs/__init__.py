"""One module per tab; each exposes `build(workspace, ...)` returning the components others wire to."""
