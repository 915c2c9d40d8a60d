"""Staff users, their roles and their signed-in sessions."""
