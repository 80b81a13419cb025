"""The joint-credit eligibility service: decisions with reasons, joint limits, audit.

Uses `models` (scoring a verified artifact) and `trust` (verification) only, never the training
code: what serves borrowers cannot be changed by what trains models.

Layers, each calling only the ones below it:

- HTTP: `app` (wiring), `routers/`, `dependencies`, `errors`, `middleware`, `openapi`, `metrics`
- use cases: `decisions` (validate, decide, joint limit, audit, respond), `reviews`
- decisions: `decide` (the `Decider`), `rules` (the policy applied), `reasons` (the model's
  reasons), `decision` (`DecisionTable` and its JSON), `joint`, `explain`, `policy`, `schemas`
- audit: `records` (what decisions write and read back), `audit` (the store), `tables`,
  `statements`, `chain`, `sqlite`, `writer` (group commit)
- start-up and the rest: `loader`, `workers`, `auth`, `exposure`, `registry`, `exposure_http`
"""
