"""The crash-safe rotation protocol, one module per step (DESIGN.md): each takes an `Advance` and moves its target
from one stage to the next, or stops with an outcome. No step imports the engine."""
