"""Turns a design point into a VLM: frozen experts, layer merges, token reduction, fusion, LM glue."""
