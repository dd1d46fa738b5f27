"""The recipe's settings that verification reads, typed here so that verify/ owns them (the stages import them,
never the other way); importing this module imports no numerics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class AgreementConfig:
    """`verify.agreement`: budgets of the agreement gate (reduced precision without labels) for every output;
    null: the precision's default (verify/agreement.py)."""

    rel_l2: Optional[float] = None
    cosine: Optional[float] = None
    argmax: Optional[float] = None
