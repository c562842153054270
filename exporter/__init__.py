"""Replay CSV rows as live traffic against the API and expose what the replay sees to Prometheus.

    python -m exporter --rate 20 --scenario unit-change --fault-from 300

Replay runs on background threads; a Prometheus scrape only reads their state
(exporter.collector), it never sends a request to the API.
"""
