"""Adapters: implementations of the ports that `credits_domain` defines.

- `adapters.memory`: in-memory Repository, clocks and a scripted Verifier.
"""
