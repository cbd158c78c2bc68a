"""The OpenFX plugin (C source as package data) and its build/install."""
