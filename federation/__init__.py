"""The contract between the coordinator and the institutions, below everything that trains.

- `settings`: the run settings, one model for every way a run starts (`jointcredit simulate`,
  `sweep`, `flwr run .`, `link run`), with the model recipes and every cross-field rule
  resolved inside it, so an impossible run is refused before any node starts;
- `recipes`: what each model family trains with when the caller leaves a key to `auto`;
- `protocol`: the Flower messages the two sides exchange, as constants and typed records;
- `metrics`: `RunMetrics`, the schema of `OUT/metrics.json`.

Imports nothing of ours but `data` and `trust`: `models`, `privacy`, `client`, `server` and the
drivers all build on it.
"""
