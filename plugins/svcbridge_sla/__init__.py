"""SLA engine (issue 15): calendars, classification, policies, timers, escalation, follow-up."""
