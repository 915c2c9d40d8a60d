"""Representative applications, their documents and the legal review queue."""
