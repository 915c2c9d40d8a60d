"""Contracts signed electronically: rendering, the signing port, and the evidence kept."""
