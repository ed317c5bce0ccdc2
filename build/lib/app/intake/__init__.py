"""Intake from Formative's backend: launches (where grades go) and submission events (what
was scored), with the automatic-passback decision. Between the API routes and the store.
"""
