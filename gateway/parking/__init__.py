"""Parking: durable, non-blocking retries on the bus (an upstream's ``park:`` block).

A request whose try failed in a way worth trying again, with time left, is republished to a park
tier (``cmn.requests.park.<delay>s``) instead of being answered, and its original is settled once
the broker confirmed the copy. The tier hands it back to the requests queue or topic after its
delay (RabbitMQ: a queue-wide TTL dead-lettering onto the requests queue; Kafka: a relay consumer,
``gateway.bus.kafka.park``). ``decide`` says whether and where; ``ticket`` seals what travels.
"""

from gateway.parking.decide import LastTry, Park, ParkPolicy, decide
from gateway.parking.parker import Parking, ParkPlan
from gateway.parking.ticket import ParkTicket, Sealer

__all__ = ["LastTry", "Park", "ParkPlan", "ParkPolicy", "ParkTicket", "Parking", "Sealer", "decide"]
