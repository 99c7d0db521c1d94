"""Layer 5: the report writer and the reports index."""

from labkit.reports.writer import CLAIM_STATUSES, Report

__all__ = ["CLAIM_STATUSES", "Report"]
