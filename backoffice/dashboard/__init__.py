"""The supervisors' dashboard: queue sizes, the call SLA, calls per agent and the sign-up funnels."""
