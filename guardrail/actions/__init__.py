"""The actions a rule can name, one file each; ``ACTIONS`` maps rule action names to them."""

from __future__ import annotations

from guardrail.actions.block import Block
from guardrail.actions.log import Log
from guardrail.actions.protocol import Action
from guardrail.actions.rewrite import Rewrite

ACTIONS: dict[str, Action] = {"block": Block(), "rewrite": Rewrite(), "log": Log()}

__all__ = ["ACTIONS", "Block", "Log", "Rewrite"]
