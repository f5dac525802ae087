"""Test-service layer shared by the whole workspace."""
