"""Identity reconciliation service: one customer identity per set of shared emails and phones.

`consumer` is the service (worker, relay, API, settings, CLI); its Kafka consumer is `consumer.worker`.
"""
