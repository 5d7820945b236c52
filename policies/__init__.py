"""Selextract's Pulumi policy pack (see policies/README.md)."""
