"""Seeing a running worker: its metrics, health, live session lookup and readable logs.

- `metrics.py`: the worker's Prometheus metrics (a registry per worker), counted as the
  transaction that carries them commits;
- `lookup.py`: one device's session as the worker holds it (`device_view`);
- `web.py`: the worker's HTTP endpoint (/metrics, /healthz, /ready, /sessions/...), which
  forwards a lookup to the worker owning the device;
- `logs.py`: the log format (text or JSON), the start-up, ready and progress lines.
"""
