"""Test kits for plugin and backend authors: the strategy contract checks."""

from .strategies import CheckResult, Report, check_strategy, parametrize_with_checks, strategy_checks

__all__ = ["CheckResult", "Report", "check_strategy", "parametrize_with_checks", "strategy_checks"]
