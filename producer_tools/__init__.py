"""Emit checkout events the identity service consumes: a small library and the `checkout-events` CLI.

from producer_tools import CheckoutProducer

with CheckoutProducer() as producer:  # bootstrap servers and topic from the environment
    event_id = producer.send(email="ada@example.com", phone="+1 555 0100", order_id="o-1")
"""

from producer_tools.generate import SyntheticStream, synthetic_records
from producer_tools.producer import DEFAULT_SOURCE, CheckoutProducer, DeliveryError
from producer_tools.records import CheckoutRecord, RecordError, read_records

__all__ = [
    "DEFAULT_SOURCE",
    "CheckoutProducer",
    "CheckoutRecord",
    "DeliveryError",
    "RecordError",
    "SyntheticStream",
    "read_records",
    "synthetic_records",
]
