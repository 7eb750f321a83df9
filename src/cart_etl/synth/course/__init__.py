"""The course simulator: a patient plan becomes the raw clinical record of that patient.

``record.simulate`` is the entry point; ``episode`` lays out the CRS signals of the plan,
``flowsheet``, ``drugs``, ``labs`` and ``assessments`` chart them, and ``clock`` holds the
time units. ``simulate`` and ``DEX_TO_MP`` are re-exported here, where code outside
``synth`` imports them from.
"""

from cart_etl.synth.course.episode import DEX_TO_MP
from cart_etl.synth.course.record import simulate

__all__ = ["DEX_TO_MP", "simulate"]
