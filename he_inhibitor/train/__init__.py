"""Distillation of the teacher into the HE-friendly student (``he-inhibitor distill``)."""
