"""Pure derivations from validated, staged frames to the facts the study is about.

One module per clinical family; every public function is ``derive_*``, takes polars frames
keyed by ``patient_key`` and returns a new frame. Rules and thresholds are data
(``mappings/grading``, ``mappings/drugs``) loaded by :mod:`.rules`.
"""
