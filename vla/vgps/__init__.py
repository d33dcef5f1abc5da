"""V-GPS: a language-conditioned Q-function trained offline (Cal-QL or IQL) that re-ranks K sampled actions."""
from vla.vgps.config import PRESETS, ActionBounds, QConfig, TrainConfig, get_preset
from vla.vgps.guidance import GuidedAction, ValueGuidedPolicy, choose, rerank
from vla.vgps.qfunction import QFunction

__all__ = ["PRESETS", "ActionBounds", "GuidedAction", "QConfig", "QFunction", "TrainConfig", "ValueGuidedPolicy",
           "choose", "get_preset", "rerank"]
