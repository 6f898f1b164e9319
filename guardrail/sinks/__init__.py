"""Former home of the audit sinks, kept so that existing imports work: the stores live in ``guardrail.audit``."""
