"""The torch student: inhibitor attention, frozen norms, exact/poly non-linearities."""

from he_inhibitor.model.student import Student, StudentConfig

__all__ = ["Student", "StudentConfig"]
