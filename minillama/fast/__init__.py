"""Speed-only paths beside the core, applied explicitly and tested equal to it."""
