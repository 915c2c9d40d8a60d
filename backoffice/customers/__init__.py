"""Policyholders from the core insurance system, portal accounts, and their association."""
