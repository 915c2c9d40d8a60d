"""Business calendar, SLA clock, call tasks, agent shifts and the agent console."""
