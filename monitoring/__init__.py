"""Model-agnostic monitoring from one config, in the manner of a monitoring mixin's `_config`.

monitoring/config.py holds every threshold, window and `for:` duration once; monitoring/rules.py
turns it into the Prometheus recording and alert rules, and grafana/*.py into the dashboards.
`python -m monitoring.build` (make rules, make dashboards) writes the generated files, which are
committed and which the tests require to equal a fresh build.
"""
