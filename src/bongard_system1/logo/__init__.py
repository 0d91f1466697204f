"""The LOGO action language of Bongard-LOGO: actions, a turtle that traces them, a renderer, a sampler."""

from .actions import Action, PlacedShape, format_action, parse_action, parse_program

__all__ = ["Action", "PlacedShape", "format_action", "parse_action", "parse_program"]
